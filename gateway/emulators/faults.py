"""Fault injection: parse the fault syntax and keep the queue of pending faults.

Syntax: a comma-separated list of `latency=MS`, `first_token=MS`, `status=CODE`,
`retry_after=S`, `cut=N`, `malformed=N`, `malformed_all`, `stream_error=N`, `stall=N`,
`big_event=BYTES`, `pad=BYTES`, `html`, `hang`, `error=TYPE` (with `status`: the provider's error type, e.g.
Moonshot's `exceeded_current_quota_error`), e.g. "status=429,retry_after=3" or "first_token=200,cut=5". Applying the faults is the job of the request pipeline
(app.py) and the stream writer (sse.py).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

_INT_FIELDS = {
    "status": "status",
    "cut": "cut",
    "malformed": "malformed",
    "stream_error": "stream_error",
    "stall": "stall",
    "big_event": "big_event",
    "pad": "pad",
}
_FLAGS = ("hang", "html", "malformed_all")
_FLOAT_FIELDS = {"latency": "latency_ms", "first_token": "first_token_ms", "retry_after": "retry_after"}
_STR_FIELDS = {"error": "error_type"}
MAX_QUEUED = 1000  # queue entries; a runaway test cannot grow the emulator without bound


class FaultSyntaxError(ValueError):
    pass


@dataclass(frozen=True)
class Fault:
    latency_ms: float = 0
    first_token_ms: float = 0
    status: int | None = None
    retry_after: float = 1
    cut: int | None = None  # stream: content chunks before the connection drops; non-stream: drop at once
    malformed: int | None = None  # stream: chunks before one invalid-JSON chunk
    stream_error: int | None = None  # stream: chunks before an in-band error event ends the stream
    malformed_all: bool = False  # stream: every chunk is sent as invalid JSON (the [DONE] stays)
    stall: int | None = None  # stream: frames sent before the emulator stops sending, connection left open
    big_event: int | None = None  # stream: the first content chunk carries this many more bytes of text
    pad: int | None = None  # this many more bytes of text: in the message, or in 64 KiB chunks of the stream
    html: bool = False  # a 200 with an HTML page (a proxy's or a captive portal's) instead of the answer
    hang: bool = False
    error_type: str | None = None  # with `status`: which of the provider's error bodies (its `type`) to answer

    @property
    def active(self) -> bool:
        return self != NO_FAULT


NO_FAULT = Fault()


def parse_fault(spec: str | None) -> Fault:
    """Parse the fault syntax; raises FaultSyntaxError naming the bad item."""
    values: dict[str, object] = {}
    for item in (spec or "").split(","):
        item = item.strip()
        if not item:
            continue
        name, _, raw = item.partition("=")
        name = name.strip()
        try:
            if name in _FLAGS and not raw:
                values[name] = True
            elif name in _INT_FIELDS and raw:
                values[_INT_FIELDS[name]] = int(raw)
            elif name in _FLOAT_FIELDS and raw:
                values[_FLOAT_FIELDS[name]] = float(raw)
            elif name in _STR_FIELDS and raw.strip():
                values[_STR_FIELDS[name]] = raw.strip()
            else:
                raise FaultSyntaxError(f"unknown fault {item!r}")
        except ValueError as exc:
            raise FaultSyntaxError(f"bad fault {item!r}: {exc}") from None
    status = values.get("status")
    if status is not None and not 400 <= int(status) <= 599:  # type: ignore[call-overload]
        raise FaultSyntaxError(f"status must be an HTTP error code, got {status}")
    if "error_type" in values and status is None:
        raise FaultSyntaxError("error=TYPE needs a status=CODE")
    return Fault(**values)  # type: ignore[arg-type]


class FaultQueue:
    """Faults queued by the control endpoint, each for the next `count` /v1 requests."""

    def __init__(self) -> None:
        self._items: deque[list] = deque(maxlen=MAX_QUEUED)  # [spec, fault, remaining]

    def push(self, spec: str, count: int) -> None:
        fault = parse_fault(spec)
        if count > 0:
            self._items.append([spec, fault, count])

    def pop(self) -> Fault | None:
        if not self._items:
            return None
        head = self._items[0]
        head[2] -= 1
        if head[2] <= 0:
            self._items.popleft()
        return head[1]

    def clear(self) -> None:
        self._items.clear()

    def describe(self) -> list[dict]:
        return [{"fault": spec, "count": remaining} for spec, _, remaining in self._items]


class DropConnection(BaseException):
    """Raised to make the server close the socket without (finishing) a response.

    A BaseException so that Starlette's error middleware (which catches Exception)
    cannot turn it into a tidy 500: the point is a real, abrupt disconnect.
    """
