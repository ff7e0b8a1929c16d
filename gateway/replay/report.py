"""What a policy replay found, side by side with what happened: `ReplayReport`, its JSON (`as_dict`) and CSV.

Money is integers of nano-dollars while counting; in the JSON every amount is two fields, `<name>_usd` (an exact
decimal string, `gateway.money.usd_text`) and `<name>_nanos` (an integer).
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from gateway.money import usd_text

EXAMPLES_PER_CODE = 5  # refused rows shown per error code
REFUSED = "(refused)"  # the model and provider of a refused row in the "after" columns of `model_moves`


def iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


def money(name: str, nanos: int) -> dict[str, Any]:
    return {f"{name}_usd": usd_text(nanos), f"{name}_nanos": nanos}


@dataclass(slots=True)
class Tally:
    """Requests and their cost, as they happened (before) and under the replayed policies (after)."""

    before: int = 0
    after: int = 0
    cost_before: int = 0
    cost_after: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests_before": self.before,
            "requests_after": self.after,
            **money("cost_before", self.cost_before),
            **money("cost_after", self.cost_after),
        }


@dataclass(slots=True)
class TeamTally:
    policy: str
    tally: Tally = field(default_factory=Tally)
    refused: int = 0
    changed_model: int = 0
    moved_region: int = 0
    over_budget: int = 0
    over_budget_from: float | None = None  # the time of the first row served past the budget at the new prices


@dataclass(slots=True)
class Refusals:
    status: int
    count: int = 0
    examples: list[dict[str, Any]] = field(default_factory=list)


@dataclass(slots=True)
class ReplayReport:
    """Counts over the replayed ledger rows. Built by `gateway.replay.engine.replay`; read with `as_dict`/`as_csv`."""

    policies_source: str
    policies: list[str]
    team: str | None
    since: float
    until: float | None
    default_expected_output: int
    generated_at: float
    replayed: int = 0
    approximated: int = 0  # rows without recorded inputs (before migration 6): replayed from what they have
    skipped: Counter[str] = field(default_factory=Counter)  # reason -> rows not replayed
    refused: int = 0
    changed_model: int = 0
    moved_region: int = 0
    over_budget: int = 0
    total: Tally = field(default_factory=Tally)
    models: dict[tuple[str, str, str], Tally] = field(default_factory=dict)  # (model, provider, region)
    providers: dict[tuple[str, str], Tally] = field(default_factory=dict)  # (provider, region)
    region_moves: Counter[tuple[str, str]] = field(default_factory=Counter)
    model_moves: Counter[tuple[str, str]] = field(default_factory=Counter)  # (model before, model after or REFUSED)
    refusals: dict[str, Refusals] = field(default_factory=dict)  # error code -> refusals
    teams: dict[str, TeamTally] = field(default_factory=dict)

    # -- counting (the engine) ---------------------------------------------------------------------

    def _model(self, model: str, provider: str, region: str) -> Tally:
        return self.models.setdefault((model, provider, region), Tally())

    def _provider(self, provider: str, region: str) -> Tally:
        return self.providers.setdefault((provider, region), Tally())

    def happened(self, team: TeamTally, model: str, provider: str, region: str, cost: int) -> None:
        """One replayed row as it happened."""
        self.replayed += 1
        for tally in (self.total, team.tally, self._model(model, provider, region), self._provider(provider, region)):
            tally.before += 1
            tally.cost_before += cost

    def routed(self, team: TeamTally, before: tuple[str, str, str], after: tuple[str, str, str], cost: int) -> None:
        """The same row under the replayed policies: served by `after` (model, provider, region) for `cost`."""
        model, provider, region = after
        for tally in (self.total, team.tally, self._model(model, provider, region), self._provider(provider, region)):
            tally.after += 1
            tally.cost_after += cost
        self.model_moves[(before[0], model)] += 1
        if model != before[0]:
            self.changed_model += 1
            team.changed_model += 1
        if region != before[2]:
            self.moved_region += 1
            team.moved_region += 1
            self.region_moves[(before[2], region)] += 1

    def refuse(self, team: TeamTally, before_model: str, status: int, code: str, example: dict[str, Any]) -> None:
        """The same row refused by the replayed policies (`code`, the HTTP `status` the gateway would answer)."""
        self.refused += 1
        team.refused += 1
        self.model_moves[(before_model, REFUSED)] += 1
        refusals = self.refusals.setdefault(code, Refusals(status))
        refusals.count += 1
        if len(refusals.examples) < EXAMPLES_PER_CODE:
            refusals.examples.append(example)

    def past_budget(self, team: TeamTally, at: float) -> None:
        self.over_budget += 1
        team.over_budget += 1
        if team.over_budget_from is None:
            team.over_budget_from = at

    # -- reading -----------------------------------------------------------------------------------

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data (what `POST /admin/replay` returns; see gateway/replay/__init__.py)."""
        delta = self.total.cost_after - self.total.cost_before
        return {
            "object": "policy_replay",
            "generated_at": iso(self.generated_at),
            "policies": {"source": self.policies_source, "names": self.policies},
            "filters": {"team": self.team, "since": iso(self.since), "until": iso(self.until)},
            "default_expected_output": self.default_expected_output,
            "rows": {
                "replayed": self.replayed,
                "approximated": self.approximated,
                "skipped": dict(sorted(self.skipped.items())),
                "refused": self.refused,
                "changed_model": self.changed_model,
                "moved_region": self.moved_region,
                "over_budget": self.over_budget,
            },
            "cost": {
                **money("before", self.total.cost_before),
                **money("after", self.total.cost_after),
                **money("delta", delta),
                "delta_pct": round(delta * 100 / self.total.cost_before, 2) if self.total.cost_before else None,
            },
            "models": [
                {"model": model, "provider": provider, "region": region, **tally.as_dict()}
                for (model, provider, region), tally in sorted(self.models.items())
            ],
            "providers": [
                {"provider": provider, "region": region, **tally.as_dict()}
                for (provider, region), tally in sorted(self.providers.items())
            ],
            "model_moves": [
                {"from": before, "to": after, "requests": count}
                for (before, after), count in sorted(self.model_moves.items())
            ],
            "region_moves": [
                {"from": before, "to": after, "requests": count}
                for (before, after), count in sorted(self.region_moves.items())
            ],
            "refused": [
                {"code": code, "status": r.status, "requests": r.count, "examples": r.examples}
                for code, r in sorted(self.refusals.items())
            ],
            "teams": [
                {
                    "team": name,
                    "policy": t.policy,
                    **t.tally.as_dict(),
                    "refused": t.refused,
                    "changed_model": t.changed_model,
                    "moved_region": t.moved_region,
                    "over_budget": t.over_budget,
                    "over_budget_from": iso(t.over_budget_from),
                }
                for name, t in sorted(self.teams.items())
            ],
        }

    def as_csv(self) -> str:
        return report_csv(self.as_dict())


