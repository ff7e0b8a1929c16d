"""Prometheus metrics and request logs, scraped from real gateways after real requests through the emulators."""

from __future__ import annotations

import asyncio
import json
import random
import signal
import string
import subprocess
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.metrics.families import BY_NAME, FAMILIES, STATUS_VALUES, TOKEN_TYPES, UPSTREAM_ERROR_KINDS
from tests.support import ROOT, sse
from tests.support.emulators import EmulatorControl
from tests.support.gateways import GATEWAY, GatewayFactory, clean_env, free_port, wait_for_startup
from tests.support.http import auth, begin_post_json, post_all, post_json, request
from tests.support.metrics import scrape, scrape_when, series, total
from tests.support.store import ledger, make_key, make_team

pytestmark = pytest.mark.slow

CHAT = "/v1/chat/completions"
SHORT = [{"role": "user", "content": "Count to three."}]


@pytest.fixture()
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'metrics.db'}"


@pytest.fixture()
def request_lines() -> list[dict[str, Any]]:
    """The JSON request log entries of the gateways a test starts with `logged(...)`."""
    return []


def logged(server: Any, lines: list[dict[str, Any]]) -> str:
    server.app.state.request_log.listeners.append(lines.append)
    return server.url


# -- the values after real requests -------------------------------------------------------------------


def test_counts_tokens_spend_and_histograms_match_the_ledger(
    start_gateway: GatewayFactory, db: str, mistral_log: EmulatorControl, request_lines: list[dict[str, Any]]
) -> None:
    make_team(db, "web", "50.00")
    key, record = make_key(db, "web")
    url = logged(start_gateway(database_url=db), request_lines)
    statuses = []
    for i in range(3):
        statuses.append(
            post_json(
                url, CHAT, {"model": "auto", "messages": [{"role": "user", "content": f"hi {i}"}]}, auth(key)
            ).status
        )
    streamed = post_json(url, CHAT, {"model": "kimi-k2.6", "messages": SHORT, "stream": True}, auth(key))
    statuses.append(streamed.status)
    assert sse.events(streamed.body)[-1] == "[DONE]"
    refused = post_json(url, CHAT, {"model": "auto", "messages": SHORT}, auth(key, **{"x-gateway-residency": "us"}))
    unknown = post_json(url, CHAT, {"model": "gpt-17-ultra", "messages": SHORT}, auth(key))
    assert statuses == [200] * 4 and refused.status == 400 and unknown.status == 404
    mistral_log.fault("status=500", count=2)  # retried once, then the fallback to Kimi answers
    fell_back = post_json(url, CHAT, {"model": "auto", "messages": SHORT}, auth(key))
    assert fell_back.status == 200 and fell_back.headers["x-gateway-model"] == "kimi-k2.6"

    m = scrape(url)
    rows = ledger(db)
    assert len(rows) == 5
    assert total(m, "gateway_requests_total") == 7
    assert (
        total(m, "gateway_requests_total", model="mistral-medium-3.5", provider="mistral", team="web", status="200")
        == 3
    )
    assert total(m, "gateway_requests_total", model="kimi-k2.6", provider="moonshot", team="web", status="200") == 2
    assert total(m, "gateway_requests_total", model="other", provider="none", status="404") == 1
    assert total(m, "gateway_requests_total", model="auto", provider="none", status="400") == 1
    # Every one came through the chat door (refusals by routing included: the door had read them).
    assert total(m, "gateway_requests_total", endpoint="chat") == 7
    assert total(m, "gateway_spend_usd_total", endpoint="chat") == pytest.approx(
        sum(r.cost_nanos for r in rows) / 1e9, abs=1e-9
    )
    assert {r.endpoint for r in rows} == {"chat"}
    for kind, field in (("prompt", "prompt_tokens"), ("completion", "completion_tokens"), ("cached", "cached_tokens")):
        assert total(m, "gateway_tokens_total", type=kind) == sum(getattr(r, field) for r in rows)
    for model in ("mistral-medium-3.5", "kimi-k2.6"):
        spent = sum(r.cost_nanos for r in rows if r.model == model) / 1e9
        assert total(m, "gateway_spend_usd_total", model=model, team="web") == pytest.approx(spent, abs=1e-9)
    assert total(m, "gateway_request_duration_seconds_count") == 7
    assert total(m, "gateway_request_duration_seconds_count", stream="true") == 1
    assert total(m, "gateway_time_to_first_token_seconds_count", model="kimi-k2.6") == 1
    assert total(m, "gateway_overhead_seconds_count") == 5  # the requests that reached a provider
    assert total(m, "gateway_upstream_duration_seconds_count", provider="mistral") == 3 + 2
    assert total(m, "gateway_upstream_errors_total", provider="mistral", kind="status_5xx") == 2
    assert (
        total(
            m,
            "gateway_fallbacks_total",
            from_model="mistral-medium-3.5",
            to_model="kimi-k2.6",
            reason="fallback:upstream-500",
        )
        == 1
    )
    assert total(m, "gateway_route_decisions_total", model="mistral-medium-3.5", reason="preferred") == 3
    assert total(m, "gateway_route_decisions_total", model="kimi-k2.6", reason="pinned") == 1
    assert total(m, "gateway_route_decisions_total", model="kimi-k2.6", reason="fallback:upstream-500") == 1
    assert total(m, "gateway_inflight_requests") == 0
    assert total(m, "gateway_token_estimate_error_ratio_count") == 5
    assert total(m, "gateway_build_info") == 1
    assert total(m, "gateway_budget_limit_usd", team="web") == 50
    assert total(m, "gateway_budget_spent_usd", team="web") == pytest.approx(
        sum(r.cost_nanos for r in rows) / 1e9, abs=1e-9
    )

    # One JSON line per request, with the fields operators filter on, and never the prompt or a key.
    assert len(request_lines) == 7
    line = next(entry for entry in request_lines if entry["stream"])
    assert line["team"] == "web" and line["key_prefix"] == record.prefix and line["model"] == "kimi-k2.6"
    assert line["path"] == CHAT and line["endpoint"] == "chat"
    assert line["provider"] == "moonshot" and line["region"] == "cn" and line["route_reason"] == "pinned"
    assert line["status"] == 200 and line["prompt_tokens"] > 0 and line["ttft_ms"] is not None
    assert line["cost_usd"] == pytest.approx(next(r.cost_nanos for r in rows if r.stream) / 1e9)
    assert {e["status"] for e in request_lines} == {200, 400, 404}
    text = json.dumps(request_lines)
    assert "Count to three" not in text and key not in text and "test-mistral-key" not in text


