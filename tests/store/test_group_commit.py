"""GroupCommit (gateway/store/group_commit.py): concurrent submissions share one batch, one flush at a time.

The batch function runs on a real single-thread executor and can be held inside a batch with a
threading.Event, so what queues up while a batch commits is decided by the test, not by timing: tasks
scheduled with `ensure_future` take their first step (which appends the operation) in FIFO order, before
a callback scheduled after them with `call_soon`.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from gateway.store.group_commit import GroupCommit

WAIT = 5.0  # seconds: only a bound on a hang, never a synchronisation


class Batches:
    """A batch function that records each batch, can hold the first one open, and answers op -> op * 10
    (or what `answers` says: an exception instance is a per-operation failure)."""

    def __init__(self, hold_first: bool = False, answers: dict[Any, Any] | None = None) -> None:
        self.seen: list[list[Any]] = []
        self.threads: set[str] = set()
        self.started = threading.Event()
        self.release = threading.Event()
        self.finished = threading.Event()
        self.fail_batches: set[int] = set()  # indexes of batches that raise as a whole
        self._hold_first = hold_first
        self._answers = answers or {}
        if not hold_first:
            self.release.set()

    def __call__(self, ops: list[Any]) -> list[Any]:
        index = len(self.seen)
        self.seen.append(list(ops))
        self.threads.add(threading.current_thread().name)
        if index == 0:
            self.started.set()
            assert self.release.wait(WAIT), "the test never released the first batch"
        self.finished.set()
        if index in self.fail_batches:
            raise RuntimeError(f"batch {index} failed")
        return [self._answers.get(op, op * 10) for op in ops]


@pytest.fixture()
def executor() -> Iterator[ThreadPoolExecutor]:
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="test-writer")
    yield pool
    pool.shutdown(wait=True)


def on(executor: ThreadPoolExecutor) -> Callable[..., Awaitable[Any]]:
    """`fn(*args)` on the executor's one thread: what the store's writer thread offers GroupCommit."""

    def submit(fn: Callable[..., Any], *args: Any) -> Awaitable[Any]:
        return asyncio.get_running_loop().run_in_executor(executor, fn, *args)

    return submit


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, WAIT))


async def first_batch_running(batches: Batches) -> None:
    assert await asyncio.to_thread(batches.started.wait, WAIT), "the first batch never started"


def test_a_lone_submission_is_one_batch_of_one(executor: ThreadPoolExecutor) -> None:
    batches = Batches()
    commits = GroupCommit(on(executor), batches)

    async def main() -> list[Any]:
        return [await commits.submit(1), await commits.submit(2)]

    # One after the other: each waits for exactly its own commit, and the second starts a new flush.
    assert run(main()) == [10, 20]
    assert batches.seen == [[1], [2]]
    assert batches.threads == {"test-writer_0"}  # the batches ran on the store's executor


def test_submissions_during_a_commit_share_the_next_batch(executor: ThreadPoolExecutor) -> None:
    batches = Batches(hold_first=True)
    commits = GroupCommit(on(executor), batches)

    async def main() -> list[Any]:
        first = asyncio.ensure_future(commits.submit(0))
        await first_batch_running(batches)
        later = [asyncio.ensure_future(commits.submit(op)) for op in (1, 2, 3, 4)]
        asyncio.get_running_loop().call_soon(batches.release.set)  # after the four queued theirs
        return await asyncio.gather(first, *later)

    assert run(main()) == [0, 10, 20, 30, 40]
    assert batches.seen == [[0], [1, 2, 3, 4]]


def test_max_batch_splits_a_long_queue_in_order(executor: ThreadPoolExecutor) -> None:
    batches = Batches(hold_first=True)
    commits = GroupCommit(on(executor), batches, max_batch=2)

    async def main() -> list[Any]:
        first = asyncio.ensure_future(commits.submit(0))
        await first_batch_running(batches)
        later = [asyncio.ensure_future(commits.submit(op)) for op in range(1, 6)]
        asyncio.get_running_loop().call_soon(batches.release.set)
        return await asyncio.gather(first, *later)

    assert run(main()) == [0, 10, 20, 30, 40, 50]
    assert batches.seen == [[0], [1, 2], [3, 4], [5]]


def test_a_failed_operation_fails_only_its_caller(executor: ThreadPoolExecutor) -> None:
    problem = ValueError("op 2 is bad")
    batches = Batches(hold_first=True, answers={2: problem})
    commits = GroupCommit(on(executor), batches)

    async def main() -> list[Any]:
        first = asyncio.ensure_future(commits.submit(0))
        await first_batch_running(batches)
        later = [asyncio.ensure_future(commits.submit(op)) for op in (1, 2, 3)]
        asyncio.get_running_loop().call_soon(batches.release.set)
        return await asyncio.gather(first, *later, return_exceptions=True)

    results = run(main())
    assert results[:2] == [0, 10] and results[3] == 30
    assert results[2] is problem
    assert batches.seen == [[0], [1, 2, 3]]


def test_a_failed_batch_fails_every_caller_in_it_and_the_next_batch_still_runs(executor: ThreadPoolExecutor) -> None:
    batches = Batches(hold_first=True)
    batches.fail_batches = {1}
    commits = GroupCommit(on(executor), batches, max_batch=2)

    async def main() -> list[Any]:
        first = asyncio.ensure_future(commits.submit(0))
        await first_batch_running(batches)
        later = [asyncio.ensure_future(commits.submit(op)) for op in (1, 2, 3)]
        asyncio.get_running_loop().call_soon(batches.release.set)
        return await asyncio.gather(first, *later, return_exceptions=True)

    results = run(main())
    assert results[0] == 0
    assert [type(r) for r in results[1:3]] == [RuntimeError, RuntimeError]
    assert str(results[1]) == "batch 1 failed" and results[1] is results[2]  # the one exception, to each
    assert results[3] == 30  # the batch after the failed one committed
    assert batches.seen == [[0], [1, 2], [3]]


def test_a_cancelled_caller_does_not_cancel_the_commit_it_shares(executor: ThreadPoolExecutor) -> None:
    batches = Batches(hold_first=True)
    commits = GroupCommit(on(executor), batches)

    async def main() -> tuple[bool, Any]:
        gone = asyncio.ensure_future(commits.submit(0))
        stays = asyncio.ensure_future(commits.submit(1))
        await first_batch_running(batches)
        gone.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gone
        batches.release.set()
        return gone.cancelled(), await stays

    # Both were queued before the flush took its first batch, so they share it.
    assert run(main()) == (True, 10)
    assert batches.seen == [[0, 1]]  # the cancelled caller's operation was still committed


def test_a_cancelled_caller_of_a_later_batch_still_has_its_operation_committed(executor: ThreadPoolExecutor) -> None:
    batches = Batches(hold_first=True)
    commits = GroupCommit(on(executor), batches)

    async def main() -> Any:
        first = asyncio.ensure_future(commits.submit(0))
        await first_batch_running(batches)
        gone = asyncio.ensure_future(commits.submit(1))
        stays = asyncio.ensure_future(commits.submit(2))
        loop = asyncio.get_running_loop()
        loop.call_soon(gone.cancel)  # after both queued, before the second batch is taken
        loop.call_soon(batches.release.set)
        results = await asyncio.gather(first, stays)
        assert gone.cancelled()
        return results

    assert run(main()) == [0, 20]
    assert batches.seen == [[0], [1, 2]]


def test_drain_waits_for_the_running_flush(executor: ThreadPoolExecutor) -> None:
    batches = Batches(hold_first=True)
    commits = GroupCommit(on(executor), batches)

    async def main() -> tuple[bool, Any]:
        pending = asyncio.ensure_future(commits.submit(7))
        await first_batch_running(batches)
        asyncio.get_running_loop().call_soon(batches.release.set)  # runs only once drain is waiting
        await commits.drain()
        finished = batches.finished.is_set()  # drain returned: the batch it waited for has run to its end
        return finished, await pending

    assert run(main()) == (True, 70)
    assert batches.seen == [[7]]


def test_drain_with_nothing_submitted_returns_at_once(executor: ThreadPoolExecutor) -> None:
    batches = Batches()
    commits = GroupCommit(on(executor), batches)
    run(commits.drain())
    assert batches.seen == []
