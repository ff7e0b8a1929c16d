"""Replay: the pure routing decision, with other policies, over the ledger's rows; nothing called, nothing written.

For each row (oldest first, read a page at a time) the request is rebuilt as `decide` saw it: the row's recorded
inputs (`gateway.replay.inputs`), its team as the store has it now (allowed models and regions, policy name) and,
if the key still exists, the key's models; the team's policy is taken from the replayed set. The decision is
compared with what happened (the row's model, provider, region and cost), and the new cost is the new model's
price on the row's billed prompt, completion and cached tokens (`gateway.pricing.cost_nanos`).

What a replay cannot see, and what it does instead:

- the budget as it stood: the policy's budget step (`prefer_cheapest_above_pct`) reads the share spent, which
  replay keeps itself per team and key and budget period: the ledger's spend before the window, then the new
  costs of the replayed rows; a row served after its team's or key's budget is spent at the new prices is counted
  (`over_budget`), not refused (the admission of the time, its reservations and `on_reservation_too_large` steps,
  depended on requests in flight);
- rate limits, provider capacity, circuits and fallbacks after a provider failure: the first candidate serves;
- batch lines (`POST /v1/batches`): skipped (`skipped.batch_line`). Every line was routed by the batch's plan (the
  policy's `batch` section, at batch prices, the whole batch fitted to the budget at once), not by `decide` on its
  own: a line run on a provider's batch API has no recorded inputs, and one run through the pipeline was sent
  pinned to the model the plan chose, so neither says what a request of its own would have asked for;
- rows of teams that no longer exist: skipped (`skipped.team_deleted`); the master key's built-in team `admin`
  is replayed with the `default` policy, as the gateway serves it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from gateway.auth.principal import ADMIN_TEAM
from gateway.budget.periods import period_window
from gateway.catalog import Catalog, ModelConfig
from gateway.errors import GatewayError
from gateway.policy import DEFAULT_POLICY, Policy, PolicySet
from gateway.pricing import cost_nanos
from gateway.replay.inputs import DecisionInputs, inputs_of
from gateway.replay.report import ReplayReport, TeamTally, iso
from gateway.routing.decision import DecisionRequest, decide
from gateway.routing.route import Allowed, check_limits
from gateway.store.base import KeyRecord, LedgerFilter, LedgerRow, SpendFilter, Store, Team, key_scope, team_scope
from gateway.tokens import Count
from gateway.types import Usage

PAGE_ROWS = 1000  # ledger rows read per page
# A replay runs on a serving gateway's event loop (POST /admin/replay): it lets other tasks run every this many rows
# (a row takes about 40 µs, so a few milliseconds at most between turns).
ROWS_PER_TURN = 100
# The doors whose output limit is a ceiling chosen for another vendor's models: lowered to the model's, not refused
# (`gateway.pipeline.admit.fit_output`).
CEILING_ENDPOINTS = frozenset({"messages", "responses"})


async def replay(
    store: Store,
    catalog: Catalog,
    policies: PolicySet,
    *,
    team: str | None,
    since: float,
    until: float | None,
    default_expected_output: int,
    timezone: str = "UTC",
) -> ReplayReport:
    """Replay the ledger rows of `team` (None: every team) from `since` (inclusive) to `until` (exclusive; None:
    now) under `policies`; `default_expected_output` is the output priced when a request set no max_tokens
    (GATEWAY_DEFAULT_EXPECTED_OUTPUT_TOKENS), `timezone` the budget periods' (GATEWAY_BUDGET_TIMEZONE).
    Reads the store (teams and keys once, then the ledger a page at a time); never writes, never calls a provider."""
    report = ReplayReport(
        policies_source=policies.directory,
        policies=sorted(policies),
        team=team,
        since=since,
        until=until,
        default_expected_output=default_expected_output,
        generated_at=time.time(),
    )
    teams = {t.name: t for t in await store.list_teams()}
    keys = {k.id: k for k in await store.list_keys()}
    budgets = _Budgets(store, timezone, since)
    filters = LedgerFilter(team=team, since=since, until=until)
    after: str | None = None
    while True:
        page = await store.ledger_page(filters, "oldest", after=after, limit=PAGE_ROWS, count=False)
        for index, row in enumerate(page.rows, 1):
            if index % ROWS_PER_TURN == 0:
                await asyncio.sleep(0)  # a turn for the requests this gateway serves meanwhile
            owner = teams.get(row.team) or (Team(ADMIN_TEAM, policy=DEFAULT_POLICY) if row.team == ADMIN_TEAM else None)
            if row.batch_id is not None:
                report.skipped["batch_line"] += 1
            elif owner is None:
                report.skipped["team_deleted"] += 1
            else:
                key = keys.get(row.key_id) if row.key_id is not None else None
                await _replay_row(report, catalog, policies, budgets, row, owner, key, default_expected_output)
        if len(page.rows) < PAGE_ROWS:
            return report
        after = page.rows[-1].id


async def _replay_row(
    report: ReplayReport,
    catalog: Catalog,
    policies: Mapping[str, Policy],
    budgets: _Budgets,
    row: LedgerRow,
    team: Team,
    key: KeyRecord | None,
    default_expected_output: int,
) -> None:
    inputs = inputs_of(row)
    if not inputs.recorded:
        report.approximated += 1
    policy_name = team.policy or DEFAULT_POLICY
    tally = report.teams.setdefault(team.name, TeamTally(policy_name))
    report.happened(tally, row.model, row.provider, row.region, row.cost_nanos)
    policy = policies.get(policy_name)
    if policy is None:
        message = (
            f"The team's policy {policy_name!r} is not among the replayed policies ({', '.join(sorted(policies))})."
        )
        report.refuse(tally, row.model, 503, "policy_not_found", _example(row, message))
        return
    spent = await budgets.spent_fraction(team, key, row.ts) if policy.budget.prefer_cheapest_above_pct else None
    model, refusal = _decide(catalog, policy, team, key, row, inputs, spent, default_expected_output)
    if model is None:
        assert refusal is not None
        report.refuse(tally, row.model, refusal.status, refusal.code or "refused", _example(row, refusal.message))
        return
    cost = cost_nanos(
        model,
        Usage(
            prompt_tokens=row.prompt_tokens, completion_tokens=row.completion_tokens, cached_tokens=row.cached_tokens
        ),
    )
    provider = catalog.provider_of(model)
    report.routed(tally, (row.model, row.provider, row.region), (model.name, provider.name, provider.region), cost)
    if await budgets.charge(team, key, row.ts, cost):
        report.past_budget(tally, row.ts)


def _decide(
    catalog: Catalog,
    policy: Policy,
    team: Team,
    key: KeyRecord | None,
    row: LedgerRow,
    inputs: DecisionInputs,
    spent: float | None,
    default_expected_output: int,
) -> tuple[ModelConfig | None, GatewayError | None]:
    """The model the policy would choose for the row's request, or the refusal the gateway would answer."""
    counts = {name: Count(tokens, True, "given", 0) for name, tokens in inputs.counts.items()}
    decision = decide(
        DecisionRequest(
            catalog=catalog,
            policy=policy,
            allowed=allowed_for(team, key),
            requested_model=row.requested_model,
            capabilities=inputs.capabilities,
            prompt_tokens=inputs.tokens,
            expected_output=inputs.expected_output(default_expected_output),
            residency=inputs.residency,
            spent_fraction=spent,
            counts=counts or None,
        )
    )
    if not decision.ok:
        return None, decision.error or GatewayError(400, "No model can serve this request.", "", "no_route")
    model = decision.candidates[0]
    # The chosen model's own limits, as the pipeline checks them before any call (`fit_limits`).
    max_output = None if row.endpoint in CEILING_ENDPOINTS else inputs.max_tokens
    try:
        check_limits(model, inputs.n, max_output)
    except GatewayError as error:
        return None, error
    return model, None


