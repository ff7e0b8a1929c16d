"""What the two providers' batch APIs share: answering a line with the emulator's own interactive handler,
JSONL in and out, and the job driver the engine (batch_jobs.py) calls back.

A line is answered exactly as the same body sent to the interactive endpoint would be (same validation, same
refusals, same usage), except that `stream` is dropped: a batch line's answer is one whole response. Faults and
the gate (app.py) are not applied to lines: they act on HTTP requests, and a line is not one.
"""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gateway.emulators.app import Call, EmulatorState, Handler, Provider, Reply, Stream
from gateway.emulators.batch_jobs import BatchBook, BatchJob, BatchLine, LineResult
from gateway.emulators.faults import NO_FAULT


class JsonlError(ValueError):
    """A batch input file that is not JSONL; `line` is 1-based."""

    def __init__(self, line: int, problem: str) -> None:
        super().__init__(f"line {line}: {problem}")
        self.line = line


def parse_jsonl(content: bytes) -> list[tuple[int, Any]]:
    """The (1-based line number, value) of every non-blank line."""
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JsonlError(text_line(content, exc.start), "not UTF-8 text") from None
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append((number, orjson.loads(line)))
        except orjson.JSONDecodeError as exc:
            raise JsonlError(number, f"not valid JSON ({exc})") from None
    return rows


def text_line(content: bytes, offset: int) -> int:
    return content.count(b"\n", 0, offset) + 1


def jsonl(rows: list[dict]) -> bytes:
    return b"".join(orjson.dumps(row) + b"\n" for row in rows)


def reply_payload(reply: Reply) -> tuple[int, Any]:
    """A handler's reply as (HTTP status, JSON body)."""
    if isinstance(reply, Stream):
        raise TypeError("a batch line must not be answered with a stream")
    if isinstance(reply, Response):
        return reply.status_code, orjson.loads(bytes(reply.body))
    return 200, reply


def _line_request(path: str) -> Request:
    """The Request a handler is given for a line (the handlers read the body from Call, not from here)."""
    return Request({"type": "http", "method": "POST", "path": path, "headers": [], "query_string": b""})


class BatchApi(ABC):
    """A provider's Files and Batch APIs on its emulator; subclasses give the wire shapes."""

    kind: str

    def __init__(self, provider: Provider) -> None:
        self.provider = provider

    @abstractmethod
    def routes(self) -> list[tuple[str, str, Handler]]: ...

    @abstractmethod
    def upload_routes(self) -> list[tuple[str, str, Handler]]: ...

    @abstractmethod
    def handlers(self) -> dict[str, Handler]:
        """The interactive handler of each endpoint a job may run on."""

    @abstractmethod
    def status(self, state: str) -> str: ...

    @abstractmethod
    def line_body(self, job: BatchJob, line: BatchLine) -> dict:
        """The body the interactive handler is given for a line."""

    @abstractmethod
    def write_results(self, book: BatchBook, job: BatchJob) -> None: ...

    def driver(self, emu: EmulatorState) -> JobDriverFor:
        return JobDriverFor(self, emu)

    async def answer(self, emu: EmulatorState, job: BatchJob, line: BatchLine) -> LineResult:
        body = {key: value for key, value in self.line_body(job, line).items() if key != "stream"}
        reply = await self.handlers()[job.endpoint](Call(_line_request(job.endpoint), body, NO_FAULT, emu))
        status, payload = reply_payload(reply)
        return LineResult(line, status, payload, uuid.uuid4().hex)


@dataclass(frozen=True)
class JobDriverFor:
    """A provider's batch API bound to one emulator: the `JobDriver` of its jobs."""

    api: BatchApi
    emu: EmulatorState

    @property
    def kind(self) -> str:
        return self.api.kind

    def status(self, state: str) -> str:
        return self.api.status(state)

    async def answer(self, job: BatchJob, line: BatchLine) -> LineResult:
        return await self.api.answer(self.emu, job, line)

    def write_results(self, book: BatchBook, job: BatchJob) -> None:
        self.api.write_results(book, job)
