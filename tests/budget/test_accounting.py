"""Budgets and the ledger through the real gateway: keys, reservations, settlement, durability."""

from __future__ import annotations

import asyncio
import json
import signal
import threading
from datetime import UTC
from pathlib import Path
from typing import Any

import openai
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.http.servers import ThreadedServer
from gateway.money import usd_text, usd_to_nanos
from tests.support import ROOT, sse
from tests.support.emulators import EmulatorControl, provider_env
from tests.support.gateways import GatewayFactory, start_cli_gateway
from tests.support.http import auth, post_all, post_at_once, post_json
from tests.support.store import key_usage, ledger, make_key, make_team, on_store, team_usage
from tests.support.waiting import wait_until

CHAT = "/v1/chat/completions"
SHORT = [{"role": "user", "content": "Count to three."}]


@pytest.fixture()
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'budget.db'}"


@pytest.mark.slow
def test_gateway_key_calls_v1_and_is_billed(start_gateway: GatewayFactory, db: str) -> None:
    team = make_team(db, "web", "5.00")
    key, record = make_key(db, "web")
    url = start_gateway(database_url=db).url
    client = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(model="kimi-k2.6", messages=SHORT, max_tokens=20)
    answer = raw.parse()
    rows = ledger(db)
    assert len(rows) == 1
    row = rows[0]
    assert (row.team, row.key_id, row.key_prefix, row.model, row.provider, row.region) == (
        "web",
        record.id,
        record.prefix,
        "kimi-k2.6",
        "moonshot",
        "cn",
    )
    assert (row.prompt_tokens, row.completion_tokens) == (answer.usage.prompt_tokens, answer.usage.completion_tokens)
    assert row.status == 200 and not row.estimated and row.route_reason == "pinned" and row.content is None
    assert raw.headers["x-gateway-cost-usd"] == usd_text(row.cost_nanos) and row.cost_nanos > 0
    usage = team_usage(db, team)
    assert usage.spent_nanos == row.cost_nanos and usage.reserved_nanos == 0
    assert key_usage(db, record).spent_nanos == row.cost_nanos


@pytest.mark.slow
def test_stream_usage_chunk_carries_the_settled_cost(start_gateway: GatewayFactory, db: str) -> None:
    make_team(db, "web", "5.00")
    key, _ = make_key(db, "web")
    url = start_gateway(database_url=db).url
    client = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0)
    chunks = list(
        client.chat.completions.create(
            model="mistral-medium-3.5", messages=SHORT, stream=True, stream_options={"include_usage": True}
        )
    )
    extra = chunks[-1].model_extra["x_gateway"]
    row = ledger(db)[0]
    assert extra == {
        "cost_usd": row.cost_nanos / 1e9,
        "model": "mistral-medium-3.5",
        "provider": "mistral",
        "route_reason": "pinned",
    }
    assert row.stream and row.ttft_ms is not None and row.ttft_ms <= row.latency_ms
    plain = list(client.chat.completions.create(model="mistral-medium-3.5", messages=SHORT, stream=True))
    assert all(c.usage is None and "x_gateway" not in (c.model_extra or {}) for c in plain)


@pytest.mark.slow
def test_over_budget_is_429_naming_team_limit_and_reset(start_gateway: GatewayFactory, db: str) -> None:
    make_team(db, "tiny", "0.000001", period="daily")
    key, _ = make_key(db, "tiny")
    url = start_gateway(database_url=db).url
    answer = post_json(url, CHAT, {"model": "mistral-medium-3.5", "messages": SHORT}, auth(key))
    assert answer.status == 429
    error = answer.error
    assert error["type"] == "insufficient_quota" and error["code"] == "budget_exceeded"
    for part in ("team 'tiny'", "limit $0.000001000", "spent $0.000000000", "reserved", "daily period resets at"):
        assert part in error["message"], error["message"]
    assert ledger(db) == []


@pytest.mark.slow
def test_key_budget_is_enforced_inside_a_roomy_team(start_gateway: GatewayFactory, db: str) -> None:
    make_team(db, "big", "100")
    key, record = make_key(db, "big", budget_usd="0.000002")
    url = start_gateway(database_url=db).url
    answer = post_json(url, CHAT, {"model": "kimi-k2.6", "messages": SHORT}, auth(key))
    assert answer.status == 429 and f"key {record.prefix}..." in answer.error["message"]