def test_request_ids_are_echoed_when_sane_and_generated_otherwise(
    start_gateway: GatewayFactory, request_lines: list[dict[str, Any]]
) -> None:
    url = logged(start_gateway(), request_lines)
    given = post_json(url, CHAT, {"model": "auto", "messages": SHORT}, {"x-request-id": "trace-42.abc"})
    assert given.headers["x-request-id"] == "trace-42.abc"
    for hostile in ("a" * 129, "has space", 'quote"d', "<script>"):
        answer = post_json(url, CHAT, {"model": "auto", "messages": SHORT}, {"x-request-id": hostile})
        assert answer.status == 200
        assert (
            answer.headers["x-request-id"] != hostile
            and len(answer.headers["x-request-id"]) == 32
            and answer.headers["x-request-id"].isalnum()
        )
    refused = post_json(url, CHAT, {"model": "auto"}, {"x-request-id": "bad-body-1"})
    assert refused.status == 400 and refused.headers["x-request-id"] == "bad-body-1"
    assert [e["request_id"] for e in request_lines][0] == "trace-42.abc" and request_lines[-1][
        "request_id"
    ] == "bad-body-1"


def test_budget_gauges_follow_reservation_and_settlement(
    start_gateway: GatewayFactory, db: str, moonshot_log: EmulatorControl
) -> None:
    make_team(db, "capped", "2.00")
    key, _ = make_key(db, "capped")
    url = start_gateway(database_url=db).url
    assert post_json(url, CHAT, {"model": "kimi-k2.6", "messages": SHORT}, auth(key)).status == 200
    before = scrape(url)
    spent = total(before, "gateway_budget_spent_usd", team="capped")
    assert spent > 0 and total(before, "gateway_budget_reserved_usd", team="capped") == 0
    assert total(before, "gateway_budget_remaining_usd", team="capped") == pytest.approx(2 - spent)

    # A request held in flight by the provider (it never answers) until the client gives up.
    moonshot_log.fault("hang")

    connection = begin_post_json(url, CHAT, {"model": "kimi-k2.6", "messages": SHORT, "max_tokens": 4000}, auth(key))
    try:
        # The reservation commits before the provider call starts (a scrape can fall between the two): wait for both.
        during = scrape_when(
            url,
            lambda m: (
                total(m, "gateway_budget_reserved_usd", team="capped") > 0
                and total(m, "gateway_inflight_requests", provider="moonshot") > 0
            ),
            "a reservation and the call in flight",
        )
        reserved = total(during, "gateway_budget_reserved_usd", team="capped")
        assert total(during, "gateway_inflight_requests", provider="moonshot") == 1
        assert total(during, "gateway_budget_remaining_usd", team="capped") == pytest.approx(2 - spent - reserved)
        assert total(during, "gateway_budget_spent_usd", team="capped") == pytest.approx(spent)
    finally:
        connection.close()  # the client gives up
    after = scrape_when(url, lambda m: total(m, "gateway_budget_reserved_usd", team="capped") == 0, "the release")
    assert total(after, "gateway_budget_remaining_usd", team="capped") == pytest.approx(
        2 - total(after, "gateway_budget_spent_usd", team="capped")
    )
    assert total(after, "gateway_inflight_requests", provider="moonshot") == 0
    assert total(after, "gateway_budget_spent_usd", team="capped") == pytest.approx(
        sum(r.cost_nanos for r in ledger(db)) / 1e9, abs=1e-9
    )


