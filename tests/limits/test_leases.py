"""Concurrency leases renewed while their requests run (gateway/limits/leases.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from gateway.limits.base import Grant, Limit, LimitsUnavailable, Want
from gateway.limits.leases import Leases
from gateway.limits.memory import MemoryLimitStore

SLOT = Limit("team:a", "concurrency", 1)
RATE = Limit("team:a", "rpm", 10)


class Recording(MemoryLimitStore):
    def __init__(self) -> None:
        super().__init__()
        self.acquired: list[tuple[tuple[Want, ...], str, float]] = []
        self.down = False

    async def acquire(
        self, wants: Sequence[Want], holder: str, lease_seconds: float, now: float | None = None
    ) -> Grant:
        if self.down:
            raise LimitsUnavailable("down")
        self.acquired.append((tuple(wants), holder, lease_seconds))
        return await super().acquire(wants, holder, lease_seconds, now)


def test_a_held_slot_is_renewed_as_the_same_holder_without_taking_a_second_one() -> None:
    async def main() -> None:
        store = Recording()
        leases = Leases(store, lease_seconds=30.0)
        assert (await store.acquire([Want(SLOT, 1), Want(RATE, 1)], "req_1", 30.0)).ok
        leases.hold("req_1", [SLOT, RATE])  # only the slot is a lease; the rate is not renewed
        store.acquired.clear()
        assert await leases.renew() == 1
        assert store.acquired == [((Want(SLOT, 1),), "req_1", 30.0)]
        assert not (await store.acquire([Want(SLOT, 1)], "req_2", 30.0)).ok  # still one slot, held by req_1
        leases.drop("req_1", [SLOT])
        store.acquired.clear()
        assert await leases.renew() == 0 and store.acquired == [] and leases.held() == 0

    asyncio.run(main())


def test_renewal_stops_quietly_when_the_store_cannot_be_reached() -> None:
    async def main() -> None:
        store = Recording()
        leases = Leases(store)
        leases.hold("req_1", [SLOT])
        leases.hold("req_2", [Limit("team:b", "concurrency", 2)])
        store.down = True
        assert await leases.renew() == 0  # no exception: the leases end on their own if it lasts
        store.down = False
        assert await leases.renew() == 2

    asyncio.run(main())
