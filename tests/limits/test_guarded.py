"""A limit store that cannot be reached becomes the configured behaviour: fail_open lets requests through
(degraded), fail_closed refuses them; after a failure the store is left alone for the retry window (calls fail at
once, no request waits on the timeout again), then one call at a time tries it; the outage is logged once and
shown by status(). A fake store stands in for Redis here (tests/limits/test_redis_outage.py has the real one)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

import pytest

from gateway.limits.base import (
    Grant,
    Limit,
    LimitsMisconfigured,
    LimitStore,
    LimitsUnavailable,
    State,
    Want,
)
from gateway.limits.guarded import GuardedLimitStore
from gateway.limits.memory import MemoryLimitStore

RPM = Limit("key:k", "rpm", 1)
DETAIL = "Redis at 127.0.0.1:6390: ConnectionError: Connection refused"


class FlakyStore(LimitStore):
    """A store in memory that can be taken down; counts the calls that reached it."""

    kind = "redis"

    def __init__(self) -> None:
        self.memory = MemoryLimitStore()
        self.down = False
        self.calls = 0
        self.gate: asyncio.Event | None = None  # set: calls wait on it (a slow answer)

    async def _reach(self) -> None:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.down:
            raise LimitsUnavailable(DETAIL)

    async def open(self) -> None:
        await self._reach()

    async def acquire(
        self, wants: Sequence[Want], holder: str, lease_seconds: float, now: float | None = None
    ) -> Grant:
        await self._reach()
        return await self.memory.acquire(wants, holder, lease_seconds, now)

    async def settle(self, limit: Limit, delta: int, now: float | None = None) -> None:
        await self._reach()

    async def release(self, limits: Sequence[Limit], holder: str) -> None:
        await self._reach()

    async def peek(self, limits: Sequence[Limit], now: float | None = None) -> tuple[State, ...]:
        await self._reach()
        return await self.memory.peek(limits, now)

    async def block(self, limit: Limit, seconds: float, now: float | None = None) -> None:
        await self._reach()

    async def ping(self) -> bool:
        self.calls += 1
        return not self.down

    async def close(self) -> None:
        pass


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def guarded(failure: str, outcomes: list[str]) -> tuple[GuardedLimitStore, FlakyStore, Clock]:
    inner, clock = FlakyStore(), Clock()
    store = GuardedLimitStore(inner, failure, 1.0, outcomes.append, clock=clock)  # type: ignore[arg-type]
    return store, inner, clock


def test_fail_open_lets_requests_through_degraded_and_leaves_the_store_alone(caplog: pytest.LogCaptureFixture) -> None:
    outcomes: list[str] = []
    store, inner, clock = guarded("fail_open", outcomes)

    async def main() -> None:
        assert (await store.acquire([Want(RPM, 1)], "a", 30)).ok
        inner.down = True
        before = time.time()
        grant = await store.acquire([Want(RPM, 1)], "b", 30)
        assert grant.ok and grant.degraded and grant.states == ()
        status = store.status()
        assert status["reachable"] is False and status["kind"] == "redis" and status["on_failure"] == "fail_open"
        assert before <= status["since"] <= time.time() and status["error"] == DETAIL
        # The retry window: nothing reaches the store, however many requests come.
        calls = inner.calls
        for holder in range(20):
            assert (await store.acquire([Want(RPM, 1)], f"r{holder}", 30)).degraded
        await store.settle(RPM, 5)
        await store.release([RPM], "r1")
        await store.block(RPM, 5)
        with pytest.raises(LimitsUnavailable):
            await store.peek([RPM])
        assert inner.calls == calls
        # After it, one call tries the store again: still down, another window.
        clock.now += 1.0
        assert (await store.acquire([Want(RPM, 1)], "c", 30)).degraded
        assert inner.calls == calls + 1
        assert (await store.acquire([Want(RPM, 1)], "d", 30)).degraded
        assert inner.calls == calls + 1
        # Back: the next try after the window answers for real.
        inner.down = False
        clock.now += 1.0
        grant = await store.acquire([Want(RPM, 1)], "e", 30)
        assert not grant.degraded and inner.calls == calls + 2
        assert store.status() == {
            "kind": "redis",
            "reachable": True,
            "on_failure": "fail_open",
            "since": None,
            "error": "",
        }

    with caplog.at_level(logging.INFO, logger="gateway.limits"):
        asyncio.run(main())
    assert outcomes == ["fail_open"] * 23
    down = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(down) == 1 and DETAIL in down[0].getMessage() and "fail_open" in down[0].getMessage()
    assert len([r for r in caplog.records if "reachable again" in r.getMessage()]) == 1


def test_fail_closed_refuses_until_the_store_answers() -> None:
    outcomes: list[str] = []
    store, inner, clock = guarded("fail_closed", outcomes)

    async def main() -> None:
        inner.down = True
        for _ in range(3):
            with pytest.raises(LimitsUnavailable) as refused:
                await store.acquire([Want(RPM, 1)], "a", 30)
            assert refused.value.detail == DETAIL
        # Settling and releasing are best effort in either mode: they never fail a request that was answered.
        await store.settle(RPM, -1)
        await store.release([RPM], "a")
        inner.down = False
        clock.now += 1.0
        assert (await store.acquire([Want(RPM, 1)], "a", 30)).ok

    asyncio.run(main())
    assert outcomes == ["fail_closed"] * 3


def test_one_call_at_a_time_tries_the_store_again() -> None:
    """When the window ends, the first call tries the store; the others meanwhile fail at once instead of each
    waiting for the store's timeout too."""
    store, inner, clock = guarded("fail_open", [])

    async def main() -> None:
        inner.down = True
        await store.acquire([Want(RPM, 1)], "a", 30)
        clock.now += 1.0
        inner.gate = asyncio.Event()
        probe = asyncio.create_task(store.acquire([Want(RPM, 1)], "probe", 30))
        while inner.calls < 2:
            await asyncio.sleep(0)
        for holder in range(5):
            assert (await store.acquire([Want(RPM, 1)], f"r{holder}", 30)).degraded
        assert inner.calls == 2 and not probe.done()
        inner.down = False
        inner.gate.set()
        assert not (await probe).degraded
        assert store.status()["reachable"] is True

    asyncio.run(main())


def test_open_records_an_outage_but_raises_a_misconfiguration() -> None:
    store, inner, _ = guarded("fail_open", [])

    async def main() -> None:
        inner.down = True
        await store.open()  # the gateway starts; requests get the failure behaviour
        assert store.status()["reachable"] is False
        inner.down = False
        assert await store.ping()  # ping asks whatever the window says
        assert store.status()["reachable"] is True
        inner.down = True
        assert not await store.ping()
        assert store.status()["reachable"] is False

    asyncio.run(main())

    class Refusing(FlakyStore):
        async def open(self) -> None:
            raise LimitsMisconfigured("Redis refuses Lua scripts")

    async def refused() -> None:
        await GuardedLimitStore(Refusing(), "fail_open", 1.0).open()

    with pytest.raises(LimitsMisconfigured):
        asyncio.run(refused())
