"""Mistral's Files and Batch APIs on the Mistral emulator: `/v1/files` and `/v1/batch/jobs`.

Sources, cited where each rule is applied:
- [guide] Mistral's batch guide, docs.mistral.ai/capabilities/batch (mistralai/platform-docs-public,
  docs/capabilities/batch.md): input lines `{"custom_id", "body"}`, one model per job, the endpoints, the
  statuses, results read with `GET /v1/files/{id}/content`, `timeout_hours` (default 24, lower than 7 days),
  "the batch API does not affect rate limits", results only once the whole job has ended.
- [sdk] the mistralai SDK 3.7.0 (the test extra): `CreateBatchJobRequest`, `BatchJob`, `BatchJobStatus`,
  `BatchError`, `ListBatchJobsResponse`, `JobsAPIRoutesBatchGetBatchJobsRequest` (the list's query), `APIEndpoint`,
  `MultiPartBodyParams` (the upload form), `CreateFileResponse` / `GetFileResponse` / `DeleteFileResponse`,
  `FilePurpose`, `SampleType`, `Source`, and `Files.upload`'s docstring (512 MB per file).
- [litellm] litellm's Mistral batch transformation (litellm/llms/mistral/batches/transformation.py): the output
  and error files are OpenAI-shaped JSONL, `{"custom_id", "response": {"status_code", "body"}}`; the SDK's own
  inline example reads `response.body` the same way (mistralai/client-python
  examples/mistral/jobs/async_batch_job_chat_completion_inline.py).
- ../shared/reference/providers.md, Mistral "Batch API".
Mistral publishes neither the exact wording of its batch refusals nor what a result line holds beyond the fields
above: the emulator's messages are its own, in Mistral's error envelope; see README.md.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Any

import orjson
from pydantic import TypeAdapter, ValidationError
from starlette.responses import Response

from gateway.emulators.app import Call, EmulatorState, Handler, Reply, Upload
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
from gateway.emulators.mistral import (
    MODELS,
    MistralProvider,
    _check_fields,
    _detail,
    _error,
    _invalid_model,
    _unprocessable,
)

# [sdk] BatchJobStatus, by the engine's state.
STATUSES = {
    QUEUED: "QUEUED",
    RUNNING: "RUNNING",
    SUCCEEDED: "SUCCESS",
    FAILED: "FAILED",
    EXPIRED: "TIMEOUT_EXCEEDED",
    CANCELLING: "CANCELLATION_REQUESTED",
    CANCELLED: "CANCELLED",
}
# [sdk] CreateBatchJobRequest's fields (by wire name).
JOB_FIELDS = frozenset({"input_files", "requests", "endpoint", "model", "agent_id", "metadata", "timeout_hours"})
# [sdk] APIEndpoint: what `endpoint` may be. The emulator runs the three it has handlers for ([guide] names these
# three first); a job on another is refused as not emulated.
API_ENDPOINTS = (
    "/v1/chat/completions",
    "/v1/embeddings",
    "/v1/fim/completions",
    "/v1/moderations",
    "/v1/chat/moderations",
    "/v1/ocr",
    "/v1/classifications",
    "/v1/chat/classifications",
    "/v1/conversations",
    "/v1/audio/transcriptions",
)
# [sdk] FilePurpose, and the upload form's visibility (FilesAPIRoutesUploadFileFileVisibility, default workspace).
PURPOSES = ("fine-tune", "batch", "ocr", "agentic_safety")
VISIBILITIES = ("workspace", "user")
MAX_FILE_BYTES = 512 * 1024 * 1024  # [sdk] Files.upload: "The size of individual files can be a maximum of 512 MB"
# [guide] FAQ: timeout_hours "defaults to 24 hours and should be lower than 7 days"; [sdk] default 24.
DEFAULT_TIMEOUT_HOURS, TIMEOUT_HOURS_BELOW = 24, 7 * 24
# [sdk] JobsAPIRoutesBatchGetBatchJobsRequest: the list's query parameters (page from 0, page_size 100,
# order_by -created by default). [guide] filters by metadata with its keys as query parameters
# (`?status=RUNNING&job_type=testing`): any other parameter is a metadata key.
LIST_PARAMS = frozenset(
    {"page", "page_size", "model", "agent_id", "metadata", "created_after", "created_by_me", "status", "order_by"}
)
_UUID = TypeAdapter(uuid.UUID)
_INT_TEXT = re.compile(r"[+-]?\d+")


def _invalid(message: str) -> Response:
    return _error(400, message, "invalid_request_error", "3000")


def _not_found(what: str, ident: str) -> Response:
    return _error(404, f"{what} {ident} not found", "invalid_request_error", None)


def _uuid_details(value: Any, loc: list) -> list[dict]:
    """pydantic's own uuid_parsing error, as FastAPI lists it (the API types these ids as UUIDs: [sdk] and
    Mistral's OpenAPI, `input_files: Vec<uuid::Uuid>`)."""
    try:
        _UUID.validate_python(value)
    except ValidationError as exc:
        item = exc.errors(include_url=False)[0]
        detail = {"type": item["type"], "loc": loc, "msg": item["msg"], "input": value}
        if item.get("ctx"):
            detail["ctx"] = {key: str(val) for key, val in item["ctx"].items()}
        return [detail]
    return []


