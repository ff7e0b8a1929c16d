"""Responses: JSON bytes, OpenAI-style errors, and a streaming response that notices disconnects."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from gateway.errors import GatewayError
from gateway.http.disconnect import DisconnectWatch
from gateway.state import Drain


def json_bytes(body: bytes, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(body, status_code=status, headers=headers, media_type="application/json")


def error_response(error: GatewayError) -> Response:
    return json_bytes(error.body(), error.status, error.headers)


class EventStreamResponse(Response):
    """Streams SSE bytes and cancels the producer as soon as the client goes away.

    Starlette's StreamingResponse only notices a gone client when a write fails,
    which never happens while the provider is silent; here a DisconnectWatch waits
    for `http.disconnect` and cancels the streaming, so a hung upstream request
    is abandoned at once. Each piece is sent as soon as it exists: holding one
    back to save the final write would delay every token by one chunk.
    """

    media_type = "text/event-stream"

    def __init__(
        self,
        events: AsyncIterator[bytes],
        headers: Mapping[str, str] | None = None,
        stop: Drain | None = None,
        farewell: bytes | Callable[[], bytes] = b"",
    ) -> None:
        self.events = events
        self.status_code = 200
        self.background = None
        self.on_close: Callable[[], None] | None = None  # after the last byte, or the client left
        # Set when the gateway shuts down and its drain time is over: the stream ends with `farewell` (or what it
        # returns then: a door whose events are numbered renders it from the stream's state at that moment).
        self.stop, self.farewell = stop, farewell
        self.init_headers({"cache-control": "no-cache", "x-accel-buffering": "no", **(headers or {})})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The same watch as a request waiting on its provider: a client that leaves, or the end of the drain time
        # at shutdown (`stop`), cancels the streaming at once.
        watch = DisconnectWatch(receive, self.stop, scope)
        try:
            await self._produce(send)
        except asyncio.CancelledError:
            if not watch.absorb():
                raise
        finally:
            watch.stop()
            task = asyncio.current_task()
            if (watch.gone or watch.shut_down) and task is not None and task.cancelling():
                task.uncancel()  # ours, arriving after the last byte: not an error
            aclose = getattr(self.events, "aclose", None)
            try:
                if aclose is not None:
                    await aclose()
                if watch.shut_down and not watch.gone:
                    # The producer has ended (its ledger row is being written): say why, then end the body.
                    farewell = self.farewell() if callable(self.farewell) else self.farewell
                    await send({"type": "http.response.body", "body": farewell, "more_body": True})
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
