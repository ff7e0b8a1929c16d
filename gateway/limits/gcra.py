"""The limits' algorithm over plain numbers: no I/O, no clock. Every store (memory, SQLite, Redis's Lua in
`redis_scripts`) computes exactly this, so they agree to the last bit.

Why GCRA (the generic cell rate algorithm) for requests and tokens per minute, and not a fixed window:
a fixed window counts what was taken since the minute began and refuses past the limit, so traffic that is steady
at the limit is refused whenever a window boundary falls badly, and a client that bursts at the end of one window
and the start of the next gets twice the limit. LiteLLM's shared fixed window blocks keys at about 70% of their
TPM, with minutes of lockout. GCRA keeps one number per limit, the theoretical arrival time (TAT): the time at
which the limit would be whole again if nothing else came. Each unit moves it on by the emission interval
T = 60 s / amount; a request fits while the TAT stays within one period (60 s) of now. So a fresh limit admits a
full minute's worth at once and then exactly its steady rate: a key with 60 RPM that sends one request per second
forever is never refused (whatever the jitter), and steady traffic at 10,000 TPM gets all of it (>= 95% with
requests of random sizes; the tests simulate both). A refusal says exactly when the request would fit.

Concurrent requests are leases: {holder: expires_at}. A holder that never gives its slot back (its process was
SIGKILLed) loses it when the lease ends, so slots never leak.

Several wants are all-or-nothing: every one is checked against the state the earlier ones left, and only if all
fit is anything written.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from gateway.limits.base import PERIOD_SECONDS, Grant, Limit, State, Want

# Float rounding must not refuse the last unit of a burst (17 requests of 60 / 17 s add up to 60.00000000000002).
# Rates are computed on `ahead` (TAT - now: tens of seconds, rounded to ~1e-14 s), never on time.time()'s values
# themselves (rounded to 2.4e-7 s, which cost a unit of many bursts), so a nanosecond is plenty, and far below one
# unit of any limit.
EPSILON = 1e-9
# A full concurrency limit retries after the earliest lease expiry, but no later than this: slots are usually
# given back (`release`) long before their lease ends.
CONCURRENCY_RETRY_SECONDS = 0.05
# Stores drop a limit's state this long after it became idle (whole again, no lease, no block): idle state is the
# same as no state, the grace only keeps keys from vanishing between two calls.
IDLE_GRACE_SECONDS = 60.0
# The member of a Redis concurrency ZSET that holds the block (its score is the end of the block).
BLOCK_MEMBER = "\x00block"


def interval(amount: int) -> float:
    """The emission interval T: seconds one unit of the limit occupies."""
    return PERIOD_SECONDS / amount


def split(now: float) -> tuple[float, float]:
    """`now` as whole seconds and the rest (both exact: Sterbenz)."""
    whole = float(math.floor(now))
    return whole, now - whole


# Rates (rpm, tpm) over `ahead`: how far the TAT is past now (negative or 0: the limit is whole).


def rate_take(ahead: float, amount: int, cost: int) -> tuple[float | None, float]:
    """(the new ahead, 0) if `cost` fits now; (None, seconds until it would) if not."""
    new_ahead = max(ahead, 0.0) + cost * interval(amount)
    if new_ahead > PERIOD_SECONDS + EPSILON:
        return None, new_ahead - PERIOD_SECONDS
    return new_ahead, 0.0


def rate_remaining(ahead: float, amount: int) -> int:
    """Units that would fit now."""
    units = math.floor((PERIOD_SECONDS - max(ahead, 0.0) + EPSILON) / interval(amount))
    return min(amount, max(0, units))


def rate_reset(ahead: float) -> float:
    """Seconds until the limit is whole again."""
    return max(ahead, 0.0)


def rate_settle(ahead: float, amount: int, delta: int) -> float:
    """`ahead` after `delta` more units (negative: given back, but never to before now: the past is not credit)."""
    return max(max(ahead, 0.0) + delta * interval(amount), 0.0)


def rate_block(ahead: float, seconds: float) -> float:
    """`ahead` such that nothing fits for `seconds` (and then the steady rate, not a burst)."""
    return max(ahead, seconds + PERIOD_SECONDS)


# Concurrency: the state is the leases {holder: expires_at} and the end of a block (0: none).


def live_leases(leases: Mapping[str, float], now: float) -> dict[str, float]:
    """The leases that have not ended (one ending exactly now has)."""
    return {holder: expires for holder, expires in leases.items() if expires > now}


def lease_take(leases: Mapping[str, float], blocked_until: float, amount: int, holder: str, now: float) -> float | None:
    """None if `holder` may take (or renew) a slot now among these live leases; else seconds to retry after."""
    if blocked_until > now:
        return blocked_until - now
    if holder in leases or len(leases) < amount:
        return None
    return min(min(leases.values()) - now, CONCURRENCY_RETRY_SECONDS)


def lease_remaining(leases: Mapping[str, float], blocked_until: float, amount: int, now: float) -> int:
    if blocked_until > now:
        return 0
    return max(0, amount - len(leases))


def lease_reset(blocked_until: float, now: float) -> float:
    """0 unless blocked: a slot comes back whenever a holder releases it."""
    return max(0.0, blocked_until - now)


@dataclass(frozen=True, slots=True)
class Cell:
    """One limit's stored state: a rate's TAT, or a concurrency limit's live leases and block.

    The TAT is kept as `tat_sec + tat_off` (whole seconds of the last write's time, and the rest), so that
    `ahead` is exact to ~1e-14 s; (0, 0) is a limit never used."""

    tat_sec: float = 0.0
    tat_off: float = 0.0
    leases: Mapping[str, float] = field(default_factory=dict)
    blocked_until: float = 0.0

    def ahead(self, now: float) -> float:
        now_sec, now_frac = split(now)
        return (self.tat_sec - now_sec) + (self.tat_off - now_frac)

    def with_ahead(self, ahead: float, now: float) -> Cell:
        now_sec, now_frac = split(now)
        return Cell(now_sec, now_frac + ahead, self.leases, self.blocked_until)

    def idle_at(self) -> float:
        """When this state becomes the same as none at all (to the second: for sweeping)."""
        return max(self.tat_sec + self.tat_off, self.blocked_until, *self.leases.values())

    def pruned(self, now: float) -> Cell:
        """Without ended leases and an ended block."""
        blocked = self.blocked_until if self.blocked_until > now else 0.0
        return Cell(self.tat_sec, self.tat_off, live_leases(self.leases, now), blocked)


def check_wants(wants: Sequence[Want], holder: str, lease_seconds: float) -> None:
    """Programming errors every store refuses the same way, before touching its state."""
    if lease_seconds <= 0:
        raise ValueError(f"lease_seconds must be > 0, not {lease_seconds}")
    if holder == BLOCK_MEMBER:
        raise ValueError("that holder name is reserved")
    for want in wants:
        if want.cost < 0:
            raise ValueError(f"a want's cost must be >= 0, not {want.cost} ({want.limit.key})")
        if want.limit.amount < 1:
            raise ValueError(f"a limit's amount must be >= 1, not {want.limit.amount} ({want.limit.key})")


def state(cell: Cell, limit: Limit, now: float) -> State:
    if limit.kind == "concurrency":
        live = live_leases(cell.leases, now)
        remaining = lease_remaining(live, cell.blocked_until, limit.amount, now)
        return State(limit, remaining, lease_reset(cell.blocked_until, now))
    ahead = cell.ahead(now)
    return State(limit, rate_remaining(ahead, limit.amount), rate_reset(ahead))


def acquire(
    cells: Mapping[str, Cell], wants: Sequence[Want], holder: str, lease_seconds: float, now: float
) -> tuple[Grant, dict[str, Cell]]:
    """Take every want or none. `cells` holds the stored state of the wants' limits (a missing one is fresh).

    Returns the grant and the cells to store: on success the new state of every limit taken; on refusal the
    same cells with ended leases pruned (nothing taken). A want costing more than its limit is refused
    `too_large` before anything else, since no retry can make it fit."""
    work = {want.limit.key: cells.get(want.limit.key, Cell()).pruned(now) for want in wants}
    before = dict(work)

    def refused(limit: Limit, retry_after: float, too_large: bool = False) -> tuple[Grant, dict[str, Cell]]:
        states = tuple(state(before[w.limit.key], w.limit, now) for w in wants)
        return Grant(False, states, limit, retry_after, too_large), before

    for want in wants:
        if want.cost > want.limit.amount:
            return refused(want.limit, 0.0, too_large=True)
    for want in wants:
        limit, cell = want.limit, work[want.limit.key]
        if limit.kind == "concurrency":
            retry_after = lease_take(cell.leases, cell.blocked_until, limit.amount, holder, now)
            if retry_after is not None:
                return refused(limit, retry_after)
            leases = {**cell.leases, holder: now + lease_seconds}
            work[limit.key] = Cell(cell.tat_sec, cell.tat_off, leases, cell.blocked_until)
        else:
            ahead, retry_after = rate_take(cell.ahead(now), limit.amount, want.cost)
            if ahead is None:
                return refused(limit, retry_after)
            work[limit.key] = cell.with_ahead(ahead, now)
    return Grant(True, tuple(state(work[w.limit.key], w.limit, now) for w in wants)), work


def settle(cell: Cell, limit: Limit, delta: int, now: float) -> Cell:
    if limit.kind == "concurrency":
        return cell  # nothing to correct: a slot is a slot
    return cell.with_ahead(rate_settle(cell.ahead(now), limit.amount, delta), now)


def release(cell: Cell, holder: str) -> Cell:
    """Without `holder`'s lease. (No clock: ended leases are pruned by the next call that has one.)"""
    leases = {h: e for h, e in cell.leases.items() if h != holder}
    return Cell(cell.tat_sec, cell.tat_off, leases, cell.blocked_until)


def block(cell: Cell, limit: Limit, seconds: float, now: float) -> Cell:
    if seconds < 0:
        raise ValueError(f"a block lasts >= 0 seconds, not {seconds}")
    if limit.kind == "concurrency":
        pruned = cell.pruned(now)
        return Cell(pruned.tat_sec, pruned.tat_off, pruned.leases, max(pruned.blocked_until, now + seconds))
    return cell.with_ahead(rate_block(cell.ahead(now), seconds), now)
