"""What is stored, and the one interface both databases implement.

Writes that happen on the request path (reserving budget before a call,
recording the ledger row and settling after it) go through `hold` and
`record`, which the implementations batch: many concurrent requests share one
transaction (group commit), and each caller resumes once its batch committed.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple


@dataclass(frozen=True, slots=True)
class Rates:
    """A caller's rate limits (gateway/limits/): requests and tokens per minute, concurrent requests; None: none."""

    rpm: int | None = None
    tpm: int | None = None
    max_concurrent: int | None = None

    def __bool__(self) -> bool:
        return self.rpm is not None or self.tpm is not None or self.max_concurrent is not None


NO_RATES = Rates()


@dataclass(slots=True)
class Team:
    name: str
    budget_nanos: int | None = None  # None: no limit
    period: str = "monthly"
    soft_limit_pct: int | None = None
    regions: list[str] | None = None  # None: any region
    models: list[str] | None = None  # None: any model
    policy: str = "default"
    created_at: int = 0
    rates: Rates = NO_RATES
    model_rates: dict[str, Rates] = field(default_factory=dict)  # a team's limits on one model, by model name


@dataclass(slots=True)
class KeyRecord:
    id: str
    team: str
    name: str
    prefix: str
    key_hash: str
    budget_nanos: int | None = None
    models: list[str] | None = None
    expires_at: int | None = None
    created_at: int = 0
    revoked_at: int | None = None
    rates: Rates = NO_RATES


@dataclass(slots=True)
class Scope:
    """A budget holder: a team, or one key of a team, in one budget period."""

    name: str  # "team:NAME" or "key:ID"
    period_start: int
    budget_nanos: int | None


@dataclass(slots=True)
class HoldRequest:
    """Reserve `amount_nanos` in every scope; when it does not fit but `minimum_nanos` does, reserve what is
    left instead (the most that fits in every scope), so the caller can shrink the request to it."""

    id: str
    scopes: list[Scope]
    amount_nanos: int
    expires_at: int
    minimum_nanos: int | None = None  # None: all or nothing
    instance: str | None = None  # the process that holds it (released when that process is gone)


@dataclass(slots=True)
class Instance:
    """A gateway process that takes holds: where it runs and when it last said it is alive."""

    id: str
    node: str
    pid: int
    started_at: int
    heartbeat_at: int


@dataclass(slots=True)
class HoldResult:
    ok: bool
    refused_by: Scope | None = None
    spent_nanos: int = 0
    reserved_nanos: int = 0
    granted_nanos: int = 0  # what was reserved (amount_nanos, or less down to minimum_nanos)


@dataclass(slots=True)
class LedgerRow:
    id: str
    ts: float
    team: str
    key_id: str | None
    key_prefix: str | None
    requested_model: str
    model: str
    provider: str
    region: str
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    cost_nanos: int
    estimated: bool
    status: int
    latency_ms: float
    ttft_ms: float | None
    route_reason: str
    stream: bool
    content: str | None = None  # prompt and response text, only when explicitly enabled
    # The front door (`gateway.pipeline.request.ENDPOINTS`); last and defaulted, so that journal lines written
    # before the column existed (`gateway.budget.journal`) still read, as `chat` like the migrated rows.
    endpoint: str = "chat"
    # A line of a batch (issue 16): the batch's id and the line's `custom_id`; None for every other request. Last
    # and defaulted for the same reason as `endpoint`.
    batch_id: str | None = None
    custom_id: str | None = None
    # What the routing decision read (issue 17, policy replay), as the JSON text `gateway.replay.inputs` writes and
    # reads: prompt tokens counted per model, capabilities, max_tokens, n, the residency header; never prompt text.
    # None for rows written before migration 6 and for lines run on a provider's batch API. Last and defaulted for
    # the journal's sake, as `endpoint`.
    decision: str | None = None


@dataclass(slots=True)
class Settlement:
    """A ledger row, the scopes it is charged to, and the hold it replaces (if any)."""

    row: LedgerRow
    scopes: list[Scope]
    hold: HoldRequest | None = None


