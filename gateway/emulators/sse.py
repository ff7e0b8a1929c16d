"""Writing a server-sent-event stream, with pacing and stream faults applied."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, AsyncIterator

import orjson

from gateway.emulators.faults import DropConnection, Fault
from gateway.emulators.options import EmulatorOptions

MALFORMED_FRAME = b'data: {"id": "chatcmpl-malformed", "choices": [{"delta": {"content": "\n\n'


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


async def sse_body(
    events: list[Event], fault: Fault, options: EmulatorOptions, error_event: Any
) -> AsyncIterator[bytes]:
    """Yield the frames of `events`, applying first_token / chunk delays and stream faults.

    cut=N: DropConnection after N content chunks (or before any final chunk), so the
    client sees a chunked body end without finish_reason, usage or [DONE].
    malformed=N: one invalid-JSON frame after N frames, then carry on.
    stream_error=N: after N frames an in-band `error_event` ends the stream.
    """
    content_sent = 0
    for index, event in enumerate(events):
        await sleep_ms(options.first_token_ms + fault.first_token_ms if index == 0 else options.chunk_delay_ms)
        if fault.cut is not None and (event.final or (event.content and content_sent >= fault.cut)):
            raise DropConnection()
        if fault.stream_error is not None and index == fault.stream_error:
            yield frame(error_event)
            return
        if fault.malformed is not None and index == fault.malformed:
            yield MALFORMED_FRAME
        yield frame(event.data)
        content_sent += event.content
