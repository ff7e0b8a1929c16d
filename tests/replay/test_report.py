"""A replay's report (gateway/replay/report.py): its JSON figures, its CSV and the CLI's table of it."""

from __future__ import annotations

import csv
import io

from gateway.cli.tables import render_replay
from gateway.replay.report import EXAMPLES_PER_CODE, ReplayReport, TeamTally, report_csv


def sample() -> ReplayReport:
    report = ReplayReport(
        "policies with eu-only.yaml", ["default", "eu-only"], "web", 1_790_000_000.0, None, 1024, 1_790_100_000.0
    )
    team = report.teams.setdefault("web", TeamTally("eu-only"))
    report.happened(team, "kimi-k2.6", "moonshot", "cn", 1_000)
    report.routed(team, ("kimi-k2.6", "moonshot", "cn"), ("mistral-medium-3.5", "mistral", "eu"), 2_500)
    for index in range(EXAMPLES_PER_CODE + 2):
        report.happened(team, "kimi-k2.6", "moonshot", "cn", 400)
        report.refuse(team, "kimi-k2.6", 403, "model_not_allowed", {"id": f"req_{index}", "ts": "T", "team": "web",
                                                                   "message": "Model 'kimi-k2.6' is not allowed"})  # fmt: skip
    report.happened(team, "mistral-medium-3.5", "mistral", "eu", 100)
    report.routed(team, ("mistral-medium-3.5", "mistral", "eu"), ("mistral-medium-3.5", "mistral", "eu"), 100)
    report.past_budget(team, 1_790_000_500.0)
    report.skipped["batch_line"] += 2
    report.approximated = 1
    return report


def test_the_figures_side_by_side() -> None:
    data = sample().as_dict()
    assert data["rows"] == {
        "replayed": 9,
        "approximated": 1,
        "skipped": {"batch_line": 2},
        "refused": 7,
        "changed_model": 1,
        "moved_region": 1,
        "over_budget": 1,
    }
    assert data["cost"] == {
        "before_usd": "0.000003900",
        "before_nanos": 3_900,
        "after_usd": "0.000002600",
        "after_nanos": 2_600,
        "delta_usd": "-0.000001300",
        "delta_nanos": -1_300,
        "delta_pct": -33.33,
    }
    assert data["models"] == [
        {"model": "kimi-k2.6", "provider": "moonshot", "region": "cn", "requests_before": 8, "requests_after": 0,
         "cost_before_usd": "0.000003800", "cost_after_usd": "0.000000000", "cost_before_nanos": 3_800,
         "cost_after_nanos": 0},
        {"model": "mistral-medium-3.5", "provider": "mistral", "region": "eu", "requests_before": 1,
         "requests_after": 2, "cost_before_usd": "0.000000100", "cost_after_usd": "0.000002600",
         "cost_before_nanos": 100, "cost_after_nanos": 2_600},
    ]  # fmt: skip
    (refused,) = data["refused"]
    assert (refused["requests"], len(refused["examples"])) == (7, EXAMPLES_PER_CODE)
    assert data["region_moves"] == [{"from": "cn", "to": "eu", "requests": 1}]
    (team,) = data["teams"]
    assert (team["policy"], team["refused"], team["over_budget"], team["over_budget_from"]) == (
        "eu-only",
        7,
        1,
        "2026-09-21T14:21:40Z",
    )
    assert data["filters"] == {"team": "web", "since": "2026-09-21T14:13:20Z", "until": None}


def test_csv_has_a_section_per_figure() -> None:
    report = sample()
    lines = list(csv.reader(io.StringIO(report.as_csv())))
    assert lines[0] == ["section", "name", "provider", "region", "requests_before", "requests_after",
                        "cost_before_usd", "cost_after_usd"]  # fmt: skip
    assert lines[1] == ["total", "", "", "", "9", "2", "0.000003900", "0.000002600"]
    assert ["model", "kimi-k2.6", "moonshot", "cn", "8", "0", "0.000003800", "0.000000000"] in lines
    assert ["team", "web", "", "", "9", "2", "0.000003900", "0.000002600"] in lines
    assert ["region_move", "cn -> eu", "", "", "1", "", "", ""] in lines
    assert ["refused", "403 model_not_allowed", "", "", "7", "0", "", ""] in lines
    assert report_csv(report.as_dict()) == report.as_csv()


def test_the_table() -> None:
    text = render_replay(sample().as_dict())
    assert "team web  from 2026-09-21T14:13:20Z  to now" in text
    assert "requests replayed 9 (1 approximated" in text and "skipped 2 batch line" in text
    assert "cost $0.0000039 -> $0.0000026 (-$0.0000013, -33.33%)" in text
    assert "kimi-k2.6           moonshot  cn" in text
    assert "refused 7: 403 model_not_allowed" in text and "req_4" in text and "req_5" not in text
    assert "REGION FROM  TO  REQUESTS" in text
