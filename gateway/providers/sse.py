"""Relay a provider's server-sent events to the client.

Each event is parsed once with orjson (about a microsecond for a token-sized
chunk) so that usage, finish reasons and malformed chunks are seen; it is
re-encoded only when the adapter changed it, otherwise the provider's bytes go
out as they came. The provider's usage is always captured. A good stream is
relayed up to (not including) its [DONE]: the pipeline settles it first, then
sends `stream_end` (the usage chunk, in OpenAI's shape, last, with empty
`choices`, only if the client asked; then [DONE]).

Buffering is linear in the bytes received: a read is scanned once from where
the previous scan stopped, and an event split over many reads is kept as a list
of pieces joined once, when its end arrives. One event may be at most
`max_event_bytes` (GATEWAY_MAX_SSE_EVENT_BYTES); past it the stream ends with
`upstream_event_too_large`.

A stream that goes wrong ends with one OpenAI-style error event and no [DONE]:
`upstream_stream_error` (the provider's in-band error, see `in_band_error`),
`upstream_malformed` (nothing valid to relay, or mostly garbage),
`upstream_event_too_large`, `upstream_stream_cut`, `upstream_timeout`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import aiohttp
import orjson

from gateway.errors import GatewayError
from gateway.providers.base import ChunkAction, ChunkReshaper, StreamOutcome, usage_from
from gateway.providers.upstream_errors import provider_message
from gateway.types import Json

DONE = b"data: [DONE]\n\n"
DEFAULT_MAX_EVENT_BYTES = 16 * 1024 * 1024  # Settings.max_sse_event_bytes; a token chunk is ~200 bytes
# Malformed events are skipped (one bad frame should not cost the answer), until there are more than this many
# and more of them than valid chunks: then the provider is sending garbage and the stream is ended.
MALFORMED_TOLERANCE = 8


def sse(obj: Json) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def encoded(chunk: Json, reshape: ChunkReshaper | None) -> bytes:
    """A stream chunk on the wire: OpenAI's chunk, the door's reshaped chunk, or the door's own events."""
    if reshape is None:
        return sse(chunk)
    shaped = reshape(chunk)
    return shaped if isinstance(shaped, bytes) else sse(shaped)


def error_event(message: str, code: str) -> bytes:
    return sse({"error": {"message": message, "type": "upstream_error", "param": None, "code": code}})


def gateway_error_event(error: GatewayError) -> bytes:
    """A GatewayError as a stream's last event (the same body a non-streaming request would get)."""
    return b"data: " + error.body() + b"\n\n"


def in_band_error(chunk: Json) -> bool:
    """Whether a stream event is the provider's error instead of a chunk. The shapes seen:

    - Mistral: `{"object": "error", "message": ..., "type": ..., "param": ..., "code": ...}`, its error body
      (../shared/reference/providers.md, Mistral "Errors"), also sent as a stream event;
    - Moonshot: `{"error": {"message": ..., "type": ...}}` (providers.md, Moonshot "Streaming": "A mid-stream
      failure can arrive as data: {"error":{...}}");
    - OpenAI-compatible servers (vLLM, OpenRouter, ...): `{"error": {...}}` or `{"error": "text"}`.

    A chunk with choices is a chunk, whatever else it carries.
    """
    return ("error" in chunk or chunk.get("object") == "error") and not chunk.get("choices")


