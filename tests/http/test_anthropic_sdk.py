"""The official `anthropic` Python SDK (2.17.0) against a real gateway under uvicorn, with the provider emulators behind
it: messages.create, streams read with text_stream and get_final_message, a tool round trip with tool_result,
count_tokens, Claude Code's captured request through the SDK's beta client, and errors raised as the SDK's own
exception classes; for mistral-medium-3.5, kimi-k2.6 and auto, each checked against the ledger."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import pytest

from tests.support.emulators import Script
from tests.support.gateways import GatewayFactory
from tests.support.store import ledger, make_key, make_team
from tests.support.team_gateway import TeamGateway, start_team_gateway

pytestmark = pytest.mark.slow

MODELS = ["mistral-medium-3.5", "kimi-k2.6", "auto"]
HELLO = [{"role": "user", "content": "Say hello to the gateway."}]
WEATHER = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


@dataclass
class Gateway(TeamGateway):
    poor_key: str  # a key of team `broke`, whose budget no request fits

    def client(self, key: str | None = None, bearer: bool = False) -> anthropic.Anthropic:
        """Anthropic's client as Claude Code configures it: the key as x-api-key (ANTHROPIC_API_KEY), or as
        Authorization: Bearer (ANTHROPIC_AUTH_TOKEN)."""
        secret = key or self.key
        if bearer:
            return anthropic.Anthropic(base_url=self.url, auth_token=secret, max_retries=0)
        return anthropic.Anthropic(base_url=self.url, api_key=secret, max_retries=0)


@pytest.fixture(scope="module")
def gateway(start_gateway: GatewayFactory, tmp_path_factory: pytest.TempPathFactory) -> Gateway:
    db = f"sqlite:///{tmp_path_factory.mktemp('messages') / 'ledger.db'}"
    make_team(db, "broke", "0.000001")
    poor, _ = make_key(db, "broke")
    server, key = start_team_gateway(start_gateway, db, "master-key-for-messages-tests")
    return Gateway(server.url, key, db, poor)


def only_sent(scripts: dict[str, Script]) -> dict[str, Any]:
    chats = scripts["mistral"].chats() + scripts["moonshot"].chats()
    assert chats, "no provider was called"
    return chats[-1]


@pytest.mark.parametrize("model", MODELS)
def test_create_answers_a_message_and_writes_a_ledger_row(gateway: Gateway, model: str) -> None:
    before = len(ledger(gateway.db))
    raw = gateway.client().messages.with_raw_response.create(
        model=model, max_tokens=60, system="You are terse.", messages=HELLO
    )
    message = raw.parse()
    assert message.type == "message" and message.role == "assistant" and message.model == model
    assert message.id.startswith("msg_") and message.stop_reason in ("end_turn", "max_tokens")
    text = [block for block in message.content if block.type == "text"]
    assert text and text[0].text
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    served = raw.headers["x-gateway-model"]
    assert served == model or (model == "auto" and raw.headers["x-gateway-route-reason"] == "preferred")
    row = gateway.rows(before + 1)[-1]
    assert (row.endpoint, row.model, row.requested_model, row.status) == ("messages", served, model, 200)
    assert row.prompt_tokens == message.usage.input_tokens + (message.usage.cache_read_input_tokens or 0)
    assert row.completion_tokens == message.usage.output_tokens


@pytest.mark.parametrize("model", MODELS)
def test_a_stream_read_with_text_stream_and_get_final_message(gateway: Gateway, model: str) -> None:
    before = len(ledger(gateway.db))
    thinking = {"type": "enabled", "budget_tokens": 2048}
    with gateway.client(bearer=True).messages.stream(
        model=model, max_tokens=200, messages=[{"role": "user", "content": "Tell me about the sea."}], thinking=thinking
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    blocks = {block.type: block for block in final.content}
    assert text and text == blocks["text"].text  # type: ignore[union-attr]
    # Both models reason when asked (Mistral's thinking chunks, Kimi's reasoning_content): a signed thinking block.
    assert blocks["thinking"].thinking and blocks["thinking"].signature.startswith("gw1.")  # type: ignore[union-attr]
    assert final.usage.output_tokens > 0 and final.stop_reason in ("end_turn", "max_tokens")
    row = gateway.rows(before + 1)[-1]
    assert row.endpoint == "messages" and row.stream and row.completion_tokens == final.usage.output_tokens
    assert row.prompt_tokens == final.usage.input_tokens + (final.usage.cache_read_input_tokens or 0)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("streaming", [False, True])
def test_a_tool_round_trip_with_tool_result(
    gateway: Gateway, scripts: dict[str, Script], model: str, streaming: bool
) -> None:
    for script in scripts.values():  # `auto` may route to either
        script.queue(
            {
                "content": "",
                "tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}],
                "after_tool": False,
            },
            {"content": "It is sunny in Paris.", "after_tool": True},
        )
    client = gateway.client()
    question = [{"role": "user", "content": "What is the weather in Paris?"}]
    asked: dict[str, Any] = {"model": model, "max_tokens": 300, "messages": question, "tools": [WEATHER]}
    if model == "kimi-k2.6":
        asked["thinking"] = {"type": "enabled", "budget_tokens": 4096}  # Kimi's thinking mode, replayed below
    if streaming:
        with client.messages.stream(**asked) as stream:
            first = stream.get_final_message()
    else:
        first = client.messages.create(**asked)
    calls = [block for block in first.content if block.type == "tool_use"]
    assert first.stop_reason == "tool_use"
    assert len(calls) == 1 and calls[0].name == "get_weather" and calls[0].input == {"city": "Paris"}
    history = [
        *question,
        {"role": "assistant", "content": [block.model_dump(exclude_none=True) for block in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": calls[0].id, "content": "sunny, 24 C"}]},
    ]
    second = client.messages.create(**{**asked, "messages": history})
    assert [block.text for block in second.content if block.type == "text"] == ["It is sunny in Paris."]
    replayed = only_sent(scripts)
    turn = next(m for m in replayed["messages"] if m.get("tool_calls"))
    result = next(m for m in replayed["messages"] if m["role"] == "tool")
    assert turn["tool_calls"][0]["function"]["name"] == "get_weather"
    assert json.loads(turn["tool_calls"][0]["function"]["arguments"]) == {"city": "Paris"}
    assert result["content"] == "sunny, 24 C" and result["tool_call_id"] == turn["tool_calls"][0]["id"]
    if model == "kimi-k2.6":  # thinking kept on: the replayed tool turn carries the thinking block's text
        thought = next(block for block in first.content if block.type == "thinking")
        assert turn["reasoning_content"] == thought.thinking
        assert replayed["thinking"] == {"type": "enabled"}


@pytest.mark.parametrize("model", MODELS)
def test_count_tokens_answers_without_a_provider_call(gateway: Gateway, scripts: dict[str, Script], model: str) -> None:
    before = len(ledger(gateway.db))
    client = gateway.client()
    short = client.messages.count_tokens(model=model, messages=HELLO)
    longer = client.messages.count_tokens(
        model=model,
        system="You are terse.",
        messages=[{"role": "user", "content": "Hello there. " * 100}],
        tools=[WEATHER],
    )
    assert 0 < short.input_tokens < longer.input_tokens
    assert scripts["mistral"].chats() == [] and scripts["moonshot"].chats() == []
    assert len(ledger(gateway.db)) == before


def test_errors_are_the_sdks_exception_classes(gateway: Gateway, scripts: dict[str, Script]) -> None:
    client = gateway.client()
    with pytest.raises(anthropic.NotFoundError) as unknown:
        client.messages.create(model="gpt-4o", max_tokens=10, messages=HELLO)
    assert unknown.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    with pytest.raises(anthropic.BadRequestError) as forbidden:
        client.messages.create(model="auto", max_tokens=10, messages=HELLO, extra_body={"api_base": "http://evil.test"})
    assert "api_base" in forbidden.value.message
    with pytest.raises(anthropic.RateLimitError) as broke:
        gateway.client(gateway.poor_key).with_options(max_retries=2).messages.create(
            model="auto", max_tokens=10, messages=HELLO
        )
    assert "budget_exceeded" in str(broke.value) and broke.value.response.headers["x-should-retry"] == "false"
    with pytest.raises(anthropic.AuthenticationError):
        gateway.client("sk-not-a-key").messages.create(model="auto", max_tokens=10, messages=HELLO)
    assert scripts["mistral"].chats() == [] and scripts["moonshot"].chats() == []


def test_a_mid_stream_failure_raises_in_the_sdk(gateway: Gateway, scripts: dict[str, Script]) -> None:
    scripts["moonshot"].fault("stream_error=2")
    with (
        pytest.raises(anthropic.APIStatusError) as failed,
        gateway.client().messages.stream(
            model="kimi-k2.6", max_tokens=200, messages=[{"role": "user", "content": "Tell me a long story."}]
        ) as stream,
    ):
        stream.get_final_message()
    assert failed.value.body["type"] == "error"  # type: ignore[index]


def test_claude_codes_capture_through_the_beta_client(gateway: Gateway) -> None:
    fixtures = Path(__file__).resolve().parents[1] / "clients" / "fixtures"
    body = json.loads((fixtures / "claude_code_2.1.197_request.json").read_text())
    headers = json.loads((fixtures / "claude_code_2.1.197_headers.json").read_text())["headers"]
    betas = headers["anthropic-beta"].split(",")
    assert len(betas) == 7
    before = len(ledger(gateway.db))
    with gateway.client(bearer=True).beta.messages.stream(
        **{k: v for k, v in body.items() if k != "stream"}, betas=betas
    ) as stream:
        final = stream.get_final_message()
    assert final.content and final.stop_reason in ("end_turn", "tool_use", "max_tokens")
    row = gateway.rows(before + 1)[-1]
    assert (row.endpoint, row.model, row.status) == ("messages", "mistral-medium-3.5", 200)
