"""One interface for every provider's batch API (issue 16): one file per provider behind it.

The gateway groups a batch's lines by the model routing chose and sends each group as one job: the lines are
uploaded as the provider's input file (`submit`), the job is polled (`status`) until it ends, and its results are
read back (`results`). Line ids sent upstream are the gateway's own (`line-<index>`), never the client's
`custom_id`. Bodies are sent as the interactive path would send them (the provider's adapter `prepare_*`), and
results come back as the interactive path returns them (the adapter's reply fixes, usage normalised), so a batch
line's answer looks exactly like the same request's answer on `/v1/chat/completions`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Literal

from gateway.catalog import ModelConfig, Provider
from gateway.types import Json, Usage

# The endpoint a job runs every line on, as OpenAI's batch API names it.
BatchEndpoint = Literal["/v1/chat/completions", "/v1/embeddings"]
# A job's state as the gateway sees it (gateway.store.batches.JOB_STATES).
JobState = Literal["queued", "running", "succeeded", "failed", "expired", "cancelling", "cancelled"]
# The metadata key naming the gateway's job row on each provider job it submits (the runner sends
# `{"gateway_batch": ..., "gateway_job": ...}`): `BatchApi.find_job` looks a job up by it.
GATEWAY_JOB = "gateway_job"


@dataclass(frozen=True, slots=True)
class UpstreamLine:
    """One line to send: the gateway's id for it, and the canonical (OpenAI-shaped) body, validated, with `model`
    left out (the job names the model)."""

    id: str
    body: Json


@dataclass(frozen=True, slots=True)
class Submitted:
    """A job the provider accepted."""

    file_id: str  # the uploaded input file's id at the provider
    job_id: str


@dataclass(frozen=True, slots=True)
class JobStatus:
    state: JobState
    upstream_status: str  # the provider's own word for it (shown in `gateway batch show`)
    output_file_id: str | None = None
    error_file_id: str | None = None
    error: str | None = None  # why the job failed, when the provider says
    total: int | None = None
    completed: int | None = None
    failed: int | None = None
    job_id: str | None = None  # the provider's id for the job (None when its answer did not say)


@dataclass(frozen=True, slots=True)
class LineOutcome:
    """One line's result from a finished (or cancelled, or expired) job: its HTTP status and body, and usage."""

    id: str  # the `UpstreamLine.id` it answers
    status_code: int  # 200, or the provider's error status for that line
    body: Json  # the answer in OpenAI's shape (200), or an OpenAI-style `{"error": {...}}`
    usage: Usage | None  # what the provider billed for this line (None: nothing reported)


class BatchApi(ABC):
    """A provider's batch API. One instance per provider (its own pooled HTTP session), built from the catalog's
    provider: the URL and key come from there and nowhere else (never from a request)."""

    def __init__(self, provider: Provider) -> None:
        self.provider = provider

    async def start(self) -> None:  # noqa: B027 (an optional hook)
        """Open the connection pool."""

    async def close(self) -> None:  # noqa: B027 (an optional hook)
        """Close the connection pool."""

    @abstractmethod
    async def submit(
        self,
        endpoint: BatchEndpoint,
        model: ModelConfig,
        lines: list[UpstreamLine],
        window_hours: int,
        metadata: dict[str, str],
    ) -> Submitted:
        """Upload `lines` as the provider's input file and create one job running them on `model`'s
        `upstream_model`, to finish within `window_hours` (raised to the provider's minimum, capped at its
        maximum). Raises GatewayError (the provider's refusal mapped as on the interactive path)."""

    @abstractmethod
    async def status(self, job_id: str) -> JobStatus: ...

    @abstractmethod
    async def find_job(self, gateway_job: str, created_after: int) -> JobStatus | None:
        """The provider's job whose metadata says `gateway_job` == `gateway_job`, created at or after
        `created_after` (Unix seconds, the provider's clock), with its id (`JobStatus.job_id`); None when the
        provider lists none. For a node that died between asking the provider for a job and recording its id: the
        job it may have created is found instead of submitted again. Newest first: when two jobs carry the tag,
        the newest is returned. The search is bounded (a few thousand of the provider's newest jobs): past that it
        answers None, with a warning. Raises GatewayError when the provider refuses the listing."""

    @abstractmethod
    async def cancel(self, job_id: str) -> JobStatus:
        """Ask the provider to cancel; the job's status after asking (usually cancelling)."""

    @abstractmethod
    async def results(self, status: JobStatus) -> list[LineOutcome]:
        """Every line result the finished job's output and error files hold (both read; lines in any order)."""
