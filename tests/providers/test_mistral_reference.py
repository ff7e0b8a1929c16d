"""Mistral's own references against the emulator and the gateway.

- The emulator's written-out field lists are the `mistralai` SDK's request models (gateway/emulators/mistral.py
  cites SDK 3.7.0): an SDK that adds or drops a field fails here first.
- Each history rule of the Mistral adapter, end to end: a real gateway on 127.0.0.1 in front of the strict
  emulator (mistral-common's models and serving validator). Each body is first sent to the emulator as the client
  wrote it, to show Mistral refuses it, then through the gateway, which must get a 200 and send Mistral a body the
  emulator took.
- The real `mistralai` SDK pointed at the gateway (`server_url`) and at the emulator: streams with usage, and
  embeddings.
"""

from __future__ import annotations

import base64
import struct
from typing import Any

import pytest
from mistralai.client import Mistral
from mistralai.client import models as sdk

from gateway.emulators import mistral as emulator
from gateway.http.servers import ThreadedServer
from tests.support.emulators import MISTRAL_KEY, EmulatorControl
from tests.support.http import post_json

MODEL = "mistral-medium-3.5"


def _wire_names(model: type) -> set[str]:
    return {field.alias or name for name, field in model.model_fields.items()}


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (emulator.CHAT_FIELDS, (sdk.ChatCompletionRequest, sdk.ChatCompletionStreamRequest)),
        (emulator.FIM_FIELDS, (sdk.FIMCompletionRequest, sdk.FIMCompletionStreamRequest)),
        (emulator.EMBED_FIELDS, (sdk.EmbeddingRequest,)),
        (emulator.MESSAGE_FIELDS["system"], (sdk.SystemMessage,)),
        (emulator.MESSAGE_FIELDS["user"], (sdk.UserMessage,)),
        (emulator.MESSAGE_FIELDS["assistant"], (sdk.AssistantMessage,)),
        (emulator.MESSAGE_FIELDS["tool"], (sdk.ToolMessage,)),
    ],
)
def test_emulator_field_lists_are_the_sdks(ours: Any, theirs: tuple[type, ...]) -> None:
    for model in theirs:
        assert set(ours) == _wire_names(model), model.__name__


def test_emulator_reasoning_efforts_are_the_sdks() -> None:
    annotation = str(sdk.ChatCompletionRequest.model_fields["reasoning_effort"].annotation)
    assert all(f"'{effort}'" in annotation for effort in emulator.REASONING_EFFORTS)


# --- each adapter rule, end to end ---------------------------------------------------------------------------


def _call(call_id: str, name: str = "get_weather", **extra: Any) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": "{}"}, **extra}


USER = {"role": "user", "content": "What's up?"}
RULES: dict[str, dict[str, Any]] = {
    "tool content null": {
        "messages": [
            USER,
            {"role": "assistant", "content": None, "tool_calls": [_call("call_abc")]},
            {"role": "tool", "tool_call_id": "call_abc", "content": None},
        ]
    },
    "tool without parameters": {"messages": [USER], "tools": [{"type": "function", "function": {"name": "now"}}]},
    "negative seed": {"messages": [USER], "random_seed": -1},
    "cache_control on a text part": {
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}]}
        ]
    },
    "replayed tool-call index": {
        "messages": [
            USER,
            {"role": "assistant", "content": "", "tool_calls": [_call("abcDEF123", index=0)]},
            {"role": "tool", "tool_call_id": "abcDEF123", "content": "sunny"},
        ]
    },
    "reasoning_content replayed": {
        "reasoning_effort": "high",
        "messages": [USER, {"role": "assistant", "content": "Fine.", "reasoning_content": "greeting"}, USER],
    },
    "Kimi partial": {"messages": [USER, {"role": "assistant", "content": "Well,", "partial": True}]},
    "Kimi tool ids, parallel": {
        "messages": [
            USER,
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [_call("functions.get_weather:0"), _call("functions.get_weather:1")],
            },
            {"role": "tool", "tool_call_id": "functions.get_weather:0", "content": "a"},
            {"role": "tool", "tool_call_id": "functions.get_weather:1", "content": "b"},
        ]
    },
    "legacy function role": {
        "messages": [
            USER,
            {"role": "assistant", "content": None, "function_call": {"name": "lookup", "arguments": "{}"}},
            {"role": "function", "name": "lookup", "content": "found"},
        ]
    },
    "unanswered call, late system message": {
        "messages": [
            USER,
            {"role": "assistant", "content": "", "tool_calls": [_call("abcDEF123")]},
            {"role": "system", "content": "Be brief."},
            USER,
        ]
    },
}


