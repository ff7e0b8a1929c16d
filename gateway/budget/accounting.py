"""One request's money: reserve before the call, settle to the real cost after, one ledger row.

The reservation is the request's worst case: the prompt at the upper bound of its count plus the most
output it may produce (`max_tokens`, or the model's output limit, times `n`). It is checked and taken
atomically in the database for the team and (when it has one) the key, so no number of concurrent
requests, workers or nodes can together spend past what is left. When the worst case does not fit, the
reservation may shrink down to a floor: the request is then sent with `max_tokens` lowered to what the
reservation covers, which keeps agents working to the last cent without letting any request run past it.
Settlement writes the ledger row, charges the real cost and releases the reservation in the same
group-committed transaction.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from gateway.auth.principal import Principal
from gateway.budget.journal import JournalFull, SettlementJournal
from gateway.budget.periods import period_window
from gateway.budget.soft_limit import SoftLimitNotifier
from gateway.catalog import ModelConfig
from gateway.errors import GatewayError, StorageUnavailable
from gateway.money import usd_float, usd_text
from gateway.pricing import cost_nanos, estimate_nanos
from gateway.settings import Settings
from gateway.store import Store
from gateway.store.base import (
    HoldRequest,
    HoldResult,
    Instance,
    LedgerRow,
    Scope,
    ScopeUsage,
    Settlement,
    key_scope,
    team_scope,
)
from gateway.types import Usage

log = logging.getLogger("gateway.budget")

HOLD_GRACE_SECONDS = 120  # a hold outlives its request's timeout by this much before it is swept
SWEEP_INTERVAL_SECONDS = 30.0


@dataclass(slots=True)
class Ticket:
    """What the gateway knows about a request between admission and settlement."""

    id: str
    principal: Principal
    model: ModelConfig
    requested_model: str
    scopes: list[Scope]
    hold: HoldRequest | None
    prompt_tokens: int
    started: float  # monotonic
    ts: float  # wall clock
    settled: bool = False
    reserved_nanos: int = 0  # the worst-case cost held (0: no budget to enforce)
    output_tokens: int = 0  # the output (all answers) the reservation covers: what the provider may produce
    prompt_estimate: int = 0  # the best guess of the prompt's tokens (billed when the provider never reports usage)
    ledger_id: str | None = None  # the ledger row's id, when the request has one already (else `id`)


@dataclass(frozen=True, slots=True)
class Served:
    """Where a request was served, for its ledger row."""

    provider: str
    region: str
    route_reason: str
    stream: bool
    endpoint: str = "chat"  # the front door (`gateway.pipeline.request.Endpoint`)
    batch: tuple[str, str] | None = None  # (batch id, custom_id) of a batch line run interactively
    decision: str | None = None  # what the routing decision read, as JSON (`gateway.replay.inputs`): LedgerRow.decision


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a request ended, for its ledger row: its status, the usage the provider reported (None: none, so it is
    estimated from the prompt count and `completion_chars` when the provider worked on it), when its first token
    came, the stored content (GATEWAY_LEDGER_CONTENT), and whether its prompt reached the provider before the
    client left (billed: status 499)."""

    status: int
    usage: Usage | None = None
    completion_chars: int = 0
    ttft: float | None = None
    content: str | None = None
    prompt_sent: bool = False


@dataclass(slots=True)
class Charged:
    cost_nanos: int
    usage: Usage
    estimated: bool

    def x_gateway(self, model: str, provider: str, route_reason: str) -> dict[str, object]:
        return {
            "cost_usd": usd_float(self.cost_nanos),
            "model": model,
            "provider": provider,
            "route_reason": route_reason,
        }


def _process_alive(pid: int) -> bool:
    """Whether a process with this pid runs on this machine (signal 0 checks without sending anything)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True


def output_covered(model: ModelConfig, prompt_tokens: int, nanos: int, at_most: int) -> int:
    """The most output tokens (up to `at_most`) whose cost, with the prompt's, is within `nanos`."""
    if estimate_nanos(model, prompt_tokens, at_most) <= nanos:
        return at_most
    per_token = model.price.output * 1000  # USD per million tokens -> nano-dollars per token
    left = nanos - estimate_nanos(model, prompt_tokens, 0)
    tokens = max(0, min(at_most, int(left / per_token))) if per_token > 0 else at_most
    while tokens > 0 and estimate_nanos(model, prompt_tokens, tokens) > nanos:  # rounding: at most a step or two
        tokens -= 1
    return tokens


def estimate_completion_tokens(characters: int) -> int:
    return (characters + 3) // 4


JOURNAL_RETRY_SECONDS = 1.0  # how often journaled settlements are offered to the database again
ORPHAN_JOURNAL_ROUNDS = 30  # ... and, every this many rounds, journals left by processes that died