@dataclass(slots=True)
class ScopeUsage:
    spent_nanos: int = 0
    reserved_nanos: int = 0


@dataclass(slots=True)
class SpendFilter:
    team: str | None = None
    key: str | None = None
    model: str | None = None
    provider: str | None = None
    since: float | None = None
    until: float | None = None
    batch: str | None = None  # only the lines of this batch (its id)


GROUPS = ("team", "key", "model", "provider", "endpoint", "day", "batch")


@dataclass(slots=True)
class LedgerFilter:
    """Which ledger rows a page shows (the console's requests table, replay): every field that is set must match.

    `key` matches a key's id or the start of its visible prefix; `status` one HTTP status; `errors` True only
    statuses of 400 and above, False only those below; `search` is a case-insensitive substring of the model, the
    provider, the route reason or the team; `in_batch` True only batches' lines, False only other requests. `since` is
    inclusive, `until` exclusive (Unix seconds)."""

    team: str | None = None
    key: str | None = None
    model: str | None = None
    provider: str | None = None
    region: str | None = None
    route_reason: str | None = None
    status: int | None = None
    errors: bool | None = None
    endpoint: str | None = None
    batch: str | None = None  # a batch's id: only its lines
    in_batch: bool | None = None  # True: only batches' lines, False: only other requests
    since: float | None = None
    until: float | None = None
    search: str | None = None


# How a page of the ledger is ordered: newest or oldest first (by time, then id), or the most expensive or the
# slowest first (then newest first).
LEDGER_ORDERS = ("newest", "oldest", "cost", "latency")
DAILY_GROUPS = ("model", "provider")
LATENCY_SAMPLE = 10_000  # the most recent rows whose latencies give latency_stats' percentiles


class LedgerPage(NamedTuple):
    rows: list[LedgerRow]  # without `content` (a row's own read, `ledger_row`, has it)
    total: int | None  # rows matching the filters, whatever the page (None: not counted, `count=False`)


class DailySpend(NamedTuple):
    day: str  # YYYY-MM-DD, UTC
    group: str  # the model or the provider
    cost_nanos: int
    requests: int


@dataclass(frozen=True, slots=True)
class LatencyStats:
    """Interactive requests (not batch lines) since a moment: how many, how many failed (status 400 and above), and
    the median and 95th percentile of their latency and time to first token (ms; None when there are none), from
    the `sampled` most recent ones (at most LATENCY_SAMPLE)."""

    requests: int
    errors: int
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    ttft_p50_ms: float | None
    ttft_p95_ms: float | None
    sampled: int


