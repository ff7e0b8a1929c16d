"""The batch-job engine both emulators share: stored files, jobs, and how a job moves, by time or by a test.

A job is provider-neutral here; its `driver` (batch_api.py, one per provider) answers each line with the
provider's own interactive handler, names the states in the provider's words and writes the result files.

States, and what moves a job between them:

    queued --(first status read)--> running --(every line answered)--> succeeded
    queued | running --(the provider's cancel)--> cancelling --(next status read)--> cancelled
    queued | running --(control "fail")--> failed
    queued | running --(control "expire", or its window passed)--> expired

Time: a job created with `run_seconds` = 0 (EmulatorOptions.batch_seconds, the default) answers every line on the
first status read after its creation; with `run_seconds` = S its lines are answered in order, a share
elapsed/S of them by each read, and it is done S seconds after creation. A status read is the provider's
GET of the job or its listing; the job's creation answer always shows it queued. A cancel is not a read: with
`run_seconds` = 0 it keeps no more lines than were answered before it. `clock` (time.time) can be replaced by a
test to drive time explicitly.

Control endpoints (no key needed, like every /_emulator/ endpoint):
    GET    /_emulator/batches          every job: provider, model, endpoint, state and the provider's status,
                                       line count, answered/succeeded/failed counts, custom_ids, and the line
                                       bodies exactly as the input file held them (what reached the provider)
    GET    /_emulator/batches/{id}     one job, same shape
    POST   /_emulator/batches/{id}     {"action": "hold" | "run" | "complete" | "fail" | "expire", "message"?}
    POST   /_emulator/batches          {"batch_seconds"?: S, "batch_hold"?: bool}: what new jobs get
    DELETE /_emulator/batches          forget every job and file; settings back to the emulator's options
Actions: hold keeps the job where it is (queued, running or cancelling) whatever time or reads say; run lets
it go on; complete answers every remaining line now and ends it succeeded (a cancelling job ends cancelled);
fail ends it failed with `message` (or the provider's generic failure) as its error; expire ends it expired.
Lines answered before fail / expire / cancel stay in its output and error files; the others are never answered.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

QUEUED, RUNNING, SUCCEEDED = "queued", "running", "succeeded"
FAILED, EXPIRED, CANCELLING, CANCELLED = "failed", "expired", "cancelling", "cancelled"
TERMINAL = frozenset({SUCCEEDED, FAILED, EXPIRED, CANCELLED})
ACTIONS = ("hold", "run", "complete", "fail", "expire")


@dataclass
class StoredFile:
    """A file on the provider: uploaded, or a job's output or error file."""

    id: str
    filename: str
    purpose: str
    content: bytes
    created_at: int
    rows: list[dict] | None = None  # a batch input file's lines, checked at upload; None: not a batch input file
    extra: dict[str, Any] = field(default_factory=dict)  # the provider's own fields of its file object


@dataclass(frozen=True)
class BatchLine:
    index: int
    custom_id: Any
    body: Any  # as the input file held it


@dataclass(frozen=True)
class LineResult:
    """One line's answer from the provider's interactive handler: its HTTP status and JSON body."""

    line: BatchLine
    status_code: int
    body: Any
    request_id: str

    @property
    def ok(self) -> bool:
        return self.status_code == 200


class JobDriver(Protocol):
    """The provider's side of a job (batch_api.py)."""

    @property
    def kind(self) -> str: ...

    def status(self, state: str) -> str:
        """The provider's word for a state."""
        ...

    async def answer(self, job: BatchJob, line: BatchLine) -> LineResult: ...

    def write_results(self, book: BatchBook, job: BatchJob) -> None:
        """Store the ended job's output and error files (when it has lines for them) and set their ids."""
        ...


