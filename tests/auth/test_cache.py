"""The key cache on its own (gateway/auth/cache.py): what it answers from memory, for how long, and when it reads
the database again. The database is a dict here and time is a clock the test moves; nothing sleeps."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from gateway.auth.cache import Found, KeyCache
from gateway.store.base import KeyRecord, Team


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Database:
    """Key hash -> answer, counting reads; `hold()` makes reads wait until `release()` (answering what the rows
    were when the read started, as a database's snapshot does)."""

    def __init__(self) -> None:
        self.rows: dict[str, Found] = {}
        self.reads = 0
        self.error: Exception | None = None
        self._gate: asyncio.Event | None = None

    def add(self, key_hash: str, team: str = "web") -> Found:
        found = (KeyRecord(f"key_{key_hash}", team, "test", "gw-test", key_hash), Team(team))
        self.rows[key_hash] = found
        return found

    def hold(self) -> None:
        self._gate = asyncio.Event()

    def release(self) -> None:
        assert self._gate is not None
        self._gate.set()

    async def load(self, key_hash: str) -> Found | None:
        self.reads += 1
        answer = self.rows.get(key_hash)  # as of the start of the read (its snapshot)
        if self._gate is not None:
            await self._gate.wait()
        if self.error is not None:
            raise self.error
        return answer


class Health:
    def __init__(self, healthy: bool) -> None:
        self.healthy = healthy

    def __call__(self) -> bool:
        return self.healthy


def cache_of(
    db: Database, clock: Clock, healthy: bool = True, seconds: float = 30, fallback: float = 1, **options: Any
) -> tuple[KeyCache, Health]:
    health = Health(healthy)
    cache = KeyCache(db.load, seconds=seconds, fallback_seconds=fallback, healthy=health, clock=clock, **options)
    return cache, health


async def until(condition: Callable[[], bool]) -> None:
    """Let the other tasks run until `condition()` holds (turns of the event loop, not time)."""
    for _ in range(100):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition not reached")


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 10))


def test_a_key_is_read_once_then_answered_from_memory_for_its_lifetime() -> None:
    async def main() -> None:
        db, clock = Database(), Clock()
        found = db.add("a")
        cache, _ = cache_of(db, clock)
        for _ in range(100):
            assert await cache.get("a") == found
        assert (db.reads, cache.reads, cache.misses, cache.hits) == (1, 1, 1, 99)
        clock.now += 29.9
        assert await cache.get("a") == found and db.reads == 1
        clock.now += 0.2  # 30.1 s after the read: read again
        assert await cache.get("a") == found and db.reads == 2

    run(main)


def test_without_a_working_channel_a_key_lives_the_fallback_lifetime() -> None:
    async def main() -> None:
        db, clock = Database(), Clock()
        db.add("a")
        cache, health = cache_of(db, clock, healthy=False)
        assert cache.lifetime() == 1
        await cache.get("a")
        clock.now += 0.9
        await cache.get("a")
        assert db.reads == 1
        clock.now += 0.2
        await cache.get("a")
        assert db.reads == 2
        # The lifetime is the one of the moment of the lookup: while the channel works, what is kept lives
        # `seconds`; once it stops, the fallback lifetime applies to what is already kept too.
        health.healthy = True
        clock.now += 5
        await cache.get("a")
        assert db.reads == 2  # 5 s old, healthy: kept
        health.healthy = False
        assert cache.lifetime() == 1
        await cache.get("a")
        assert db.reads == 3

    run(main)


def test_concurrent_misses_for_one_key_share_one_read() -> None:
    async def main() -> None:
        db, clock = Database(), Clock()
        found = db.add("a")
        cache, _ = cache_of(db, clock)
        db.hold()
        waiting = [asyncio.ensure_future(cache.get("a")) for _ in range(50)]
        other = asyncio.ensure_future(cache.get("b"))  # another key: a read of its own
        await until(lambda: db.reads == 2)
        assert all(not w.done() for w in waiting)
        db.release()
        assert await asyncio.gather(*waiting) == [found] * 50
        assert await other is None
        assert (db.reads, cache.reads, cache.misses) == (2, 2, 51)
        assert await cache.get("a") == found and db.reads == 2

    run(main)


def test_a_cancelled_caller_does_not_cancel_the_read_others_wait_for() -> None:
    async def main() -> None:
        db, clock = Database(), Clock()
        found = db.add("a")
        cache, _ = cache_of(db, clock)
        db.hold()
        first = asyncio.ensure_future(cache.get("a"))
        second = asyncio.ensure_future(cache.get("a"))
        await until(lambda: db.reads == 1)
        first.cancel()
        db.release()
        assert await second == found
        assert first.cancelled()
        assert await cache.get("a") == found and db.reads == 1

    run(main)