CSV_COLUMNS = (
    "section",
    "name",
    "provider",
    "region",
    "requests_before",
    "requests_after",
    "cost_before_usd",
    "cost_after_usd",
)


def report_csv(report: dict[str, Any]) -> str:
    """One CSV table of a report's figures (from `as_dict`, so `gateway replay --url` writes the same): a `section`
    column (total, model, provider, team, model_move, region_move, refused) and the columns each has."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    cost = report["cost"]
    rows = report["rows"]
    served = rows["replayed"] - rows["refused"]
    writer.writerow(["total", "", "", "", rows["replayed"], served, cost["before_usd"], cost["after_usd"]])
    for m in report["models"]:
        writer.writerow(["model", m["model"], m["provider"], m["region"], *_figures(m)])
    for p in report["providers"]:
        writer.writerow(["provider", p["provider"], p["provider"], p["region"], *_figures(p)])
    for t in report["teams"]:
        writer.writerow(["team", t["team"], "", "", *_figures(t)])
    for move in report["model_moves"]:
        writer.writerow(["model_move", f"{move['from']} -> {move['to']}", "", "", move["requests"], "", "", ""])
    for move in report["region_moves"]:
        writer.writerow(["region_move", f"{move['from']} -> {move['to']}", "", "", move["requests"], "", "", ""])
    for refused in report["refused"]:
        writer.writerow(["refused", f"{refused['status']} {refused['code']}", "", "", refused["requests"], 0, "", ""])
    return out.getvalue()


def _figures(row: dict[str, Any]) -> list[Any]:
    return [row["requests_before"], row["requests_after"], row["cost_before_usd"], row["cost_after_usd"]]
