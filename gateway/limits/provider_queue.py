"""Provider queues: a provider account's capacity (the catalog's `limits:`), shared fairly by teams.

A request to a model is held to its provider's limits (scope "provider:NAME", the account) and its deployment's
("deployment:PROVIDER:MODEL"). The capacity itself lives in a `LimitStore` (memory, SQLite, Redis: exact across
every worker and node sharing it); in front of it each process keeps one queue per scope set (a provider and
one of its deployments), ordered by weighted fair queueing between teams:

- a team's next request finishes at `max(virtual_now, team_last_finish) + 1 / weight` and the lowest finish is
  served first; `virtual_now` is the finish of the last request served. A team that floods the queue pushes
  only its own requests back: another team's single request finishes one step after the present and is served
  after at most about one request of each other waiting team. A team of weight 2 gets twice the turns of a team
  of weight 1 while both wait. The queues of one provider's deployments share one virtual clock, and a seat given
  back wakes the one head with the lowest finish among them (which passes the turn on when what refused it was
  its own deployment's room): a team flooding one model does not starve another model's team of the account
  they share.
- only the head of a queue asks the store (no thundering herd): when it is refused it waits for a release on
  this node (an event), for the store's `retry_after` (requests and tokens per minute: exact), or, when the
  concurrency it waits for is held by other nodes, a short poll (`POLL_SECONDS`), never past its deadline.
- it never waits when it can tell it cannot get in before its `max_wait`: a rate whose retry_after is later, a
  cost larger than the limit (`too_large`), a block from a provider's 429 (`busy`) lasting longer. It raises
  `QueueTimeout` with a Retry-After from the queue's state.

Across nodes, fairness is approximate: each node serves its own teams fairly and the capacity is shared exactly
(the store), so a team whose requests arrive on one node and another's on a second node share it in the order
the heads of the two queues reach the store. Each node's queue keeps a flooding team from starving the others
on that node; no node ever sends more than the limits together.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.catalog import CapacityLimits, ModelConfig, Provider
from gateway.limits.base import Grant, Limit, LimitKind, LimitStore, LimitsUnavailable, State, Want
from gateway.limits.callers import wants
from gateway.limits.feedback import provider_feedback

__all__ = [
    "ProviderQueues",
    "QueueTimeout",
    "Seat",
    "limits_for",
    "max_wait_for",
    "provider_feedback",
]

log = logging.getLogger(__name__)

# A refused head whose concurrency is held (in part) by other nodes asks again this often: their releases do
# not reach this node's events.
POLL_SECONDS = 0.025
# The shortest pause between two tries of a head (a store that answers retry_after 0 must not spin).
MIN_PAUSE_SECONDS = 0.001
# A team's weight is at least this (the policy allows > 0): 1 / weight stays finite.
MIN_WEIGHT = 1e-3
# Before any seat was given back, a seat is taken to be held this long (for a refusal's Retry-After).
DEFAULT_HOLD_SECONDS = 1.0
# How much each finished seat moves the average hold time (an exponential moving average).
HOLD_AVERAGE_WEIGHT = 0.2

DepthHook = Callable[[str, int], None]
WaitHook = Callable[[str, float], None]
CapacityHook = Callable[[str, str, float], None]


def provider_scope(provider: str) -> str:
    return f"provider:{provider}"


def deployment_scope(provider: str, model: str) -> str:
    return f"deployment:{provider}:{model}"


def _scope_limits(scope: str, limits: CapacityLimits | None) -> list[Limit]:
    if limits is None:
        return []
    figures: tuple[tuple[LimitKind, int | None], ...] = (
        ("rpm", limits.rpm),
        ("tpm", limits.tpm),
        ("concurrency", limits.concurrency),
    )
    return [Limit(scope, kind, amount) for kind, amount in figures if amount is not None]


def _refuses_everyone(limit: Limit | None, provider: str) -> bool:
    """A refusal that every request to the provider would get now: the account's concurrency or requests per
    minute (a deployment's limits, and tokens, refuse one request and may let another through)."""
    return limit is None or (limit.scope == provider_scope(provider) and limit.kind in ("concurrency", "rpm"))


def limits_for(provider: Provider, model: ModelConfig) -> list[Limit]:
    """The limits a request to `model` is held to: its provider's (the account's) then its deployment's, each in
    the order rpm, tpm, concurrency. Empty when neither declares any."""
    return _scope_limits(provider_scope(provider.name), provider.limits) + _scope_limits(
        deployment_scope(provider.name, model.name), model.limits
    )


def max_wait_for(provider: Provider, model: ModelConfig, default: float) -> float:
    """How long a request may wait for capacity: the model entry's `max_wait_seconds`, else its provider's, else
    `default` (the setting `provider_queue_wait_seconds`)."""
    for limits in (model.limits, provider.limits):
        if limits is not None and limits.max_wait_seconds is not None:
            return limits.max_wait_seconds
    return default


class QueueTimeout(Exception):
    """No capacity within the request's max_wait: the deployment is unavailable for this request (the next
    candidate, or 429 with `Retry-After: retry_after`). `limit` is the limit that was full; `too_large` when the
    request alone is more than the limit (waiting can never help)."""

    def __init__(self, retry_after: float, limit: Limit, too_large: bool = False) -> None:
        self.retry_after = max(0.0, retry_after)
        self.limit = limit
        self.too_large = too_large
        why = "more than the limit itself" if too_large else f"retry after {self.retry_after:.3g} s"
        super().__init__(f"{limit.scope} {limit.kind} {limit.amount}: {why}")


@dataclass(eq=False, slots=True)
class Seat:
    """A request's place at a provider: what it took (`limits`, empty when the provider has none), as whom
    (`holder`) and how many tokens it reserved. Give it back with `ProviderQueues.leave`."""

    provider: str
    limits: tuple[Limit, ...] = ()
    holder: str = ""
    tokens: int = 0
    waited: float = 0.0  # seconds in the queue
    degraded: bool = False  # the store could not be reached and `fail_open` let the request through
    taken_at: float = 0.0  # time.monotonic() when it was given
    left: bool = False


@dataclass(eq=False, slots=True)
class _Waiter:
    team: str
    start: float  # virtual start and finish times (weighted fair queueing)
    finish: float
    seq: int = 0  # arrival order: ties of finish go to the earlier arrival
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    gone: bool = False  # served, or left the queue

    @property
    def turn(self) -> tuple[float, int]:
        """Its place in line across the provider's queues: lowest first."""
        return self.finish, self.seq


class _Fairness:
    """One provider's virtual clock and its teams' last finish times, shared by the queues of all its deployments
    (their requests share the account's capacity, so their turns are compared on one clock)."""

    def __init__(self) -> None:
        self.virtual = 0.0
        self.last_finish: dict[str, float] = {}
        self.waiting = 0
        self.order = itertools.count()  # ties go to the earlier arrival

    def tag(self, team: str, weight: float) -> _Waiter:
        start = max(self.virtual, self.last_finish.get(team, 0.0))
        waiter = _Waiter(team, start, start + 1.0 / max(weight, MIN_WEIGHT))
        self.last_finish[team] = waiter.finish
        self.waiting += 1
        return waiter

    def served(self, waiter: _Waiter) -> None:
        self.virtual = max(self.virtual, waiter.finish)
        self._gone(waiter)

    def abandoned(self, waiter: _Waiter) -> None:
        """A waiter gave up (timed out, cancelled, the store failed): its turn goes back to its team."""
        if self.last_finish.get(waiter.team) == waiter.finish:
            self.last_finish[waiter.team] = waiter.start
        self._gone(waiter)

    def _gone(self, waiter: _Waiter) -> None:
        waiter.gone = True
        self.waiting -= 1
        if self.waiting == 0:  # nobody waits: start afresh (keeps the teams' table from growing)
            self.last_finish.clear()
            self.virtual = 0.0


class _Queue:
    """The waiters of one scope set (a provider and one of its deployments), lowest finish time first."""

    def __init__(self, provider: str, fairness: _Fairness) -> None:
        self.provider = provider
        self.fairness = fairness
        self.heap: list[tuple[float, int, _Waiter]] = []
        self.trying = False  # its head is asking the store now
        # Nobody here gets in before this (time.monotonic()): the requests per minute are used up until then, or a
        # provider's 429 blocked them (every request of the queue needs one request of the same limits).
        self.blocked_until = 0.0
        self.blocked_by: Limit | None = None
        self.last_refused: Limit | None = None
        self.rate_ready_at = 0.0  # when the rate that last refused the head has room again

    def push(self, team: str, weight: float) -> _Waiter:
        waiter = self.fairness.tag(team, weight)
        waiter.seq = next(self.fairness.order)
        heapq.heappush(self.heap, (waiter.finish, waiter.seq, waiter))
        return waiter

    def head(self) -> _Waiter | None:
        heap = self.heap
        while heap and heap[0][2].gone:
            heapq.heappop(heap)
        return heap[0][2] if heap else None

    def ahead_of(self, waiter: _Waiter) -> int:
        return sum(1 for finish, _, other in self.heap if not other.gone and finish < waiter.finish)

    def poke(self) -> None:
        """Wake the head: it asks the store again."""
        head = self.head()
        if head is not None:
            head.wake.set()

    def block(self, until: float, limit: Limit) -> None:
        if until > self.blocked_until:
            self.blocked_until, self.blocked_by = until, limit


class ProviderQueues:
    """Every provider queue of one process, in front of one `LimitStore`.

    Callbacks (for metrics): `on_depth(provider, requests waiting)`, `on_wait(provider, seconds waited)` (a seat
    given, or a QueueTimeout), `on_capacity(provider, limit kind, used ratio)` (the fullest of the provider's and
    its deployments' limits of that kind, as the store last answered this node)."""

    def __init__(
        self,
        store: LimitStore,
        on_depth: DepthHook | None = None,
        on_wait: WaitHook | None = None,
        on_capacity: CapacityHook | None = None,
    ) -> None:
        self.store = store
        self.on_depth, self.on_wait, self.on_capacity = on_depth, on_wait, on_capacity
        self._queues: dict[tuple[str, ...], _Queue] = {}
        self._by_provider: dict[str, list[_Queue]] = {}
        self._fairness: dict[str, _Fairness] = {}
        self._depth: dict[str, int] = {}
        self._seats: dict[str, int] = {}  # provider -> seats this node holds
        self._held: dict[str, int] = {}  # concurrency limit key -> seats this node holds in it
        self._remaining: dict[str, int] = {}  # concurrency limit key -> what the store last said was left
        self._hold_seconds: dict[str, float] = {}  # provider -> average time a seat is held
        self._background: set[asyncio.Task[Any]] = set()

    @property
    def _in_memory(self) -> bool:
        """The store answers without suspending (this process's memory)."""
        return self.store.kind == "memory"

    # -- entering and leaving ---------------------------------------------------------------------------------

    async def enter(
        self,
        provider: Provider,
        model: ModelConfig,
        team: str,
        weight: float,
        tokens: int,
        holder: str,
        max_wait: float,
        lease_seconds: float,
    ) -> Seat:
        """A seat at `provider` for one request to `model` of `team` (its policy's queue weight), reserving
        `tokens` (prompt and expected output) per minute; `holder` is unique to this attempt. Without limits: at
        once, holding nothing. Else in its fair turn, within `max_wait` seconds, or QueueTimeout; LimitsUnavailable
        when the store cannot be reached and the store does not let requests through (`fail_closed`)."""
        if provider.limits is None and model.limits is None:
            return Seat(provider.name)
        limits = limits_for(provider, model)
        if not limits:  # `limits:` that sets only max_wait_seconds
            return Seat(provider.name)
        return await self._wait_turn(provider.name, limits, team, weight, tokens, holder, max_wait, lease_seconds)

    async def leave(self, seat: Seat, used_tokens: int | None) -> None:
        """Give the seat back: its concurrency slots, and the tokens per minute corrected by `used_tokens - reserved`
        (None: the usage is not known, the reservation stands). Idempotent; never raises for the store (a slot the
        store did not hear about is freed when its lease ends)."""
        if seat.left:
            return
        seat.left = True
        if not seat.limits:
            return
        if self._in_memory:  # nothing suspends, so a cancellation cannot interrupt it
            await self._give_back(seat, used_tokens)
            return
        task = asyncio.create_task(self._give_back(seat, used_tokens))
        self._keep(task)
        # Shielded: a request cancelled while it leaves still gives its slot back in the store.
        await asyncio.shield(task)

    async def _give_back(self, seat: Seat, used_tokens: int | None) -> None:
        slots = [limit for limit in seat.limits if limit.kind == "concurrency"]
        settles = []
        if used_tokens is not None and used_tokens != seat.tokens:
            settles = [(limit, used_tokens - seat.tokens) for limit in seat.limits if limit.kind == "tpm"]
        try:
            await self.store.give_back(seat.holder, slots, settles)  # (one round trip)
        except LimitsUnavailable as exc:
            log.warning("provider limits: could not give back %s's seat (%s); its lease ends it", seat.provider, exc)
        finally:
            self._vacated(seat, slots)

    def _vacated(self, seat: Seat, slots: list[Limit]) -> None:
        provider = seat.provider
        self._seats[provider] = self._seats.get(provider, 1) - 1
        held = time.monotonic() - seat.taken_at
        average = self._hold_seconds.get(provider)
        self._hold_seconds[provider] = held if average is None else average + HOLD_AVERAGE_WEIGHT * (held - average)
        for limit in slots:
            left = self._held.get(limit.key, 1) - 1
            if left > 0:
                self._held[limit.key] = left
            else:
                self._held.pop(limit.key, None)
            if limit.key in self._remaining:
                self._remaining[limit.key] = min(limit.amount, self._remaining[limit.key] + 1)
        if slots and self.on_capacity is not None:
            self.on_capacity(provider, "concurrency", self._concurrency_used(slots))
        self._poke(provider)

    # -- a provider that says it is full ------------------------------------------------------------------

    async def busy(self, provider: Provider, model: ModelConfig, seconds: float) -> None:
        """The provider answered 429 (or its headers say nothing is left): nothing more goes to it through its
        limits for `seconds`, on every node (the store's `block`), and the requests waiting here that cannot
        wait that long give up at once.

        Without configured limits this does nothing: the failover already honours Retry-After on the retry and
        the circuit breaker opens on repeated 429s; a local hold would be a per-node view of a shared account,
        the very thing the store is there to avoid."""
        limits = limits_for(provider, model)
        if not limits or seconds <= 0:
            return
        try:  # the store's own clock (Redis's, shared by every node), not this node's
            await asyncio.gather(*(self.store.block(limit, seconds) for limit in limits))
        except LimitsUnavailable as exc:
            log.warning("provider limits: could not tell the store %s is busy (%s)", provider.name, exc)
        until = time.monotonic() + seconds
        scopes = {limit.scope for limit in limits}
        for key, queue in self._queues.items():
            if scopes.intersection(key):
                queue.block(until, limits[0])
                for _, _, waiter in queue.heap:  # each checks its deadline against the block
                    waiter.wake.set()

    # -- what /readyz and the console show ----------------------------------------------------------------

    def depth(self, provider: str) -> int:
        """Requests waiting for `provider` on this node."""
        return self._depth.get(provider, 0)

    def status(self) -> dict[str, dict[str, int]]:
        """Per provider with limits seen by this node: requests waiting and seats held here."""
        names = set(self._depth) | {name for name, seats in self._seats.items() if seats}
        return {name: {"waiting": self.depth(name), "seats": self._seats.get(name, 0)} for name in sorted(names)}

    async def close(self) -> None:
        """Wait for the seats being given back in the background."""
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    # -- the queue ----------------------------------------------------------------------------------------

    async def _wait_turn(
        self,
        provider: str,
        limits: list[Limit],
        team: str,
        weight: float,
        tokens: int,
        holder: str,
        max_wait: float,
        lease_seconds: float,
    ) -> Seat:
        queue = self._queue(provider, limits)
        wanted = wants(limits, tokens)
        started = time.monotonic()
        deadline = started + max_wait
        if queue.blocked_until > deadline and queue.blocked_by is not None:
            self._waited(provider, 0.0)
            raise QueueTimeout(queue.blocked_until - started, queue.blocked_by)
        if queue.fairness.waiting == 0 and not queue.trying and queue.blocked_until <= started:
            # Nobody waits for this provider (in any of its deployments' queues, which share its account): the
            # request asks the store at once, as the head it would be (most requests, when the provider is not at
            # capacity). Refused, it joins the queue like any other.
            if self._in_memory:  # (nothing suspends: no task is needed to keep a grant from a cancelled caller)
                grant = await self.store.acquire(wanted, holder, lease_seconds)
            else:
                try:
                    grant = await self._try(queue, wanted, holder, lease_seconds, tokens)
                finally:
                    queue.poke()  # a waiter that became the head while this one asked may ask now
            if grant.ok:
                return self._seated(provider, limits, holder, tokens, grant, 0.0)
            now = time.monotonic()
            try:  # the refusal says how long to pause before asking again (or that it is too late already)
                first_pause: float | None = self._refused(queue, provider, grant, now, deadline)
            except QueueTimeout:
                self._waited(provider, now - started)
                raise
        else:
            first_pause = None
        waiter = queue.push(team, weight)
        self._set_depth(provider, 1)
        try:
            while True:
                pause = deadline - time.monotonic()
                if first_pause is not None:
                    pause, first_pause = first_pause, None
                elif queue.head() is waiter and not queue.trying:
                    waiter.wake.clear()
                    grant = await self._try(queue, wanted, holder, lease_seconds, tokens)
                    now = time.monotonic()
                    if grant.ok:
                        queue.fairness.served(waiter)
                        self._poke(provider)  # the next turn asks: there may be room for it too
                        return self._seated(provider, limits, holder, tokens, grant, now - started)
                    if queue.head() is not waiter:
                        queue.poke()  # another waiter became the head while this one asked
                    if not _refuses_everyone(grant.refused, provider):
                        # Refused by what only this request lacks (its deployment's room, or tokens): the next turn
                        # in another deployment's queue may fit, so it asks (the turn passes forward, never back).
                        self._poke(provider, after=waiter)
                    pause = self._refused(queue, provider, grant, now, deadline)
                if queue.blocked_until > deadline and queue.blocked_by is not None:
                    raise QueueTimeout(queue.blocked_until - time.monotonic(), queue.blocked_by)
                if pause <= 0:
                    raise self._timeout(queue, waiter, limits)
                if queue.trying and queue.head() is waiter:
                    # Another request is asking the store for this queue: its answer pokes the head. A wake set
                    # before that must not make this loop spin without ever suspending.
                    waiter.wake.clear()
                try:
                    async with asyncio.timeout(max(pause, MIN_PAUSE_SECONDS)):
                        await waiter.wake.wait()
                    waiter.wake.clear()  # (woken once per wake: a wake left set would make the loop spin)
                except TimeoutError:
                    pass
        except QueueTimeout:
            self._waited(provider, time.monotonic() - started)
            raise
        finally:
            if not waiter.gone:
                queue.fairness.abandoned(waiter)
                self._poke(provider)  # the turn it held goes on
            self._set_depth(provider, -1)

    def _refused(self, queue: _Queue, provider: str, grant: Grant, now: float, deadline: float) -> float:
        """How long a refused head pauses before it asks again; QueueTimeout when it can tell it is too late."""
        limit = grant.refused
        assert limit is not None  # a refusal names its limit
        queue.last_refused = limit
        if self.on_capacity is not None:
            self.on_capacity(provider, limit.kind, 1.0)
        if grant.too_large:
            raise QueueTimeout(grant.retry_after, limit, too_large=True)
        if limit.kind != "concurrency":
            ready = queue.rate_ready_at = now + grant.retry_after
            if limit.kind == "rpm":  # every request here needs one: nobody gets in before then
                queue.block(ready, limit)
            if ready > deadline:
                raise QueueTimeout(grant.retry_after, limit)
            return grant.retry_after
        if self._held.get(limit.key, 0) >= limit.amount:
            return deadline - now  # this node holds every slot: only its own releases (events) free one
        # Other nodes hold slots (their releases are not heard here), or a 429 blocked the limit for a while.
        return min(grant.retry_after if grant.retry_after > 0 else POLL_SECONDS, deadline - now)

    def _timeout(self, queue: _Queue, waiter: _Waiter, limits: list[Limit]) -> QueueTimeout:
        """No capacity in time: Retry-After from the queue's state. A rate says exactly when; for concurrency,
        the seats ahead of this request times the average time a seat is held, per slot."""
        limit = queue.last_refused or limits[-1]
        if limit.kind != "concurrency":
            return QueueTimeout(max(queue.rate_ready_at, queue.blocked_until) - time.monotonic(), limit)
        hold = self._hold_seconds.get(queue.provider, DEFAULT_HOLD_SECONDS)
        return QueueTimeout(hold * math.ceil((queue.ahead_of(waiter) + 1) / limit.amount), limit)

    async def _try(self, queue: _Queue, wants: Sequence[Want], holder: str, lease_seconds: float, tokens: int) -> Grant:
        """The head asks the store. Shielded: when the waiter is cancelled meanwhile, what the store granted is
        given back as soon as it answers (no slot leaks)."""
        queue.trying = True
        task = asyncio.ensure_future(self.store.acquire(wants, holder, lease_seconds))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            task.add_done_callback(lambda done: self._undo_if_granted(done, queue.provider, wants, holder))
            raise
        finally:
            queue.trying = False

    def _undo_if_granted(self, done: asyncio.Future[Grant], provider: str, wants: Sequence[Want], holder: str) -> None:
        if done.cancelled() or done.exception() is not None or not done.result().ok:
            return
        self._keep(asyncio.create_task(self._undo(provider, wants, holder)))

    async def _undo(self, provider: str, wants: Sequence[Want], holder: str) -> None:
        """A grant nobody will use: its slots released, its request and tokens given back to the rates."""
        try:
            slots = [want.limit for want in wants if want.limit.kind == "concurrency"]
            settles = [(want.limit, -want.cost) for want in wants if want.limit.kind != "concurrency"]
            await self.store.give_back(holder, slots, settles)  # (one round trip, as a seat's end)
        except LimitsUnavailable as exc:
            log.warning("provider limits: could not give back an unused grant at %s (%s)", provider, exc)
        finally:
            self._poke(provider)

    def _seated(
        self, provider: str, limits: list[Limit], holder: str, tokens: int, grant: Grant, waited: float
    ) -> Seat:
        seat = Seat(provider, tuple(limits), holder, tokens, waited, grant.degraded, time.monotonic())
        self._seats[provider] = self._seats.get(provider, 0) + 1
        for limit in limits:
            if limit.kind == "concurrency":
                self._held[limit.key] = self._held.get(limit.key, 0) + 1
        self._waited(provider, waited)
        if self.on_capacity is not None:
            self._report(provider, grant.states)
        return seat

    def _report(self, provider: str, states: tuple[State, ...]) -> None:
        fullest: dict[str, float] = {}
        for state in states:
            limit = state.limit
            if limit.kind == "concurrency":
                self._remaining[limit.key] = state.remaining
            used = 1.0 - state.remaining / limit.amount if limit.amount else 1.0
            fullest[limit.kind] = max(fullest.get(limit.kind, 0.0), min(1.0, max(0.0, used)))
        assert self.on_capacity is not None
        for kind, used in fullest.items():
            self.on_capacity(provider, kind, used)

    def _concurrency_used(self, slots: list[Limit]) -> float:
        used = 0.0
        for limit in slots:
            remaining = self._remaining.get(limit.key)
            if remaining is not None:
                used = max(used, 1.0 - remaining / limit.amount)
        return min(1.0, max(0.0, used))

    # -- bookkeeping ---------------------------------------------------------------------------------------

    def _queue(self, provider: str, limits: list[Limit]) -> _Queue:
        key = tuple(dict.fromkeys(limit.scope for limit in limits))
        queue = self._queues.get(key)
        if queue is None:
            fairness = self._fairness.setdefault(provider, _Fairness())
            queue = self._queues[key] = _Queue(provider, fairness)
            self._by_provider.setdefault(provider, []).append(queue)
        return queue

    def _poke(self, provider: str, after: _Waiter | None = None) -> None:
        """Room may have come at `provider` (a seat given back, a turn served or given up): the head with the lowest
        finish time among its queues (one per deployment: the account is shared by all) asks the store; with
        `after`, the lowest after that waiter's turn (it was refused by what only it lacks).

        One head, not all: heads woken together race to the store (separate connections, answered in any order)
        and the later turn could take the seat; the turn passes on from head to head instead, forward only, so it
        ends."""
        queues = self._by_provider.get(provider, ())
        if len(queues) == 1 and after is None:
            queues[0].poke()
            return
        heads = [head for queue in queues if (head := queue.head()) is not None]
        if after is not None:
            heads = [head for head in heads if head.turn > after.turn]
        if heads:
            min(heads, key=lambda head: head.turn).wake.set()

    def _set_depth(self, provider: str, change: int) -> None:
        depth = self._depth.get(provider, 0) + change
        if depth > 0:
            self._depth[provider] = depth
        else:
            self._depth.pop(provider, None)
        if self.on_depth is not None:
            self.on_depth(provider, max(depth, 0))

    def _waited(self, provider: str, seconds: float) -> None:
        if self.on_wait is not None:
            self.on_wait(provider, seconds)

    def _keep(self, task: asyncio.Task[Any]) -> None:
        """Hold a background task until it ends (the event loop keeps only weak references)."""
        self._background.add(task)
        task.add_done_callback(self._background.discard)
