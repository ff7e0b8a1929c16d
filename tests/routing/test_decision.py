"""Policy routing: the pure pipeline (`decide`), and the whole path through the gateway and the emulators."""

from __future__ import annotations

import json
import random
import re
from datetime import UTC
from pathlib import Path

import pytest

from gateway.catalog import load_catalog
from gateway.emulators.text import count_tokens
from gateway.errors import GatewayError
from gateway.money import usd_to_nanos
from gateway.policy import Policy, load_policies
from gateway.routing import Allowed, DecisionRequest, decide
from gateway.routing.counting import PromptCounts
from gateway.tokens import TokenCounter
from tests.support import ROOT
from tests.support.emulators import EmulatorControl
from tests.support.gateways import GatewayFactory
from tests.support.http import auth, post_json, request
from tests.support.store import ledger, make_key, make_team, on_store, team_usage

CATALOG = load_catalog(None, {})
POLICIES = load_policies(ROOT / "policies", CATALOG)
DEFAULT, COST_SAVER, EU_ONLY = POLICIES["default"], POLICIES["cost-saver"], POLICIES["eu-only"]
ANY = Allowed()
EU = Allowed(regions=frozenset({"eu"}))
CHAT = "/v1/chat/completions"
EXPLAIN = "/v1/route/explain"
SHORT = [{"role": "user", "content": "Count to three."}]
# 600,000 emulator tokens ("a" words) in 1.2 MB: over Mistral's 262,144 window by the emulator's count and by the
# gateway's (about 300,000 from the body size), within Kimi's 1,048,576 by both.
HUGE = [{"role": "user", "content": "a " * 600_000}]


def removed(decision, step: str) -> dict[str, str]:
    return {r.model: r.reason for s in decision.steps if s.name == step for r in s.removed}


# -- the pipeline (pure) ---------------------------------------------------------------------------


def test_short_auto_prefers_mistral() -> None:
    d = decide(DecisionRequest(CATALOG, DEFAULT, ANY, "auto", {"chat"}, 50, 1024))
    assert d.ok and d.reason == "preferred"
    assert [m.name for m in d.candidates] == ["mistral-medium-3.5", "kimi-k2.6", "codestral"]
    assert removed(d, "capability") == {"mistral-embed": "lacks chat"}
    assert [s.name for s in d.steps] == ["allowed", "residency", "capability", "context", "budget", "preference"]


def test_large_prompt_skips_mistral_for_context() -> None:
    d = decide(DecisionRequest(CATALOG, DEFAULT, ANY, "auto", {"chat"}, 300_112, 1024))
    assert d.reason == "context>262144" and [m.name for m in d.candidates] == ["kimi-k2.6"]
    why = removed(d, "context")
    assert set(why) == {"mistral-medium-3.5", "codestral"} and "holds 262,144" in why["mistral-medium-3.5"]
    # The window less the 2% margin is the limit, prompt plus expected output.
    assert decide(DecisionRequest(CATALOG, DEFAULT, ANY, "auto", {"chat"}, 256_901 - 1024, 1024)).reason == "preferred"
    assert (
        decide(DecisionRequest(CATALOG, DEFAULT, ANY, "auto", {"chat"}, 256_902 - 1024, 1024)).reason
        == "context>262144"
    )


def test_eu_team_large_prompt_is_no_route_naming_each_elimination() -> None:
    d = decide(DecisionRequest(CATALOG, DEFAULT, EU, "auto", {"chat"}, 300_112, 1024))
    assert not d.ok and d.error is not None and (d.error.status, d.error.code) == (400, "no_route")
    message = d.error.message
    for part in (
        "prompt is 300,112 tokens",
        "mistral-medium-3.5 holds 262,144",
        "kimi-k2.6 is excluded by residency eu",
        "codestral holds 262,144",
        "mistral-embed lacks chat",
    ):
        assert part in message, message
    with pytest.raises(GatewayError):
        d.check()