def test_circuit_state_soft_limit_and_reload_counters(
    start_gateway: GatewayFactory, db: str, mistral_log: EmulatorControl, tmp_path: Path
) -> None:
    import shutil

    directory = tmp_path / "policies"
    shutil.copytree(ROOT / "policies", directory)
    make_team(db, "soft", "0.02", soft_limit_pct=1)  # crossed by one answer to a ~2,000-token prompt
    key, _ = make_key(db, "soft")
    url = start_gateway(database_url=db, circuit_failures=2, policies_dir=directory, master_key="mk-metrics").url
    m = scrape(url, auth("mk-metrics"))
    assert total(m, "gateway_circuit_state", provider="mistral", model="mistral-medium-3.5") == 0
    mistral_log.fault("status=503", count=2)
    long = [{"role": "user", "content": "word " * 2000}]
    answer = post_json(url, CHAT, {"model": "auto", "messages": long}, auth(key))
    assert answer.status == 200 and answer.headers["x-gateway-model"] == "kimi-k2.6"
    m = scrape(url, auth("mk-metrics"))
    assert total(m, "gateway_circuit_state", provider="mistral", model="mistral-medium-3.5") == 2
    assert total(m, "gateway_budget_soft_limit_crossed_total", team="soft") == 1

    assert post_json(url, "/admin/reload", {}, auth("mk-metrics")).status == 200
    (directory / "default.yaml").write_text("name: default\nprefer: [no-such-model]\n")
    assert post_json(url, "/admin/reload", {}, auth("mk-metrics")).status == 422
    m = scrape(url, auth("mk-metrics"))
    assert total(m, "gateway_config_reloads_total", result="failure") >= 1
    assert total(m, "gateway_config_reloads_total", result="success") >= 1


# -- bounded series -----------------------------------------------------------------------------------


