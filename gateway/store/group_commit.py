"""Group commit: concurrent writes share one transaction.

Callers submit operations and await their own result. One flush runs at a
time, on the store's writer thread; while it commits, new operations queue
up, and the next flush takes all of them. No timer is involved, so a lone
request waits for exactly one commit and a busy gateway pays one commit per
batch instead of one per request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

Op = TypeVar("Op")


# Runs `fn(*args)` on the writer thread and returns its result (the store's `_Thread.submit`).
Submit = Callable[..., Awaitable[Any]]


class GroupCommit(Generic[Op]):
    def __init__(self, submit: Submit, run_batch: Callable[[list[Op]], list[Any]], max_batch: int = 512) -> None:
        self._submit = submit
        self._run_batch = run_batch
        self._max_batch = max_batch
        self._pending: list[tuple[Op, asyncio.Future[Any]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def submit(self, op: Op) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append((op, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = loop.create_task(self._flush())
        # A caller that is cancelled (client gone) cancels only its own future: the commit others share runs in
        # the flusher's task, which skips a future that is already done (no shield needed).
        return await future

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[: self._max_batch], self._pending[self._max_batch :]
            try:
                results = await self._submit(self._run_batch, [op for op, _ in batch])
            except BaseException as exc:  # the whole transaction failed: every caller learns it
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if future.done():
                    continue
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)

    async def drain(self) -> None:
        if self._flusher is not None:
            await asyncio.shield(self._flusher)
