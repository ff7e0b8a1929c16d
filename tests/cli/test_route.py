"""`gateway route explain`'s rendering of what the rate limits say (gateway/cli/route.py)."""

from __future__ import annotations

from typing import Any

from gateway.cli.route import render_explain


def explained(rate_limits: Any) -> dict[str, Any]:
    return {
        "requested_model": "auto",
        "team": "web",
        "policy": "default",
        "steps": [],
        "capabilities": ["chat"],
        "prompt_tokens": 10,
        "expected_output_tokens": 1024,
        "regions": None,
        "candidates": [],
        "error": None,
        "model": "kimi-k2.6",
        "provider": "moonshot",
        "region": "cn",
        "reason": "prefer",
        "estimated_cost_usd": "0.001",
        "rate_limits": rate_limits,
    }


def last_line(rate_limits: Any) -> str:
    return render_explain(explained(rate_limits)).splitlines()[-1]


def test_limits_that_fit_say_so_and_a_full_one_is_named_with_when_it_is_whole() -> None:
    item = {"scope": "team:web", "limit": "rpm", "amount": 30, "remaining": 4, "reset_seconds": 52.0, "takes": 1}
    assert last_line({"reachable": True, "fits": True, "limits": [{**item, "fits": True}]}) == "-> rate limits now: fit"
    full = {**item, "remaining": 0, "fits": False}
    assert last_line({"reachable": True, "fits": False, "limits": [full]}) == (
        "-> rate limits now: refused by team:web rpm 30: 0 left, needs 1, whole in 52 s"
    )
    assert "cannot be reached; fail_open" in last_line({"reachable": False, "on_failure": "fail_open"})
    assert "rate limits" not in render_explain(explained(None))