@pytest.mark.slow
def test_reservation_uses_learned_output_not_max_tokens(start_gateway: GatewayFactory, db: str) -> None:
    """A coding agent asking for max_tokens=32768 is not blocked while its budget is far from spent."""
    url = start_gateway(database_url=db).url
    worst_case = 32768 * 7.5 / 1e6  # $0.246 of output if max_tokens were reserved
    make_team(db, "agents", "0.01")  # a twentieth of the worst case, but plenty for real answers
    key, _ = make_key(db, "agents")
    body = {"model": "mistral-medium-3.5", "messages": SHORT, "max_tokens": 32768}
    for index in range(10):  # history for the model (admin traffic, no budget)
        assert (
            post_json(url, CHAT, {**body, "messages": [{"role": "user", "content": f"warm up {index}"}]}).status == 200
        )
    assert worst_case > 0.01
    answer = post_json(url, CHAT, body, auth(key))
    assert answer.status == 200, answer.body


@pytest.mark.slow
def test_upstream_failure_releases_the_reservation(
    start_gateway: GatewayFactory, db: str, moonshot_log: EmulatorControl
) -> None:
    team = make_team(db, "web", "1.00")
    key, _ = make_key(db, "web")
    url = start_gateway(database_url=db).url
    moonshot_log.fault("status=503", count=2)  # the first attempt and its one retry
    assert post_json(url, CHAT, {"model": "kimi-k2.6", "messages": SHORT}, auth(key)).status == 503
    usage = team_usage(db, team)
    assert usage.reserved_nanos == 0 and usage.spent_nanos == 0
    assert [(r.status, r.cost_nanos) for r in ledger(db)] == [(503, 0)]


@pytest.mark.slow
def test_cut_stream_is_billed_from_what_was_relayed(
    start_gateway: GatewayFactory, db: str, moonshot_log: EmulatorControl
) -> None:
    team = make_team(db, "web", "1.00")
    key, _ = make_key(db, "web")
    url = start_gateway(database_url=db).url
    moonshot_log.fault("cut=4")
    answer = post_json(
        url, CHAT, {"model": "kimi-k2.6", "messages": SHORT, "stream": True, "max_tokens": 40}, auth(key)
    )
    events = sse.events(answer.body)
    assert events[-1]["error"]["code"] == "upstream_stream_cut"
    # Kimi K2.6 thinks by default: the first chunks relayed may be its reasoning, billed as output too.
    deltas = [e["choices"][0]["delta"] for e in events[:-1] if e["choices"]]
    relayed = "".join((d.get("content") or "") + (d.get("reasoning_content") or "") for d in deltas)
    assert relayed
    rows = _wait_for_rows(db, 1)
    row = rows[0]
    assert row.estimated and row.completion_tokens >= 1 and row.cost_nanos > 0 and row.prompt_tokens > 0
    usage = team_usage(db, team)
    assert usage.spent_nanos == row.cost_nanos and usage.reserved_nanos == 0


def _wait_for_rows(db: str, count: int) -> list[Any]:
    # Settling an abandoned stream runs after the response ended: poll the database, bounded.
    for _ in range(200):
        rows = ledger(db)
        if len(rows) >= count:
            return rows
        threading.Event().wait(0.05)
    raise AssertionError(f"expected {count} ledger rows, found {len(ledger(db))}")


def _concurrency_proof(urls: list[str], db: str, team_name: str) -> None:
    body = {"model": "kimi-k2.6", "messages": SHORT, "max_tokens": 24}
    # One request's reservation: the most one request may cost, as the gateway estimates it.
    from gateway.catalog import load_catalog
    from gateway.pricing import estimate_nanos
    from gateway.routing.counting import PromptCounts
    from gateway.tokens import TokenCounter

    catalog = load_catalog(None, {})
    kimi = catalog.models["kimi-k2.6"]
    size = len(json.dumps(body))  # the same bytes aiohttp sends
    counts = PromptCounts(TokenCounter(), catalog, body, size)
    # The worst case: the prompt at the top of its count's band, and max_tokens of output.
    reservation = estimate_nanos(kimi, counts.upper([kimi.name]), 24)
    budget = reservation * 10 + reservation // 2  # fits about 10 requests
    team = make_team(db, team_name + "-capped", None)
    # Budget set directly (nano-dollars) so it is exactly 10.5 reservations.
    team.budget_nanos = budget
    on_store(db, lambda s: s.update_team(team))
    key, _ = make_key(db, team.name)
    results = post_at_once(urls, CHAT, body, 200, auth(key))
    statuses = [answer.status for answer in results]
    admitted = statuses.count(200)
    refused = [answer.json()["error"] for answer in results if answer.status == 429]
    assert admitted + len(refused) == 200, statuses
    # Every request that fitted was admitted (10 reservations fit), and the rest were refused, not queued.
    assert admitted >= 10 and refused and all(e["code"] == "budget_exceeded" for e in refused)
    rows = [r for r in ledger(db) if r.team == team.name]
    assert len(rows) == admitted
    usage = team_usage(db, team)
    spent = sum(r.cost_nanos for r in rows)
    assert usage.spent_nanos == spent and usage.reserved_nanos == 0
    # Never below zero by more than one request's estimation error (here: not at all, as no answer exceeds its reservation).
    worst_error = max(0, max(r.cost_nanos for r in rows) - reservation)
    assert spent <= budget + worst_error