async def relay_events(
    response: aiohttp.ClientResponse,
    provider: str,
    fix_chunk: Callable[[Json, StreamOutcome], ChunkAction],
    outcome: StreamOutcome,
    reshape: ChunkReshaper | None = None,
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
) -> AsyncIterator[bytes]:
    """Yield SSE bytes for the client; fill `outcome` as the stream goes. A good stream stops before its end
    (`outcome.completed`): the pipeline settles it, then sends `stream_end`."""
    pending: list[bytes] = []  # the start of an event whose end has not arrived yet, as received
    pending_size = 0
    carried_cr = False  # a read that ended in "\r": its "\n" may be the next read's first byte
    meta: Json = {}
    try:
        async for data in response.content.iter_any():
            if carried_cr:
                data, carried_cr = b"\r" + data, False
            if b"\r" in data:
                if data.endswith(b"\r"):
                    data, carried_cr = data[:-1], True
                data = data.replace(b"\r\n", b"\n")
            if not data:
                continue
            events: list[bytes] = []
            start = 0
            if pending:
                # Only the new bytes are searched (and the one boundary): what is pending holds no "\n\n".
                if pending[-1][-1:] == b"\n" and data[:1] == b"\n":
                    events.append(b"".join(pending)[:-1])
                    start = 1
                else:
                    end = data.find(b"\n\n")
                    if end < 0:
                        pending.append(data)
                        pending_size += len(data)
                        if _over(pending_size, data, max_event_bytes):
                            yield _too_large(provider, outcome, max_event_bytes)
                            return
                        continue
                    pending.append(data[:end])
                    events.append(b"".join(pending))
                    start = end + 2
                pending, pending_size = [], 0
            while (end := data.find(b"\n\n", start)) >= 0:
                events.append(data[start:end])
                start = end + 2
            if start < len(data):
                pending.append(data[start:] if start else data)
                pending_size = len(data) - start
                if _over(pending_size, data, max_event_bytes):
                    yield _too_large(provider, outcome, max_event_bytes)
                    return
            # Everything that arrived in one read leaves in one write.
            out: list[bytes] = []
            failure: bytes | None = None
            for event in events:
                if len(event) > max_event_bytes:
                    failure = _too_large(provider, outcome, max_event_bytes)
                    break
                payload = _data_of(event)
                if payload is None:
                    continue
                if payload == b"[DONE]":
                    if outcome.malformed_chunks and not outcome.chunks:
                        failure = _malformed(provider, outcome)
                        break
                    # The end of a good stream: what follows (the settled usage chunk, [DONE]) is the pipeline's.
                    outcome.completed, outcome.meta = True, meta
                    if out:
                        yield b"".join(out)
                    return
                try:
                    chunk = orjson.loads(payload)
                except orjson.JSONDecodeError:
                    chunk = None
                if not isinstance(chunk, dict) or not (isinstance(chunk.get("choices"), list) or "usage" in chunk):
                    if isinstance(chunk, dict) and in_band_error(chunk):
                        outcome.error = "upstream_error"
                        message, _, code = provider_message(payload)
                        detail = f" (code {code})" if code else ""
                        failure = error_event(
                            f"{provider} failed mid-stream: {message}{detail}", "upstream_stream_error"
                        )
                        break
                    # Not JSON, or JSON that is no chunk (OpenAI's chunks always carry `choices`; a usage-only
                    # chunk is accepted for servers that leave them out): skipped, and counted.
                    outcome.malformed_chunks += 1
                    if outcome.malformed_chunks > MALFORMED_TOLERANCE and outcome.malformed_chunks > outcome.chunks:
                        failure = _malformed(provider, outcome)
                        break
                    continue
                if "error" in chunk and in_band_error(chunk):  # `{"error": ..., "choices": []}`
                    outcome.error = "upstream_error"
                    message, _, code = provider_message(payload)
                    failure = error_event(f"{provider} failed mid-stream: {message}", "upstream_stream_error")
                    break
                if not meta and "id" in chunk:
                    meta = {"id": chunk.get("id"), "created": chunk.get("created"), "model": chunk.get("model")}
                action = fix_chunk(chunk, outcome)
                if outcome.finish_reason == "error":
                    # Mistral's finish_reason "error" (providers.md, Mistral "Chat completions": stop, length,
                    # model_length, error, tool_calls) is no OpenAI value: the answer failed, say so.
                    outcome.error = "upstream_error"
                    failure = error_event(f"{provider} ended the answer with an error", "upstream_stream_error")
                    break
                if action is ChunkAction.DROP:
                    continue
                relayed(chunk, outcome)
                if reshape is not None:
                    out.append(encoded(chunk, reshape))
                elif action is ChunkAction.CHANGED:
                    out.append(sse(chunk))
                else:
                    # (a payload of several `data:` lines was joined with "\n": one line again, re-encoded)
                    out.append(b"data: " + payload + b"\n\n" if b"\n" not in payload else sse(chunk))
            if failure is not None:
                out.append(failure)
                yield b"".join(out)
                return
            if out:
                yield b"".join(out)
        outcome.error = "stream_cut"
    except TimeoutError:
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