def allowed_for(team: Team, key: KeyRecord | None) -> Allowed:
    """What a team and its key may use (the key only narrows the team), as `gateway.pipeline.plan.allowed_for`."""
    models = set(team.models) if team.models is not None else None
    if key is not None and key.models is not None:
        models = set(key.models) if models is None else models & set(key.models)
    regions = frozenset(team.regions) if team.regions is not None else None
    return Allowed(frozenset(models) if models is not None else None, regions)


def _example(row: LedgerRow, message: str) -> dict[str, Any]:
    """A refused row as the report shows it: no prompt text, only what the ledger row and the refusal say."""
    return {
        "id": row.id,
        "ts": iso(row.ts),
        "team": row.team,
        "key_prefix": row.key_prefix,
        "requested_model": row.requested_model,
        "model": row.model,
        "endpoint": row.endpoint,
        "message": message,
    }


@dataclass
class _Budgets:
    """The spend of each team and key in each budget period, as the replay goes: the ledger's spend in the period
    before the replayed window (read once per scope and period, only for scopes with a budget), plus the new cost of
    every replayed row."""

    store: Store
    timezone: str
    since: float
    spent: dict[tuple[str, int], int] = field(default_factory=dict)

    def _scopes(self, team: Team, key: KeyRecord | None) -> list[tuple[str, int, SpendFilter]]:
        """(scope, budget, filter of its ledger rows) for the team's and the key's budgets."""
        scopes = []
        if team.budget_nanos:
            scopes.append((team_scope(team.name), team.budget_nanos, SpendFilter(team=team.name)))
        if key is not None and key.budget_nanos:
            scopes.append((key_scope(key.id), key.budget_nanos, SpendFilter(key=key.id)))
        return scopes

    async def _slot(self, scope: str, which: SpendFilter, period: str, at: float) -> tuple[str, int]:
        """The (scope, period start) holding `at`, its spend so far known."""
        start, _ = period_window(period, self.timezone, datetime.fromtimestamp(at, UTC))
        slot = (scope, start)
        if slot not in self.spent:
            before = 0
            if start < self.since:  # the period began before the window: what the ledger says was spent in it
                which.since, which.until = float(start), self.since
                before = (await self.store.spend(which, None))[0].cost_nanos
            self.spent[slot] = before
        return slot

    async def spent_fraction(self, team: Team, key: KeyRecord | None, at: float) -> float | None:
        """The larger spent share of the team's and the key's budgets at `at` (None: neither has a budget)."""
        fractions = []
        for scope, budget, which in self._scopes(team, key):
            slot = await self._slot(scope, which, team.period, at)
            fractions.append(self.spent[slot] / budget)
        return max(fractions) if fractions else None

    async def charge(self, team: Team, key: KeyRecord | None, at: float, cost: int) -> bool:
        """Add a replayed row's new cost; whether a budget was already spent, or is overrun by it."""
        over = False
        for scope, budget, which in self._scopes(team, key):
            slot = await self._slot(scope, which, team.period, at)
            self.spent[slot] += cost
            over = over or self.spent[slot] > budget
        return over