@pytest.mark.slow
def test_two_hundred_concurrent_requests_cannot_overshoot(start_gateway: GatewayFactory, db: str) -> None:
    make_team(db, "swarm", None)
    url = start_gateway(database_url=db).url
    _concurrency_proof([url], db, "swarm")


@pytest.mark.slow
def test_several_workers_sharing_one_sqlite_file_cannot_overshoot(
    db: str, mistral: ThreadedServer, moonshot: ThreadedServer
) -> None:
    make_team(db, "fleet", None)
    process, url = start_cli_gateway(db, provider_env(mistral, moonshot), workers=3)
    try:
        _concurrency_proof([url], db, "fleet")
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


@pytest.mark.slow
def test_restart_keeps_spend_and_keys(start_gateway: GatewayFactory, db: str) -> None:
    team = make_team(db, "web", "5.00")
    key, _ = make_key(db, "web")
    first = start_gateway(database_url=db)
    for _ in range(3):
        assert post_json(first.url, CHAT, {"model": "kimi-k2.6", "messages": SHORT}, auth(key)).status == 200
    spent = team_usage(db, team).spent_nanos
    first.stop()
    second = start_gateway(database_url=db)
    assert post_json(second.url, CHAT, {"model": "kimi-k2.6", "messages": SHORT}, auth(key)).status == 200
    rows = ledger(db)
    assert len(rows) == 4 and team_usage(db, team).spent_nanos == spent + rows[-1].cost_nanos


@pytest.mark.slow
def test_sigkill_after_delivered_responses_loses_nothing(
    db: str, mistral: ThreadedServer, moonshot: ThreadedServer
) -> None:
    # Room for all 40 worst cases at once (no max_tokens: up to 32,768 tokens each): nothing is refused or shortened.
    make_team(db, "web", "50.00")
    key, _ = make_key(db, "web")
    process, url = start_cli_gateway(db, provider_env(mistral, moonshot))
    try:
        bodies = [
            {"model": ["kimi-k2.6", "mistral-medium-3.5"][i % 2], "messages": SHORT, "stream": i % 3 == 0}
            for i in range(40)
        ]
        answers = asyncio.run(post_all(url, CHAT, bodies, auth(key)))
        delivered = sum(
            answer.status == 200 and (not body["stream"] or answer.body.rstrip().endswith(b"data: [DONE]"))
            for body, answer in zip(bodies, answers, strict=True)
        )
        process.send_signal(signal.SIGKILL)  # at once, right after the last response was read
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert delivered == 40
    assert len(ledger(db)) == 40


class WebhookReceiver:
    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        self.received = threading.Event()

        async def hook(request: Request) -> Response:
            self.posts.append(await request.json())
            self.received.set()
            return Response(status_code=204)

        self.server = ThreadedServer(Starlette(routes=[Route("/hook", hook, methods=["POST"])])).start()


@pytest.mark.slow
def test_soft_limit_crossing_posts_the_webhook_once(start_gateway: GatewayFactory, db: str) -> None:
    receiver = WebhookReceiver()
    try:
        team = make_team(db, "web", "0.0004", soft_limit_pct=50)
        key, _ = make_key(db, "web")
        url = start_gateway(database_url=db, soft_limit_webhook_url=receiver.server.url + "/hook").url
        statuses = []
        for _ in range(12):
            answer = post_json(url, CHAT, {"model": "kimi-k2.6", "messages": SHORT, "max_tokens": 30}, auth(key))
            statuses.append(answer.status)
        assert 200 in statuses and team_usage(db, team).spent_nanos >= usd_to_nanos("0.0002")
        assert receiver.received.wait(15)
        assert len(receiver.posts) == 1
        post = receiver.posts[0]
        assert post["event"] == "budget.soft_limit_crossed" and post["team"] == "web" and post["soft_limit_pct"] == 50
    finally:
        receiver.server.stop()


