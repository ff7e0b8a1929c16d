"""Noticing a client that leaves while the gateway waits on a provider.

Starlette does not cancel a handler when its client disconnects: without this, a request whose client gave
up would keep its provider call (and its budget reservation) until the provider answered or timed out.
Once the request body has been read, nothing else reads the ASGI `receive` channel until the response
starts, so a watcher can wait there for `http.disconnect` and cancel the handler at once.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.types import Receive, Scope

from gateway.http.servers import CONNECTION_EXTENSION
from gateway.state import Drain


class DisconnectWatch:
    """Cancels the current task when the client disconnects (or `shutdown` is set); `stop()` when done watching.
    Used while a request waits on its provider, and by EventStreamResponse while it streams.

    `stop()` drops the references to the task and the watcher: the request (and its megabytes of body) must not
    sit in a reference cycle that only the cyclic garbage collector, which runs rarely here, would free.
    """

    def __init__(self, receive: Receive, shutdown: Drain | None = None, scope: Scope | None = None) -> None:
        self.task: asyncio.Task[Any] | None = asyncio.current_task()
        self.gone = False
        self.shut_down = False  # the gateway's drain time after SIGTERM ended while this request waited
        # Served by the gateway's own protocol, the lost connection is a callback (no task reading `receive`:
        # about 10 µs per request less); under any other server, a task waits for `http.disconnect`.
        extension = (scope.get("extensions") or {}).get(CONNECTION_EXTENSION) if scope is not None else None
        self._connection: Any = extension.get("protocol") if extension else None
        self._watcher: asyncio.Future[None] | None = None
        if self._connection is not None:
            self._connection.subscribe_lost(self._left)
        else:
            self._watcher = asyncio.ensure_future(self._watch(receive))
        # The drain is watched by a callback, not a second task (about 6 µs per request less).
        self._shutdown = shutdown
        if shutdown is not None:
            shutdown.subscribe(self._drained)

    async def _watch(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self._left()

    def _left(self) -> None:
        if self.task is None:  # stopped meanwhile
            return
        self.gone = True
        self.task.cancel()

    def _drained(self) -> None:
        if self.task is None:  # stopped meanwhile
            return
        self.shut_down = True
        self.task.cancel()

    def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
        if self._connection is not None:
            self._connection.unsubscribe_lost(self._left)
        if self._shutdown is not None:
            self._shutdown.unsubscribe(self._drained)
        self._watcher = self._shutdown = self._connection = self.task = None

    def absorb(self) -> bool:
        """After a CancelledError: True (and the cancellation undone) if it was this watch's, for a client that
        left or for the end of the shutdown drain (`shut_down`)."""
        if not (self.gone or self.shut_down):
            return False
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
        return True
