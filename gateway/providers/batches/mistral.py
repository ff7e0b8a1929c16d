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
  "error"}`.
"""

from __future__ import annotations

from typing import Any

from gateway.catalog import ModelConfig
from gateway.errors import GatewayError, invalid_request
from gateway.providers.batches.base import BatchEndpoint, JobState, JobStatus, LineOutcome, Submitted, UpstreamLine
from gateway.providers.batches.upstream import (
    HttpBatchApi,
    check_line_ids,
    count_field,
    jsonl,
    known_state,
    malformed,
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