@pytest.mark.slow
def test_revoked_and_expired_keys_are_refused(start_gateway: GatewayFactory, db: str) -> None:
    import time

    make_team(db, "web", None)
    key, record = make_key(db, "web")
    expired, _ = make_key(db, "web", expires_at=int(time.time()) - 1)
    url = start_gateway(database_url=db).url
    body = {"model": "kimi-k2.6", "messages": SHORT}
    assert post_json(url, CHAT, body, auth(key)).status == 200
    on_store(db, lambda s: s.revoke_key(record.id, int(time.time())))
    # Revoked in the database, not through this gateway's admin API: refused once the key it keeps is older than
    # the fallback lifetime (SQLite has no change notifications; GATEWAY_KEY_CACHE_FALLBACK_SECONDS, 1 s).
    revoked = wait_until(
        lambda: (lambda answer: answer if answer.status != 200 else None)(post_json(url, CHAT, body, auth(key))),
        5,
        "the revoked key refused",
        every=0.1,
    )
    assert (
        revoked.status == 401 and revoked.error["code"] == "invalid_api_key" and "revoked" in revoked.error["message"]
    )
    late = post_json(url, CHAT, body, auth(expired))
    assert late.status == 401 and "expired" in late.error["message"]
    unknown = post_json(url, CHAT, body, auth("gw-" + "x" * 43))
    assert unknown.status == 401


@pytest.mark.slow
def test_team_models_and_regions_are_enforced(start_gateway: GatewayFactory, db: str, tmp_path: Path) -> None:
    """Default policy (`named_model: reroute`): a named model the team may not use is rerouted, never served."""
    make_team(db, "eu-team", None, regions=["eu"])
    key, _ = make_key(db, "eu-team")
    url = start_gateway(database_url=db).url
    rerouted = post_json(url, CHAT, {"model": "kimi-k2.6", "messages": SHORT}, auth(key))
    assert rerouted.status == 200 and rerouted.headers["x-gateway-region"] == "eu"
    assert (
        rerouted.headers["x-gateway-route-reason"] == "rerouted"
        and rerouted.headers["x-gateway-model"] == "mistral-medium-3.5"
    )
    auto = post_json(url, CHAT, {"model": "auto", "messages": SHORT}, auth(key))
    assert auto.status == 200 and auto.headers["x-gateway-region"] == "eu"
    make_team(db, "kimi-only", None, models=["kimi-k2.6"])
    limited, _ = make_key(db, "kimi-only")
    other = post_json(url, CHAT, {"model": "mistral-medium-3.5", "messages": SHORT}, auth(limited))
    assert (
        other.status == 200
        and other.headers["x-gateway-model"] == "kimi-k2.6"
        and other.headers["x-gateway-route-reason"] == "rerouted"
    )
    assert (
        post_json(url, CHAT, {"model": "auto", "messages": SHORT}, auth(limited)).headers["x-gateway-model"]
        == "kimi-k2.6"
    )
    assert [r.model for r in ledger(db)] == ["mistral-medium-3.5", "mistral-medium-3.5", "kimi-k2.6", "kimi-k2.6"]


@pytest.mark.slow
def test_named_model_is_refused_under_a_refusing_policy(start_gateway: GatewayFactory, db: str, tmp_path: Path) -> None:
    """`named_model: refuse`: 403 model_not_allowed naming the region (the team's regions) or the team's models."""
    policies = tmp_path / "policies"
    policies.mkdir()
    root = ROOT / "policies"
    (policies / "default.yaml").write_text((root / "default.yaml").read_text())
    (policies / "strict.yaml").write_text("name: strict\nnamed_model: refuse\n")
    make_team(db, "eu-strict", None, regions=["eu"], policy="strict")
    key, _ = make_key(db, "eu-strict")
    make_team(db, "kimi-strict", None, models=["kimi-k2.6"], policy="strict")
    limited, _ = make_key(db, "kimi-strict")
    url = start_gateway(database_url=db, policies_dir=policies).url
    refused = post_json(url, CHAT, {"model": "kimi-k2.6", "messages": SHORT}, auth(key))
    assert (
        refused.status == 403
        and refused.error["code"] == "model_not_allowed"
        and "residency eu" in refused.error["message"]
    )
    assert "runs in cn" in refused.error["message"]
    auto = post_json(url, CHAT, {"model": "auto", "messages": SHORT}, auth(key))
    assert auto.status == 200 and auto.headers["x-gateway-region"] == "eu"
    assert post_json(url, CHAT, {"model": "mistral-medium-3.5", "messages": SHORT}, auth(limited)).status == 403
    assert (
        post_json(url, CHAT, {"model": "auto", "messages": SHORT}, auth(limited)).headers["x-gateway-model"]
        == "kimi-k2.6"
    )


