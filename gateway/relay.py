"""Relay a provider's server-sent events to the client.

Each event is parsed once with orjson (about a microsecond for a token-sized
chunk) so that usage, finish reasons and malformed chunks are seen; it is
re-encoded only when the adapter changed it, otherwise the provider's bytes go
out as they came. The provider's usage is always captured; the client gets a
usage chunk, in OpenAI's shape (last, with empty `choices`), only if it asked.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, AsyncIterator, Callable

import aiohttp
import orjson

from gateway.errors import GatewayError
from gateway.providers.base import ChunkReshaper, Json, StreamOutcome

if TYPE_CHECKING:
    from gateway.providers.openai_compatible import ChunkAction

DONE = b"data: [DONE]\n\n"


def sse(obj: Json) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def error_event(message: str, code: str) -> bytes:
    return sse({"error": {"message": message, "type": "upstream_error", "param": None, "code": code}})


async def relay_events(
    response: aiohttp.ClientResponse,
    provider: str,
    fix_chunk: Callable[[Json, StreamOutcome], "ChunkAction"],
    outcome: StreamOutcome,
    include_usage: bool,
    reshape: ChunkReshaper | None = None,
) -> AsyncIterator[bytes]:
    """Yield SSE bytes for the client; fill `outcome` as the stream goes."""
    from gateway.providers.openai_compatible import ChunkAction

    buffer = b""
    meta: Json = {}
    try:
        async for data in response.content.iter_any():
            if b"\r" in data:
                data = data.replace(b"\r\n", b"\n")
            buffer += data
            # Everything that arrived in one read leaves in one write.
            out: list[bytes] = []
            while (end := buffer.find(b"\n\n")) >= 0:
                event, buffer = buffer[:end], buffer[end + 2 :]
                payload = _data_of(event)
                if payload is None:
                    continue
                if payload == b"[DONE]":
                    outcome.completed = True
                    async for event in finish(meta, outcome, include_usage, reshape):
                        out.append(event)
                    yield b"".join(out)
                    return
                try:
                    chunk = orjson.loads(payload)
                except orjson.JSONDecodeError:
                    outcome.malformed_chunks += 1
                    continue
                if not isinstance(chunk, dict):
                    outcome.malformed_chunks += 1
                    continue
                if "error" in chunk and not chunk.get("choices"):
                    outcome.error = "upstream_error"
                    message = _error_text(chunk["error"])
                    out.append(error_event(f"{provider} failed mid-stream: {message}", "upstream_stream_error"))
                    yield b"".join(out)
                    return
                if not meta and "id" in chunk:
                    meta = {"id": chunk.get("id"), "created": chunk.get("created"), "model": chunk.get("model")}
                action = fix_chunk(chunk, outcome)
                if action is ChunkAction.DROP:
                    continue
                if outcome.first_chunk_at is None:
                    outcome.first_chunk_at = time.monotonic()
                outcome.chunks += 1
                count_text(chunk, outcome)
                if reshape is not None:
                    out.append(sse(reshape(chunk)))
                elif action is ChunkAction.CHANGED:
                    out.append(sse(chunk))
                else:
                    out.append(b"data: " + payload + b"\n\n")
            if out:
                yield b"".join(out)
        outcome.error = "stream_cut"
    except asyncio.TimeoutError:
        outcome.error = "timeout"
    except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError):
        outcome.error = "stream_cut"
    except asyncio.CancelledError:
        outcome.error = "client_gone"
        raise
    finally:
        # Closing (not releasing) the connection is what tells the provider to stop generating.
        if not outcome.completed:
            response.close()
        else:
            response.release()
    text = {
        "timeout": f"{provider} stopped sending before the stream finished (timeout)",
        "stream_cut": f"{provider} closed the stream before it finished",
    }[outcome.error]
    yield error_event(text, "upstream_" + outcome.error)


async def finish(
    meta: Json, outcome: StreamOutcome, include_usage: bool, reshape: ChunkReshaper | None
) -> AsyncIterator[bytes]:
    """The end of a good stream: settle (via `on_finish`), then the usage chunk if asked, then [DONE]. A
    settlement that could not be made durable ends the stream with its error event instead."""
    try:
        extra = await outcome.on_finish(outcome) if outcome.on_finish is not None else None
    except GatewayError as error:
        outcome.error = "unrecorded"
        yield sse({"error": {"message": error.message, "type": error.type, "param": None, "code": error.code}})
        return
    if include_usage and outcome.usage is not None:
        chunk = _usage_chunk(meta, outcome, reshape)
        if extra:
            chunk["x_gateway"] = extra
        yield sse(chunk)
    yield DONE


def count_text(chunk: Json, outcome: StreamOutcome) -> None:
    for choice in chunk.get("choices") or ():
        delta = choice.get("delta") if isinstance(choice, dict) else None
        if isinstance(delta, dict):
            for field in ("content", "reasoning_content"):
                text = delta.get(field)
                if isinstance(text, str):
                    outcome.completion_chars += len(text)
                    if outcome.transcript is not None:
                        outcome.transcript.append(text)
            for call in delta.get("tool_calls") or ():
                if isinstance(call, dict) and isinstance(call.get("function"), dict):
                    outcome.completion_chars += len(str(call["function"].get("arguments") or ""))


def _data_of(event: bytes) -> bytes | None:
    if event.startswith(b"data:"):
        if b"\ndata:" not in event:
            return event[5:].strip()
    lines = [line[5:].strip() for line in event.split(b"\n") if line.startswith(b"data:")]
    return b"\n".join(lines) if lines else None


def _error_text(error: object) -> str:
    if isinstance(error, dict):
        return str(error.get("message", error))
    return str(error)


def _usage_chunk(meta: Json, outcome: StreamOutcome, reshape: ChunkReshaper | None) -> Json:
    assert outcome.usage is not None
    chunk = {
        "id": meta.get("id"),
        "object": "chat.completion.chunk",
        "created": meta.get("created") or int(time.time()),
        "model": meta.get("model"),
        "choices": [],
        "usage": outcome.usage.as_openai(),
    }
    return reshape(chunk) if reshape is not None else chunk