def _over(pending_size: int, last: bytes, limit: int) -> bool:
    """Whether an unfinished event is over `limit`: a trailing "\n" may be the first half of the blank line
    that ends it, which is not part of the event (so the limit does not depend on where a read was cut)."""
    return pending_size - (last[-1:] == b"\n") > limit


def _malformed(provider: str, outcome: StreamOutcome) -> bytes:
    # "malformed" is counted by the HTTP layer as gateway_upstream_errors_total{kind="malformed"}.
    outcome.error = "malformed"
    return error_event(
        f"{provider} sent a stream of malformed events ({outcome.malformed_chunks} malformed, {outcome.chunks} valid)",
        "upstream_malformed",
    )


def _too_large(provider: str, outcome: StreamOutcome, limit: int) -> bytes:
    # Counted as a malformed event: nothing a client could use is that large in one event.
    outcome.malformed_chunks += 1
    outcome.error = "malformed"
    return error_event(
        f"{provider} sent a stream event larger than {limit} bytes (GATEWAY_MAX_SSE_EVENT_BYTES)",
        "upstream_event_too_large",
    )


def stream_end(outcome: StreamOutcome, include_usage: bool, reshape: ChunkReshaper | None, extra: Json | None) -> bytes:
    """The end of a good stream, once it is settled: the usage chunk if the client asked (with `extra` as
    `x_gateway`: the settled cost), then [DONE]."""
    if not include_usage or outcome.usage is None:
        return DONE
    chunk = _usage_chunk(outcome.meta, outcome)
    if extra:
        chunk["x_gateway"] = extra  # (a door's reshaper passes it on, or renders it in its own events)
    return encoded(chunk, reshape) + DONE


def took(chunk: Json, outcome: StreamOutcome) -> bool:
    """The relay's bookkeeping for a chunk an adapter holds as an object rather than bytes (litellm's, the mock's):
    its id/created/model, its usage (taken out: the pipeline sends the usage chunk), finish reason, first-chunk
    time and text. False for a chunk without choices (usage only), which is not relayed."""
    if not outcome.meta:
        outcome.meta = {k: chunk.get(k) for k in ("id", "created", "model") if k in chunk}
    if "usage" in chunk:
        outcome.usage = usage_from(chunk.pop("usage")) or outcome.usage
    choices = chunk.get("choices")
    if not choices:
        return False
    for choice in choices:
        if isinstance(choice, dict) and choice.get("finish_reason"):
            outcome.finish_reason = choice["finish_reason"]
    relayed(chunk, outcome)
    return True


def relayed(chunk: Json, outcome: StreamOutcome) -> None:
    """A chunk goes to the client: the time of the first, the count, and the text (an estimate's basis)."""
    if outcome.first_chunk_at is None:
        outcome.first_chunk_at = time.monotonic()
    outcome.chunks += 1
    count_text(chunk, outcome)


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
    """The data of one event. A one-line `data:` event (every provider's chunks) costs one memchr and one copy,
    whatever its size (a search for b"\\ndata:" took 0.45 s on an 80 MB event); JSON ignores the spaces a
    longer payload may keep, and short ones are stripped so that `[DONE]` is recognised."""
    if event.startswith(b"data:") and b"\n" not in event:
        payload = event[6:] if event[5:6] == b" " else event[5:]
        return payload.strip() if len(payload) < 16 else payload
    lines = [line[5:].strip() for line in event.split(b"\n") if line.startswith(b"data:")]
    return b"\n".join(lines) if lines else None


def _usage_chunk(meta: Json, outcome: StreamOutcome) -> Json:
    assert outcome.usage is not None
    chunk: Json = {
        # OpenAI's schema requires strings: a stream whose chunks carried no id or model still gets them.
        "id": meta.get("id") or "chatcmpl-usage",
        "object": "chat.completion.chunk",
        "created": meta.get("created") or int(time.time()),
        "model": meta.get("model") or "",
        "choices": [],
        "usage": outcome.usage.as_openai(),
    }
    return chunk