def _hostile_requests(url: str, key: str, count: int, seed: int, random_strings: bool = True) -> list[int]:
    """`count` requests whose shape (which model kind, stream or not, valid key or not, which headers) comes
    from `seed`; their strings (model names, keys, request ids, header values) are random, or with
    `random_strings=False` the same constant: both must land in exactly the same series."""
    rng, noise = random.Random(seed), random.Random()

    def junk(n: int) -> str:
        if not random_strings:
            return "z" * n
        return "".join(noise.choice(string.ascii_letters + string.digits + "-_./:") for _ in range(n))

    bodies, headers = [], []
    for _ in range(count):
        model = rng.choice(["auto", "mistral-medium-3.5", "kimi-k2.6", junk(12), junk(40), f"openai/{junk(8)}"])
        sent = {
            "authorization": f"Bearer {key if rng.random() < 0.9 else junk(20)}",
            "x-request-id": junk(rng.randint(1, 200)),
        }
        for _ in range(rng.randint(0, 3)):
            name = "".join(noise.choice(string.ascii_lowercase) for _ in range(6)) if random_strings else "zzzzzz"
            sent["x-" + name] = junk(10)
        if rng.random() < 0.2:
            sent["x-gateway-residency"] = rng.choice(["eu", "cn", junk(4)])
        body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": junk(20)}], "max_tokens": 8}
        if rng.random() < 0.1:
            body["stream"] = True
        if rng.random() < 0.05:
            body = {"model": model}  # invalid
        bodies.append(body)
        headers.append(sent)
    return [answer.status for answer in asyncio.run(post_all(url, CHAT, bodies, headers, limit=16))]


def test_hostile_model_names_and_headers_add_no_series(start_gateway: GatewayFactory, db: str) -> None:
    make_team(db, "web", None)
    key, _ = make_key(db, "web")
    url = start_gateway(database_url=db, master_key="mk-hostile").url
    constant = _hostile_requests(url, key, 1000, seed=2, random_strings=False)
    assert {200, 400, 401, 404}.issubset(set(constant))
    settled = series(scrape(url, auth("mk-hostile")))
    hostile = _hostile_requests(url, key, 1000, seed=2)
    assert sorted(hostile) == sorted(constant)
    after = scrape(url, auth("mk-hostile"))
    assert series(after) == settled, sorted(series(after) - settled)
    # Every label value is configuration or a fixed set.
    allowed = {
        "model": {"auto", "mistral-medium-3.5", "kimi-k2.6", "codestral", "mistral-embed", "other", "none"},
        "provider": {"mistral", "moonshot", "other", "none"},
        "team": {"web", "none"},
        "status": set(STATUS_VALUES),
        "type": set(TOKEN_TYPES),
        "kind": set(UPSTREAM_ERROR_KINDS),
        "stream": {"true", "false"},
        "endpoint": {"chat", "none"},  # `none`: refused before the door read the body (a bad key, a bad body)
    }
    for name, labels in series(after):
        for label, value in labels:
            if label in allowed:
                assert value in allowed[label], (name, label, value)
    assert total(after, "gateway_requests_total") == 2000


def test_metrics_token_and_separate_port(start_gateway: GatewayFactory) -> None:
    port = free_port()
    url = start_gateway(metrics_token="scrape-secret", metrics_port=port).url
    assert request(url, "GET", "/metrics").status == 401
    assert request(url, "GET", "/metrics", headers=auth("wrong")).status == 401
    assert "gateway_build_info" in request(url, "GET", "/metrics", headers=auth("scrape-secret")).body.decode()
    own = f"http://127.0.0.1:{port}"
    assert request(own, "GET", "/metrics").status == 401
    samples = scrape(own, auth("scrape-secret"))
    assert total(samples, "gateway_build_info") == 1
    assert request(own, "GET", "/v1/models", headers=auth("scrape-secret")).status == 404