def test_residency_header_narrows_and_never_widens() -> None:
    pinned_eu = decide(DecisionRequest(CATALOG, DEFAULT, ANY, "auto", {"chat"}, 300_112, 1024, residency={"eu"}))
    assert pinned_eu.error is not None and pinned_eu.error.code == "no_route"
    short = decide(DecisionRequest(CATALOG, COST_SAVER, ANY, "auto", {"chat"}, 50, 1024, residency={"eu"}))
    assert short.reason == "residency:eu" and short.candidates[0].name == "mistral-medium-3.5"
    widened = decide(DecisionRequest(CATALOG, DEFAULT, EU, "auto", {"chat"}, 50, 1024, residency={"cn", "eu"}))
    assert widened.regions == frozenset({"eu"}) and {m.name for m in widened.candidates} == {
        "mistral-medium-3.5",
        "codestral",
    }
    only_cn = decide(DecisionRequest(CATALOG, DEFAULT, EU, "auto", {"chat"}, 50, 1024, residency={"cn"}))
    assert only_cn.error is not None and only_cn.error.code == "no_route"


def test_capability_step() -> None:
    fim = decide(DecisionRequest(CATALOG, DEFAULT, ANY, "auto", {"fim"}, 50, 64))
    assert [m.name for m in fim.candidates] == ["codestral"]
    tools = decide(DecisionRequest(CATALOG, DEFAULT, ANY, "auto", {"chat", "tools"}, 50, 64))
    assert "codestral" in removed(tools, "capability") and removed(tools, "capability")["codestral"] == "lacks tools"


def test_budget_step_prefers_cheapest_above_threshold() -> None:
    below = decide(DecisionRequest(CATALOG, DEFAULT, ANY, "auto", {"chat"}, 50, 1024, spent_fraction=0.79))
    assert below.reason == "preferred"
    above = decide(DecisionRequest(CATALOG, DEFAULT, ANY, "auto", {"chat"}, 50, 1024, spent_fraction=0.85))
    assert above.reason == "budget-downgrade" and above.candidates[0].name == "kimi-k2.6"
    assert "85.0%" in next(s for s in above.steps if s.name == "budget").note
    # downgrade_to lists only kimi: an eu team stays on Mistral Medium (never codestral).
    eu = decide(DecisionRequest(CATALOG, DEFAULT, EU, "auto", {"chat"}, 50, 1024, spent_fraction=0.95))
    assert eu.reason == "preferred" and eu.candidates[0].name == "mistral-medium-3.5"


def test_named_models_pinned_rerouted_refused_honoured() -> None:
    pinned = decide(DecisionRequest(CATALOG, DEFAULT, ANY, "kimi-k2.6", {"chat"}, 50, 1024, spent_fraction=0.99))
    assert pinned.reason == "pinned" and [m.name for m in pinned.candidates] == ["kimi-k2.6"]
    by_upstream_id = decide(DecisionRequest(CATALOG, DEFAULT, ANY, "codestral-latest", {"chat"}, 50, 1024))
    assert by_upstream_id.candidates[0].name == "codestral"
    rerouted = decide(DecisionRequest(CATALOG, DEFAULT, EU, "kimi-k2.6", {"chat"}, 50, 1024))
    assert rerouted.reason == "rerouted" and rerouted.candidates[0].name == "mistral-medium-3.5"
    refused = decide(DecisionRequest(CATALOG, EU_ONLY, ANY, "kimi-k2.6", {"chat"}, 50, 1024))
    assert refused.error is not None and (refused.error.status, refused.error.code) == (403, "model_not_allowed")
    assert "policy 'eu-only'" in refused.error.message
    unknown = decide(DecisionRequest(CATALOG, DEFAULT, ANY, "gpt-9", {"chat"}, 50, 1024))
    assert unknown.error is not None and (unknown.error.status, unknown.error.code) == (404, "model_not_found")
    honour = Policy(name="h", models=("mistral-medium-3.5",), named_model="honour")
    assert decide(DecisionRequest(CATALOG, honour, ANY, "kimi-k2.6", {"chat"}, 50, 1024)).reason == "pinned"
    team_says_no = decide(
        DecisionRequest(
            CATALOG, honour, Allowed(models=frozenset({"mistral-medium-3.5"})), "kimi-k2.6", {"chat"}, 50, 1024
        )
    )
    assert team_says_no.error is not None and team_says_no.error.status == 403  # honour never overrides the team
    no_tools = decide(DecisionRequest(CATALOG, DEFAULT, ANY, "codestral", {"chat", "tools"}, 50, 1024))
    assert no_tools.error is not None and no_tools.error.code == "unsupported_capability"
    tight = decide(
        DecisionRequest(CATALOG, DEFAULT, ANY, "mistral-medium-3.5", {"chat"}, 258_000, 1024)
    )  # over the usable window
    assert tight.reason == "pinned" and "sent anyway" in next(s for s in tight.steps if s.name == "context").note
    too_long = decide(
        DecisionRequest(CATALOG, DEFAULT, ANY, "mistral-medium-3.5", {"chat"}, 300_000, 1024)
    )  # over the window
    assert too_long.error is not None and too_long.error.status == 400
    assert too_long.error.code == "context_length_exceeded" and "262,144" in too_long.error.message


