"""Who is calling: the master key (built-in team `admin`) or a gateway key of a team.

The master key comparison is constant-time over fixed-length digests. Gateway
keys are looked up by their SHA-256 hash, in a per-process cache in front of the
database (gateway/auth/cache.py) that changes reach through PostgreSQL
notifications (gateway/auth/invalidation.py), so a revoked key is refused on
every worker and node within about a second. Revocation, expiry and the team's
existence are checked on every request against what is cached.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import SecretStr
from starlette.requests import Request

from gateway.auth.cache import MAX_ENTRIES, KeyCache
from gateway.auth.invalidation import Invalidation, NoInvalidation, channel_for
from gateway.auth.keys import KEY_PREFIX, hash_key
from gateway.errors import GatewayError
from gateway.store import Store
from gateway.store.base import KeyRecord, Team

ADMIN_TEAM = "admin"


@dataclass(frozen=True, slots=True)
class Principal:
    team: Team
    key: KeyRecord | None
    is_admin: bool


def presented_key(request: Request) -> str | None:
    """The bearer token, or `x-api-key` (Continue sends both for FIM)."""
    header = request.headers.get("authorization")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return request.headers.get("x-api-key") or None


def _unauthorized(message: str) -> GatewayError:
    return GatewayError(401, message, "invalid_request_error", "invalid_api_key")


class Authenticator:
    """The caller of a request, from its key. Gateway keys are cached per process for `cache_seconds` (0, the
    default: not cached, every request reads the database) while changes reach this process (a PostgreSQL
    `database_url`: LISTEN/NOTIFY), else for at most `fallback_seconds`. `start()` and `close()` run the
    listener; `changed()` says that this process changed teams or keys itself."""

    def __init__(
        self,
        master_key: SecretStr | None,
        store: Store,
        *,
        database_url: str | None = None,
        cache_seconds: float = 0.0,
        fallback_seconds: float = 1.0,
        max_cached_keys: int = MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._digest = (
            hashlib.sha256(master_key.get_secret_value().encode()).digest() if master_key is not None else None
        )
        self._store = store
        self._wall_clock = wall_clock  # what a key's `expires_at` is compared with, on every request
        self.keys = KeyCache(
            store.key_and_team,
            seconds=cache_seconds,
            fallback_seconds=fallback_seconds,
            healthy=self._channel_healthy,
            max_entries=max_cached_keys,
            clock=clock,
        )
        self.channel: Invalidation = channel_for(database_url, self.keys) if self.keys.enabled else NoInvalidation()
        self.admin = Principal(Team(ADMIN_TEAM, policy="default"), None, True)

    def _channel_healthy(self) -> bool:
        return self.channel.healthy()

    async def start(self) -> None:
        """Listen for changes to teams and keys (PostgreSQL); after the store is open (its tables exist)."""
        await self.channel.start()

    async def close(self) -> None:
        await self.channel.close()

    def status(self) -> dict[str, Any]:
        """For /readyz: whether keys are cached, how changes reach this process and whether that works now
        (no channel counts as healthy: the fallback lifetime is then the design, not a failure)."""
        channel = self.channel
        return {
            "cache": "on" if self.keys.enabled else "off",
            "invalidation": channel.name,
            "healthy": channel.healthy() if not isinstance(channel, NoInvalidation) else True,
            "lifetime_seconds": self.keys.lifetime(),
            "entries": len(self.keys),
            "hits": self.keys.hits,
            "misses": self.keys.misses,
            "reads": self.keys.reads,
            "notifications": channel.notifications,
        }

    @property
    def open(self) -> bool:
        return self._digest is None

    def is_master(self, key: str | None) -> bool:
        if self._digest is None or key is None:
            return False
        return hmac.compare_digest(hashlib.sha256(key.encode()).digest(), self._digest)

    def check_master(self, request: Request) -> None:
        """Admin routes: the master key, and nothing else (refused when no master key is configured)."""
        if self._digest is None:
            raise GatewayError(
                401,
                "Admin routes need GATEWAY_MASTER_KEY to be configured.",
                "invalid_request_error",
                "invalid_api_key",
            )
        key = presented_key(request)
        if key is None:
            raise _unauthorized("Missing API key: send the master key as 'Authorization: Bearer KEY'.")
        if not self.is_master(key):
            raise _unauthorized("Incorrect API key provided.")

    def changed(self) -> None:
        """Teams or keys were changed through this process (the admin API): forget what is cached of them, at
        once (other processes learn it from the database's notification, or within the fallback lifetime)."""
        self.keys.clear()

    async def principal(self, request: Request) -> Principal:
        key = presented_key(request)
        if self.is_master(key):
            return self.admin
        if key is not None and key.startswith(KEY_PREFIX):
            return await self._gateway_key(key)
        if self._digest is None:
            return self.admin  # open mode (announced at start-up)
        if key is None:
            raise _unauthorized("Missing API key: send it as 'Authorization: Bearer KEY'.")
        raise _unauthorized("Incorrect API key provided.")

    async def _gateway_key(self, key: str) -> Principal:
        found = await self.keys.get(hash_key(key))
        if found is None:
            raise _unauthorized("Incorrect API key provided.")
        record, team = found
        if record.revoked_at is not None:
            raise _unauthorized(f"API key {record.prefix}... has been revoked.")
        if record.expires_at is not None and record.expires_at <= self._wall_clock():
            raise _unauthorized(f"API key {record.prefix}... has expired.")
        if team is None:
            raise _unauthorized(f"API key {record.prefix}... belongs to a team that no longer exists.")
        return Principal(team, record, False)