def percentile(values: Sequence[float], pct: float) -> float | None:
    """The nearest-rank percentile of `values` (sorted or not): the smallest value with at least `pct`% of the
    values at or below it; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return float(ordered[min(rank, len(ordered)) - 1])


@dataclass(slots=True)
class SpendRow:
    group: str | None
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cost_nanos: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class Conflict(Exception):
    """A unique name is already taken."""


class Store(ABC):
    """A database holding teams, keys, budget usage and the ledger."""

    url_scheme: str
    # Files, batches, their lines and provider jobs (issue 16): a `gateway.store.batches.BatchStore`, which is not
    # named here because that module imports this one (no import cycles, pyproject.toml [tool.importlinter]);
    # `SqlStore.batches` carries the type.
    batches: Any

    @abstractmethod
    async def open(self) -> None:
        """Connect and run migrations."""

    @abstractmethod
    async def close(self) -> None:
        """Finish pending batches and disconnect."""

    @abstractmethod
    async def ping(self) -> bool: ...

    # -- teams ---------------------------------------------------------------------------
    @abstractmethod
    async def create_team(self, team: Team) -> None: ...

    @abstractmethod
    async def get_team(self, name: str) -> Team | None: ...

    @abstractmethod
    async def list_teams(self) -> list[Team]: ...

    @abstractmethod
    async def update_team(self, team: Team) -> None: ...

    @abstractmethod
    async def delete_team(self, name: str) -> bool: ...

    # -- keys ----------------------------------------------------------------------------
    @abstractmethod
    async def create_key(self, key: KeyRecord) -> None: ...

    @abstractmethod
    async def key_and_team(self, key_hash: str) -> tuple[KeyRecord, Team | None] | None:
        """The key with this hash and its team, in one read (the request path's only query)."""

    @abstractmethod
    async def get_key(self, key_id: str) -> KeyRecord | None: ...

    @abstractmethod
    async def list_keys(self, team: str | None = None) -> list[KeyRecord]: ...

    @abstractmethod
    async def revoke_key(self, key_id: str, at: int) -> bool: ...

    # -- budgets and ledger (batched on the request path) ----------------------------------
    @abstractmethod
    async def hold(self, request: HoldRequest) -> HoldResult:
        """Atomically check every scope's budget and reserve the amount (or, down to the minimum, what is left)
        in all of them, or refuse."""

    @abstractmethod
    async def record(self, settlement: Settlement) -> ScopeUsage:
        """Insert the ledger row, charge its cost, release its hold; return once committed, with the first
        scope's usage after the charge (ScopeUsage() if the settlement has no scope)."""

    @abstractmethod
    async def release(self, hold: HoldRequest) -> None:
        """Give back a hold whose request never produced a ledger row."""

    @abstractmethod
    async def release_expired(self, now: int) -> int:
        """Release holds whose requests died without settling (crash, kill); returns how many."""

    @abstractmethod
    async def register(self, instance: Instance) -> None:
        """Record this process as a holder of reservations."""

    @abstractmethod
    async def heartbeat(self, instance_id: str, now: int) -> None: ...

    @abstractmethod
    async def unregister(self, instance_id: str) -> None:
        """This process stops cleanly (its holds are settled or released already)."""

    @abstractmethod
    async def release_orphaned(self, me: Instance, now: int, stale_seconds: int, alive: Callable[[int], bool]) -> int:
        """Release the holds of instances that are gone: on `me.node`, those whose pid is not `alive`; anywhere,
        those whose heartbeat is older than `stale_seconds`. Returns how many holds were released."""

    @abstractmethod
    async def usage(self, scope: str, period_start: int) -> ScopeUsage: ...

    # -- reports -------------------------------------------------------------------------
    @abstractmethod
    async def spend(self, filters: SpendFilter, group_by: str | None) -> list[SpendRow]: ...

    @abstractmethod
    async def ledger_rows(self, filters: SpendFilter, limit: int = 1000) -> list[LedgerRow]: ...

    @abstractmethod
    async def ledger_page(
        self,
        filters: LedgerFilter,
        order: str = "newest",
        *,
        after: str | None = None,
        offset: int = 0,
        limit: int = 50,
        count: bool = True,
    ) -> LedgerPage:
        """One page of the ledger rows matching `filters`, in `order` (LEDGER_ORDERS), and how many match in all.
        Paging: `after` a row's id (the rows that follow it in `order`: a cursor that stays put while rows are
        added; newest and oldest only) or `offset` rows skipped. `count=False` leaves the total out (None)."""

    @abstractmethod
    async def ledger_row(self, row_id: str) -> LedgerRow | None:
        """One row, with its content (when GATEWAY_LEDGER_CONTENT stored any)."""

    @abstractmethod
    async def daily_spend(
        self, team: str | None, since: float, group_by: str = "model", until: float | None = None
    ) -> list[DailySpend]:
        """Cost and requests per UTC day and model (or provider: DAILY_GROUPS), of one team or all (None), oldest
        day first."""

    @abstractmethod
    async def latency_stats(
        self, since: float, until: float | None = None, team: str | None = None, sample: int = LATENCY_SAMPLE
    ) -> LatencyStats:
        """Requests, errors and latency percentiles of the interactive requests since `since`."""


def team_scope(name: str) -> str:
    return f"team:{name}"


def key_scope(key_id: str) -> str:
    return f"key:{key_id}"


def as_json_list(value: Sequence[str] | None) -> str | None:
    import orjson

    return orjson.dumps(list(value)).decode() if value is not None else None


def from_json_list(value: str | None) -> list[str] | None:
    import orjson

    return list(orjson.loads(value)) if value is not None else None