def test_decision_request_is_a_value_that_replays() -> None:
    """`decide` reads nothing but its request: the same request decides the same, explain included."""
    import dataclasses

    request = DecisionRequest(CATALOG, DEFAULT, EU, "kimi-k2.6", ["chat"], 300_112, 1024, residency=["eu"])
    assert request.capabilities == frozenset({"chat"}) and request.residency == frozenset({"eu"})
    with pytest.raises(dataclasses.FrozenInstanceError):
        request.prompt_tokens = 1  # type: ignore[misc]
    first, again = decide(request), decide(request)
    assert first.explain(CATALOG, DEFAULT) == again.explain(CATALOG, DEFAULT)
    assert first.rerouted and first.error is not None and first.error.code == "no_route"
    auto = decide(dataclasses.replace(request, requested_model="auto"))
    assert not auto.rerouted and auto.error is not None and auto.error.message == first.error.message


def test_explain_data_has_every_candidate_and_cost() -> None:
    d = decide(DecisionRequest(CATALOG, DEFAULT, EU, "auto", {"chat"}, 1000, 100))
    data = d.explain(CATALOG, DEFAULT)
    rows = {r["model"]: r for r in data["candidates"]}
    assert set(rows) == set(CATALOG.models)
    assert rows["kimi-k2.6"]["kept"] is False and rows["kimi-k2.6"]["removed_by"] == "residency"
    assert rows["mistral-medium-3.5"]["kept"] and rows["mistral-medium-3.5"]["estimated_cost_usd"] == "0.002250000"
    assert data["model"] == "mistral-medium-3.5" and data["reason"] == "preferred" and data["error"] is None


def test_random_requests_never_break_residency_or_windows() -> None:
    rng = random.Random(20260)
    policies = [DEFAULT, COST_SAVER, EU_ONLY, Policy(name="any")]
    names = list(CATALOG.models)
    for _ in range(2000):
        regions = rng.choice([None, {"eu"}, {"cn"}, {"eu", "cn"}])
        models = rng.choice([None, set(rng.sample(names, rng.randint(1, len(names))))])
        header = rng.choice([None, {"eu"}, {"cn"}])
        policy = rng.choice(policies)
        allowed = Allowed(frozenset(models) if models else None, frozenset(regions) if regions else None)
        prompt = rng.choice([10, 5_000, 200_000, 260_000, 300_000, 1_100_000, rng.randint(0, 1_200_000)])
        output = rng.choice([0, 1024, 32_768])
        requested = rng.choice(["auto", "auto", *names])
        d = decide(DecisionRequest(CATALOG, policy, allowed, requested, {"chat"}, prompt, output, header, rng.random()))
        for model in d.candidates if not d.pinned else []:
            region = CATALOG.provider_of(model).region
            assert regions is None or region in regions
            assert header is None or region in header
            assert policy.regions is None or region in policy.regions
            assert models is None or model.name in models
            assert prompt + output <= policy.usable_window(model)
        for model in d.candidates if d.pinned else []:  # named: only the window may be left to the provider
            region = CATALOG.provider_of(model).region
            assert (regions is None or region in regions) and (header is None or region in header)
            assert models is None or model.name in models
        assert d.ok or d.error is not None


