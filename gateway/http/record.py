"""One request's record: its id, who sent it, where it went, what it cost and how long it took.

Filled in along the request path, and closed when the response has been sent and the ledger row written
(a cut stream is settled after the response ends). Closing it updates the request metrics and writes the
request's JSON log line: never prompt text, answers or keys.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, BinaryIO

import orjson

from gateway.money import usd_float

log = logging.getLogger("gateway")

if TYPE_CHECKING:
    from gateway.auth.principal import Principal
    from gateway.budget.accounting import Charged
    from gateway.routing import Route

REQUEST_ID_HEADER = "x-request-id"
# Client ids are echoed in headers and logs: printable, no spaces or quotes, bounded.
_VALID_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/+=@-]{0,127}")
# Refusals by routing and budgets, counted as route decisions of model `none`.
ROUTING_REFUSALS = frozenset({"no_route", "model_not_allowed", "context_length_exceeded", "budget_exceeded"})


class RequestIds:
    """Request ids: the client's `x-request-id` when it is a sane token (at most 128 characters), else a
    random per-process prefix and a counter (unique without a system call per request, unlike uuid4)."""

    def __init__(self) -> None:
        self._prefix = secrets.token_hex(8)
        self._next = itertools.count(1)

    def __call__(self, headers: Any) -> str:
        given = headers.get(REQUEST_ID_HEADER)
        if given is not None and _VALID_ID.fullmatch(given):
            return given
        return f"{self._prefix}{next(self._next):016x}"


@dataclass(slots=True)
class RequestRecord:
    id: str
    path: str
    inference: bool  # chat, completions, FIM, embeddings, messages, responses: counted in gateway_requests_total
    started: float = field(default_factory=time.monotonic)
    at: float = field(default_factory=time.time)
    # The front door (`gateway.pipeline.request.Endpoint`), as the ledger row names it; set once the door has read
    # the request (None before that, and for routes that are no door: admin, models, explain).
    endpoint: str | None = None
    team: str | None = None
    key_prefix: str | None = None
    requested_model: str | None = None
    model: str | None = None
    provider: str | None = None
    region: str | None = None
    reason: str | None = None
    status: int = 200
    error_code: str | None = None
    stream: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cost_nanos: int = 0
    estimated: bool = False
    first_token_at: float | None = None
    waited: float | None = None  # seconds on provider calls and backoff; None: no provider called
    attempts: int = 0
    ended_at: float | None = None  # when the response's last byte was sent
    on_close: Callable[[RequestRecord], None] | None = None
    _open: int = 1  # the response; plus one per settlement still running after it

    def identify(self, principal: Principal) -> None:
        self.team = principal.team.name
        self.key_prefix = (
            principal.key.prefix if principal.key is not None else ("master" if principal.is_admin else None)
        )

    def routed(self, route: Route) -> None:
        self.model, self.provider, self.region, self.reason = (
            route.model.name,
            route.provider.name,
            route.provider.region,
            route.reason,
        )

    def waited_for(self, seconds: float) -> None:
        self.waited = (self.waited or 0.0) + seconds

    def settled(self, charged: Charged) -> None:
        usage = charged.usage
        self.prompt_tokens, self.completion_tokens = usage.prompt_tokens, usage.completion_tokens
        self.cached_tokens, self.cost_nanos, self.estimated = usage.cached_tokens, charged.cost_nanos, charged.estimated

    def failed(self, status: int, code: str | None) -> None:
        self.status, self.error_code = status, code
        if self.model is None and code in ROUTING_REFUSALS:
            self.reason = code

    def retain(self) -> None:
        """Keep the record open until a matching `release` (a settlement that outlives the response)."""
        self._open += 1

    def response_sent(self) -> None:
        self.ended_at = time.monotonic()
        self.release()

    def release(self) -> None:
        self._open -= 1
        if self._open == 0 and self.on_close is not None:
            self.on_close(self)

    @property
    def seconds(self) -> float:
        """From arrival to the response's last byte."""
        return (self.ended_at if self.ended_at is not None else time.monotonic()) - self.started

    @property
    def ttft(self) -> float | None:
        return self.first_token_at - self.started if self.first_token_at is not None else None

    def as_log(self) -> dict[str, Any]:
        seconds, ttft = self.seconds, self.ttft
        return {
            "time": datetime.fromtimestamp(self.at, UTC).isoformat(timespec="milliseconds"),
            "request_id": self.id,
            "path": self.path,
            "endpoint": self.endpoint,
            "team": self.team,
            "key_prefix": self.key_prefix,
            "requested_model": self.requested_model,
            "model": self.model,
            "provider": self.provider,
            "region": self.region,
            "route_reason": self.reason,
            "status": self.status,
            "error_code": self.error_code,
            "stream": self.stream,
            "attempts": self.attempts,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cached_tokens": self.cached_tokens,
            "cost_usd": usd_float(self.cost_nanos),
            "cost_estimated": self.estimated,
            "latency_ms": round(seconds * 1000, 3),
            "ttft_ms": round(ttft * 1000, 3) if ttft is not None else None,
            "upstream_ms": round(self.waited * 1000, 3) if self.waited is not None else None,
            "pid": os.getpid(),
        }


class RequestLog:
    """One JSON line per request, written to `stream` (stdout) once per event-loop turn rather than one
    write per request; `listeners` also get each entry (tests, embedding applications)."""

    def __init__(self, stream: BinaryIO | None) -> None:
        self.stream = stream
        self.listeners: list[Callable[[dict[str, Any]], None]] = []
        self._pending: list[bytes] = []

    def write(self, record: RequestRecord) -> None:
        if self.stream is None and not self.listeners:
            return
        entry = record.as_log()
        for listener in self.listeners:
            listener(entry)
        if self.stream is not None:
            if not self._pending:
                asyncio.get_running_loop().call_soon(self.flush)
            self._pending.append(orjson.dumps(entry, option=orjson.OPT_APPEND_NEWLINE))

    def flush(self) -> None:
        data = b"".join(self._pending)
        self._pending.clear()
        if self.stream is None or not data:
            return
        try:
            self.stream.write(data)
            self.stream.flush()
        except (OSError, ValueError):  # a closed or broken stdout must not fail requests
            log.warning("request log: cannot write to stdout; %d bytes dropped", len(data))
