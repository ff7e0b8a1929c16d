"""Noticing a client that leaves while the gateway waits on a provider.

Starlette does not cancel a handler when its client disconnects: without this, a request whose client gave
up would keep its provider call (and its budget reservation) until the provider answered or timed out.
Once the request body has been read, nothing else reads the ASGI `receive` channel until the response
starts, so a watcher can wait there for `http.disconnect` and cancel the handler at once.
"""

from __future__ import annotations

import asyncio

from starlette.types import Receive


class DisconnectWatch:
    """Cancels the current task when the client disconnects; `stop()` before the response is sent."""

    def __init__(self, receive: Receive) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.task = task
        self.gone = False
        self._watcher = asyncio.ensure_future(self._watch(receive))

    async def _watch(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self.gone = True
        self.task.cancel()

    def stop(self) -> None:
        self._watcher.cancel()

    def absorb(self) -> bool:
        """After a CancelledError: True (and the cancellation undone) if it was this watch's, for a client that left."""
        if not self.gone:
            return False
        self.task.uncancel()
        return True