def test_prompt_counter_falls_back_to_body_size() -> None:
    body = {"model": "auto", "messages": HUGE}
    size = len(json.dumps(body))
    counted = PromptCounts(TokenCounter(), CATALOG, body, size).tokens
    assert counted > 262_144 and count_tokens(HUGE[0]["content"]) > 262_144
    assert counted + 1024 < 1_048_576 and count_tokens(HUGE[0]["content"]) < 1_000_000


def _near_boundary_body() -> tuple[dict, int, int]:
    """A ~20K-token prompt of varied text, its size and its Tekken count for Mistral Medium 3.5."""
    import inspect

    import gateway.routing.decision as pipeline_module

    text = (inspect.getsource(pipeline_module) * 4)[:80_000]
    body = {"model": "auto", "messages": [{"role": "user", "content": text}]}
    size = len(json.dumps(body))
    mistral = CATALOG.models["mistral-medium-3.5"]
    rough = TokenCounter().count(body, mistral, "mistral", 10**9)
    exact = TokenCounter().count(body, mistral, "mistral", rough.tokens)  # a limit inside the band: Tekken
    assert rough.method == "estimate" and exact.method == "tekken" and exact.exact
    return body, size, exact.tokens


def test_context_step_counts_with_the_model_tokenizer_near_its_window() -> None:
    """Near Mistral's window the estimate's band straddles the limit: the decision is made on the Tekken
    count, whichever side of the limit it falls, and only that model is counted again."""
    import asyncio

    body, size, tekken = _near_boundary_body()
    usable = DEFAULT.usable_window(CATALOG.models["mistral-medium-3.5"])
    for slack, expect_model in ((+40, "mistral-medium-3.5"), (-40, "kimi-k2.6")):
        expected_output = usable - tekken - slack  # the limit for the prompt is tekken + slack
        counts = PromptCounts(TokenCounter(), CATALOG, body, size)
        estimate = counts.by_model["mistral-medium-3.5"]
        assert estimate.method == "estimate" and estimate.straddles(tekken + slack)
        first = decide(
            DecisionRequest(
                CATALOG, DEFAULT, ANY, "auto", {"chat"}, counts.tokens, expected_output, counts=counts.by_model
            )
        )
        assert "mistral-medium-3.5" in first.uncertain and "kimi-k2.6" not in first.uncertain  # 1M: clear
        asyncio.run(counts.refine(first.uncertain))
        refined = counts.by_model["mistral-medium-3.5"]
        assert refined.method == "tekken" and refined.tokens == tekken and not refined.refinable
        assert counts.by_model["kimi-k2.6"].method == "estimate"  # not counted again
        second = decide(
            DecisionRequest(
                CATALOG, DEFAULT, ANY, "auto", {"chat"}, counts.tokens, expected_output, counts=counts.by_model
            )
        )
        assert "mistral-medium-3.5" not in second.uncertain and second.candidates[0].name == expect_model
        if expect_model == "kimi-k2.6":
            assert second.reason == "context>262144"
            assert f"{tekken:,} prompt tokens (counted with Tekken)" in removed(second, "context")["mistral-medium-3.5"]


def test_pinned_model_over_its_window_is_refused_before_the_call() -> None:
    counts = PromptCounts(TokenCounter(), CATALOG, {"model": "mistral-medium-3.5", "messages": HUGE}, 1_200_100)
    d = decide(
        DecisionRequest(
            CATALOG, DEFAULT, ANY, "mistral-medium-3.5", {"chat"}, counts.tokens, 1024, counts=counts.by_model
        )
    )
    assert d.error is not None and d.error.status == 400 and d.error.code == "context_length_exceeded"
    assert d.error.param == "messages" and "maximum context length is 262,144 tokens" in d.error.message


# -- through the gateway -------------------------------------------------------------------------------


@pytest.fixture()
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'routing.db'}"


