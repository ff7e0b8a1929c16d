"""Moonshot's (Kimi's) Batch API, OpenAI-shaped.

The wire format, from Moonshot's references (the Batch API guide, https://platform.kimi.ai/docs/guide/use-batch-api,
and the API reference, https://platform.kimi.ai/docs/api/batch-create, batch-retrieve, batch-cancel) and, where
they say "as OpenAI", OpenAI's (https://platform.openai.com/docs/api-reference/batch,
https://platform.openai.com/docs/api-reference/files); summed up in ../shared/reference/providers.md:

- `POST /v1/files`, multipart: `purpose=batch` and the JSONL `file` (`.jsonl`, at most 100 MB); each line
  `{"custom_id", "method": "POST", "url": "/v1/chat/completions", "body"}`, the body a chat request naming the
  model ("All lines must use the same model", so one model per file);
- `POST /v1/batches` `{"input_file_id", "endpoint", "completion_window", "metadata"}`: only
  `/v1/chat/completions`; the window "supports formats like 12h, 1d, 3d, minimum 12h, maximum 7d"; metadata at
  most 16 pairs (keys up to 64 characters, values up to 512);
- `GET /v1/batches/{id}`, `POST /v1/batches/{id}/cancel`: a batch object (`status` one of validating, failed,
  in_progress, finalizing, completed, expired, cancelling, cancelled; `output_file_id`, `error_file_id`,
  `request_counts: {"total", "completed", "failed"}`; OpenAI's `errors: {"data": [{"code", "message", "line"}]}`);
- results with `GET /v1/files/{id}/content`: OpenAI's lines `{"id", "custom_id", "response": {"status_code",
  "request_id", "body"}, "error": {"code", "message"} | null}`;
- `GET /v1/batches?limit=&after=` lists batches newest first (https://platform.kimi.ai/docs/api/batch-list; OpenAI's
  https://platform.openai.com/docs/api-reference/batch/list): `limit` 1 to 100 (default 20), `after` the id of
  the last batch of the page before, the answer `{"object": "list", "data", "has_more"}` (OpenAI adds
  `first_id`, `last_id`); no filter by metadata or time.
"""

from __future__ import annotations

from typing import Any

from gateway.catalog import ModelConfig
from gateway.errors import GatewayError, invalid_request
from gateway.providers.batches.base import BatchEndpoint, JobState, JobStatus, LineOutcome, Submitted, UpstreamLine
from gateway.providers.batches.upstream import (
    LIST_PAGE_SIZE,
    LIST_PAGES,
    HttpBatchApi,
    check_line_ids,
    count_field,
    jsonl,
    known_state,
    malformed,
    search_exhausted,
    search_page,
    text_field,
)
from gateway.types import Json

# OpenAI's batch statuses, as the gateway's job states.
STATES: dict[str, JobState] = {
    "validating": "queued",
    "in_progress": "running",
    "finalizing": "running",
    "completed": "succeeded",
    "failed": "failed",
    "expired": "expired",
    "cancelling": "cancelling",
    "cancelled": "cancelled",
}
# "Request endpoint, currently only /v1/chat/completions is supported" (Create Batch).
ENDPOINTS = ("/v1/chat/completions",)
MIN_WINDOW_HOURS = 12
MAX_WINDOW_HOURS = 7 * 24


def completion_window(window_hours: int) -> str:
    """The window Moonshot takes: at least 12h, at most 7d; whole days as days ("1d", "3d", as the reference
    writes them), other lengths as hours ("12h", "36h")."""
    hours = min(max(window_hours, MIN_WINDOW_HOURS), MAX_WINDOW_HOURS)
    return f"{hours // 24}d" if hours % 24 == 0 else f"{hours}h"