@dataclass
class BatchJob:
    id: str
    driver: JobDriver
    model: str
    endpoint: str
    lines: list[BatchLine]
    input_file_ids: list[str]
    metadata: dict | None
    created_at: float
    window_seconds: float  # past this after creation, the job expires
    run_seconds: float
    held: bool = False
    request: dict[str, Any] = field(default_factory=dict)  # provider-specific creation fields (its window's name)
    state: str = QUEUED
    results: list[LineResult] = field(default_factory=list)  # in line order: the first len(results) lines
    started_at: float | None = None
    cancelling_at: float | None = None
    finished_at: float | None = None
    error: str | None = None  # why it failed
    output_file_id: str | None = None
    error_file_id: str | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)

    @property
    def succeeded(self) -> int:
        return sum(1 for result in self.results if result.ok)

    @property
    def failed(self) -> int:
        return len(self.results) - self.succeeded

    @property
    def unanswered(self) -> list[BatchLine]:
        return self.lines[len(self.results) :]


class BatchBook:
    """Every file and job of one emulator (on its EmulatorState), and the rules that move jobs."""

    def __init__(self, run_seconds: float = 0.0, hold_new: bool = False) -> None:
        self.files: dict[str, StoredFile] = {}
        self.jobs: dict[str, BatchJob] = {}
        self.clock: Callable[[], float] = time.time
        self._defaults = (run_seconds, hold_new)
        self.run_seconds, self.hold_new = run_seconds, hold_new

    def now(self) -> float:
        return self.clock()

    def reset(self) -> None:
        self.files.clear()
        self.jobs.clear()
        self.run_seconds, self.hold_new = self._defaults

    def add_file(self, stored: StoredFile) -> StoredFile:
        self.files[stored.id] = stored
        return stored

    def add_job(self, job: BatchJob) -> BatchJob:
        self.jobs[job.id] = job
        return job

    async def advance(self, job: BatchJob) -> None:
        """A status read: the job moves as far as time (and a hold) lets it."""
        async with job.lock:
            await self._advance(job)

    async def cancel(self, job: BatchJob) -> bool:
        """The provider's cancel: a queued or running job starts cancelling (True); any other is left (False)."""
        async with job.lock:
            if job.run_seconds > 0:  # the lines time has made due are answered already, as a real job's would be
                await self._advance(job)
            if job.state not in (QUEUED, RUNNING):
                return False
            job.state, job.cancelling_at = CANCELLING, self.now()
            return True

    async def control(self, job: BatchJob, action: str, message: str | None = None) -> str | None:
        """A test's action on a job; the reason it cannot be done, or None."""
        async with job.lock:
            if job.state in TERMINAL:
                return f"job {job.id} has ended ({job.state}): nothing to {action}"
            if action == "hold":
                job.held = True
            elif action == "run":
                job.held = False
                await self._advance(job)
            elif action == "complete":
                job.held = False
                if job.state == CANCELLING:
                    self._finish(job, CANCELLED)
                    return None
                self._start(job)
                await self._answer(job, len(job.lines))
                self._finish(job, SUCCEEDED)
            elif action == "fail":
                self._finish(job, FAILED, message or "The batch job failed.")
            elif action == "expire":
                self._finish(job, EXPIRED)
            else:
                return f"unknown action {action!r}; expected one of {', '.join(ACTIONS)}"
            return None

    async def _advance(self, job: BatchJob) -> None:
        if job.state in TERMINAL or job.held:
            return
        now = self.now()
        if job.state == CANCELLING:
            self._finish(job, CANCELLED)
            return
        deadline = job.created_at + job.window_seconds
        self._start(job)
        await self._answer(job, self._due(job, min(now, deadline)))  # what time made due before the window ended
        if len(job.results) == len(job.lines):
            self._finish(job, SUCCEEDED)
        elif now >= deadline:
            self._finish(job, EXPIRED)

    def _start(self, job: BatchJob) -> None:
        if job.state == QUEUED:
            job.state, job.started_at = RUNNING, self.now()

    @staticmethod
    def _due(job: BatchJob, now: float) -> int:
        """How many lines time has made due: all of them with no run time, else the elapsed share."""
        if job.run_seconds <= 0:
            return len(job.lines)
        share = max(0.0, now - job.created_at) / job.run_seconds
        return min(len(job.lines), int(len(job.lines) * share))

    @staticmethod
    async def _answer(job: BatchJob, upto: int) -> None:
        for line in job.lines[len(job.results) : upto]:
            job.results.append(await job.driver.answer(job, line))

    def _finish(self, job: BatchJob, state: str, error: str | None = None) -> None:
        job.state, job.finished_at, job.error = state, self.now(), error
        job.driver.write_results(self, job)