def headers_of(answer) -> tuple[str, str, str, str]:
    h = answer.headers
    return h["x-gateway-model"], h["x-gateway-provider"], h["x-gateway-region"], h["x-gateway-route-reason"]


@pytest.mark.slow
def test_default_policy_end_to_end(
    start_gateway: GatewayFactory, db: str, mistral_log: EmulatorControl, moonshot_log: EmulatorControl
) -> None:
    make_team(db, "web", None)
    key, _ = make_key(db, "web")
    make_team(db, "eu", None, regions=["eu"])
    eu_key, _ = make_key(db, "eu")
    url = start_gateway(database_url=db).url

    short = post_json(url, CHAT, {"model": "auto", "messages": SHORT}, auth(key))
    assert short.status == 200 and headers_of(short) == ("mistral-medium-3.5", "mistral", "eu", "preferred")
    assert len(mistral_log.requests()) == 1

    huge = post_json(url, CHAT, {"model": "auto", "messages": HUGE, "max_tokens": 16}, auth(key))
    assert huge.status == 200, huge.body[:300]
    assert headers_of(huge) == ("kimi-k2.6", "moonshot", "cn", "context>262144")
    assert len(mistral_log.requests()) == 1 and len(moonshot_log.requests()) == 1  # Mistral never saw it

    refused = post_json(url, CHAT, {"model": "auto", "messages": HUGE, "max_tokens": 16}, auth(eu_key))
    assert refused.status == 400 and refused.error["code"] == "no_route"
    message = refused.error["message"]
    counted = re.search(r"prompt is ([\d,]+) tokens", message)
    assert (
        counted and int(counted.group(1).replace(",", "")) > 262_144 and "mistral-medium-3.5 holds 262,144" in message
    )
    assert "kimi-k2.6 is excluded by residency eu" in message
    assert refused.headers["x-gateway-route-reason"] == "no_route"
    assert len(mistral_log.requests()) == 1 and len(moonshot_log.requests()) == 1

    pinned = post_json(url, CHAT, {"model": "kimi-k2.6", "messages": SHORT}, auth(key))
    assert headers_of(pinned)[3] == "pinned"
    rows = ledger(db)
    assert [(r.model, r.route_reason) for r in rows] == [
        ("mistral-medium-3.5", "preferred"),
        ("kimi-k2.6", "context>262144"),
        ("kimi-k2.6", "pinned"),
    ]


@pytest.mark.slow
def test_residency_header(start_gateway: GatewayFactory, db: str) -> None:
    make_team(db, "cheap", None, policy="cost-saver")
    key, _ = make_key(db, "cheap")
    make_team(db, "eu", None, regions=["eu"], policy="cost-saver")
    eu_key, _ = make_key(db, "eu")
    url = start_gateway(database_url=db).url
    plain = post_json(url, CHAT, {"model": "auto", "messages": SHORT}, auth(key))
    assert headers_of(plain)[0] == "kimi-k2.6" and headers_of(plain)[3] == "preferred"
    narrowed = post_json(url, CHAT, {"model": "auto", "messages": SHORT}, auth(key, **{"x-gateway-residency": "eu"}))
    assert headers_of(narrowed) == ("mistral-medium-3.5", "mistral", "eu", "residency:eu")
    widened = post_json(
        url, CHAT, {"model": "auto", "messages": SHORT}, auth(eu_key, **{"x-gateway-residency": "eu,cn"})
    )
    assert widened.status == 200 and headers_of(widened)[2] == "eu"
    cn_only = post_json(url, CHAT, {"model": "auto", "messages": SHORT}, auth(eu_key, **{"x-gateway-residency": "cn"}))
    assert cn_only.status == 400 and cn_only.error["code"] == "no_route"
    bad = post_json(url, CHAT, {"model": "auto", "messages": SHORT}, auth(key, **{"x-gateway-residency": "mars"}))
    assert bad.status == 400 and "x-gateway-residency" in bad.error["message"] and "mars" in bad.error["message"]