def journal_directory(settings: Settings) -> Path:
    """Where this database's journals live: one directory per database URL, so that a journal is only ever
    replayed into the database it was meant for."""
    url = settings.resolved_database_url()
    return settings.data_dir / "journal" / hashlib.sha256(url.encode()).hexdigest()[:16]


class LedgerUnavailable(GatewayError):
    """A provider answered, and neither the database nor the local journal could take its ledger row."""

    def __init__(self) -> None:
        super().__init__(
            503,
            "The answer's cost could not be recorded (the gateway's database is unreachable and its local "
            "journal is full), so the answer is withheld. Try again shortly.",
            "server_error",
            "ledger_unavailable",
            headers={"Retry-After": "5"},
        )


class Accounting:
    def __init__(
        self,
        store: Store,
        settings: Settings,
        on_soft_limit: Callable[[str], None] | None = None,
        on_storage: Callable[[str, int], None] | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.on_soft_limit = on_soft_limit  # (team name): gateway_budget_soft_limit_crossed_total
        # (event, journaled settlements pending): "journaled", "lost" or "replayed"; the storage metrics.
        self.on_storage = on_storage
        self.journal = SettlementJournal(journal_directory(settings), settings.journal_max_bytes)
        self.instance: Instance | None = None  # this process, once registered (start)
        self._replayer: asyncio.Task[None] | None = None
        self.notifier = SoftLimitNotifier(settings.soft_limit_webhook_url)
        self._sweeper: asyncio.Task[None] | None = None
        self._notices: set[asyncio.Task[None]] = set()
        # Request ids: a random per-process prefix and a counter (no system call per request).
        self._id_prefix = "req_" + secrets.token_hex(6)
        self._ids = itertools.count(1)
        self._windows: dict[str, tuple[int, int | None]] = {}  # period -> (start, end), until it ends

    async def start(self) -> None:
        now = int(time.time())
        self.instance = Instance(
            self._id_prefix, self.settings.node_name or socket.gethostname(), os.getpid(), now, now
        )
        await self.store.register(self.instance)
        await self._release_orphaned()  # this node's processes that died (SIGKILL): their holds go at once
        released = await self.store.release_expired(now)
        if released:
            log.warning("released %d budget reservations left by requests that never finished", released)
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep())
        await self._replay()  # settlements journaled by a process that died before the database came back
        self._replayer = asyncio.get_running_loop().create_task(self._replay_journal())

    async def close(self) -> None:
        for task in (self._sweeper, self._replayer):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        await asyncio.gather(*self._notices, return_exceptions=True)
        if self.journal.pending:
            await self._replay()  # a last chance; what remains stays on disk for the next start
        self.journal.close()
        if self.instance is not None:
            try:
                await self.store.unregister(self.instance.id)
            except Exception:  # the database is away: the others drop this row once its heartbeat is stale
                log.warning("could not unregister this process from the database", exc_info=True)

    async def _replay(self) -> None:
        try:
            written = await self.journal.replay(self.store)
        except Exception:  # the journal stays on disk; the next round tries again
            log.exception("writing journaled settlements failed")
            return
        if written:
            log.warning(
                "wrote %d journaled settlements to the database (%d still pending)", written, self.journal.pending
            )
            self._storage_event("replayed")

    async def _replay_journal(self) -> None:
        for rounds in itertools.count(1):
            await asyncio.sleep(JOURNAL_RETRY_SECONDS)  # periodic retry, not synchronisation
            if self.journal.pending or rounds % ORPHAN_JOURNAL_ROUNDS == 0:
                await self._replay()

    def _storage_event(self, event: str) -> None:
        if self.on_storage is not None:
            self.on_storage(event, self.journal.pending)

    async def _record(self, settlement: Settlement) -> ScopeUsage | None:
        """Write the settlement to the database, or, while it is unreachable, to the local journal (None).
        Raises LedgerUnavailable when neither can take it."""
        try:
            return await self.store.record(settlement)
        except StorageUnavailable:
            pass
        try:
            await asyncio.to_thread(self.journal.append, settlement)
        except (JournalFull, OSError) as exc:
            log.error(
                "ledger row %s could not be made durable: database unreachable, journal: %s", settlement.row.id, exc
            )
            self._storage_event("lost")
            raise LedgerUnavailable() from exc
        log.warning(
            "database unreachable: ledger row %s journaled on disk (%d pending)",
            settlement.row.id,
            self.journal.pending,
        )
        self._storage_event("journaled")
        return None

    async def _release_orphaned(self) -> None:
        assert self.instance is not None
        released = await self.store.release_orphaned(
            self.instance, int(time.time()), int(self.settings.orphan_hold_seconds), _process_alive
        )
        if released:
            log.warning("released %d budget reservations held by gateway processes that are gone", released)

    async def _sweep(self) -> None:
        """Heartbeat, release the holds of processes that are gone, and (rarely) holds past their expiry."""
        assert self.instance is not None
        last_expiry = time.monotonic()
        while True:
            await asyncio.sleep(self.settings.heartbeat_seconds)  # periodic maintenance, not synchronisation
            try:
                await self.store.heartbeat(self.instance.id, int(time.time()))
                await self._release_orphaned()
                if time.monotonic() - last_expiry >= SWEEP_INTERVAL_SECONDS:
                    last_expiry = time.monotonic()
                    await self.store.release_expired(int(time.time()))
            except Exception:  # a database hiccup must not end the sweeper
                log.warning("budget sweep failed (retried in %.0f s)", self.settings.heartbeat_seconds, exc_info=True)

    def window(self, period: str, now: datetime) -> tuple[int, int | None]:
        """The period holding `now`, computed once per period rather than once per request."""
        cached = self._windows.get(period)
        stamp = now.timestamp()
        if cached is None or stamp < cached[0] or (cached[1] is not None and stamp >= cached[1]):
            cached = self._windows[period] = period_window(period, self.settings.budget_timezone, now)
        return cached

    def scopes(self, principal: Principal, now: datetime) -> list[Scope]:
        team = principal.team
        start, _ = self.window(team.period, now)
        scopes = [Scope(team_scope(team.name), start, team.budget_nanos)]
        if principal.key is not None:
            scopes.append(Scope(key_scope(principal.key.id), start, principal.key.budget_nanos))
        return scopes

    async def admit(
        self,
        principal: Principal,
        model: ModelConfig,
        requested_model: str,
        prompt_tokens: int,
        worst_output: int,
        timeout_seconds: float,
        *,
        min_output: int | None = None,
        prompt_estimate: int | None = None,
        dry_run: bool = False,
        ledger_id: str | None = None,
    ) -> Ticket:
        """Reserve the request's worst case (`prompt_tokens`, an upper bound, plus `worst_output` tokens of
        output over all its answers) on its team and key; when that does not fit but `min_output` does,
        reserve what is left and cover only the output it pays for (`Ticket.output_tokens`). 429
        `budget_exceeded` otherwise. `dry_run`: only check, against the budgets as they are, reserving nothing."""
        now = datetime.now(UTC)
        scopes = self.scopes(principal, now)
        ticket = Ticket(
            id=f"{self._id_prefix}{next(self._ids):x}",
            principal=principal,
            model=model,
            requested_model=requested_model,
            scopes=scopes,
            hold=None,
            prompt_tokens=prompt_tokens,
            started=time.monotonic(),
            ts=now.timestamp(),
            output_tokens=worst_output,
            prompt_estimate=prompt_tokens if prompt_estimate is None else prompt_estimate,
            ledger_id=ledger_id,
        )
        if all(scope.budget_nanos is None for scope in scopes):
            return ticket  # nothing to enforce: no reservation, no write before the call
        amount = estimate_nanos(model, prompt_tokens, worst_output)
        minimum = (
            estimate_nanos(model, prompt_tokens, min(min_output, worst_output)) if min_output is not None else amount
        )
        if dry_run:
            granted = amount
            for scope in scopes:
                if scope.budget_nanos is not None:
                    usage = await self.store.usage(scope.name, scope.period_start)
                    room = scope.budget_nanos - usage.spent_nanos - usage.reserved_nanos
                    if room < minimum:
                        raise self._refusal(principal, scope, usage.spent_nanos, usage.reserved_nanos, minimum, now)
                    granted = min(granted, room)
            self._cover(ticket, granted, prompt_tokens, worst_output)
            return ticket
        hold = HoldRequest(
            ticket.id,
            scopes,
            amount,
            int(now.timestamp() + timeout_seconds + HOLD_GRACE_SECONDS),
            minimum_nanos=minimum if minimum < amount else None,
            instance=self.instance.id if self.instance is not None else None,
        )
        # Shielded: a request cancelled here (its client left) must not leave a hold that commits after it
        # stopped waiting; `_orphaned` releases such a hold as soon as it is written.
        pending = asyncio.ensure_future(self.store.hold(hold))
        try:
            result = await asyncio.shield(pending)
        except asyncio.CancelledError:
            pending.add_done_callback(partial(self._orphaned, hold))
            raise
        if not result.ok:
            assert result.refused_by is not None
            raise self._refusal(principal, result.refused_by, result.spent_nanos, result.reserved_nanos, minimum, now)
        hold.amount_nanos = result.granted_nanos
        ticket.hold = hold
        self._cover(ticket, result.granted_nanos, prompt_tokens, worst_output)
        return ticket

    @staticmethod
    def _cover(ticket: Ticket, granted: int, prompt_tokens: int, worst_output: int) -> None:
        """Record what `granted` nano-dollars pay for: the most output tokens whose worst case fits in it."""
        ticket.reserved_nanos = granted
        ticket.output_tokens = output_covered(ticket.model, prompt_tokens, granted, worst_output)

    def _orphaned(self, hold: HoldRequest, written: asyncio.Future[HoldResult]) -> None:
        if written.cancelled() or written.exception() is not None or not written.result().ok:
            return
        task = asyncio.get_running_loop().create_task(self.store.release(hold))
        self._notices.add(task)
        task.add_done_callback(self._notices.discard)

    def _refusal(
        self, principal: Principal, scope: Scope, spent: int, reserved: int, needed: int, now: datetime
    ) -> GatewayError:
        team = principal.team
        _, end = self.window(team.period, now)
        holder = f"team {team.name!r}" if scope.name.startswith("team:") else f"key {principal.key.prefix}..."  # type: ignore[union-attr]
        resets = (
            f"the {team.period} period resets at {datetime.fromtimestamp(end, UTC).isoformat().replace('+00:00', 'Z')}"
            if end is not None
            else "the budget is a total and does not reset"
        )
        message = (
            f"Budget exceeded for {holder}: limit ${usd_text(scope.budget_nanos or 0)}, spent ${usd_text(spent)}, "
            f"reserved by requests in flight ${usd_text(reserved)}; this request needs about ${usd_text(needed)}; {resets}."
        )
        return GatewayError(429, message, "insufficient_quota", "budget_exceeded")

    async def release(self, ticket: Ticket) -> None:
        if ticket.hold is not None and not ticket.settled:
            ticket.settled = True
            await self.store.release(ticket.hold)

    async def settle(self, ticket: Ticket, served: Served, outcome: Outcome) -> Charged:
        """Record the ledger row and charge the real cost: the usage the provider reported, else an estimate
        (`estimated`) from the prompt count and what was relayed, for an answer (200) or for a prompt the
        provider received before the client left (`prompt_sent`, status 499): providers bill those too."""
        status, usage, prompt_sent = outcome.status, outcome.usage, outcome.prompt_sent
        ticket.settled = True
        estimated = usage is None and (status == 200 or prompt_sent)
        if usage is None:
            usage = (
                Usage(
                    prompt_tokens=ticket.prompt_estimate,
                    completion_tokens=estimate_completion_tokens(outcome.completion_chars),
                )
                if estimated
                else Usage()
            )
        cost = cost_nanos(ticket.model, usage)
        key = ticket.principal.key
        row = LedgerRow(
            id=ticket.ledger_id or ticket.id,
            ts=ticket.ts,
            team=ticket.principal.team.name,
            key_id=key.id if key else None,
            key_prefix=key.prefix if key else None,
            requested_model=ticket.requested_model,
            model=ticket.model.name,
            provider=served.provider,
            region=served.region,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cached_tokens=usage.cached_tokens,
            cost_nanos=cost,
            estimated=estimated,
            status=status,
            latency_ms=(time.monotonic() - ticket.started) * 1000,
            ttft_ms=(outcome.ttft - ticket.started) * 1000 if outcome.ttft is not None else None,
            route_reason=served.route_reason,
            stream=served.stream,
            content=outcome.content if self.settings.ledger_content else None,
            endpoint=served.endpoint,
            batch_id=served.batch[0] if served.batch is not None else None,
            custom_id=served.batch[1] if served.batch is not None else None,
            decision=served.decision,
        )
        after = await self._record(Settlement(row, ticket.scopes, ticket.hold))
        if after is not None:  # journaled: the soft limit is checked by whichever settlement follows it
            await self._check_soft_limit(ticket, after.spent_nanos, cost)
        return Charged(cost, usage, estimated)

    async def _check_soft_limit(self, ticket: Ticket, spent_after: int, cost: int) -> None:
        team = ticket.principal.team
        if team.budget_nanos is None or not team.soft_limit_pct or cost <= 0:
            return
        threshold = team.budget_nanos * team.soft_limit_pct // 100
        # Spend only grows within a period and settlements are serialised, so exactly one
        # settlement sees the line being crossed: the warning goes out once per period.
        if spent_after - cost < threshold <= spent_after:
            scope = ticket.scopes[0]
            payload = {
                "event": "budget.soft_limit_crossed",
                "team": team.name,
                "budget_usd": usd_text(team.budget_nanos),
                "spent_usd": usd_text(spent_after),
                "soft_limit_pct": team.soft_limit_pct,
                "period": team.period,
                "period_start": datetime.fromtimestamp(scope.period_start, UTC).isoformat(),
            }
            if self.on_soft_limit is not None:
                self.on_soft_limit(team.name)
            task = asyncio.get_running_loop().create_task(self.notifier.notify(payload))
            self._notices.add(task)
            task.add_done_callback(self._notices.discard)