@pytest.mark.parametrize("rule", list(RULES))
@pytest.mark.slow
def test_history_rule_end_to_end(
    rule: str, gateway_url: str, mistral: ThreadedServer, mistral_log: EmulatorControl
) -> None:
    body = {"model": MODEL, "max_tokens": 8, **RULES[rule]}
    direct = post_json(mistral.url, "/v1/chat/completions", body, headers={"Authorization": f"Bearer {MISTRAL_KEY}"})
    assert direct.status in (400, 422), (rule, direct.status, direct.body[:300])  # Mistral refuses it as sent
    mistral_log.reset()
    answer = post_json(gateway_url, "/v1/chat/completions", body)
    assert answer.status == 200, (rule, answer.body[:400])
    sent = mistral_log.last()["body"]
    if rule == "Kimi partial":
        assert sent["messages"][-1]["prefix"] is True and "partial" not in sent["messages"][-1]
        assert answer.json()["choices"][0]["message"]["content"].startswith("Well,")
    if rule == "reasoning_content replayed":
        assert sent["messages"][1]["content"][0]["type"] == "thinking"
    if rule == "Kimi tool ids, parallel":
        ids = [call["id"] for call in sent["messages"][1]["tool_calls"]]
        assert len(set(ids)) == 2 and [m["tool_call_id"] for m in sent["messages"][2:]] == ids


@pytest.mark.slow
def test_mistral_parameters_reach_mistral(gateway_url: str, mistral_log: EmulatorControl) -> None:
    body = {"model": MODEL, "messages": [USER], "top_k": 5, "min_tokens": 20, "max_tokens": 40, "metadata": {"k": "v"}}
    answer = post_json(gateway_url, "/v1/chat/completions", body)
    assert answer.status == 200 and answer.json()["usage"]["completion_tokens"] >= 20
    sent = mistral_log.last()["body"]
    assert (sent["top_k"], sent["min_tokens"], sent["metadata"]) == (5, 20, {"k": "v"})
    fim = {"model": "codestral", "prompt": "def f(", "suffix": "x", "prompt_cache_key": "k", "metadata": {"a": 1}}
    assert post_json(gateway_url, "/v1/fim/completions", fim).status == 200
    assert mistral_log.last()["body"]["prompt_cache_key"] == "k"


# --- the mistralai SDK ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_sdk_fim_stream_through_the_gateway_gets_usage(gateway_url: str) -> None:
    client = Mistral(api_key="unused-in-tests", server_url=gateway_url)
    events = list(client.fim.stream(model="codestral", prompt="def add(a, b):", suffix="return c", max_tokens=6))
    chunks = [event.data for event in events]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    with_usage = [c for c in chunks if c.usage is not None]
    assert len(with_usage) == 1 and with_usage[0] is chunks[-1]  # Mistral's placement: the last content chunk
    assert with_usage[0].choices[0].finish_reason == "length" and with_usage[0].usage.completion_tokens == 6
    assert with_usage[0].usage.total_tokens == with_usage[0].usage.prompt_tokens + 6


@pytest.mark.slow
def test_sdk_chat_stream_through_the_gateway(gateway_url: str) -> None:
    client = Mistral(api_key="unused-in-tests", server_url=gateway_url)
    events = list(client.chat.stream(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=5))
    text = "".join(e.data.choices[0].delta.content or "" for e in events if e.data.choices)
    finished = [e.data.choices[0].finish_reason for e in events if e.data.choices and e.data.choices[0].finish_reason]
    assert len(text.split()) == 5 and finished == ["length"]
    # Mistral's SDK never asks for usage (Mistral always sends it): the gateway sends it to Mistral's own client.
    usage = [e.data.usage for e in events if e.data.usage is not None]
    assert usage and usage[-1].prompt_tokens > 0 and usage[-1].completion_tokens == 5


@pytest.mark.slow
def test_sdk_embeddings_against_the_emulator_and_the_gateway(gateway_url: str, mistral: ThreadedServer) -> None:
    direct = Mistral(api_key=MISTRAL_KEY, server_url=mistral.url)
    floats = direct.embeddings.create(model="mistral-embed", inputs=["hello"]).data[0].embedding
    as_base64 = direct.embeddings.create(model="mistral-embed", inputs=["hello"], encoding_format="base64")
    assert as_base64.data[0].embedding == floats and len(floats) == 1024  # the API answers floats (README)
    via = Mistral(api_key="unused-in-tests", server_url=gateway_url)
    assert via.embeddings.create(model="mistral-embed", inputs=["hello"]).data[0].embedding == pytest.approx(floats)
    # Mistral's SDK asking for base64 gets floats, as from Mistral's API; OpenAI's clients get OpenAI's base64.
    native = via.embeddings.create(model="mistral-embed", inputs=["hello"], encoding_format="base64")
    assert native.data[0].embedding == pytest.approx(floats)
    # OpenAI's base64 (what OpenAI's SDKs decode) is the gateway's answer on its OpenAI endpoint.
    encoded = post_json(
        gateway_url, "/v1/embeddings", {"model": "mistral-embed", "input": "hello", "encoding_format": "base64"}
    ).json()
    decoded = struct.unpack("<1024f", base64.b64decode(encoded["data"][0]["embedding"]))
    assert decoded == pytest.approx(floats, rel=1e-6, abs=1e-7)
