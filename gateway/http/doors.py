"""What every front door shares: read the body, parse it into the pipeline's `InferenceRequest`, serve it, render
the answer.

The OpenAI doors (gateway/http/openai.py) answer in the canonical shape itself. A translating door (Anthropic's
Messages, OpenAI's Responses) gives a `Renderer`: the pipeline still serves an OpenAI chat request and answers in
OpenAI's chat shape, and the renderer turns the complete answer, or each event of the stream, into the door's
own format. Each stream chunk reaches the renderer already parsed: it is the request's `reshape`, which the relay
calls with the chunk it parsed (one parse per event); what the pipeline itself adds in OpenAI's shape (an error
event, [DONE]) is rendered by `rendered_events`. Errors keep their status; the door's guard renders them in the
door's shape.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Protocol

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gateway.auth.principal import Principal
from gateway.errors import shutting_down
from gateway.http.body import read_json_object
from gateway.http.disconnect import DisconnectWatch
from gateway.http.guard import Handler
from gateway.http.record import RequestRecord
from gateway.http.responses import EventStreamResponse, json_bytes
from gateway.pipeline.request import Answer, Context, InferenceRequest, StreamAnswer
from gateway.pipeline.serve import serve
from gateway.providers.sse import gateway_error_event
from gateway.state import Gateway
from gateway.types import Json

SHUTTING_DOWN_EVENT = gateway_error_event(shutting_down())

# A front door's parser: the HTTP request, its JSON body and size, the caller -> the pipeline's request.
Parse = Callable[[Request, Json, int, Principal], InferenceRequest]


class Renderer(Protocol):
    """A translating door's rendering of one request's answer (one object per request: streams need state)."""

    # Headers the door adds to its answer (say, the built-in tools left out of the provider call).
    headers: dict[str, str]

    def reply(self, chat: Json) -> Json:
        """A complete OpenAI chat completion -> the door's answer."""

    def chunk(self, chunk: Json) -> bytes:
        """One OpenAI chat completion chunk -> the door's SSE bytes (b"" for none). The pipeline's last chunk
        before [DONE] has empty `choices`, the settled `usage` and `x_gateway` (the cost)."""

    def end(self) -> bytes:
        """The stream's [DONE] arrived (after the usage chunk, if the provider reported usage): the door's end."""

    def error(self, error: Json) -> bytes:
        """An OpenAI-style error object (`{"message", "type", "code", "param"}`) ended the stream: the door's
        error event. Nothing follows it."""


# A translating door's parser: the request for the pipeline and the renderer of its answer.
TranslatedParse = Callable[[Request, Json, int, Principal], tuple[InferenceRequest, Renderer]]


def front_door(parse: Parse) -> Handler:
    """A handler that reads the body, parses it with `parse`, serves it through the pipeline and renders the answer."""

    async def handler(gateway: Gateway, http: Request, principal: Principal) -> Response:
        body, size = await read_json_object(http, gateway.settings.max_body_bytes)
        return await serve_http(gateway, http, parse(http, body, size, principal))

    return handler


def translated_door(parse: TranslatedParse) -> Handler:
    """`front_door` for a door with its own wire format: the answer goes through the parser's renderer."""

    async def handler(gateway: Gateway, http: Request, principal: Principal) -> Response:
        body, size = await read_json_object(http, gateway.settings.max_body_bytes)
        request, renderer = parse(http, body, size, principal)
        return await serve_http(gateway, http, request, renderer)

    return handler


async def _serve(gateway: Gateway, http: Request, request: InferenceRequest) -> Answer | StreamAnswer:
    """Run the pipeline, watching for the client leaving and for the end of the drain time at shutdown."""
    record: RequestRecord = http.state.record
    record.requested_model, record.stream = request.params.model, request.params.stream
    record.endpoint = request.endpoint
    http.state.disconnect = watch = DisconnectWatch(http.receive, gateway.drain_over, http.scope)
    try:
        return await serve(gateway, request, Context(record, lambda: watch.shut_down))
    finally:
        watch.stop()


async def serve_http(
    gateway: Gateway, http: Request, request: InferenceRequest, renderer: Renderer | None = None
) -> Response:
    """Serve a request: an answer as JSON, a stream as server-sent events (which watches on its own from then
    on), rendered by `renderer` when the door has its own format."""
    if renderer is not None and request.params.stream:
        request.params.include_usage = True  # the renderer reads the settled usage from the pipeline's last chunk
        request.reshape = renderer.chunk  # each chunk, as the relay parsed it, into the door's events
    answer = await _serve(gateway, http, request)
    if renderer is None:
        if isinstance(answer, Answer):
            return json_bytes(answer.body, headers=answer.headers)
        return EventStreamResponse(
            answer.events, headers=answer.headers, stop=gateway.drain_over, farewell=SHUTTING_DOWN_EVENT
        )
    if isinstance(answer, Answer):
        body = orjson.dumps(renderer.reply(orjson.loads(answer.body)))
        return json_bytes(body, headers={**answer.headers, **renderer.headers})
    return EventStreamResponse(
        rendered_events(answer.events, renderer),
        headers={**answer.headers, **renderer.headers},
        stop=gateway.drain_over,
        farewell=lambda: renderer.error(orjson.loads(shutting_down().body())["error"]),
    )


async def rendered_events(events: AsyncIterator[bytes], renderer: Renderer) -> AsyncIterator[bytes]:
    """The stream in the door's format. The chunks are the door's events already (the relay called the renderer);
    an event in OpenAI's shape (`data: ...` at the start of an event: the relay's or the settlement's error, the
    end's [DONE], or a chunk of an adapter that did not reshape) goes through `renderer` here. Every piece the
    pipeline yields holds whole events, so pieces are split, not buffered; a piece without OpenAI events (the
    door's own start with `event:`) passes as it is."""
    try:
        async for piece in events:
            if not piece.startswith(b"data:") and b"\n\ndata:" not in piece:
                yield piece
                continue
            out: list[bytes] = []
            for event in piece.split(b"\n\n"):
                if not event.startswith(b"data:"):
                    if event:
                        out.append(event + b"\n\n")  # one of the door's own events
                    continue
                payload = event[5:].strip()
                if payload == b"[DONE]":
                    out.append(renderer.end())
                    continue
                try:
                    chunk = orjson.loads(payload)
                except orjson.JSONDecodeError:
                    continue  # the relay sends only JSON it parsed; nothing else is an event
                if not isinstance(chunk, dict):
                    continue
                if "error" in chunk and not chunk.get("choices"):
                    error = chunk["error"]
                    out.append(renderer.error(error if isinstance(error, dict) else {"message": str(error)}))
                    continue
                out.append(renderer.chunk(chunk))
            data = b"".join(out)
            if data:
                yield data
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()  # the pipeline's wrapper settles a stream cut here
