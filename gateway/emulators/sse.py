"""Writing a server-sent-event stream, with pacing and stream faults applied."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.emulators.faults import DropConnection, Fault
from gateway.emulators.options import EmulatorOptions

MALFORMED_FRAME = b'data: {"id": "chatcmpl-malformed", "choices": [{"delta": {"content": "\n\n'
PAD_CHUNK_BYTES = 64 * 1024


@dataclass
class Event:
    data: Any  # dict: sent as JSON; str: sent verbatim (the "[DONE]" sentinel)
    content: bool = False  # carries generated content: counts towards cut=N
    final: bool = False  # carries finish_reason or usage: never sent when a cut is due


def frame(data: Any) -> bytes:
    payload = data.encode() if isinstance(data, str) else orjson.dumps(data)
    return b"data: " + payload + b"\n\n"


async def sleep_ms(ms: float) -> None:
    if ms > 0:
        await asyncio.sleep(ms / 1000)


def _with_text(event: Event, extra: str, *, finish: bool = True) -> Event:
    """A copy of a content event whose first choice's text is longer by `extra`."""
    data = dict(event.data)
    choice = dict(data["choices"][0])
    choice["delta"] = {**choice["delta"], "content": choice["delta"].get("content", "") + extra}
    if not finish:
        choice["finish_reason"] = None
        data.pop("usage", None)
    data["choices"] = [choice, *data["choices"][1:]]
    return Event(data, content=event.content, final=event.final and finish)


def _is_text(event: Event) -> bool:
    if not (event.content and isinstance(event.data, dict) and event.data.get("choices")):
        return False
    delta = event.data["choices"][0].get("delta")
    return isinstance(delta, dict) and isinstance(delta.get("content"), str)


def padded(events: list[Event], fault: Fault) -> list[Event]:
    """Apply big_event (one huge chunk) and pad (many 64 KiB chunks) to a stream's events."""
    if fault.big_event is None and fault.pad is None:
        return events
    first = next((i for i, event in enumerate(events) if _is_text(event)), None)
    if first is None:
        return events
    events = list(events)
    if fault.big_event is not None:
        events[first] = _with_text(events[first], "x" * fault.big_event)
    if fault.pad is not None:
        full, rest = divmod(fault.pad, PAD_CHUNK_BYTES)
        sizes = [PAD_CHUNK_BYTES] * full + ([rest] if rest else [])
        events[first:first] = [_with_text(events[first], "y" * size, finish=False) for size in sizes]
    return events


async def sse_body(
    events: list[Event],
    fault: Fault,
    options: EmulatorOptions,
    error_event: Any,
    stopping: asyncio.Event | None = None,
) -> AsyncIterator[bytes]:
    """Yield the frames of `events`, applying first_token / chunk delays and stream faults.

    cut=N: DropConnection after N content chunks (or before any final chunk), so the
    client sees a chunked body end without finish_reason, usage or [DONE].
    malformed=N: one invalid-JSON frame after N frames, then carry on.
    stream_error=N: after N frames an in-band `error_event` ends the stream.
    malformed_all: every frame but [DONE] is cut in half (invalid JSON).
    stall=N: after N frames nothing more is sent until the client leaves or `stopping` is set.
    big_event / pad: see `padded`.
    """
    content_sent = 0
    for index, event in enumerate(padded(events, fault)):
        await sleep_ms(options.first_token_ms + fault.first_token_ms if index == 0 else options.chunk_delay_ms)
        if fault.cut is not None and (event.final or (event.content and content_sent >= fault.cut)):
            raise DropConnection()
        if fault.stream_error is not None and index == fault.stream_error:
            yield frame(error_event)
            return
        if fault.stall is not None and index == fault.stall:
            await (stopping or asyncio.Event()).wait()  # the client leaving cancels this (Starlette)
            raise DropConnection()
        if fault.malformed is not None and index == fault.malformed:
            yield MALFORMED_FRAME
        data = frame(event.data)
        if fault.malformed_all and not isinstance(event.data, str):
            data = data[: len(data) // 2] + b"\n\n"
        yield data
        content_sent += event.content
