"""The translating doors' output limit is a ceiling chosen for another vendor's models: lowered to the serving
model's limit (in what is sent and in what is reserved) instead of refused. The OpenAI doors keep their 400. Also:
a provider failure behind the Messages and Responses doors moves to the next candidate of the same decision."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from gateway.providers.mock import MockCall
from gateway.state import Gateway
from tests.support.inprocess import HELLO, bearer, ledger, reply, run, team_key, upstream_error

CLAUDE_CODE_OPUS = {  # Claude Code 2.1.197 asks for 64,000 tokens for its opus model (tests/clients/test_claude_code.py)
    "model": "mistral-medium-3.5",
    "max_tokens": 64000,
    "messages": [{"role": "user", "content": "Hello there"}],
}


def test_a_messages_max_tokens_above_the_model_is_lowered_to_its_limit(tmp_path: Path) -> None:
    async def scenario(gateway: Gateway, client: httpx.AsyncClient, calls: dict[str, list[MockCall]]) -> None:
        key = await team_key(gateway, budget_usd="5")
        answer = await client.post("/v1/messages", json=CLAUDE_CODE_OPUS, headers={"x-api-key": key})
        assert answer.status_code == 200, answer.text
        assert answer.json()["type"] == "message"
        # The chat door names its limit itself: too large is still the client's mistake there.
        chat = {"model": "mistral-medium-3.5", "messages": HELLO, "max_tokens": 64000}
        refused = await client.post("/v1/chat/completions", json=chat, headers=bearer(key))
        assert refused.status_code == 400 and refused.json()["error"]["param"] == "max_tokens"

    calls = run(tmp_path, {}, scenario)
    assert [call.body["max_tokens"] for call in calls["mistral"]] == [32768]  # Mistral Medium 3.5's limit


def test_a_responses_max_output_tokens_above_the_model_is_lowered_to_its_limit(tmp_path: Path) -> None:
    async def scenario(gateway: Gateway, client: httpx.AsyncClient, calls: dict[str, list[MockCall]]) -> None:
        key = await team_key(gateway)
        body = {"model": "kimi-k2.6", "input": "Hello there", "max_output_tokens": 128000}
        answer = await client.post("/v1/responses", json=body, headers=bearer(key))
        assert answer.status_code == 200, answer.text
        assert answer.json()["object"] == "response"

    calls = run(tmp_path, {}, scenario)
    sent = calls["moonshot"][0].body
    assert sent.get("max_completion_tokens", sent.get("max_tokens")) == 32768


def test_the_messages_and_responses_doors_fall_back_inside_the_decision(tmp_path: Path) -> None:
    def failing(call: MockCall) -> Any:
        raise upstream_error(503)

    async def scenario(gateway: Gateway, client: httpx.AsyncClient, calls: dict[str, list[MockCall]]) -> None:
        key = await team_key(gateway)
        message = {"model": "auto", "max_tokens": 256, "messages": [{"role": "user", "content": "Hello there"}]}
        answer = await client.post("/v1/messages", json=message, headers={"x-api-key": key})
        assert answer.status_code == 200, answer.text
        assert answer.headers["x-gateway-route-reason"].startswith("fallback:upstream-503")
        response = await client.post(
            "/v1/responses", json={"model": "auto", "input": "Hello there"}, headers=bearer(key)
        )
        assert response.status_code == 200, response.text
        assert response.headers["x-gateway-route-reason"].startswith("fallback:upstream-503")
        rows = await ledger(gateway)
        assert sorted((r.endpoint, r.provider, r.status) for r in rows) == [
            ("messages", "moonshot", 200),
            ("responses", "moonshot", 200),
        ]

    calls = run(tmp_path, {"mistral": failing, "moonshot": lambda call: reply("Hi!")}, scenario)
    assert len(calls["mistral"]) >= 2 and len(calls["moonshot"]) == 2