def _spend(db: str, team_name: str, nanos: int) -> None:
    """Record spend for a team directly (a settled ledger row)."""
    import time as _time
    from datetime import datetime

    from gateway.budget.periods import period_window
    from gateway.store.base import LedgerRow, Scope, Settlement, team_scope

    start, _ = period_window("monthly", "UTC", datetime.now(UTC))
    row = LedgerRow(
        id=f"seed-{team_name}",
        ts=_time.time(),
        team=team_name,
        key_id=None,
        key_prefix=None,
        requested_model="auto",
        model="mistral-medium-3.5",
        provider="mistral",
        region="eu",
        prompt_tokens=1,
        completion_tokens=1,
        cached_tokens=0,
        cost_nanos=nanos,
        estimated=False,
        status=200,
        latency_ms=1.0,
        ttft_ms=None,
        route_reason="preferred",
        stream=False,
        content=None,
    )
    on_store(db, lambda s: s.record(Settlement(row, [Scope(team_scope(team_name), start, None)], None)))


@pytest.mark.slow
def test_budget_downgrades(start_gateway: GatewayFactory, db: str, moonshot_log: EmulatorControl) -> None:
    spender = make_team(db, "spender", "1.00")
    key, _ = make_key(db, "spender")
    _spend(db, "spender", usd_to_nanos("0.85"))
    assert team_usage(db, spender).spent_nanos == usd_to_nanos("0.85")
    # Mistral's reservation (1,024 expected output at $7.50/M = $0.0077) does not fit $0.005; Kimi's ($0.0019) does.
    tight = make_team(db, "tight", "0.005")
    tight_key, _ = make_key(db, "tight")
    url = start_gateway(database_url=db).url
    over = post_json(url, CHAT, {"model": "auto", "messages": SHORT}, auth(key))
    assert over.status == 200 and headers_of(over) == ("kimi-k2.6", "moonshot", "cn", "budget-downgrade")
    # Explain predicts the admission-time move (the pipeline prefers Mistral; the reservation does not fit).
    predicted = post_json(url, EXPLAIN, {"model": "auto", "messages": SHORT}, auth(tight_key)).json()
    assert predicted["model"] == "mistral-medium-3.5" and predicted["admission"]["admitted"] is True
    assert (predicted["admission"]["model"], predicted["admission"]["reason"]) == ("kimi-k2.6", "budget-downgrade")
    assert team_usage(db, tight).reserved_nanos == 0  # nothing reserved by explaining
    moved = post_json(url, CHAT, {"model": "auto", "messages": SHORT}, auth(tight_key))
    assert moved.status == 200, moved.body
    assert headers_of(moved) == ("kimi-k2.6", "moonshot", "cn", "budget-downgrade")
    # A pinned model is not moved: refused with the budget message.
    refusal = post_json(url, EXPLAIN, {"model": "mistral-medium-3.5", "messages": SHORT}, auth(tight_key)).json()[
        "admission"
    ]
    assert refusal["admitted"] is False and (refusal["status"], refusal["code"]) == (429, "budget_exceeded")
    pinned = post_json(url, CHAT, {"model": "mistral-medium-3.5", "messages": SHORT}, auth(tight_key))
    assert pinned.status == 429 and pinned.error["code"] == "budget_exceeded"


@pytest.mark.slow
def test_lower_max_tokens_before_refusing(start_gateway: GatewayFactory, db: str, mistral_log: EmulatorControl) -> None:
    # eu-only: lower_max_tokens down to 1024. 8,192 tokens of output on Mistral are $0.061 at worst; the $0.01
    # budget pays for about 1,330 of them (after the prompt): max_tokens is lowered to exactly what fits.
    make_team(db, "eu-tight", "0.01", policy="eu-only")
    key, _ = make_key(db, "eu-tight")
    url = start_gateway(database_url=db, default_expected_output_tokens=8192).url
    predicted = post_json(url, EXPLAIN, {"model": "auto", "messages": SHORT, "max_tokens": 8192}, auth(key)).json()[
        "admission"
    ]
    assert predicted["model"] == "mistral-medium-3.5" and predicted["max_tokens_lowered"]
    lowered = predicted["max_tokens"]
    assert 1024 <= lowered < 8192 and lowered * 7.5e-6 <= 0.01 < (lowered + 40) * 7.5e-6, predicted
    answer = post_json(url, CHAT, {"model": "auto", "messages": SHORT, "max_tokens": 8192}, auth(key))
    assert answer.status == 200, answer.body
    assert mistral_log.last()["body"]["max_tokens"] == lowered


