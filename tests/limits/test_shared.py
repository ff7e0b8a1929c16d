"""One limit, many processes: two gateway nodes on one Redis, or two workers on one SQLite file, share each limit;
they do not each get their own (which would multiply every limit by the number of nodes or workers)."""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import time
from pathlib import Path
from typing import Any

import pytest

from gateway.limits.base import Limit, LimitStore, Want
from gateway.limits.memory import MemoryLimitStore
from gateway.limits.redis_store import RedisLimitStore
from gateway.limits.sqlite_store import SqliteLimitStore
from tests.support.redis_keys import REDIS_URL

T0 = 1_760_000_000.25
RPM30 = Limit("key:shared", "rpm", 30)


def two_nodes(prefix: str) -> tuple[RedisLimitStore, RedisLimitStore]:
    """Two stores with their own connection pools, as two gateway nodes have."""
    return RedisLimitStore(REDIS_URL, prefix, 2.0), RedisLimitStore(REDIS_URL, prefix, 2.0)


async def alternate(nodes: tuple[LimitStore, ...], attempts: int, every: float | None) -> list[int]:
    """`attempts` requests taking turns between the nodes, every `every` seconds of explicit time (None: the
    stores' own clock, as fast as they answer). The number each node admitted."""
    admitted = [0] * len(nodes)
    for attempt in range(attempts):
        node = attempt % len(nodes)
        now = None if every is None else T0 + attempt * every
        if (await nodes[node].acquire([Want(RPM30, 1)], f"r{attempt}", 30, now=now)).ok:
            admitted[node] += 1
    return admitted


def test_two_nodes_on_redis_admit_one_limit_not_two(redis_prefix: str) -> None:
    """RPM 30, 60 attempts 0.1 s apart taking turns between two nodes: 30 (the minute's burst) plus what 5.9 s
    give back at one per 2 s, as one node alone would admit; not 60."""

    async def main() -> tuple[list[int], list[int]]:
        nodes = two_nodes(redis_prefix)
        try:
            shared = await alternate(nodes, 60, every=0.1)
        finally:
            for node in nodes:
                await node.close()
        alone = await alternate((MemoryLimitStore(),), 60, every=0.1)
        return shared, alone

    shared, alone = asyncio.run(main())
    assert sum(shared) == alone[0] == 30 + math.floor(5.9 / 2)
    assert min(shared) >= 15  # both nodes took part


def test_two_nodes_on_redis_share_one_limit_on_redis_time(redis_prefix: str) -> None:
    """The same on Redis's own clock: whatever the nodes' clocks say, 30 plus what the elapsed time gives back."""

    async def main() -> tuple[list[int], float]:
        nodes = two_nodes(redis_prefix)
        started = time.monotonic()
        try:
            admitted = await alternate(nodes, 60, every=None)
        finally:
            for node in nodes:
                await node.close()
        return admitted, time.monotonic() - started

    admitted, elapsed = asyncio.run(main())
    assert 30 <= sum(admitted) <= 30 + math.floor(elapsed / 2) + 1
    assert min(admitted) >= 15


def test_two_nodes_on_redis_share_concurrent_slots(redis_prefix: str) -> None:
    slots = Limit("team:shared", "concurrency", 2)

    async def main() -> None:
        a, b = two_nodes(redis_prefix)
        try:
            assert (await a.acquire([Want(slots, 1)], "a1", 30)).ok
            assert (await b.acquire([Want(slots, 1)], "b1", 30)).ok
            refused = await a.acquire([Want(slots, 1)], "a2", 30)
            assert not refused.ok and refused.refused == slots
            await b.release([slots], "b1")
            assert (await a.acquire([Want(slots, 1)], "a2", 30)).ok
            assert (await b.peek([slots]))[0].remaining == 0
        finally:
            await a.close()
            await b.close()

    asyncio.run(main())


def _sqlite_worker(path: str, attempts: int, start: Any, results: Any) -> None:
    """A worker process: `attempts` requests on the shared file at one instant, once every worker is ready."""

    async def main() -> int:
        store = SqliteLimitStore(Path(path))
        await store.open()
        start.wait()
        admitted = 0
        for attempt in range(attempts):
            admitted += (await store.acquire([Want(Limit("key:workers", "rpm", 60), 1)], f"{attempt}", 30, T0)).ok
        await store.close()
        return admitted

    results.put(asyncio.run(main()))


@pytest.mark.slow
def test_two_worker_processes_on_one_sqlite_file_share_a_limit(tmp_path: Path) -> None:
    """RPM 60, two processes trying 50 each at the same instant: 60 in all, not 100."""
    context = multiprocessing.get_context("spawn")
    start, results = context.Barrier(2), context.Queue()
    workers = [
        context.Process(target=_sqlite_worker, args=(str(tmp_path / "limits.db"), 50, start, results)) for _ in range(2)
    ]
    for worker in workers:
        worker.start()
    try:
        admitted = [results.get(timeout=60) for _ in workers]
    finally:
        for worker in workers:
            worker.join(timeout=30)
    assert sum(admitted) == 60
    assert all(count <= 50 for count in admitted)
    assert all(worker.exitcode == 0 for worker in workers)
