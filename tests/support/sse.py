"""Server-sent events for the tests: one parser, as the HTML standard reads an event stream.

Lines end in LF, CRLF or CR; a blank line ends an event; a line starting with `:` is a comment; a field's value
loses one leading space; an event's data lines are joined with LF, and an event with no data line carries nothing.
An OpenAI stream is data-only events, JSON chunks then the string `[DONE]`.
"""

from __future__ import annotations

import json
import re
from typing import Any

DONE = "[DONE]"
_LINE_END = re.compile(r"\r\n|\r|\n")


def frames(raw: bytes | str, *, data_only: bool = False) -> list[str]:
    """The data of every event, in order. `data_only`: assert that no event has a field other than `data` (an
    OpenAI-style stream has none)."""
    text = raw.decode() if isinstance(raw, bytes) else raw
    found: list[str] = []
    data: list[str] | None = None
    for line in _LINE_END.split(text):
        if line == "":
            if data is not None:
                found.append("\n".join(data))
            data = None
            continue
        if line.startswith(":"):
            continue
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            data = [*(data or []), value]
        else:
            assert not data_only, f"an SSE field that is not data: {line!r}"
    # An event not ended by a blank line is not dispatched (the stream was cut mid-event).
    return found


def events(raw: bytes | str, *, data_only: bool = False) -> list[Any]:
    """Every event's data decoded as JSON, and the string '[DONE]' as it is."""
    return [frame if frame == DONE else json.loads(frame) for frame in frames(raw, data_only=data_only)]


def chunks(raw: bytes | str) -> list[dict[str, Any]]:
    """The JSON events of a stream (without '[DONE]')."""
    return [event for event in events(raw) if event != DONE]


def text(decoded: list[Any]) -> str:
    """The string content deltas of choice 0 joined (thinking arrays, usage-only and error events skipped)."""
    pieces = []
    for event in decoded:
        if not isinstance(event, dict) or not event.get("choices"):
            continue
        delta = event["choices"][0].get("delta")
        if isinstance(delta, dict) and isinstance(delta.get("content"), str):
            pieces.append(delta["content"])
    return "".join(pieces)