def test_main_port_metrics_need_the_master_key_when_one_is_set(start_gateway: GatewayFactory, db: str) -> None:
    """The budget gauges name every team's limit, spend and remaining: with a master key, the main port's
    /metrics answers only the master key or the metrics token; the metrics port only the token."""
    make_team(db, "secret-team", "12.50")
    port = free_port()
    url = start_gateway(database_url=db, master_key="mk-scrape", metrics_token="tok-scrape", metrics_port=port).url
    for headers in (
        None,
        auth("wrong"),
        {"authorization": "mk-scrape"},
        {"x-api-key": "mk-scrape"},
        auth("mk-scrape "),
    ):
        refused = request(url, "GET", "/metrics", headers=headers)
        assert refused.status == 401 and b"secret-team" not in refused.body, (headers, refused.body)
        assert "master key or the metrics token" in refused.error["message"]
    for key in ("mk-scrape", "tok-scrape"):
        assert total(scrape(url, auth(key)), "gateway_budget_limit_usd", team="secret-team") == 12.5
    own = f"http://127.0.0.1:{port}"
    assert request(own, "GET", "/metrics", headers=auth("mk-scrape")).status == 401  # the token only, as configured
    assert total(scrape(own, auth("tok-scrape")), "gateway_budget_limit_usd", team="secret-team") == 12.5

    # A master key and no token: the master key alone on the main port; the metrics port stays open (as
    # configured: no token), which is for a network only Prometheus reaches.
    port = free_port()
    url = start_gateway(database_url=db, master_key="mk-only", metrics_port=port).url
    assert request(url, "GET", "/metrics").status == 401
    assert request(url, "GET", "/metrics", headers=auth("anything")).status == 401
    assert total(scrape(url, auth("mk-only")), "gateway_budget_limit_usd", team="secret-team") == 12.5
    assert total(scrape(f"http://127.0.0.1:{port}"), "gateway_budget_limit_usd", team="secret-team") == 12.5

    # No master key and no token: open, as /v1 is.
    assert (
        total(
            scrape(start_gateway(database_url=db, master_key=None).url), "gateway_budget_limit_usd", team="secret-team"
        )
        == 12.5
    )


def test_every_family_is_exported_and_documented(start_gateway: GatewayFactory, db: str) -> None:
    make_team(db, "web", "5.00")
    url = start_gateway(database_url=db).url
    text = request(url, "GET", "/metrics").body.decode()
    exported = {f.name for f in text_string_to_metric_families(text)}
    for family in FAMILIES:
        name = family.name.removesuffix("_total") if family.kind == "counter" else family.name
        assert name in exported, family.name
    readme = (ROOT / "README.md").read_text()
    for family in FAMILIES:
        assert f"`{family.name}`" in readme, f"{family.name} is not documented in the README"
    assert BY_NAME["gateway_budget_limit_usd"].combine == "scrape"


# -- several workers ----------------------------------------------------------------------------------


def test_several_workers_sum_counters_and_do_not_multiply_budgets(tmp_path: Path) -> None:
    port = free_port()
    env = clean_env(GATEWAY_MASTER_KEY="mk-workers", GATEWAY_DATA_DIR=str(tmp_path))
    process = subprocess.Popen(
        [*GATEWAY, "serve", "--port", str(port), "--workers", "3"],
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    count = 60
    try:
        wait_for_startup(process, workers=3)
        admin = auth("mk-workers")
        assert post_json(url, "/admin/teams", {"name": "web", "budget_usd": "10.00"}, admin).status == 201
        key = post_json(url, "/admin/keys", {"team": "web"}, admin).json()["key"]

        # A new connection per request, so that the kernel spreads them over the workers.
        bodies = [{"model": "kimi-k2.6", "messages": [{"role": "user", "content": f"n{i}"}]} for i in range(count)]
        answers = asyncio.run(post_all(url, CHAT, bodies, auth(key), new_connections=True))
        assert [answer.status for answer in answers] == [200] * count
        for _ in range(6):  # any worker may answer the scrape: each must report the sum over all of them
            m = scrape(url, admin)
            assert total(m, "gateway_requests_total", team="web", status="200") == count
            assert total(m, "gateway_request_duration_seconds_count") == count
            assert total(m, "gateway_tokens_total", type="completion") > 0
            assert total(m, "gateway_budget_limit_usd", team="web") == 10  # from the database, not summed
            assert total(m, "gateway_build_info") == 1
            assert total(m, "gateway_inflight_requests") == 0
    finally:
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=30)
    logged = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    admin_lines = [line for line in logged if line["path"].startswith("/admin/")]
    assert admin_lines and {line["key_prefix"] for line in admin_lines} == {"master"}  # the admin calls, audited
    lines = [line for line in logged if line["path"] == CHAT]
    assert {line["endpoint"] for line in lines} == {"chat"} and {line["endpoint"] for line in admin_lines} == {None}
    assert len(lines) == count
    assert len({line["pid"] for line in lines}) >= 2, "the requests did not reach several workers"