def describe(job: BatchJob) -> dict[str, Any]:
    """A job as the control endpoints show it."""
    return {
        "id": job.id,
        "provider": job.driver.kind,
        "model": job.model,
        "endpoint": job.endpoint,
        "state": job.state,
        "status": job.driver.status(job.state),
        "held": job.held,
        "lines": len(job.lines),
        "answered": len(job.results),
        "succeeded": job.succeeded,
        "failed": job.failed,
        "custom_ids": [line.custom_id for line in job.lines],
        "bodies": [line.body for line in job.lines],
        "input_files": job.input_file_ids,
        "metadata": job.metadata,
        "output_file": job.output_file_id,
        "error_file": job.error_file_id,
        "error": job.error,
        "created_at": job.created_at,
    }


def _book(request: Request) -> BatchBook:
    return request.app.state.emulator.batches


def _emulator_error(message: str, status: int = 400) -> Response:
    return JSONResponse({"emulator_error": message}, status_code=status)


async def _list(request: Request) -> Response:
    jobs = sorted(_book(request).jobs.values(), key=lambda job: job.created_at)
    return Response(orjson.dumps([describe(job) for job in jobs]), media_type="application/json")


async def _show(request: Request) -> Response:
    job = _book(request).jobs.get(request.path_params["job_id"])
    if job is None:
        return _emulator_error(f"no batch job {request.path_params['job_id']}", 404)
    return Response(orjson.dumps(describe(job)), media_type="application/json")


async def _act(request: Request) -> Response:
    book = _book(request)
    job = book.jobs.get(request.path_params["job_id"])
    if job is None:
        return _emulator_error(f"no batch job {request.path_params['job_id']}", 404)
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError as exc:
        return _emulator_error(f"invalid JSON: {exc}")
    action = body.get("action") if isinstance(body, dict) else None
    message = body.get("message") if isinstance(body, dict) else None
    if action not in ACTIONS or (message is not None and not isinstance(message, str)):
        return _emulator_error(f'body must be {{"action": one of {", ".join(ACTIONS)}, "message"?: "..."}}')
    refused = await book.control(job, action, message)
    if refused is not None:
        return _emulator_error(refused, 409)
    return Response(orjson.dumps(describe(job)), media_type="application/json")


async def _configure(request: Request) -> Response:
    book = _book(request)
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError as exc:
        return _emulator_error(f"invalid JSON: {exc}")
    if not isinstance(body, dict) or set(body) - {"batch_seconds", "batch_hold"}:
        return _emulator_error('body must be {"batch_seconds"?: seconds, "batch_hold"?: true|false}')
    seconds, hold = body.get("batch_seconds", book.run_seconds), body.get("batch_hold", book.hold_new)
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds < 0 or not isinstance(hold, bool):
        return _emulator_error("batch_seconds must be a number >= 0 and batch_hold true or false")
    book.run_seconds, book.hold_new = float(seconds), hold
    return JSONResponse({"batch_seconds": book.run_seconds, "batch_hold": book.hold_new})


async def _clear(request: Request) -> Response:
    _book(request).reset()
    return JSONResponse([])


BATCH_ROUTES = [
    Route("/_emulator/batches", _list, methods=["GET"]),
    Route("/_emulator/batches", _configure, methods=["POST"]),
    Route("/_emulator/batches", _clear, methods=["DELETE"]),
    Route("/_emulator/batches/{job_id}", _show, methods=["GET"]),
    Route("/_emulator/batches/{job_id}", _act, methods=["POST"]),
]