def _path_uuid(call: Call, name: str) -> tuple[str, Response | None]:
    value = call.request.path_params[name]
    details = _uuid_details(value, ["path", name])
    return str(value), (_unprocessable(details) if details else None)


def _check_rows(rows: list[tuple[int, Any]]) -> str | None:
    """[guide] a line is `{"custom_id", "body"}` with a unique custom_id; [sdk] BatchRequest: `body` an object,
    `custom_id` an optional string. A `model` in the body is allowed: [sdk]'s own inline example sends one, and
    the job's model is the one run."""
    if not rows:
        return "the file holds no request"
    seen: set[str] = set()
    for number, row in rows:
        if not isinstance(row, dict):
            return f"line {number}: a request must be a JSON object"
        if not isinstance(row.get("body"), dict):
            return f"line {number}: 'body' must be an object"
        custom_id = row.get("custom_id")
        if custom_id is not None and not isinstance(custom_id, str):
            return f"line {number}: 'custom_id' must be a string"
        if custom_id is not None:
            if custom_id in seen:
                return f"line {number}: custom_id {custom_id!r} is not unique"
            seen.add(custom_id)
    return None


class MistralBatches(BatchApi):
    kind = "mistral"

    def __init__(self, provider: MistralProvider) -> None:
        super().__init__(provider)
        self.mistral = provider

    def routes(self) -> list[tuple[str, str, Handler]]:
        return [
            ("GET", "/v1/files/{file_id}", self.get_file),
            ("DELETE", "/v1/files/{file_id}", self.delete_file),
            ("GET", "/v1/files/{file_id}/content", self.file_content),
            ("POST", "/v1/batch/jobs", self.create_job),
            ("GET", "/v1/batch/jobs", self.list_jobs),
            ("GET", "/v1/batch/jobs/{job_id}", self.get_job),
            ("POST", "/v1/batch/jobs/{job_id}/cancel", self.cancel_job),
        ]

    def upload_routes(self) -> list[tuple[str, str, Handler]]:
        return [("POST", "/v1/files", self.upload)]

    def handlers(self) -> dict[str, Handler]:
        return {
            "/v1/chat/completions": self.mistral.chat,
            "/v1/embeddings": self.mistral.embeddings,
            "/v1/fim/completions": self.mistral.fim,
        }

    def status(self, state: str) -> str:
        return STATUSES[state]

    def line_body(self, job: BatchJob, line: BatchLine) -> dict:
        # [guide] "you can only use one model per batch": the job's model is run, whatever a line's body says.
        return {**line.body, "model": job.model}

    async def answer(self, emu: EmulatorState, job: BatchJob, line: BatchLine) -> LineResult:
        spent = self.mistral._tokens
        try:
            return await super().answer(emu, job, line)
        finally:
            self.mistral._tokens = spent  # [guide] FAQ: the batch API does not affect rate limits (the headers' count)

    # --- files -------------------------------------------------------------------------------------------------
    @staticmethod
    def _file_object(stored: StoredFile, **more: Any) -> dict:
        """[sdk] CreateFileResponse (GetFileResponse adds `deleted`)."""
        return {
            "id": stored.id,
            "object": "file",
            "bytes": len(stored.content),
            "created_at": stored.created_at,
            "filename": stored.filename,
            "purpose": stored.purpose,
            "sample_type": stored.extra["sample_type"],
            "num_lines": stored.extra.get("num_lines"),
            "mimetype": stored.extra.get("mimetype"),
            "source": stored.extra["source"],
            "signature": None,
            "expires_at": None,
            "visibility": stored.extra.get("visibility", "workspace"),
            **more,
        }

    async def upload(self, call: Call) -> Reply:
        form = call.body if isinstance(call.body, dict) else {}
        file, purpose = form.get("file"), form.get("purpose", "fine-tune")
        visibility = form.get("visibility", "workspace")
        details = [] if isinstance(file, Upload) else [_detail("missing", ["file"], "Field required", None)]
        for name, value, allowed in (("purpose", purpose, PURPOSES), ("visibility", visibility, VISIBILITIES)):
            if value not in allowed:
                expected = ", ".join(f"'{a}'" for a in allowed[:-1]) + f" or '{allowed[-1]}'"
                details.append(_detail("enum", [name], f"Input should be {expected}", value, {"expected": expected}))
        if details or not isinstance(file, Upload):
            return _unprocessable(details)
        if len(file.content) > MAX_FILE_BYTES:
            return _invalid(f"File too large: {len(file.content)} bytes, the maximum is 512 MB")
        rows: list[tuple[int, Any]] | None = None
        if purpose == "batch":
            try:
                rows = parse_jsonl(file.content)
            except JsonlError as exc:
                return _invalid(f"Invalid batch file: {exc}")
            problem = _check_rows(rows)
            if problem is not None:
                return _invalid(f"Invalid batch file: {problem}")
        stored = StoredFile(
            id=str(uuid.uuid4()),
            filename=file.filename or "file.jsonl",
            purpose=str(purpose),
            content=file.content,
            created_at=int(call.emu.batches.now()),
            rows=[row for _, row in rows] if rows is not None else None,
            extra={
                # [sdk] SampleType / Source: a batch input file is a batch_request uploaded by the user.
                "sample_type": "batch_request" if rows is not None else "instruct",
                "source": "upload",
                "num_lines": len(rows) if rows is not None else None,
                "mimetype": file.content_type,
                "visibility": visibility,
            },
        )
        return self._file_object(call.emu.batches.add_file(stored))

    def _find_file(self, call: Call) -> StoredFile | Response:
        file_id, refused = _path_uuid(call, "file_id")
        if refused is not None:
            return refused
        stored = call.emu.batches.files.get(file_id)
        return stored if stored is not None else _not_found("File", file_id)

    async def get_file(self, call: Call) -> Reply:
        found = self._find_file(call)
        return found if isinstance(found, Response) else self._file_object(found, deleted=False)

    async def delete_file(self, call: Call) -> Reply:
        found = self._find_file(call)
        if isinstance(found, Response):
            return found
        del call.emu.batches.files[found.id]
        return {"id": found.id, "object": "file", "deleted": True}  # [sdk] DeleteFileResponse

    async def file_content(self, call: Call) -> Reply:
        found = self._find_file(call)
        return found if isinstance(found, Response) else Response(found.content, media_type="application/octet-stream")

    # --- jobs --------------------------------------------------------------------------------------------------
    def _job_object(self, job: BatchJob) -> dict:
        """[sdk] BatchJob (`outputs` only with `inline`, which the emulator does not serve, so left out)."""
        return {
            "id": job.id,
            "object": "batch",
            "input_files": job.input_file_ids,
            "metadata": job.metadata,
            "endpoint": job.endpoint,
            "model": job.model,
            "agent_id": None,
            "output_file": job.output_file_id,
            "error_file": job.error_file_id,
            "errors": [{"message": job.error, "count": 1}] if job.error else [],  # [sdk] BatchError
            "status": STATUSES[job.state],
            "created_at": int(job.created_at),
            "total_requests": len(job.lines),
            # [guide]'s example reports progress as (succeeded + failed) / total: completed counts both.
            "completed_requests": len(job.results),
            "succeeded_requests": job.succeeded,
            "failed_requests": job.failed,
            "started_at": int(job.started_at) if job.started_at is not None else None,
            "completed_at": int(job.finished_at) if job.finished_at is not None else None,
        }

    async def create_job(self, call: Call) -> Reply:
        body = call.body
        if not isinstance(body, dict):
            return _unprocessable([_detail("model_attributes_type", [], "Input should be a valid dictionary", body)])
        details = _check_fields(body, JOB_FIELDS, ("endpoint",))
        endpoint, files, metadata = body.get("endpoint"), body.get("input_files"), body.get("metadata")
        timeout = body.get("timeout_hours", DEFAULT_TIMEOUT_HOURS)
        if "endpoint" in body and endpoint not in API_ENDPOINTS:
            expected = ", ".join(f"'{e}'" for e in API_ENDPOINTS[:-1]) + f" or '{API_ENDPOINTS[-1]}'"
            details.append(
                _detail("enum", ["endpoint"], f"Input should be {expected}", endpoint, {"expected": expected})
            )
        if files is not None and not isinstance(files, list):
            details.append(_detail("list_type", ["input_files"], "Input should be a valid list", files))
        for index, file_id in enumerate(files if isinstance(files, list) else []):
            details += _uuid_details(file_id, ["body", "input_files", index])
        if metadata is not None and not (
            isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())
        ):
            details.append(
                _detail("dict_type", ["metadata"], "Input should be a valid dictionary of strings", metadata)
            )
        if isinstance(timeout, bool) or not isinstance(timeout, int):
            details.append(_detail("int_type", ["timeout_hours"], "Input should be a valid integer", timeout))
        elif timeout < 1:
            details.append(_detail("greater_than_equal", ["timeout_hours"], "Input should be >= 1", timeout, {"ge": 1}))
        elif timeout >= TIMEOUT_HOURS_BELOW:
            details.append(
                _detail(
                    "less_than",
                    ["timeout_hours"],
                    f"Input should be less than {TIMEOUT_HOURS_BELOW}",
                    timeout,
                    {"lt": TIMEOUT_HOURS_BELOW},
                )
            )
        if details:
            return _unprocessable(details)
        if body.get("requests") is not None or body.get("agent_id") is not None:
            return _invalid("Inline requests and agent jobs are not emulated: send input_files and a model")
        if endpoint not in self.handlers():
            return _invalid(f"Endpoint {endpoint} is not emulated (only {', '.join(self.handlers())})")
        if not files:
            return _invalid("input_files must name at least one file")
        model = body.get("model")
        if not isinstance(model, str) or model not in MODELS:
            return _invalid_model(model)
        book = call.emu.batches
        rows: list[dict] = []
        for file_id in files:
            stored = book.files.get(str(file_id))
            if stored is None:
                return _not_found("File", str(file_id))
            if stored.rows is None:
                return _invalid(f"File {file_id} is not a batch file (purpose {stored.purpose})")
            rows += stored.rows
        job = BatchJob(
            id=str(uuid.uuid4()),
            driver=self.driver(call.emu),
            model=model,
            endpoint=str(endpoint),
            lines=[BatchLine(index, row.get("custom_id"), row["body"]) for index, row in enumerate(rows)],
            input_file_ids=[str(f) for f in files],
            metadata=metadata,
            created_at=book.now(),
            window_seconds=timeout * 3600,
            run_seconds=book.run_seconds,
            held=book.hold_new,
            request={"timeout_hours": timeout},
        )
        return self._job_object(book.add_job(job))

    def _find_job(self, call: Call) -> BatchJob | Response:
        job_id, refused = _path_uuid(call, "job_id")
        if refused is not None:
            return refused
        job = call.emu.batches.jobs.get(job_id)
        return job if job is not None else _not_found("Batch job", job_id)

    async def get_job(self, call: Call) -> Reply:
        found = self._find_job(call)
        if isinstance(found, Response):
            return found
        await call.emu.batches.advance(found)
        return self._job_object(found)

    async def cancel_job(self, call: Call) -> Reply:
        """[guide] "Request the cancellation of a batch job": it is CANCELLATION_REQUESTED, then CANCELLED. Mistral
        documents no refusal for a job that has already ended: it is answered as it is."""
        found = self._find_job(call)
        if isinstance(found, Response):
            return found
        await call.emu.batches.cancel(found)
        return self._job_object(found)

    async def list_jobs(self, call: Call) -> Reply:
        query = call.request.query_params
        details, numbers = [], {}
        for name, default in (("page", 0), ("page_size", 100)):
            raw = query.get(name)
            if raw is not None and not _INT_TEXT.fullmatch(raw.strip()):
                message = "Input should be a valid integer, unable to parse string as an integer"
                details.append({"type": "int_parsing", "loc": ["query", name], "msg": message, "input": raw})
            numbers[name] = int(raw) if raw is not None and _INT_TEXT.fullmatch(raw.strip()) else default
        statuses = query.getlist("status")
        for status in statuses:
            if status not in STATUSES.values():
                details.append(
                    {"type": "enum", "loc": ["query", "status"], "msg": "Input should be a status", "input": status}
                )
        created_after: datetime | None = None
        if query.get("created_after") is not None:
            try:
                created_after = datetime.fromisoformat(query["created_after"])
            except ValueError:
                message = "Input should be a valid datetime"
                details.append(
                    {"type": "datetime_from_date_parsing", "loc": ["query", "created_after"], "msg": message}
                )
        if details:
            return _unprocessable(details)
        wanted_metadata = {key: value for key, value in query.items() if key not in LIST_PARAMS}
        if query.get("metadata"):
            try:
                wanted_metadata.update(orjson.loads(query["metadata"]))
            except (orjson.JSONDecodeError, TypeError, ValueError):
                pass
        book = call.emu.batches
        for job in list(book.jobs.values()):
            await book.advance(job)
        jobs = [
            job
            for job in book.jobs.values()
            if (query.get("model") is None or job.model == query["model"])
            and (not statuses or STATUSES[job.state] in statuses)
            and all((job.metadata or {}).get(key) == value for key, value in wanted_metadata.items())
            and (created_after is None or job.created_at >= created_after.timestamp())
        ]
        jobs.sort(key=lambda job: job.created_at, reverse=query.get("order_by", "-created") != "created")
        start = numbers["page"] * numbers["page_size"]
        page = jobs[start : start + numbers["page_size"]]
        return {"object": "list", "data": [self._job_object(job) for job in page], "total": len(jobs)}

    # --- results -----------------------------------------------------------------------------------------------
    def write_results(self, book: BatchBook, job: BatchJob) -> None:
        """[litellm] OpenAI-shaped result lines: `{"id", "custom_id", "response": {"status_code", "body"},
        "error"}`; a line the model endpoint refused is in the error file with its status and error body, `error`
        null (as OpenAI does for HTTP errors). Lines left unanswered (expired, cancelled, failed) are in neither."""
        for results, sample_type, suffix in (
            ([r for r in job.results if r.ok], "batch_result", ""),
            ([r for r in job.results if not r.ok], "batch_error", "_error"),
        ):
            if not results:
                continue
            stored = book.add_file(
                StoredFile(
                    id=str(uuid.uuid4()),
                    filename=f"{job.id}{suffix}.jsonl",
                    purpose="batch",
                    content=jsonl([self._result_row(result) for result in results]),
                    created_at=int(book.now()),
                    extra={"sample_type": sample_type, "source": "mistral", "num_lines": len(results)},
                )
            )
            if sample_type == "batch_result":
                job.output_file_id = stored.id
            else:
                job.error_file_id = stored.id

    @staticmethod
    def _result_row(result: LineResult) -> dict:
        return {
            "id": f"batch-{result.request_id}",
            "custom_id": result.line.custom_id,
            "response": {"status_code": result.status_code, "body": result.body},
            "error": None,
        }


class MistralWithBatches(MistralProvider):
    """The Mistral emulator: its interactive API (mistral.py) and its Files and Batch APIs (this module)."""

    def __init__(self) -> None:
        super().__init__()
        self.batch_api = MistralBatches(self)

    def routes(self) -> list[tuple[str, str, Handler]]:
        return super().routes() + self.batch_api.routes()

    def upload_routes(self) -> list[tuple[str, str, Handler]]:
        return self.batch_api.upload_routes()