@pytest.mark.slow
def test_postgres_budgets_and_ledger(start_gateway: GatewayFactory, postgres_url: str) -> None:
    make_team(postgres_url, "pg-swarm", None)
    gateway_one = start_gateway(database_url=postgres_url)
    gateway_two = start_gateway(database_url=postgres_url)  # two gateway nodes on one database
    _concurrency_proof([gateway_one.url, gateway_two.url], postgres_url, "pg-swarm")
    team = make_team(postgres_url, "pg-web", "5.00")
    key, _ = make_key(postgres_url, "pg-web")
    for url in (gateway_one.url, gateway_two.url):
        assert post_json(url, CHAT, {"model": "kimi-k2.6", "messages": SHORT}, auth(key)).status == 200
    rows = ledger(postgres_url, team="pg-web")
    assert len(rows) == 2 and team_usage(postgres_url, team).spent_nanos == sum(r.cost_nanos for r in rows)


@pytest.mark.slow
def test_ledger_keeps_text_only_when_enabled(start_gateway: GatewayFactory, db: str) -> None:
    make_team(db, "web", None)
    key, _ = make_key(db, "web")
    url = start_gateway(database_url=db, ledger_content=True).url
    client = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0)
    whole = client.chat.completions.create(
        model="kimi-k2.6", messages=[{"role": "user", "content": "secret plan alpha"}]
    )
    streamed = "".join(
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(
            model="mistral-medium-3.5", messages=[{"role": "user", "content": "plan beta"}], stream=True
        )
        if c.choices
    )
    rows = ledger(db)
    first, second = (json.loads(r.content) for r in rows)
    assert first["request"]["messages"][0]["content"] == "secret plan alpha"
    assert first["response"]["choices"][0]["message"]["content"] == whole.choices[0].message.content
    assert second["request"]["messages"][0]["content"] == "plan beta" and second["response"] == streamed


def test_a_request_cancelled_while_its_hold_is_written_leaves_no_hold(db: str) -> None:
    """A client that leaves during admission cancels the request while its hold is being committed; the hold
    still commits (group commit), so it must be released right after, not left until it expires."""
    from datetime import datetime

    from gateway.auth.principal import Principal
    from gateway.budget.accounting import Accounting
    from gateway.catalog import load_catalog
    from gateway.settings import Settings
    from gateway.store import open_store
    from gateway.store.base import team_scope

    make_team(db, "leaving", "5.00")

    async def scenario() -> int:
        store = open_store(db)
        await store.open()
        requested, release, committed = asyncio.Event(), asyncio.Event(), asyncio.Event()
        real_hold = store.hold

        async def paused_hold(request: Any) -> Any:
            # The real store's write is under way (queued for the group commit, which a cancelled caller does
            # not stop); the answer reaches the caller only after `release`.
            writing = asyncio.ensure_future(real_hold(request))
            writing.add_done_callback(lambda _: committed.set())
            requested.set()
            await release.wait()
            return await writing

        store.hold = paused_hold  # type: ignore[method-assign]
        accounting = Accounting(store, Settings(database_url=db))
        team = await store.get_team("leaving")
        assert team is not None
        kimi = load_catalog(None, {}).models["kimi-k2.6"]
        admission = asyncio.ensure_future(
            accounting.admit(Principal(team, None, False), kimi, "kimi-k2.6", 100, 64, 60)
        )
        await requested.wait()
        admission.cancel()
        with pytest.raises(asyncio.CancelledError):
            await admission
        release.set()
        await asyncio.wait_for(committed.wait(), 10)
        start = accounting.scopes(Principal(team, None, False), datetime.now(UTC))[0].period_start
        deadline = asyncio.get_running_loop().time() + 10
        reserved = (await store.usage(team_scope("leaving"), start)).reserved_nanos
        while reserved and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)  # polling for the release with a deadline
            reserved = (await store.usage(team_scope("leaving"), start)).reserved_nanos
        await accounting.close()
        await store.close()
        return reserved

    reserved = asyncio.run(scenario())
    assert reserved == 0, f"a hold of {reserved} nanos was left by a cancelled admission"