@pytest.mark.slow
def test_explain_shows_the_tokenizer_count_near_a_window(start_gateway: GatewayFactory, db: str) -> None:
    body, _, tekken = _near_boundary_body()
    make_team(db, "web", None)
    key, _ = make_key(db, "web")
    url = start_gateway(database_url=db).url
    usable = DEFAULT.usable_window(CATALOG.models["mistral-medium-3.5"])
    for slack, model in ((+40, "mistral-medium-3.5"), (-40, "kimi-k2.6")):
        explained = post_json(url, EXPLAIN, {**body, "max_tokens": usable - tekken - slack}, auth(key))
        assert explained.status == 200, explained.body
        data = explained.json()
        rows = {row["model"]: row for row in data["candidates"]}
        assert rows["mistral-medium-3.5"]["count_method"] == "tekken"
        assert rows["mistral-medium-3.5"]["prompt_tokens"] == tekken
        assert rows["kimi-k2.6"]["count_method"] == "estimate" and data["model"] == model


@pytest.mark.slow
def test_models_list_gives_auto_the_window_the_team_can_reach(start_gateway: GatewayFactory, db: str) -> None:
    make_team(db, "web", None)
    key, _ = make_key(db, "web")
    make_team(db, "eu", None, regions=["eu"])
    eu_key, _ = make_key(db, "eu")
    url = start_gateway(database_url=db).url
    for token, window, region in ((key, 1_048_576, "cn"), (eu_key, 262_144, None)):
        cards = {c["id"]: c for c in request(url, "GET", "/v1/models", headers=auth(token)).json()["data"]}
        auto = cards["auto"]
        assert (auto["context_window"], auto["context_length"], auto["max_input_tokens"]) == (window,) * 3
        assert (region in auto["regions"]) if region else auto["regions"] == ["eu"]
        assert request(url, "GET", "/v1/models/auto", headers=auth(token)).json()["context_window"] == window
        assert cards["kimi-k2.6"]["fixed_sampling"] is True and cards["mistral-medium-3.5"]["fixed_sampling"] is False


@pytest.mark.slow
def test_explain_matches_and_reserves_nothing(
    start_gateway: GatewayFactory, db: str, mistral_log: EmulatorControl, moonshot_log: EmulatorControl
) -> None:
    team = make_team(db, "web", "5.00")
    key, _ = make_key(db, "web")
    make_team(db, "eu", None, regions=["eu"])
    url = start_gateway(database_url=db, master_key="gw-master-routing").url
    for messages in (SHORT, HUGE):
        body = {"model": "auto", "messages": messages, "max_tokens": 16}
        explained = post_json(url, EXPLAIN, body, auth(key))
        assert explained.status == 200
        data = explained.json()
        assert team_usage(db, team).reserved_nanos == 0
        assert mistral_log.requests() == [] and moonshot_log.requests() == []
        assert len(data["candidates"]) == 4 and all("estimated_cost_usd" in c for c in data["candidates"])
        served = post_json(url, CHAT, body, auth(key))
        assert (data["model"], data["reason"]) == (
            served.headers["x-gateway-model"],
            served.headers["x-gateway-route-reason"],
        )
        mistral_log.reset()
        moonshot_log.reset()
    as_eu = post_json(url, EXPLAIN + "?team=eu", {"model": "auto", "messages": HUGE}, auth("gw-master-routing"))
    data = as_eu.json()
    assert data["team"] == "eu" and data["model"] is None and data["error"]["code"] == "no_route"
    assert "residency eu" in data["error"]["message"]
    assert post_json(url, EXPLAIN + "?team=eu", {"model": "auto", "messages": SHORT}, auth(key)).status == 403


