"""The Authenticator's gateway keys on a real SQLite store, with clocks the test moves: repeated requests with one
key do not read the database each time, yet expiry is checked on every request and a change made through this
process (the admin API: `changed()`) or elsewhere (within the fallback lifetime, no channel on SQLite) is seen."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from starlette.requests import Request

from gateway.auth.keys import generate_key, hash_key, new_key_id, visible_prefix
from gateway.auth.principal import Authenticator, Principal
from gateway.errors import GatewayError
from gateway.store import Store, open_store
from gateway.store.base import KeyRecord, Team


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def request_with(key: str) -> Request:
    return Request(
        {"type": "http", "method": "POST", "path": "/", "headers": [(b"authorization", f"Bearer {key}".encode())]}
    )


async def principal_of(auth: Authenticator, key: str) -> Principal | str:
    """The principal, or the 401's message."""
    try:
        return await auth.principal(request_with(key))
    except GatewayError as error:
        assert error.status == 401
        return error.message


class CountingStore:
    """Counts `key_and_team` calls of a real store (what the Authenticator reads per request)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.key_reads = 0

    async def key_and_team(self, key_hash: str) -> Any:
        self.key_reads += 1
        return await self.store.key_and_team(key_hash)


async def add_key(store: Store, team: str, **fields: Any) -> tuple[str, KeyRecord]:
    key = generate_key()
    record = KeyRecord(new_key_id(), team, "test", visible_prefix(key), hash_key(key), created_at=1, **fields)
    await store.create_key(record)
    return key, record


def on_sqlite(tmp_path: Path, test: Callable[[Store], Awaitable[None]]) -> None:
    async def main() -> None:
        store = open_store(f"sqlite:///{tmp_path / 'keys.db'}")
        await store.open()
        try:
            await store.create_team(Team("web", created_at=1))
            await asyncio.wait_for(test(store), 20)
        finally:
            await store.close()

    asyncio.run(main())


def authenticator(
    store: Store, monotonic: Clock, wall: Clock, cache_seconds: float = 30.0, fallback_seconds: float = 1.0
) -> tuple[Authenticator, CountingStore]:
    """An Authenticator caching keys (no channel: SQLite) over a store counting its key reads."""
    counting = CountingStore(store)
    auth = Authenticator(
        None,
        counting,  # type: ignore[arg-type]
        cache_seconds=cache_seconds,
        fallback_seconds=fallback_seconds,
        clock=monotonic,
        wall_clock=wall,
    )
    return auth, counting


def test_repeated_requests_with_one_key_read_the_database_once(tmp_path: Path) -> None:
    async def main(store: Store) -> None:
        auth, counting = authenticator(store, Clock(0), Clock(1_000_000))
        key, record = await add_key(store, "web")
        for _ in range(200):
            principal = await principal_of(auth, key)
            assert isinstance(principal, Principal) and principal.key is not None and principal.key.id == record.id
        assert counting.key_reads == 1
        assert auth.status() == {
            "cache": "on",
            "invalidation": "none",
            "healthy": True,
            "lifetime_seconds": 1.0,
            "entries": 1,
            "hits": 199,
            "misses": 1,
            "reads": 1,
            "notifications": 0,
        }

    on_sqlite(tmp_path, main)


def test_without_the_cache_every_request_reads_the_database(tmp_path: Path) -> None:
    async def main(store: Store) -> None:
        counting = CountingStore(store)
        auth = Authenticator(None, counting)  # type: ignore[arg-type]  # (the cache is off unless given a lifetime)
        key, _ = await add_key(store, "web")
        for _ in range(5):
            assert isinstance(await principal_of(auth, key), Principal)
        assert counting.key_reads == 5 and auth.status()["cache"] == "off"

    on_sqlite(tmp_path, main)


def test_expiry_is_checked_on_every_request_not_when_the_key_was_read(tmp_path: Path) -> None:
    async def main(store: Store) -> None:
        wall = Clock(1_000_000)
        auth, counting = authenticator(store, Clock(0), wall)
        key, _ = await add_key(store, "web", expires_at=1_000_010)
        assert isinstance(await principal_of(auth, key), Principal)
        wall.now = 1_000_010  # the expiry second; the cached answer is still fresh
        assert "has expired" in str(await principal_of(auth, key))
        assert counting.key_reads == 1

    on_sqlite(tmp_path, main)


def test_a_change_through_this_process_is_seen_at_once(tmp_path: Path) -> None:
    async def main(store: Store) -> None:
        auth, counting = authenticator(store, Clock(0), Clock(1_000_000), fallback_seconds=60.0)
        key, record = await add_key(store, "web")
        assert isinstance(await principal_of(auth, key), Principal)
        await store.revoke_key(record.id, 1_000_000)
        assert isinstance(await principal_of(auth, key), Principal)  # cached: the change is not known yet
        auth.changed()  # what the admin API calls after a change
        assert "has been revoked" in str(await principal_of(auth, key))
        assert counting.key_reads == 2

    on_sqlite(tmp_path, main)


def test_a_change_by_another_process_is_seen_within_the_fallback_lifetime(tmp_path: Path) -> None:
    async def main(store: Store) -> None:
        clock = Clock(0)
        auth, _ = authenticator(store, clock, Clock(1_000_000), cache_seconds=30.0, fallback_seconds=1.0)
        key, _ = await add_key(store, "web")
        assert isinstance(await principal_of(auth, key), Principal)
        await store.delete_team("web")  # (its keys go with it)
        clock.now = 0.99
        assert isinstance(await principal_of(auth, key), Principal)
        clock.now = 1.0
        assert await principal_of(auth, key) == "Incorrect API key provided."

    on_sqlite(tmp_path, main)


def test_a_new_key_works_at_once_after_the_admin_api_made_it(tmp_path: Path) -> None:
    async def main(store: Store) -> None:
        auth, counting = authenticator(store, Clock(0), Clock(1_000_000))
        key = generate_key()
        for _ in range(10):  # a wrong key, tried again and again
            assert await principal_of(auth, key) == "Incorrect API key provided."
        assert counting.key_reads == 1
        record = KeyRecord(new_key_id(), "web", "late", visible_prefix(key), hash_key(key), created_at=1)
        await store.create_key(record)
        auth.changed()
        assert isinstance(await principal_of(auth, key), Principal)

    on_sqlite(tmp_path, main)
