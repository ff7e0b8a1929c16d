"""Mistral's Batch API (La Plateforme).

The wire format, from Mistral's own references: the batch guide (https://docs.mistral.ai/capabilities/batch) and
the mistralai SDK 3.7.0's models (CreateBatchJobRequest, BatchJob, BatchJobStatus, BatchError, BatchRequest) and
its batch reader (mistralai/extra/batch/client.py), summed up in ../shared/reference/providers.md ("Batch API"):

- `POST /v1/files`, multipart: `purpose=batch` and the JSONL `file`; each line `{"custom_id", "body"}`, the body
  the endpoint's request without `model` (the job names the one model it runs);
- `POST /v1/batch/jobs` `{"input_files": [id], "endpoint", "model", "metadata", "timeout_hours"}` (timeout_hours:
  an integer, "defaults to 24 hours and should be lower than 7 days", the guide's FAQ);
- `GET /v1/batch/jobs/{id}`, `POST /v1/batch/jobs/{id}/cancel`: a BatchJob (`status`, `output_file`,
  `error_file`, `errors: [{"message", "count"}]`, `total_requests`, `succeeded_requests`, `failed_requests`);
- results with `GET /v1/files/{id}/content`: lines `{"id", "custom_id", "response": {"status_code", "body"},
  "error"}`;
- `GET /v1/batch/jobs` lists jobs (`{"object": "list", "data": [BatchJob], "total"}`, the SDK's
  ListBatchJobsResponse), its query the SDK's JobsAPIRoutesBatchGetBatchJobsRequest: `page` (from 0), `page_size`
  (default 100), `created_after` (a date-time), `order_by` (`-created`, newest first, by default), and `metadata`,
  sent "form, explode": each key its own parameter, as the guide's `?status=RUNNING&job_type=testing` filters by
  metadata key `job_type`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from gateway.catalog import ModelConfig
from gateway.errors import GatewayError, invalid_request
from gateway.providers.batches.base import (
    GATEWAY_JOB,
    BatchEndpoint,
    JobState,
    JobStatus,
    LineOutcome,
    Submitted,
    UpstreamLine,
)
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

# mistralai BatchJobStatus, as the gateway's job states.
STATES: dict[str, JobState] = {
    "QUEUED": "queued",
    "RUNNING": "running",
    "SUCCESS": "succeeded",
    "FAILED": "failed",
    "TIMEOUT_EXCEEDED": "expired",
    "CANCELLATION_REQUESTED": "cancelling",
    "CANCELLED": "cancelled",
}
# timeout_hours: at least 1 (an integer number of hours), "lower than 7 days" (the guide's FAQ).
MIN_TIMEOUT_HOURS, MAX_TIMEOUT_HOURS = 1, 7 * 24 - 1
# The endpoints the gateway batches (Mistral's APIEndpoint also has FIM, moderations, OCR: not offered).
ENDPOINTS = ("/v1/chat/completions", "/v1/embeddings")


class MistralBatchApi(HttpBatchApi):
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
        job: Json = {
            "input_files": [file_id],
            "endpoint": endpoint,
            "model": model.upstream_model,
            "timeout_hours": min(max(window_hours, MIN_TIMEOUT_HOURS), MAX_TIMEOUT_HOURS),
        }
        if metadata:
            job["metadata"] = metadata
        try:
            created = await self.call_json("POST", self.url("batch", "jobs"), job)
        except GatewayError:
            await self.forget(file_id)
            raise
        job_id = created.get("id")
        if not isinstance(job_id, str) or not job_id:
            raise malformed(self.name, "POST /batch/jobs")
        return Submitted(file_id=file_id, job_id=job_id)

    def _line(self, endpoint: str, line: UpstreamLine, model: ModelConfig) -> Json:
        try:
            body = self.adapter.batch_body(endpoint, line.body, model)
        except GatewayError as exc:
            exc.message = f"{line.id}: {exc.message}"
            exc.args = (exc.message,)
            raise
        body.pop("model", None)  # the job names the model (BatchRequest: `body` only)
        return {"custom_id": line.id, "body": body}

    async def status(self, job_id: str) -> JobStatus:
        return job_status(self.name, await self.call_json("GET", self.url("batch", "jobs", job_id)))

    async def cancel(self, job_id: str) -> JobStatus:
        return job_status(self.name, await self.call_json("POST", self.url("batch", "jobs", job_id, "cancel")))

    async def results(self, status: JobStatus) -> list[LineOutcome]:
        return await self.read_results((status.output_file_id, status.error_file_id))

    async def find_job(self, gateway_job: str, created_after: int) -> JobStatus | None:
        """`GET /v1/batch/jobs` filtered by the tag and the time, newest first, page after page. Each job listed is
        checked again here (a filter the API left unapplied finds nothing it should not)."""
        query = {
            GATEWAY_JOB: gateway_job,
            # A second early: whether Mistral's "after" includes the instant itself is not documented (search_page
            # then applies the bound exactly); written as the SDK writes a datetime (ISO 8601, UTC as "Z").
            "created_after": datetime.fromtimestamp(max(created_after - 1, 0), UTC).isoformat().replace("+00:00", "Z"),
            "order_by": "-created",
            "page_size": str(LIST_PAGE_SIZE),
        }
        for page in range(LIST_PAGES):
            listed = await self.call_json("GET", self.url("batch", "jobs").with_query({**query, "page": str(page)}))
            jobs = listed.get("data")
            if not isinstance(jobs, list):
                raise malformed(self.name, "GET /batch/jobs")
            found, done = search_page(jobs, gateway_job, created_after)
            if found is not None:
                return job_status(self.name, found)
            total = count_field(listed.get("total"))
            if done or len(jobs) < LIST_PAGE_SIZE or (total is not None and (page + 1) * LIST_PAGE_SIZE >= total):
                return None
        search_exhausted(self.name, gateway_job)
        return None


def job_status(provider: str, job: Json) -> JobStatus:
    """A BatchJob as the gateway sees it."""
    upstream = job.get("status")
    if not isinstance(upstream, str):
        raise malformed(provider, "a batch job (no status)")
    return JobStatus(
        state=known_state(provider, STATES, upstream),
        upstream_status=str(upstream),
        output_file_id=text_field(job.get("output_file")),
        error_file_id=text_field(job.get("error_file")),
        error=_errors(job.get("errors")),
        total=count_field(job.get("total_requests")),
        completed=count_field(job.get("succeeded_requests")),
        failed=count_field(job.get("failed_requests")),
        job_id=text_field(job.get("id")),
    )


def _errors(errors: Any) -> str | None:
    """BatchError: `{"message", "count"}` (count defaults to 1)."""
    if not isinstance(errors, list):
        return None
    said = []
    for error in errors:
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            count = error.get("count")
            said.append(f"{error['message']} (x{count})" if isinstance(count, int) and count > 1 else error["message"])
    return "; ".join(said) or None
