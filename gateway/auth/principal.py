"""Who is calling: the master key (built-in team `admin`) or a gateway key of a team.

The master key comparison is constant-time over fixed-length digests. Gateway
keys are looked up by their SHA-256 hash on every request, so a revoked or
expired key is refused at once, on every worker and node sharing the database.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass

from pydantic import SecretStr
from starlette.requests import Request

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
    def __init__(self, master_key: SecretStr | None, store: Store) -> None:
        self._digest = (
            hashlib.sha256(master_key.get_secret_value().encode()).digest() if master_key is not None else None
        )
        self._store = store
        self.admin = Principal(Team(ADMIN_TEAM, policy="default"), None, True)

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
        """Teams or keys were changed through this process (the admin API): forget what is cached of them."""

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
        found = await self._store.key_and_team(hash_key(key))
        if found is None:
            raise _unauthorized("Incorrect API key provided.")
        record, team = found
        if record.revoked_at is not None:
            raise _unauthorized(f"API key {record.prefix}... has been revoked.")
        if record.expires_at is not None and record.expires_at <= time.time():
            raise _unauthorized(f"API key {record.prefix}... has expired.")
        if team is None:
            raise _unauthorized(f"API key {record.prefix}... belongs to a team that no longer exists.")
        return Principal(team, record, False)
