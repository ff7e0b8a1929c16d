"""What a limit is, and the one interface every limit store implements.

Requests and tokens per minute are GCRA (the generic cell rate algorithm, `gateway.limits.gcra`): one number per
limit (the theoretical arrival time), a burst of one minute's worth, then the limit's steady rate; a request
that fits is never refused because of where a window boundary falls (a fixed window refuses steady traffic near
its limit, LiteLLM's blocks keys at ~70% of their TPM). Concurrent requests are leases: a holder id with an
expiry, so a node that dies (SIGKILL) gives its slots back when its leases end instead of leaking them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

LimitKind = Literal["rpm", "tpm", "concurrency"]
KINDS: tuple[LimitKind, ...] = ("rpm", "tpm", "concurrency")
PERIOD_SECONDS = 60.0  # rpm and tpm are per minute


@dataclass(frozen=True, slots=True)
class Limit:
    """One limit of one scope: `scope` is "team:NAME", "key:ID", "team-model:NAME:MODEL", "provider:NAME" or
    "deployment:PROVIDER:MODEL"; `amount` requests or tokens per minute, or concurrent requests (>= 1)."""

    scope: str
    kind: LimitKind
    amount: int

    @property
    def key(self) -> str:
        """The store's key for this limit's state (the amount is not part of it: a changed limit keeps its use)."""
        return f"{self.scope}:{self.kind}"


@dataclass(frozen=True, slots=True)
class Want:
    """What one request takes of a limit: 1 request (rpm), N tokens (tpm), 1 slot (concurrency)."""

    limit: Limit
    cost: int


@dataclass(frozen=True, slots=True)
class State:
    """A limit as it stands: what is left now (after this request, when it was admitted), and in how many
    seconds it is whole again (rates; 0 for concurrency)."""

    limit: Limit
    remaining: int
    reset_seconds: float


@dataclass(frozen=True, slots=True)
class Grant:
    """The answer to `acquire`: all the wants were taken, or none was.

    Refused: `refused` is the first limit that did not fit, `retry_after` when it would (rates: exact; for a
    concurrency limit the earliest lease expiry or a short default, since a slot is usually given back sooner);
    `too_large` when the cost is more than the limit itself, so waiting cannot help."""

    ok: bool
    states: tuple[State, ...] = ()
    refused: Limit | None = None
    retry_after: float = 0.0
    too_large: bool = False
    degraded: bool = False  # the store could not be reached and `fail_open` let the request through


class LimitsUnavailable(Exception):
    """The limit store cannot be reached (Redis down, timed out, scripts refused). `detail` is for the log."""

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail)
        self.detail = detail


class LimitsMisconfigured(Exception):
    """The limit store answers but cannot do its job (a Redis proxy that refuses Lua scripts): the gateway must
    not start, since falling back to per-node limits would silently multiply every limit by the node count."""


class LimitStore(ABC):
    """Where limits' state lives. Every method is atomic across every process sharing the store, and bounded in
    time: a store that cannot answer raises `LimitsUnavailable` (never hangs)."""

    kind: str  # "memory", "sqlite", "redis"

    @abstractmethod
    async def acquire(
        self, wants: Sequence[Want], holder: str, lease_seconds: float, now: float | None = None
    ) -> Grant:
        """Take every want, or none: rates by GCRA, concurrency as a lease `holder` keeps until `release` or for
        `lease_seconds`. A want whose cost exceeds its limit's amount is refused with `too_large`. `now`: for
        tests, the time (seconds, `time.time()` scale) the store should use."""

    @abstractmethod
    async def settle(self, limit: Limit, delta: int, now: float | None = None) -> None:
        """Correct a rate by `delta` units after the fact (real tokens minus reserved: negative gives back)."""

    @abstractmethod
    async def release(self, limits: Sequence[Limit], holder: str) -> None:
        """Give back `holder`'s concurrency slots in these limits (unknown holders are ignored)."""

    async def give_back(
        self, holder: str, slots: Sequence[Limit], settles: Sequence[tuple[Limit, int]], now: float | None = None
    ) -> None:
        """A request's end in one call: `holder`'s slots in `slots` released and each rate in `settles` corrected
        by its delta (`release` and `settle` together: one round trip where the store is remote)."""
        if slots:
            await self.release(slots, holder)
        for limit, delta in settles:
            await self.settle(limit, delta, now)

    @abstractmethod
    async def peek(self, limits: Sequence[Limit], now: float | None = None) -> tuple[State, ...]:
        """The limits as they stand, taking nothing."""

    @abstractmethod
    async def block(self, limit: Limit, seconds: float, now: float | None = None) -> None:
        """Nothing fits in this limit for `seconds` (a provider answered 429 with Retry-After): a rate's state is
        moved so that it is full until then; a concurrency limit refuses new holders until then."""

    async def open(self) -> None:
        """Connect and check the store before the gateway serves (awaited once at start, safe for every kind):
        `LimitsUnavailable` if it cannot be reached now, `LimitsMisconfigured` if it can never work."""
        return None  # a store in memory has nothing to connect to

    @abstractmethod
    async def ping(self) -> bool:
        """Whether the store answers now."""

    @abstractmethod
    async def close(self) -> None: ...
