"""The pipeline in-process: the real app, routing, budgets, attempts and settlement on real SQLite, in front of
`MockAdapter` providers (no socket, no subprocess; the harness is tests/support/inprocess.py). What each test
states is what the provider said and what the client and the ledger must see."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.errors import GatewayError
from gateway.providers.mock import MockCall
from gateway.state import Gateway
from tests.support.inprocess import HELLO, MASTER, bearer, chunks, ledger, run, settled, team_key, upstream_error
from tests.support.sse import frames


def test_a_complete_answer_is_settled_before_it_is_returned(tmp_path: Path) -> None:
    async def scenario(gateway: Gateway, client: httpx.AsyncClient, calls: dict[str, list[MockCall]]) -> None:
        key = await team_key(gateway)
        answer = await client.post(
            "/v1/chat/completions", json={"model": "mistral-medium-3.5", "messages": HELLO}, headers=bearer(key)
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["choices"][0]["message"]["content"] == "Hi!"
        assert answer.headers["x-gateway-provider"] == "mistral"
        rows = await ledger(gateway)
        assert [(r.model, r.status, r.prompt_tokens, r.completion_tokens) for r in rows] == [
            ("mistral-medium-3.5", 200, 12, 3)
        ]
        # $1.50 / $7.50 per million tokens: 12 x 1.5 + 3 x 7.5 = 40.5 micro-dollars
        assert rows[0].cost_nanos == 40_500
        assert answer.headers["x-gateway-cost-usd"] == "0.000040500"

    calls = run(tmp_path, {}, scenario)
    assert len(calls["mistral"]) == 1 and calls["mistral"][0].body["messages"][0]["content"] == "Hello there"


def test_a_stream_is_settled_after_its_last_chunk_and_before_done(tmp_path: Path) -> None:
    async def scenario(gateway: Gateway, client: httpx.AsyncClient, calls: dict[str, list[MockCall]]) -> None:
        key = await team_key(gateway)
        body = {"model": "kimi-k2.6", "messages": HELLO, "stream": True, "stream_options": {"include_usage": True}}
        answer = await client.post("/v1/chat/completions", json=body, headers=bearer(key))
        assert answer.status_code == 200
        data = frames(answer.content, data_only=True)
        assert data[-1] == "[DONE]"
        events = [json.loads(d) for d in data[:-1]]
        assert "".join(e["choices"][0]["delta"].get("content", "") for e in events if e["choices"]) == "Hello, world"
        usage_chunk = events[-1]
        assert usage_chunk["choices"] == [] and usage_chunk["usage"]["completion_tokens"] == 3
        rows = await ledger(gateway)
        assert len(rows) == 1 and rows[0].status == 200 and not rows[0].estimated
        assert usage_chunk["x_gateway"]["cost_usd"] == pytest.approx(rows[0].cost_nanos / 1e9)

    run(tmp_path, {"moonshot": lambda call: chunks("Hello", ", world")}, scenario)


def test_a_stream_cut_by_the_provider_is_billed_for_what_was_relayed(tmp_path: Path) -> None:
    async def cut(call: MockCall) -> AsyncIterator[dict[str, Any]]:
        yield chunks("partial answer")[0]
        raise GatewayError(502, "gone", "upstream_error", "upstream_stream_cut")

    async def scenario(gateway: Gateway, client: httpx.AsyncClient, calls: dict[str, list[MockCall]]) -> None:
        key = await team_key(gateway)
        body = {"model": "kimi-k2.6", "messages": HELLO, "stream": True}
        with pytest.raises(GatewayError):  # the in-process transport re-raises what the app raised mid-stream
            await client.post("/v1/chat/completions", json=body, headers=bearer(key))
        rows = await settled(gateway)  # a cut stream is settled in the background
        assert len(rows) == 1 and rows[0].estimated and rows[0].completion_tokens > 0

    run(tmp_path, {"moonshot": lambda call: cut(call)}, scenario)


def test_a_provider_failure_moves_to_the_next_candidate_inside_the_decision(tmp_path: Path) -> None:
    def failing(call: MockCall) -> Any:
        raise upstream_error(503)

    async def scenario(gateway: Gateway, client: httpx.AsyncClient, calls: dict[str, list[MockCall]]) -> None:
        key = await team_key(gateway)
        answer = await client.post(
            "/v1/chat/completions", json={"model": "auto", "messages": HELLO}, headers=bearer(key)
        )
        assert answer.status_code == 200, answer.text
        assert answer.headers["x-gateway-route-reason"].startswith("fallback:upstream-503")
        rows = await ledger(gateway)
        assert [(r.provider, r.status) for r in rows] == [("moonshot", 200)]  # one row for the request

    calls = run(tmp_path, {"mistral": failing}, scenario)
    assert len(calls["mistral"]) >= 1 and len(calls["moonshot"]) == 1


def test_residency_holds_on_failover(tmp_path: Path) -> None:
    def failing(call: MockCall) -> Any:
        raise upstream_error(503)

    async def scenario(gateway: Gateway, client: httpx.AsyncClient, calls: dict[str, list[MockCall]]) -> None:
        key = await team_key(gateway)
        headers = {**bearer(key), "x-gateway-residency": "eu"}
        answer = await client.post("/v1/chat/completions", json={"model": "auto", "messages": HELLO}, headers=headers)
        assert answer.status_code == 502, answer.text
        rows = await ledger(gateway)
        assert [(r.provider, r.status) for r in rows] == [("mistral", 502)]

    calls = run(tmp_path, {"mistral": failing}, scenario)
    assert calls["moonshot"] == []  # never left the EU


def test_a_client_error_of_the_provider_is_the_clients_and_closes_the_circuit(tmp_path: Path) -> None:
    def refusing(call: MockCall) -> Any:
        raise upstream_error(400)

    async def scenario(gateway: Gateway, client: httpx.AsyncClient, calls: dict[str, list[MockCall]]) -> None:
        key = await team_key(gateway)
        for _ in range(gateway.settings.circuit_failures + 1):
            answer = await client.post(
                "/v1/chat/completions", json={"model": "mistral-medium-3.5", "messages": HELLO}, headers=bearer(key)
            )
            assert answer.status_code == 400
        assert gateway.circuits.allows("mistral/mistral-medium-3.5")

    calls = run(tmp_path, {"mistral": refusing}, scenario)
    assert len(calls["moonshot"]) == 0


def test_repeated_failures_open_the_circuit_and_a_named_model_gets_503(tmp_path: Path) -> None:
    def failing(call: MockCall) -> Any:
        raise upstream_error(500)

    async def scenario(gateway: Gateway, client: httpx.AsyncClient, calls: dict[str, list[MockCall]]) -> None:
        key = await team_key(gateway)
        body = {"model": "mistral-medium-3.5", "messages": HELLO}
        for _ in range(3):
            await client.post("/v1/chat/completions", json=body, headers=bearer(key))
        answer = await client.post("/v1/chat/completions", json=body, headers=bearer(key))
        assert answer.status_code == 503 and answer.json()["error"]["code"] == "circuit_open"

    calls = run(tmp_path, {"mistral": failing}, scenario, circuit_failures=2)
    tried = len(calls["mistral"])
    assert tried < 4 * 3  # the open circuit stopped calls (retries included) before the last request


def test_a_budget_too_small_refuses_before_any_provider_call(tmp_path: Path) -> None:
    async def scenario(gateway: Gateway, client: httpx.AsyncClient, calls: dict[str, list[MockCall]]) -> None:
        key = await team_key(gateway, budget_usd="0.000001")
        answer = await client.post(
            "/v1/chat/completions",
            json={"model": "mistral-medium-3.5", "messages": HELLO, "max_tokens": 1000},
            headers=bearer(key),
        )
        assert answer.status_code == 429 and answer.json()["error"]["code"] == "budget_exceeded"
        assert await ledger(gateway) == []

    calls = run(tmp_path, {}, scenario)
    assert calls["mistral"] == [] and calls["moonshot"] == []


def test_legacy_completions_are_chat_turns_rendered_as_text_completions(tmp_path: Path) -> None:
    async def scenario(gateway: Gateway, client: httpx.AsyncClient, calls: dict[str, list[MockCall]]) -> None:
        key = await team_key(gateway)
        answer = await client.post(
            "/v1/completions", json={"model": "mistral-medium-3.5", "prompt": "Say hi"}, headers=bearer(key)
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["object"] == "text_completion" and answer.json()["choices"][0]["text"] == "Hi!"

    calls = run(tmp_path, {}, scenario)
    assert calls["mistral"][0].operation == "chat"
    assert calls["mistral"][0].body["messages"] == [{"role": "user", "content": "Say hi"}]


def test_echo_is_refused_before_anything_is_reserved(tmp_path: Path) -> None:
    async def scenario(gateway: Gateway, client: httpx.AsyncClient, calls: dict[str, list[MockCall]]) -> None:
        key = await team_key(gateway)
        answer = await client.post(
            "/v1/completions", json={"model": "mistral-medium-3.5", "prompt": "x", "echo": True}, headers=bearer(key)
        )
        assert answer.status_code == 400 and answer.json()["error"]["param"] == "echo"
        assert await ledger(gateway) == []

    run(tmp_path, {}, scenario)


def test_admin_routes_take_the_master_key_only_through_the_same_guard(tmp_path: Path) -> None:
    async def scenario(gateway: Gateway, client: httpx.AsyncClient, calls: dict[str, list[MockCall]]) -> None:
        key = await team_key(gateway)
        refused = await client.get("/admin/teams", headers=bearer(key))
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
        assert refused.headers["x-request-id"]
        allowed = await client.get("/admin/teams", headers=bearer(MASTER))
        assert allowed.status_code == 200 and [t["name"] for t in allowed.json()["data"]] == ["alpha"]

    run(tmp_path, {}, scenario)
