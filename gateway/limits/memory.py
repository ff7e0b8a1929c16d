"""Limits in this process's memory: one worker, one node (several workers use `sqlite_store`, several nodes
`redis_store`; a per-worker copy would silently multiply every limit by the worker count)."""

from __future__ import annotations

import time
from collections.abc import Sequence

from gateway.limits import gcra
from gateway.limits.base import Grant, Limit, LimitStore, State, Want

# Every this many calls, the state of limits that are idle (the same as none) is dropped, so that limits used
# once (keys that are gone) do not stay in memory forever.
SWEEP_EVERY = 10_000


class MemoryLimitStore(LimitStore):
    kind = "memory"

    def __init__(self) -> None:
        self._cells: dict[str, gcra.Cell] = {}
        self._calls = 0

    def _tick(self, now: float) -> None:
        self._calls += 1
        if self._calls % SWEEP_EVERY == 0:
            self._cells = {key: cell for key, cell in self._cells.items() if cell.idle_at() > now}

    async def acquire(
        self, wants: Sequence[Want], holder: str, lease_seconds: float, now: float | None = None
    ) -> Grant:
        gcra.check_wants(wants, holder, lease_seconds)
        now = time.time() if now is None else now
        self._tick(now)
        # No await between reading and writing: atomic on the event loop.
        grant, cells = gcra.acquire(self._cells, wants, holder, lease_seconds, now)
        self._cells.update(cells)
        return grant

    async def settle(self, limit: Limit, delta: int, now: float | None = None) -> None:
        now = time.time() if now is None else now
        self._cells[limit.key] = gcra.settle(self._cells.get(limit.key, gcra.Cell()), limit, delta, now)

    async def release(self, limits: Sequence[Limit], holder: str) -> None:
        for limit in limits:
            if limit.key in self._cells:
                self._cells[limit.key] = gcra.release(self._cells[limit.key], holder)

    async def peek(self, limits: Sequence[Limit], now: float | None = None) -> tuple[State, ...]:
        now = time.time() if now is None else now
        return tuple(gcra.state(self._cells.get(limit.key, gcra.Cell()), limit, now) for limit in limits)

    async def block(self, limit: Limit, seconds: float, now: float | None = None) -> None:
        now = time.time() if now is None else now
        self._cells[limit.key] = gcra.block(self._cells.get(limit.key, gcra.Cell()), limit, seconds, now)

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        self._cells.clear()
