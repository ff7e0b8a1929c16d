"""What the database holds for batches (issue 16), and the interface both databases implement.

A batch is written once when it is created (its record, every line of its input file as validated and routed,
and its budget hold, in one transaction: a refused hold writes nothing) and then moved forward by whichever node
holds its lease (`lease`): provider jobs submitted and polled, lines settled one by one (each settlement is one
transaction: its ledger row, its cost charged, its share of the batch's hold given back, the line marked done;
a line settled twice is recognised and counted once), and finally the rest of the hold released.

Uploaded files are stored in parts (`FilePart`) in the database or, when larger than the inline limit, in the
data directory (`FileRecord.location`); output and error files are not stored at all: they are rendered from the
batch's lines when read.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field

from gateway.store.base import HoldRequest, HoldResult, LedgerRow, Scope

# OpenAI's batch statuses (https://platform.openai.com/docs/api-reference/batch/object).
BATCH_STATUSES = (
    "validating",
    "failed",
    "in_progress",
    "finalizing",
    "completed",
    "expired",
    "cancelling",
    "cancelled",
)
BATCH_ACTIVE = ("validating", "in_progress", "finalizing", "cancelling")  # a node must lease and advance these
BATCH_DONE = ("failed", "completed", "expired", "cancelled")

# A line's state: `pending` (waiting to be sent), `submitted` (in a provider job, or running on the pipeline),
# `done` (settled: its answer or its provider's error is its result), `failed` (refused by the gateway: invalid,
# no route, budget; never sent, nothing charged), `expired` / `cancelled` (never answered: nothing charged).
LINE_STATES = ("pending", "submitted", "done", "failed", "expired", "cancelled")
# How a line runs: on its provider's batch API (`batch`, at batch prices), through the interactive pipeline
# (`interactive`, at normal prices: a provider without a batch API, or a line that cannot wait), or not at all
# (`invalid`: refused at validation, its error in the error file).
LINE_MODES = ("batch", "interactive", "invalid")

# A provider job's state, as the gateway sees it (each provider's own statuses map onto these).
JOB_STATES = ("submitting", "queued", "running", "succeeded", "failed", "expired", "cancelling", "cancelled")
JOB_ACTIVE = ("submitting", "queued", "running", "cancelling")


@dataclass(slots=True)
class FileRecord:
    """An uploaded file (`purpose` batch), owned by the team (and key) that uploaded it."""

    id: str  # "file-..."
    team: str
    key_id: str | None
    purpose: str
    filename: str
    bytes: int
    created_at: int
    location: str  # "db": its parts are in the database; "disk": data_dir/files/<id>
    sha256: str
    lines: int = 0  # JSONL lines (non-empty), counted at upload


@dataclass(slots=True)
class BatchRecord:
    """A batch as OpenAI describes it, plus what the gateway needs to run it."""

    id: str  # "batch_..."
    team: str
    key_id: str | None
    key_prefix: str | None
    input_file_id: str
    endpoint: str  # "/v1/chat/completions" or "/v1/embeddings"
    completion_window: str  # as given ("24h", "12h", "7d")
    status: str  # BATCH_STATUSES
    created_at: int
    expires_at: int  # created_at + the window: past it, what is unfinished expires
    metadata: dict[str, str] | None = None
    in_progress_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    errors: list[dict[str, object]] | None = None  # batch-level errors (OpenAI's `errors.data`)
    total: int = 0  # request_counts.total
    completed: int = 0  # request_counts.completed (answered: status 200)
    failed: int = 0  # request_counts.failed (every other line that ended)
    hold_id: str | None = None  # the budget hold covering the batch's unfinished lines (None: no budget)
    scopes: list[Scope] = field(default_factory=list)  # the budget scopes lines are charged to
    reserved_nanos: int = 0  # what the hold held when the batch was created
    lease_owner: str | None = None  # the gateway process advancing it now
    lease_until: int = 0
    plan: dict[str, object] | None = None  # what routing chose: lines and estimated cost per model (explain)


@dataclass(slots=True)
class BatchLine:
    """One line of a batch's input file."""

    batch_id: str
    index: int  # 0-based line number among the file's non-empty lines
    custom_id: str
    mode: str  # LINE_MODES
    state: str  # LINE_STATES
    body: str | None  # the validated request body (JSON text) as the gateway will send it; None for invalid lines
    model: str | None = None  # the catalog model routing chose
    provider: str | None = None
    region: str | None = None
    route_reason: str | None = None
    reserved_nanos: int = 0  # this line's share of the batch's hold (its worst case at the price it runs at)
    job_id: str | None = None  # the provider job carrying it (mode batch)
    status_code: int | None = None  # its result's HTTP status (the output / error file's `response.status_code`)
    response: str | None = None  # its result's body (JSON text): the answer, or the error
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cost_nanos: int = 0  # charged (batch price on the batch API)
    list_cost_nanos: int = 0  # what the same usage costs at interactive prices (the saving is the difference)


@dataclass(slots=True)
class ProviderJob:
    """A job on a provider's batch API carrying the lines of one batch routed to one model."""

    id: str  # the gateway's id ("bjob_...")
    batch_id: str
    provider: str
    model: str
    state: str  # JOB_STATES
    lines: int
    created_at: int
    updated_at: int
    upstream_file_id: str | None = None  # the input file uploaded to the provider
    upstream_id: str | None = None  # the provider's job id
    upstream_status: str | None = None  # the provider's own status word, as last seen
    output_file_id: str | None = None
    error_file_id: str | None = None
    error: str | None = None  # why it failed (the provider's message)


