"""Noticing a client that leaves while the gateway waits on a provider.

Starlette does not cancel a handler when its client disconnects: without this, a request whose client gave
up would keep its provider call (and its budget reservation) until the provider answered or timed out.
Once the request body has been read, nothing else reads the ASGI `receive` channel until the response
starts, so a watcher can wait there for `http.disconnect` and cancel the handler at once.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.types import Receive


class DisconnectWatch:
    """Cancels the current task when the client disconnects; `stop()` before the response is sent.

    `stop()` drops the references to the task and the watcher: the request (and its megabytes of body) must not
    sit in a reference cycle that only the cyclic garbage collector, which runs rarely here, would free.
    """

    def __init__(self, receive: Receive) -> None:
        self.task: asyncio.Task[Any] | None = asyncio.current_task()
        self.gone = False
        self._watcher: asyncio.Future[None] | None = asyncio.ensure_future(self._watch(receive))

    async def _watch(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self.gone = True
        if self.task is not None:
            self.task.cancel()

    def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
        self._watcher = self.task = None

    def absorb(self) -> bool:
        """After a CancelledError: True (and the cancellation undone) if it was this watch's, for a client that left."""
        if not self.gone:
            return False
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
        return True