def test_cli_route_explain_direct(
    db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from gateway.cli.main import main

    make_team(db, "eu", None, regions=["eu"])
    request = tmp_path / "request.json"
    request.write_text(json.dumps({"model": "auto", "messages": HUGE}))
    monkeypatch.chdir(ROOT)
    assert main(["route", "explain", "--team", "eu", "--file", str(request), "--database-url", db]) == 1
    out = capsys.readouterr().out
    assert "removed by residency" in out and "no_route" in out and "mistral-medium-3.5 holds 262,144" in out
    request.write_text(json.dumps({"model": "auto", "messages": SHORT}))
    assert (
        main(
            [
                "route",
                "explain",
                "--team",
                "eu",
                "--file",
                str(request),
                "--database-url",
                db,
                "--header",
                "x-gateway-residency=eu",
            ]
        )
        == 0
    )
    assert "-> mistral-medium-3.5 (mistral, eu), reason preferred" in capsys.readouterr().out


def test_cli_route_explain_reads_messages_and_responses_bodies(
    db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--door messages|responses` reads the file as that door does: Claude Code's model id through the aliases, an
    Anthropic-defined tool left out; a Responses body with Codex's built-in web_search."""
    from gateway.cli.main import main

    make_team(db, "eu", None, regions=["eu"])
    monkeypatch.chdir(ROOT)
    request = tmp_path / "request.json"
    message = {
        "model": "claude-sonnet-4-5-20250929",
        "max_tokens": 32000,
        "system": [{"type": "text", "text": "You are terse."}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
        "tools": [{"type": "web_search_20250305", "name": "web_search"}],
    }
    request.write_text(json.dumps(message))
    argv = ["route", "explain", "--team", "eu", "--file", str(request), "--database-url", db, "--format", "json"]
    assert main([*argv, "--door", "messages"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["model"], data["reason"], data["alias"]["to"]) == ("mistral-medium-3.5", "alias", "auto")
    assert data["requested_model"] == "claude-sonnet-4-5-20250929"
    assert main([*argv[:-2], "--door", "messages"]) == 0  # the table says which alias applied
    assert "alias: claude-sonnet-4-5-20250929 matches aliases[1] 'claude-*' -> auto" in capsys.readouterr().out
    responses = {"model": "auto", "input": "hi", "tools": [{"type": "web_search"}], "store": False}
    request.write_text(json.dumps(responses))
    assert main([*argv, "--door", "responses"]) == 0
    assert json.loads(capsys.readouterr().out)["model"] == "mistral-medium-3.5"


@pytest.mark.slow
def test_policies_reload_without_restart_and_a_broken_edit_keeps_the_last_good_version(
    start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    import shutil

    directory = tmp_path / "policies"
    shutil.copytree(ROOT / "policies", directory)
    url = start_gateway(policies_dir=directory, master_key="mk-reload").url
    admin = {"authorization": "Bearer mk-reload"}
    short = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
    assert post_json(url, "/v1/chat/completions", short, admin).headers["x-gateway-model"] == "mistral-medium-3.5"

    default = directory / "default.yaml"
    default.write_text(
        default.read_text().replace(
            "prefer: [mistral-medium-3.5, kimi-k2.6]", "prefer: [kimi-k2.6, mistral-medium-3.5]"
        )
    )
    reloaded = post_json(url, "/admin/reload", {}, admin)
    assert reloaded.status == 200 and reloaded.json()["ok"] is True  # (the file poller may have been first)
    assert post_json(url, "/v1/chat/completions", short, admin).headers["x-gateway-model"] == "kimi-k2.6"

    default.write_text("name: default\nprefer: [no-such-model]\n")
    broken = post_json(url, "/admin/reload", {}, admin)
    assert broken.status == 422 and any("no-such-model" in p for p in broken.json()["problems"])
    answer = post_json(url, "/v1/chat/completions", short, admin)
    assert answer.status == 200 and answer.headers["x-gateway-model"] == "kimi-k2.6"  # the previous version
    status = request(url, "GET", "/readyz").json()["policies"]
    assert "no-such-model" in status["last_error"] and status["reloads"]["failure"] >= 1
