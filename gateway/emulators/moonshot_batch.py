"""Moonshot's Files and Batch APIs on the Moonshot emulator: `/v1/files` and `/v1/batches`, OpenAI-shaped.

Sources, cited where each rule is applied:
- [guide] Moonshot's batch guide, platform.kimi.ai/docs/guide/use-batch-api (platform.kimi.com for .cn): input
  lines `{"custom_id", "method": "POST", "url": "/v1/chat/completions", "body"}`, custom_id unique in the file,
  one model per file, a non-empty `.jsonl` file of at most 100 MB uploaded with purpose `batch`, the batch enters
  `validating`, then `in_progress`; results in `output_file_id`, failures in `error_file_id`; "Batch API supports
  both the kimi-k2.6 and kimi-k2.5 models", whose sampling parameters must be left out.
- [api] Moonshot's API reference, platform.kimi.ai/docs/api/batch-create, batch-list, batch-retrieve,
  batch-cancel (the OpenAPI Moonshot publishes with them): the create body (`input_file_id`, `endpoint` only
  `/v1/chat/completions`, `completion_window` "12h, 1d, 3d, minimum 12h, maximum 7d", `metadata` up to 16 pairs,
  keys up to 64 and values up to 512 characters), the batch object and its statuses, the list (`after`, `limit`
  default 20, `{"object": "list", "data", "has_more"}`), cancel only from validating / in_progress /
  finalizing (otherwise 400), then cancelling -> cancelled; and files-retrieve / files-upload (the file object
  `{id, object, bytes, created_at, filename, purpose, status, status_details}`, 100 MB per file).
- [openai] OpenAI's batch reference, which Moonshot's follows: the result line ("request output object")
  `{"id", "custom_id", "response": {"status_code", "request_id", "body"}, "error"}`, `error` `{code, message}`
  only for requests that failed without an HTTP answer (`batch_expired`, `batch_cancelled`), the `errors` list
  of a failed batch, `expired_at`, the `batch_output` purpose of result files.
- ../shared/reference/providers.md, Moonshot "Other endpoints".
Moonshot does not publish the wording of its batch refusals: the messages are the emulator's, in Moonshot's
`{"error": {"message", "type"}}` envelope; see README.md.
"""

from __future__ import annotations

import re
import secrets
import string
import uuid
from typing import Any

from starlette.responses import Response

from gateway.emulators.app import Call, Handler, Reply, Upload
from gateway.emulators.batch_api import BatchApi, JsonlError, jsonl, parse_jsonl
from gateway.emulators.batch_jobs import (
    CANCELLED,
    CANCELLING,
    EXPIRED,
    FAILED,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    BatchBook,
    BatchJob,
    BatchLine,
    LineResult,
    StoredFile,
)
from gateway.emulators.moonshot import MODELS, MoonshotProvider, _error

# [api] the batch object's status, by the engine's state. `finalizing` is never shown: the emulator writes a
# job's result files at the moment it ends.
STATUSES = {
    QUEUED: "validating",
    RUNNING: "in_progress",
    SUCCEEDED: "completed",
    FAILED: "failed",
    EXPIRED: "expired",
    CANCELLING: "cancelling",
    CANCELLED: "cancelled",
}
# [api] files-upload: file-extract, image, video; [guide]: batch.
PURPOSES = ("file-extract", "image", "video", "batch")
MAX_FILE_BYTES = 100 * 1024 * 1024  # [api] files-upload and [guide]: at most 100 MB
BATCH_MODELS = ("kimi-k2.6", "kimi-k2.5")  # [guide]
ENDPOINTS = ("/v1/chat/completions",)  # [api] batch-create: "currently only /v1/chat/completions is supported"
WINDOW = re.compile(r"([1-9]\d*)([hd])")  # [api] "formats like 12h, 1d, 3d"
WINDOW_HOURS = (12, 7 * 24)  # [api] "minimum 12h, maximum 7d"
METADATA_PAIRS, METADATA_KEY_CHARS, METADATA_VALUE_CHARS = 16, 64, 512  # [api] batch-create
LIST_LIMIT, LIST_LIMIT_MAX = 20, 100  # [api] batch-list: default 20; [openai] at most 100
# [openai] BatchRequestOutput error codes for lines a batch never ran.
UNANSWERED = {
    EXPIRED: ("batch_expired", "The request could not be executed before the completion window ended."),
    CANCELLED: ("batch_cancelled", "The batch was cancelled before this request executed."),
}
_ID_CHARS = string.ascii_lowercase + string.digits


