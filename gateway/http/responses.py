"""Responses: JSON bytes, OpenAI-style errors, and a streaming response that notices disconnects."""

from __future__ import annotations

import asyncio
from typing import AsyncIterator, Callable, Mapping

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from gateway.errors import GatewayError


def json_bytes(body: bytes, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(body, status_code=status, headers=headers, media_type="application/json")


def error_response(error: GatewayError) -> Response:
    return json_bytes(error.body(), error.status, error.headers)


class EventStreamResponse(Response):
    """Streams SSE bytes and cancels the producer as soon as the client goes away.

    Starlette's StreamingResponse only notices a gone client when a write fails,
    which never happens while the provider is silent; here a watcher task waits
    for `http.disconnect` and cancels the streaming, so a hung upstream request
    is abandoned at once. Each piece is sent as soon as it exists: holding one
    back to save the final write would delay every token by one chunk.
    """

    media_type = "text/event-stream"

    def __init__(
        self, events: AsyncIterator[bytes], headers: Mapping[str, str] | None = None,
        stop: asyncio.Event | None = None, farewell: bytes = b"",
    ) -> None:
        self.events = events
        self.status_code = 200
        self.background = None
        self.on_close: Callable[[], None] | None = None  # after the last byte, or the client left
        # Set when the gateway shuts down and its drain time is over: the stream ends with `farewell`.
        self.stop, self.farewell = stop, farewell
        self.init_headers({"cache-control": "no-cache", "x-accel-buffering": "no", **(headers or {})})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        task = asyncio.current_task()
        assert task is not None
        gone, stopped = asyncio.Event(), asyncio.Event()

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()
            task.cancel()

        async def shutdown(stop: asyncio.Event) -> None:
            await stop.wait()
            stopped.set()
            task.cancel()

        watchers = [asyncio.ensure_future(watch())]
        if self.stop is not None:
            watchers.append(asyncio.ensure_future(shutdown(self.stop)))
        try:
            await self._produce(send)
        except asyncio.CancelledError:
            if not (gone.is_set() or stopped.is_set()):
                raise
        finally:
            for watcher in watchers:
                watcher.cancel()
            if (gone.is_set() or stopped.is_set()) and task.cancelling():
                task.uncancel()  # the cancellation was ours (a client that left, a shutdown): not an error
            aclose = getattr(self.events, "aclose", None)
            try:
                if aclose is not None:
                    await aclose()
                if stopped.is_set() and not gone.is_set():
                    # The producer has ended (its ledger row is being written): say why, then end the body.
                    await send({"type": "http.response.body", "body": self.farewell, "more_body": True})
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
            except OSError:
                pass  # the client went away meanwhile
            finally:
                if self.on_close is not None:
                    self.on_close()

    async def _produce(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        async for chunk in self.events:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
