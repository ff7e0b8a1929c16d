"""`GET /ui`: every team's spend today and in its period against its budget, the pace projected to the period's
end, the last day's requests, error rate, overhead and time to first token, and the providers' circuits and
queues on this node."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from starlette.responses import Response

from gateway.admin import service as management
from gateway.budget.periods import period_window
from gateway.console import charts, data
from gateway.console.web import View
from gateway.routing.circuits import CLOSED, HALF_OPEN, OPEN, deployment
from gateway.state import Gateway
from gateway.store.base import SpendFilter

STATS_SECONDS = 24 * 3600
CIRCUIT_STATES = {CLOSED: "closed", HALF_OPEN: "half-open (probing)", OPEN: "open"}


@dataclass(frozen=True, slots=True)
class TeamLine:
    """One team's row of the overview; money in nano-dollars."""

    name: str
    period: str
    budget_nanos: int | None
    spent_nanos: int
    reserved_nanos: int
    today_nanos: int
    projected_nanos: int | None  # at the period's pace so far, to its end (None: the `total` period has no end)
    resets_at: str | None

    @property
    def used(self) -> float | None:
        """The part of the budget spent (None: no budget)."""
        if not self.budget_nanos:
            return None
        return self.spent_nanos / self.budget_nanos

    @property
    def projected_over(self) -> bool:
        return (
            self.budget_nanos is not None
            and self.projected_nanos is not None
            and self.projected_nanos > self.budget_nanos
        )


def projection(spent_nanos: int, start: int, end: int | None, now: float) -> int | None:
    """The spend at the period's end if it goes on at its pace so far (spent / elapsed x length). A period that has
    hardly begun (under an hour) projects nothing: one request would look like a fortune."""
    if end is None:
        return None
    elapsed = now - start
    if elapsed < 3600:
        return None
    return round(spent_nanos * (end - start) / elapsed)


async def team_lines(gateway: Gateway, now: float) -> list[TeamLine]:
    tz = gateway.settings.budget_timezone
    moment = datetime.fromtimestamp(now, UTC)
    teams = await management.list_teams(gateway.store, tz, moment)
    today_start, _ = period_window("daily", tz, moment)
    today = {row.group: row.cost_nanos for row in await gateway.store.spend(SpendFilter(since=today_start), "team")}
    lines = []
    for team in teams:
        start, end = period_window(team["period"], tz, moment)
        lines.append(
            TeamLine(
                name=team["name"],
                period=team["period"],
                budget_nanos=team["budget_nanos"],
                spent_nanos=team["spent_nanos"],
                reserved_nanos=team["reserved_nanos"],
                today_nanos=today.get(team["name"], 0),
                projected_nanos=projection(team["spent_nanos"], start, end, now),
                resets_at=team["period_resets_at"],
            )
        )
    return lines


def circuits(gateway: Gateway) -> list[dict[str, Any]]:
    """Every deployment of the catalog with its circuit's state on this process."""
    catalog = gateway.catalog
    rows = []
    for model in catalog.models.values():
        provider = catalog.provider_of(model)
        name = deployment(provider.name, model.name)
        state = gateway.circuits.state(name)
        rows.append(
            {
                "provider": provider.name,
                "model": model.name,
                "region": provider.region,
                "state": CIRCUIT_STATES.get(state, str(state)),
                "open": state != CLOSED,
                "held": gateway.circuits.held(name),
            }
        )
    return rows


def budget_chart(lines: list[TeamLine]) -> charts.Chart:
    """Spent and projected per team, as a part of its budget (teams without a budget are in the table only)."""
    rows = [
        (line.name, [line.spent_nanos / line.budget_nanos * 100, (line.projected_nanos or 0) / line.budget_nanos * 100])
        for line in lines
        if line.budget_nanos
    ]
    return charts.hbars(
        "chart-budgets",
        "Spent and projected to the period's end, as a percentage of each team's budget",
        rows,
        ["spent so far", "projected at this pace"],
        value_text=lambda v: f"{v:.1f}%",
        limit=100.0,
        limit_text="budget",
    )


async def overview(view: View) -> Response:
    gateway = view.gateway
    now = time.time()
    lines = await team_lines(gateway, now)
    stats = await gateway.store.latency_stats(now - STATS_SECONDS)
    return view.render(
        "overview.html",
        title="Overview",
        section="overview",
        teams=lines,
        chart=budget_chart(lines),
        stats=stats,
        error_rate=stats.errors / stats.requests if stats.requests else None,
        overhead=data.overhead(gateway.metrics.overhead),
        circuits=circuits(gateway),
        queues=gateway.provider_queues.status(),
        policies=gateway.policy_status(),
        demo=gateway.catalog.demo,
    )