def test_a_failed_read_fails_every_caller_and_keeps_nothing() -> None:
    async def main() -> None:
        db, clock = Database(), Clock()
        found = db.add("a")
        cache, _ = cache_of(db, clock)
        db.error = RuntimeError("database gone")
        db.hold()
        callers = [asyncio.ensure_future(cache.get("a")) for _ in range(3)]
        await until(lambda: db.reads == 1)
        db.release()
        results = await asyncio.gather(*callers, return_exceptions=True)
        assert [str(r) for r in results] == ["database gone"] * 3 and db.reads == 1
        db.error = None
        assert await cache.get("a") == found and db.reads == 2

    run(main)


def test_an_unknown_key_is_remembered_briefly_and_a_new_key_works_at_once() -> None:
    async def main() -> None:
        db, clock = Database(), Clock()
        cache, _ = cache_of(db, clock, healthy=True, seconds=30, fallback=1)
        for _ in range(20):  # a flood of one wrong key: one read
            assert await cache.get("new") is None
        assert db.reads == 1
        clock.now += 1.1  # "no such key" lives the fallback lifetime even while the channel works
        assert await cache.get("new") is None and db.reads == 2
        found = db.add("new")
        cache.forget_key("new")  # the key was made (a notification, or this process's admin API)
        assert await cache.get("new") == found and db.reads == 3
        cache.forget_key("new")
        db.rows.clear()
        assert await cache.get("new") is None
        cache.clear()  # `Authenticator.changed()`: clears "no such key" answers too
        db.add("new")
        assert await cache.get("new") is not None and db.reads == 5

    run(main)


def revoked(found: Found) -> Found:
    record, team = found
    return KeyRecord(record.id, record.team, record.name, record.prefix, record.key_hash, revoked_at=1), team


def test_a_change_during_a_read_is_not_lost() -> None:
    """A read that started before a revocation may return the key as it was: its callers get that answer (they
    asked before the change), but it is not kept: the next caller reads again."""

    async def main() -> None:
        db, clock = Database(), Clock()
        found = db.add("a")
        cache, _ = cache_of(db, clock)
        db.hold()
        before = asyncio.ensure_future(cache.get("a"))
        await until(lambda: db.reads == 1)
        db.rows["a"] = revoked(found)
        cache.forget_key("a")  # the notification, while the read is under way
        db.release()
        assert await before == found
        assert await cache.get("a") == revoked(found) and db.reads == 2
        assert await cache.get("a") == revoked(found) and db.reads == 2

    run(main)


def test_a_caller_after_a_change_does_not_join_a_read_from_before_it() -> None:
    async def main() -> None:
        db, clock = Database(), Clock()
        found = db.add("a")
        cache, _ = cache_of(db, clock)
        db.hold()
        before = asyncio.ensure_future(cache.get("a"))
        await until(lambda: db.reads == 1)
        db.rows["a"] = revoked(found)
        cache.forget_key("a")
        after = asyncio.ensure_future(cache.get("a"))
        await until(lambda: db.reads == 2)
        db.release()
        assert await after == revoked(found)
        await before

    run(main)


def test_a_team_change_forgets_that_teams_keys_only() -> None:
    async def main() -> None:
        db, clock = Database(), Clock()
        for key_hash, team in (("a1", "alpha"), ("a2", "alpha"), ("b1", "beta")):
            db.add(key_hash, team)
        cache, _ = cache_of(db, clock)
        for key_hash in ("a1", "a2", "b1", "zz"):
            await cache.get(key_hash)
        assert db.reads == 4
        cache.forget_team("alpha")
        for key_hash in ("a1", "a2", "b1", "zz"):
            await cache.get(key_hash)
        assert db.reads == 6

    run(main)


def test_the_cache_is_bounded_and_wrong_keys_cannot_push_real_ones_out() -> None:
    async def main() -> None:
        db, clock = Database(), Clock()
        for key_hash in ("a", "b", "c", "d"):
            db.add(key_hash)
        cache, _ = cache_of(db, clock, max_entries=3)
        for key_hash in ("a", "b", "c"):
            await cache.get(key_hash)
        await cache.get("a")  # a is now the most recently used
        await cache.get("d")  # evicts b, the least recently used
        assert len(cache) == 3
        reads = db.reads
        for key_hash in ("a", "c", "d"):
            await cache.get(key_hash)
        assert db.reads == reads
        for n in range(100):  # a flood of wrong keys
            assert await cache.get(f"wrong-{n}") is None
        reads = db.reads
        for key_hash in ("a", "c", "d"):
            await cache.get(key_hash)
        assert db.reads == reads  # still kept
        assert len(cache) == 6  # 3 keys and the last 3 wrong ones

    run(main)


@pytest.mark.parametrize(("seconds", "fallback", "healthy"), [(0, 1, True), (30, 0, False)])
def test_a_zero_lifetime_keeps_nothing(seconds: float, fallback: float, healthy: bool) -> None:
    async def main() -> None:
        db, clock = Database(), Clock()
        db.add("a")
        cache, _ = cache_of(db, clock, healthy=healthy, seconds=seconds, fallback=fallback)
        for _ in range(3):
            await cache.get("a")
            await cache.get("unknown")
        assert db.reads == 6 and len(cache) == 0

    run(main)