@dataclass(slots=True)
class LineResult:
    """A line's end, for `settle_line`: its state and result, and (answered lines) its ledger row."""

    state: str  # done / failed / expired / cancelled
    status_code: int | None
    response: str | None
    row: LedgerRow | None = None  # charged to the batch's scopes (None: nothing charged)
    list_cost_nanos: int = 0


@dataclass(slots=True)
class Page:
    items: list[object]
    has_more: bool


class BatchStore(ABC):
    """Files, batches, their lines and provider jobs (one implementation per database: gateway/store/batch_sql.py)."""

    # -- files ---------------------------------------------------------------------------------------------
    @abstractmethod
    async def create_file(self, record: FileRecord, parts: Sequence[bytes]) -> None:
        """Insert the file's row and (location "db") its parts, in one transaction."""

    @abstractmethod
    async def get_file(self, file_id: str) -> FileRecord | None: ...

    @abstractmethod
    async def file_parts(self, file_id: str) -> list[bytes]:
        """A "db" file's content, in order."""

    @abstractmethod
    async def list_files(
        self, team: str | None, purpose: str | None, after: str | None, limit: int, newest_first: bool = True
    ) -> tuple[list[FileRecord], bool]:
        """A page of files (a team's, or all with None), after the file `after` in the order asked; whether more follow."""

    @abstractmethod
    async def delete_file(self, file_id: str) -> bool:
        """Remove the file's row and parts (a batch that read it keeps its lines)."""

    # -- batches -------------------------------------------------------------------------------------------
    @abstractmethod
    async def create_batch(
        self, batch: BatchRecord, lines: Sequence[BatchLine], hold: HoldRequest | None
    ) -> HoldResult:
        """In one transaction: take `hold` (refused: nothing written, the refusal returned), insert the batch and
        its lines. With no hold, always ok."""

    @abstractmethod
    async def get_batch(self, batch_id: str) -> BatchRecord | None: ...

    @abstractmethod
    async def list_batches(self, team: str | None, after: str | None, limit: int) -> tuple[list[BatchRecord], bool]:
        """Newest first (OpenAI's order), after the batch `after`; whether more follow."""

    @abstractmethod
    async def update_batch(self, batch: BatchRecord, expect_status: str | None = None) -> bool:
        """Write the batch's mutable fields (status and its times, errors, counts, plan); with `expect_status`, only
        if the stored status is still that one (False: it changed meanwhile, nothing written)."""

    @abstractmethod
    async def request_cancel(self, batch_id: str, now: int) -> BatchRecord | None:
        """Move an active batch to `cancelling` (a finished one is left as it is); the batch as it is now."""

    @abstractmethod
    async def lease(self, owner: str, now: int, until: int, limit: int) -> list[BatchRecord]:
        """Take (or renew) the lease of up to `limit` active batches whose lease is free, expired or `owner`'s own,
        until `until`: exactly one owner holds a batch at a time, on every database."""

    @abstractmethod
    async def renew_leases(self, batch_ids: Sequence[str], owner: str, until: int) -> set[str]:
        """Extend `owner`'s leases of these batches to `until` (a node at work on a batch keeps it however long one
        step takes); the ids it still held and renewed. A lease another node took, or one released (the batch
        ended), is not renewed."""

    @abstractmethod
    async def release_lease(self, batch_id: str, owner: str) -> None: ...

    # -- lines ---------------------------------------------------------------------------------------------
    @abstractmethod
    async def lines(
        self, batch_id: str, states: Sequence[str] | None = None, after_index: int = -1, limit: int = 1000
    ) -> list[BatchLine]:
        """The batch's lines in order (those in `states`), from index `after_index` + 1, at most `limit`."""

    @abstractmethod
    async def line_counts(self, batch_id: str) -> dict[tuple[str, str], int]:
        """How many lines per (mode, state)."""

    @abstractmethod
    async def assign_lines(self, batch_id: str, indexes: Sequence[int], job_id: str | None, state: str) -> None:
        """Mark lines as carried by `job_id` (or running interactively: None) in `state` (usually submitted)."""

    @abstractmethod
    async def settle_line(self, batch: BatchRecord, index: int, result: LineResult) -> bool:
        """In one transaction, if the line has not ended yet: its result stored and its state set, its ledger row
        (if any) inserted and charged to the batch's scopes, its `reserved_nanos` given back from the batch's hold,
        and the batch's counts moved. False: the line had ended already (nothing written: settling twice counts
        once)."""

    @abstractmethod
    async def totals(self, batch_id: str) -> dict[str, int]:
        """What the batch's lines used and cost so far, from the ledger (every answered line has its row there,
        whichever way it ran): `prompt_tokens`, `completion_tokens`, `cached_tokens`, `cost_nanos`, and
        `list_cost_nanos`, the same usage at interactive prices (the saving is the difference)."""

    @abstractmethod
    async def release_hold(self, batch: BatchRecord) -> None:
        """Give back what is left of the batch's hold (it ended)."""

    # -- provider jobs -------------------------------------------------------------------------------------
    @abstractmethod
    async def save_job(self, job: ProviderJob) -> None:
        """Insert or update a provider job."""

    @abstractmethod
    async def jobs(self, batch_id: str) -> list[ProviderJob]: ...