class MoonshotBatchApi(HttpBatchApi):
    async def submit(
        self,
        endpoint: BatchEndpoint,
        model: ModelConfig,
        lines: list[UpstreamLine],
        window_hours: int,
        metadata: dict[str, str],
    ) -> Submitted:
        if endpoint not in ENDPOINTS:
            raise invalid_request(f"{self.name}'s batch API does not run {endpoint}", param="endpoint")
        if not lines:
            raise ValueError("a provider job needs at least one line")
        check_line_ids(line.id for line in lines)
        file_id = await self.upload(jsonl(self._line(endpoint, line, model) for line in lines))
        batch: Json = {
            "input_file_id": file_id,
            "endpoint": endpoint,
            "completion_window": completion_window(window_hours),
        }
        if metadata:
            batch["metadata"] = metadata
        try:
            created = await self.call_json("POST", self.url("batches"), batch)
        except GatewayError:
            await self.forget(file_id)
            raise
        job_id = created.get("id")
        if not isinstance(job_id, str) or not job_id:
            raise malformed(self.name, "POST /batches")
        return Submitted(file_id=file_id, job_id=job_id)

    def _line(self, endpoint: str, line: UpstreamLine, model: ModelConfig) -> Json:
        try:
            body = self.adapter.batch_body(endpoint, line.body, model)  # `model`: the upstream id, every line
        except GatewayError as exc:
            exc.message = f"{line.id}: {exc.message}"
            exc.args = (exc.message,)
            raise
        return {"custom_id": line.id, "method": "POST", "url": endpoint, "body": body}

    async def status(self, job_id: str) -> JobStatus:
        return job_status(self.name, await self.call_json("GET", self.url("batches", job_id)))

    async def cancel(self, job_id: str) -> JobStatus:
        return job_status(self.name, await self.call_json("POST", self.url("batches", job_id, "cancel")))

    async def results(self, status: JobStatus) -> list[LineOutcome]:
        return await self.read_results((status.output_file_id, status.error_file_id))

    async def find_job(self, gateway_job: str, created_after: int) -> JobStatus | None:
        """`GET /v1/batches`, newest first, page after page: until the tagged batch, the end of the list
        (`has_more` false) or a batch created before `created_after`."""
        query = {"limit": str(LIST_PAGE_SIZE)}
        for _ in range(LIST_PAGES):
            listed = await self.call_json("GET", self.url("batches").with_query(query))
            batches = listed.get("data")
            if not isinstance(batches, list):
                raise malformed(self.name, "GET /batches")
            found, done = search_page(batches, gateway_job, created_after)
            if found is not None:
                return job_status(self.name, found)
            if done or listed.get("has_more") is not True or not batches:
                return None
            # The cursor: the page's last batch (what OpenAI's `last_id` says; Moonshot's reference shows only
            # `has_more`).
            last = batches[-1]
            cursor = text_field(last.get("id")) if isinstance(last, dict) else None
            if cursor is None:
                raise malformed(self.name, "GET /batches (a batch without an id)")
            query = {"limit": str(LIST_PAGE_SIZE), "after": cursor}
        search_exhausted(self.name, gateway_job)
        return None


def job_status(provider: str, batch: Json) -> JobStatus:
    upstream = batch.get("status")
    if not isinstance(upstream, str):
        raise malformed(provider, "a batch (no status)")
    counts = batch.get("request_counts")
    counts = counts if isinstance(counts, dict) else {}
    return JobStatus(
        state=known_state(provider, STATES, upstream),
        upstream_status=upstream,
        output_file_id=text_field(batch.get("output_file_id")),
        error_file_id=text_field(batch.get("error_file_id")),
        error=_errors(batch.get("errors")),
        total=count_field(counts.get("total")),
        completed=count_field(counts.get("completed")),
        failed=count_field(counts.get("failed")),
        job_id=text_field(batch.get("id")),
    )


def _errors(errors: Any) -> str | None:
    """OpenAI's `errors: {"object": "list", "data": [{"code", "message", "param", "line"}]}`; a plain string or
    list is read too (Moonshot's reference does not show the field)."""
    if isinstance(errors, str):
        return errors or None
    if isinstance(errors, dict):
        errors = errors.get("data")
    if not isinstance(errors, list):
        return None
    said = []
    for error in errors:
        if not isinstance(error, dict) or not isinstance(error.get("message"), str):
            continue
        where = f" (line {error['line']})" if isinstance(error.get("line"), int) else ""
        code = f"{error['code']}: " if isinstance(error.get("code"), str) else ""
        said.append(f"{code}{error['message']}{where}")
    return "; ".join(said) or None