def _new_id(prefix: str = "") -> str:
    """Moonshot's file ids look like `clg681objj8g9m7n4je0` ([api] files-retrieve's example): 20 lowercase
    letters and digits."""
    return prefix + "".join(secrets.choice(_ID_CHARS) for _ in range(20))


def _invalid(message: str) -> Response:
    return _error(400, f"Invalid request: {message}")


def _not_found(what: str, ident: str) -> Response:
    return _error(404, f"{what} {ident} not found", "resource_not_found_error")


def _check_rows(rows: list[tuple[int, Any]]) -> str | None:
    """[guide] "Input file requirements"."""
    seen: set[str] = set()
    models: list[str] = []
    for number, row in rows:
        if not isinstance(row, dict):
            return f"line {number}: each line must be a JSON object"
        missing = [name for name in ("custom_id", "method", "url", "body") if name not in row]
        if missing:
            return f"line {number}: missing field(s) {', '.join(missing)}"
        custom_id, body = row["custom_id"], row["body"]
        if not isinstance(custom_id, str) or not custom_id:
            return f"line {number}: custom_id must be a non-empty string"
        if custom_id in seen:
            return f"line {number}: custom_id {custom_id!r} must be unique within the file"
        seen.add(custom_id)
        if row["method"] != "POST":
            return f"line {number}: method must be POST"
        if row["url"] not in ENDPOINTS:
            return f"line {number}: url must be /v1/chat/completions"
        if not isinstance(body, dict) or not isinstance(body.get("model"), str):
            return f"line {number}: body must be an object with a model"
        if body["model"] not in models:
            models.append(body["model"])
    if len(models) > 1:
        return f"all requests in a batch file must use the same model, found {', '.join(models)}"
    return None


def _window_hours(window: Any) -> int | None:
    match = WINDOW.fullmatch(window) if isinstance(window, str) else None
    if match is None:
        return None
    hours = int(match[1]) * (24 if match[2] == "d" else 1)
    return hours if WINDOW_HOURS[0] <= hours <= WINDOW_HOURS[1] else None


def _metadata_problem(metadata: Any) -> str | None:
    if metadata is None:
        return None
    if not isinstance(metadata, dict) or len(metadata) > METADATA_PAIRS:
        return f"metadata must be an object of at most {METADATA_PAIRS} pairs"
    for key, value in metadata.items():
        if len(key) > METADATA_KEY_CHARS or not isinstance(value, str) or len(value) > METADATA_VALUE_CHARS:
            return (
                f"metadata keys must be at most {METADATA_KEY_CHARS} characters and values strings of at most "
                f"{METADATA_VALUE_CHARS}"
            )
    return None


class MoonshotBatches(BatchApi):
    kind = "moonshot"

    def __init__(self, provider: MoonshotProvider) -> None:
        super().__init__(provider)
        self.moonshot = provider

    def routes(self) -> list[tuple[str, str, Handler]]:
        return [
            ("GET", "/v1/files/{file_id}", self.get_file),
            ("DELETE", "/v1/files/{file_id}", self.delete_file),
            ("GET", "/v1/files/{file_id}/content", self.file_content),
            ("POST", "/v1/batches", self.create_batch),
            ("GET", "/v1/batches", self.list_batches),
            ("GET", "/v1/batches/{batch_id}", self.get_batch),
            ("POST", "/v1/batches/{batch_id}/cancel", self.cancel_batch),
        ]

    def upload_routes(self) -> list[tuple[str, str, Handler]]:
        return [("POST", "/v1/files", self.upload)]

    def handlers(self) -> dict[str, Handler]:
        return {"/v1/chat/completions": self.moonshot.chat}

    def status(self, state: str) -> str:
        return STATUSES[state]

    def line_body(self, job: BatchJob, line: BatchLine) -> dict:
        return dict(line.body)  # the line names its model ([guide]): the body is sent as it is

    # --- files -------------------------------------------------------------------------------------------------
    @staticmethod
    def _file_object(stored: StoredFile) -> dict:
        """[api] files-retrieve."""
        return {
            "id": stored.id,
            "object": "file",
            "bytes": len(stored.content),
            "created_at": stored.created_at,
            "filename": stored.filename,
            "purpose": stored.purpose,
            "status": "ok",
            "status_details": "",
        }

    async def upload(self, call: Call) -> Reply:
        form = call.body if isinstance(call.body, dict) else {}
        file, purpose = form.get("file"), form.get("purpose")
        if not isinstance(file, Upload):
            return _invalid("a file is required (multipart/form-data field 'file')")
        if purpose not in PURPOSES:
            return _invalid(f"purpose must be one of {', '.join(PURPOSES)}, got {purpose!r}")
        if len(file.content) > MAX_FILE_BYTES:
            return _invalid(f"file size {len(file.content)} bytes exceeds the limit of 100MB")
        rows: list[tuple[int, Any]] | None = None
        if purpose == "batch":
            if not file.filename.endswith(".jsonl"):
                return _invalid(f"a batch file must have the .jsonl extension, got {file.filename!r}")
            try:
                rows = parse_jsonl(file.content)
            except JsonlError as exc:
                return _invalid(f"invalid batch file: {exc}")
            if not rows:
                return _invalid("a batch file must not be empty")
            problem = _check_rows(rows)
            if problem is not None:
                return _invalid(f"invalid batch file: {problem}")
        stored = StoredFile(
            id=_new_id(),
            filename=file.filename,
            purpose=str(purpose),
            content=file.content,
            created_at=int(call.emu.batches.now()),
            rows=[row for _, row in rows] if rows is not None else None,
        )
        return self._file_object(call.emu.batches.add_file(stored))

    def _find_file(self, call: Call) -> StoredFile | Response:
        file_id = call.request.path_params["file_id"]
        stored = call.emu.batches.files.get(file_id)
        return stored if stored is not None else _not_found("file", file_id)

    async def get_file(self, call: Call) -> Reply:
        found = self._find_file(call)
        return found if isinstance(found, Response) else self._file_object(found)

    async def delete_file(self, call: Call) -> Reply:
        found = self._find_file(call)
        if isinstance(found, Response):
            return found
        del call.emu.batches.files[found.id]
        return {"id": found.id, "object": "file", "deleted": True}  # [openai] the deleted-file object

    async def file_content(self, call: Call) -> Reply:
        found = self._find_file(call)
        return found if isinstance(found, Response) else Response(found.content, media_type="application/octet-stream")

    # --- batches -----------------------------------------------------------------------------------------------
    def _batch_object(self, job: BatchJob) -> dict:
        """[api] the batch object; `errors` and `expired_at` from [openai]."""
        ended = int(job.finished_at) if job.finished_at is not None else None

        def at(state: str) -> int | None:
            return ended if job.state == state else None

        errors = None
        if job.state == FAILED:
            errors = {
                "object": "list",
                "data": [{"code": "server_error", "message": job.error, "param": None, "line": None}],
            }
        return {
            "id": job.id,
            "object": "batch",
            "endpoint": job.endpoint,
            "errors": errors,
            "input_file_id": job.input_file_ids[0],
            "completion_window": job.request["completion_window"],
            "status": STATUSES[job.state],
            "output_file_id": job.output_file_id,
            "error_file_id": job.error_file_id,
            "created_at": int(job.created_at),
            "in_progress_at": int(job.started_at) if job.started_at is not None else None,
            "expires_at": int(job.created_at + job.window_seconds),
            "finalizing_at": at(SUCCEEDED),
            "completed_at": at(SUCCEEDED),
            "failed_at": at(FAILED),
            "expired_at": at(EXPIRED),
            "cancelling_at": int(job.cancelling_at) if job.cancelling_at is not None else None,
            "cancelled_at": at(CANCELLED),
            # [openai] completed: requests that succeeded; failed: requests answered with an error.
            "request_counts": {"total": len(job.lines), "completed": job.succeeded, "failed": job.failed},
            "metadata": job.metadata,
        }

    async def create_batch(self, call: Call) -> Reply:
        body = call.body
        if not isinstance(body, dict):
            return _invalid("the body must be a JSON object")
        file_id, endpoint, window = body.get("input_file_id"), body.get("endpoint"), body.get("completion_window")
        if not isinstance(file_id, str) or not file_id:
            return _invalid("input_file_id is required")
        if endpoint not in ENDPOINTS:
            return _invalid(f"endpoint must be /v1/chat/completions, got {endpoint!r}")
        hours = _window_hours(window)
        if hours is None:
            return _invalid(f"completion_window must be from 12h to 7d (such as 12h, 1d, 3d), got {window!r}")
        problem = _metadata_problem(body.get("metadata"))
        if problem is not None:
            return _invalid(problem)
        book = call.emu.batches
        stored = book.files.get(file_id)
        if stored is None:
            return _invalid(f"file {file_id} not found")
        if stored.rows is None:
            return _invalid(f"file {file_id} was not uploaded with purpose batch")
        model = stored.rows[0]["body"]["model"]  # one model per file, checked at upload
        if model not in MODELS:
            return _invalid(f"Not found the model {model} or Permission denied")  # the chat API's words for it
        if model not in BATCH_MODELS:
            return _invalid(f"model {model} is not supported by the batch API, use {' or '.join(BATCH_MODELS)}")
        job = BatchJob(
            id=_new_id("batch_"),
            driver=self.driver(call.emu),
            model=model,
            endpoint=str(endpoint),
            lines=[BatchLine(index, row["custom_id"], row["body"]) for index, row in enumerate(stored.rows)],
            input_file_ids=[file_id],
            metadata=body.get("metadata"),
            created_at=book.now(),
            window_seconds=hours * 3600,
            run_seconds=book.run_seconds,
            held=book.hold_new,
            request={"completion_window": window},
        )
        return self._batch_object(book.add_job(job))

    def _find_batch(self, call: Call) -> BatchJob | Response:
        batch_id = call.request.path_params["batch_id"]
        job = call.emu.batches.jobs.get(batch_id)
        return job if job is not None else _not_found("batch", batch_id)

    async def get_batch(self, call: Call) -> Reply:
        found = self._find_batch(call)
        if isinstance(found, Response):
            return found
        await call.emu.batches.advance(found)
        return self._batch_object(found)

    async def cancel_batch(self, call: Call) -> Reply:
        found = self._find_batch(call)
        if isinstance(found, Response):
            return found
        if not await call.emu.batches.cancel(found):
            # [api] batch-cancel: only a validating, in_progress or finalizing batch can be cancelled (400).
            return _invalid(f"batch {found.id} cannot be cancelled: its status is {STATUSES[found.state]}")
        return self._batch_object(found)

    async def list_batches(self, call: Call) -> Reply:
        query = call.request.query_params
        raw_limit = query.get("limit", str(LIST_LIMIT))
        if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= LIST_LIMIT_MAX:
            return _invalid(f"limit must be an integer from 1 to {LIST_LIMIT_MAX}, got {raw_limit!r}")
        book = call.emu.batches
        for job in list(book.jobs.values()):
            await book.advance(job)
        jobs = sorted(book.jobs.values(), key=lambda job: job.created_at, reverse=True)  # [openai] newest first
        after = query.get("after")
        if after is not None:
            ids = [job.id for job in jobs]
            jobs = jobs[ids.index(after) + 1 :] if after in ids else []
        page = jobs[: int(raw_limit)]
        return {"object": "list", "data": [self._batch_object(job) for job in page], "has_more": len(jobs) > len(page)}

    # --- results -----------------------------------------------------------------------------------------------
    def write_results(self, book: BatchBook, job: BatchJob) -> None:
        """[openai] result lines: a line answered 200 in the output file; one answered with an error status in
        the error file with that status and the chat API's error body (`error` null: it had an HTTP answer); on
        expiry or cancellation every line not run is in the error file with `response` null and
        `error: {code, message}` (batch_expired, batch_cancelled). After a failure the lines not run are left out."""
        output = [self._result_row(result) for result in job.results if result.ok]
        errors = [self._result_row(result) for result in job.results if not result.ok]
        if job.state in UNANSWERED:
            code, message = UNANSWERED[job.state]
            errors += [self._unanswered_row(line, code, message) for line in job.unanswered]
        for rows, suffix in ((output, "output"), (errors, "error")):
            if not rows:
                continue
            stored = book.add_file(
                StoredFile(
                    id=_new_id(),
                    filename=f"{job.id}_{suffix}.jsonl",
                    purpose="batch_output",
                    content=jsonl(rows),
                    created_at=int(book.now()),
                )
            )
            if suffix == "output":
                job.output_file_id = stored.id
            else:
                job.error_file_id = stored.id

    @staticmethod
    def _result_row(result: LineResult) -> dict:
        return {
            "id": f"batch_req_{result.request_id[:24]}",
            "custom_id": result.line.custom_id,
            "response": {"status_code": result.status_code, "request_id": result.request_id, "body": result.body},
            "error": None,
        }

    @staticmethod
    def _unanswered_row(line: BatchLine, code: str, message: str) -> dict:
        return {
            "id": f"batch_req_{uuid.uuid4().hex[:24]}",
            "custom_id": line.custom_id,
            "response": None,
            "error": {"code": code, "message": message},
        }


class MoonshotWithBatches(MoonshotProvider):
    """The Moonshot emulator: its interactive API (moonshot.py) and its Files and Batch APIs (this module)."""

    def __init__(self) -> None:
        super().__init__()
        self.batch_api = MoonshotBatches(self)

    def routes(self) -> list[tuple[str, str, Handler]]:
        return super().routes() + self.batch_api.routes()

    def upload_routes(self) -> list[tuple[str, str, Handler]]:
        return self.batch_api.upload_routes()
