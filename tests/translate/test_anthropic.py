"""The Anthropic Messages translation in both directions, without a gateway: Anthropic bodies -> the canonical chat
body (checked by `check_chat` as the door does), chat answers and streams -> Anthropic's answer and events, read back
with the official `anthropic` SDK's own client, stream accumulator and error classes."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.errors import GatewayError
from gateway.pipeline.validation import check_chat
from gateway.translate.anthropic import (
    BILLING_HEADER_PREFIX,
    DROPPED_TOOLS_HEADER,
    KNOWN_FIELDS,
    Translated,
    translate_request,
)
from gateway.translate.anthropic_render import AnthropicRenderer, error_headers, gateway_error, signature
from tests.support.sse import frames

FIXTURES = Path(__file__).resolve().parents[1] / "clients" / "fixtures"  # captured from Claude Code 2.1.197 `-p`
WEATHER = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    "cache_control": {"type": "ephemeral"},
}


def body(**fields: Any) -> dict[str, Any]:
    return {"model": "auto", "max_tokens": 256, "messages": [{"role": "user", "content": "Hi"}], **fields}


def translate(**fields: Any) -> Translated:
    translated = translate_request(body(**fields))
    check_chat(translated.body)  # what the door runs next: the canonical body must pass it
    return translated


def refused(request: dict[str, Any], counting: bool = False) -> GatewayError:
    with pytest.raises(GatewayError) as caught:
        translated = translate_request(request, counting=counting)
        check_chat(translated.body)
    assert caught.value.status == 400
    return caught.value


# --- requests ------------------------------------------------------------------------------------------------------


def test_system_blocks_become_one_system_message_without_billing_line_or_cache_marks() -> None:
    system = [
        {"type": "text", "text": BILLING_HEADER_PREFIX + " cc_version=2.1.197.fa9; cc_entrypoint=sdk-cli;"},
        {"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": "Answer in French."},
    ]
    messages = translate(system=system).body["messages"]
    assert messages[0] == {"role": "system", "content": "You are terse.\n\nAnswer in French."}
    assert translate(system="Plain").body["messages"][0] == {"role": "system", "content": "Plain"}
    assert "cache_control" not in json.dumps(messages)


def test_a_whole_conversation_with_tools_images_and_thinking() -> None:
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "Look:"}]},
        {"role": "user", "content": [{"type": "image", "source": {"type": "url", "url": "https://x.test/a.png"}}]},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "Need the weather.", "signature": "sig"},
                {"type": "redacted_thinking", "data": "ENCRYPTED"},
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"city": "Lyon"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_2",
                    "is_error": True,
                    "content": [
                        {"type": "text", "text": "no station"},
                        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"}},
                    ],
                },
                {"type": "text", "text": "And now?"},
            ],
        },
    ]
    out = translate(messages=messages, tools=[WEATHER]).body
    assert out["messages"] == [
        # consecutive user turns merged, as Anthropic does
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Look:"},
                {"type": "image_url", "image_url": {"url": "https://x.test/a.png"}},
            ],
        },
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                },
                {
                    "id": "toolu_2",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Lyon"}'},
                },
            ],
            "reasoning_content": "Need the weather.",  # the encrypted redacted_thinking is no one else's to read
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"},
        {
            "role": "tool",
            "tool_call_id": "toolu_2",
            "content": "Error: no station\n[1 image(s) of this result follow in the next user message: a tool "
            "message cannot carry images]",
        },
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "The image(s) returned by tool call toolu_2:"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}},
                {"type": "text", "text": "And now?"},
            ],
        },
    ]
    assert check_chat(out).needs == {"vision", "tools"}


def test_documents_and_search_results_are_text_and_pdfs_are_refused() -> None:
    content = [
        {"type": "document", "title": "Notes", "source": {"type": "text", "media_type": "text/plain", "data": "a b"}},
        {"type": "search_result", "source": "https://x.test", "title": "T", "content": [{"type": "text", "text": "c"}]},
    ]
    out = translate(messages=[{"role": "user", "content": content}]).body["messages"]
    assert out[0]["content"] == [
        {"type": "text", "text": "Notes\na b"},
        {"type": "text", "text": "T\nhttps://x.test\nc"},
    ]
    pdf = {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBE"}}
    error = refused(body(messages=[{"role": "user", "content": [pdf]}]))
    assert error.param == "messages.0.content.0.source.type" and "PDF" in error.message


def test_a_last_assistant_turn_is_a_prefill() -> None:
    messages = [{"role": "user", "content": "Count"}, {"role": "assistant", "content": "1, 2,"}]
    assert translate(messages=messages).body["messages"][-1] == {
        "role": "assistant",
        "content": "1, 2,",
        "prefix": True,
    }
    thinking_only = [messages[0], {"role": "assistant", "content": [{"type": "thinking", "thinking": "hm"}]}]
    assert translate(messages=thinking_only).body["messages"] == [{"role": "user", "content": "Count"}]
    assert refused(body(messages=[{"role": "assistant", "content": []}])).param == "messages"


def test_a_system_turn_among_the_messages_stays_where_it_is() -> None:
    messages = [
        {"role": "user", "content": "Hi"},
        {"role": "system", "content": "Agents: claude, Explore"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "Bye"},
    ]
    roles = [m["role"] for m in translate(messages=messages).body["messages"]]
    assert roles == ["user", "system", "assistant", "user"]


def test_tool_result_replays_raw_arguments_as_they_were() -> None:
    call = {"type": "tool_use", "id": "t1", "name": "get_weather", "input": {"_raw": "{city: Paris"}}
    messages = [{"role": "user", "content": "?"}, {"role": "assistant", "content": [call]}]
    sent = translate(messages=messages, tools=[WEATHER]).body["messages"][-1]
    assert sent["tool_calls"][0]["function"]["arguments"] == "{city: Paris"


def test_tools_and_tool_choice() -> None:
    server = [
        {"type": "web_search_20250305", "name": "web_search", "max_uses": 3},
        {"type": "bash_20250124", "name": "bash"},
        {"type": "text_editor_20250728", "name": "str_replace_based_edit_tool"},
    ]
    translated = translate(tools=[WEATHER, *server], tool_choice={"type": "any", "disable_parallel_tool_use": True})
    out = translated.body
    assert out["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather for a city",
                "parameters": WEATHER["input_schema"],
            },
        }
    ]
    assert out["tool_choice"] == "required" and out["parallel_tool_calls"] is False
    assert translated.headers == {DROPPED_TOOLS_HEADER: "web_search_20250305, bash_20250124, text_editor_20250728"}
    assert translate(tools=[WEATHER], tool_choice={"type": "auto"}).body["tool_choice"] == "auto"
    assert translate(tools=[WEATHER], tool_choice={"type": "none"}).body["tool_choice"] == "none"
    assert translate(tools=[WEATHER], tool_choice={"type": "tool", "name": "get_weather"}).body["tool_choice"] == {
        "type": "function",
        "function": {"name": "get_weather"},
    }
    assert "tools" not in translate(tools=server).body and "tool_choice" not in translate(tools=server).body
    forced = refused(body(tools=[WEATHER, *server], tool_choice={"type": "tool", "name": "web_search"}))
    assert forced.param == "tool_choice.name" and "Anthropic-defined" in forced.message
    assert refused(body(tools=server, tool_choice={"type": "any"})).param == "tool_choice"
    assert refused(body(tools=[WEATHER], tool_choice={"type": "tool", "name": "nope"})).param == "tool_choice.name"


@pytest.mark.parametrize(
    ("thinking", "config", "effort"),
    [
        ({"type": "enabled", "budget_tokens": 1024}, None, "low"),
        ({"type": "enabled", "budget_tokens": 4096}, None, "low"),
        ({"type": "enabled", "budget_tokens": 4097}, None, "medium"),
        ({"type": "enabled", "budget_tokens": 16384}, {"effort": "low"}, "medium"),  # the explicit budget wins
        ({"type": "enabled", "budget_tokens": 32000}, None, "high"),
        ({"type": "disabled"}, {"effort": "high"}, "none"),
        ({"type": "adaptive"}, None, None),  # each model's own default
        ({"type": "adaptive"}, {"effort": "high"}, "high"),  # Claude Code 2.1.197
        (None, {"effort": "max"}, "xhigh"),
        (None, None, None),
    ],
)
def test_thinking_and_effort_become_reasoning_effort(thinking: Any, config: Any, effort: str | None) -> None:
    fields = {key: value for key, value in (("thinking", thinking), ("output_config", config)) if value is not None}
    assert translate(**fields).body.get("reasoning_effort") == effort


def test_sampling_stops_metadata_and_structured_output() -> None:
    out = translate(
        temperature=0.2,
        top_p=0.9,
        top_k=40,
        stop_sequences=["END"],
        metadata={"user_id": "u-1"},
        stream=True,
        output_config={"format": {"type": "json_schema", "schema": {"type": "object"}}},
    ).body
    assert {k: out[k] for k in ("temperature", "top_p", "top_k", "stop", "user", "stream")} == {
        "temperature": 0.2,
        "top_p": 0.9,
        "top_k": 40,
        "stop": ["END"],
        "user": "u-1",
        "stream": True,
    }
    assert out["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": {"type": "object"}},
    }


def test_service_fields_without_equivalent_are_accepted_and_dropped() -> None:
    fields = {
        "cache_control": {"type": "ephemeral"},
        "container": "c-1",
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "diagnostics": {"previous_message_id": "msg_1"},
        "fallback_credit_token": "x",
        "service_tier": "auto",
        "speed": "fast",
        "inference_geo": "global",
        "mcp_servers": [],
        "billing_policy": {"type": "billing_policy", "bill_to": "self"},
    }
    out = translate(**fields).body
    assert set(out) == {"model", "max_tokens", "messages"}


@pytest.mark.parametrize("name", ["claude_code_2.1.197_request.json", "claude_code_2.1.197_request_tool_rounds.json"])
def test_claude_codes_captured_requests(name: str) -> None:
    captured = json.loads((FIXTURES / name).read_text())
    translated = translate_request(captured)
    params = check_chat(translated.body)
    out = translated.body
    assert params.stream and params.max_output == 32000 and params.needs == {"tools"}
    assert out["reasoning_effort"] == "high"  # thinking adaptive + output_config.effort high
    assert len(out["tools"]) == len(captured["tools"]) == 24 and translated.headers == {}
    assert out["user"] == captured["metadata"]["user_id"]
    assert out["messages"][0]["role"] == "system" and BILLING_HEADER_PREFIX not in out["messages"][0]["content"]
    assert "cache_control" not in orjson.dumps(out).decode()
    assert {"context_management", "output_config", "thinking", "metadata"}.isdisjoint(out)
    replayed = [m for m in out["messages"] if m.get("tool_calls")]
    if "tool_rounds" in name:  # Kimi, thinking: each replayed tool turn carries its reasoning
        assert [m["reasoning_content"] for m in replayed] == ["Reasoning here.", "Reasoning here."]
        assert [m["role"] for m in out["messages"][-4:]] == ["assistant", "tool", "assistant", "tool"]


# --- hostile and malformed requests ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "param", "code"),
    [
        ({"api_base": "http://evil"}, "api_base", "forbidden_parameter"),
        ({"litellm_params": {}}, "litellm_params", "forbidden_parameter"),
        ({"extra_headers": {"x": "y"}}, "extra_headers", "forbidden_parameter"),
        ({"fallbacks": ["claude-x"]}, "fallbacks", "forbidden_parameter"),
        ({"mock_response": "hi"}, "mock_response", "forbidden_parameter"),
        ({"frobnicate": 1, "zeal": 2}, "frobnicate", "unknown_parameter"),
        ({"messages": [{"role": "user", "content": "x", "api_key": "k"}]}, None, None),  # nested: never forwarded
        ({"metadata": {"user_id": "u", "api_base": "http://evil"}}, "metadata.api_base", "unknown_parameter"),
        ({"metadata": "u"}, "metadata", "invalid_type"),
        ({"model": 5}, "model", "invalid_type"),
        ({"max_tokens": "10"}, "max_tokens", "invalid_type"),
        ({"max_tokens": 0}, "max_tokens", "invalid_value"),
        ({"max_tokens": True}, "max_tokens", "invalid_type"),
        ({"messages": []}, "messages", "empty_array"),
        ({"messages": "hi"}, "messages", "invalid_type"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages.0.role", "invalid_value"),
        ({"messages": [{"role": ["user"], "content": "x"}]}, "messages.0.role", "invalid_value"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages.0.content", "invalid_type"),
        ({"messages": [{"role": "user", "content": [{"text": "x"}]}]}, "messages.0.content.0", "invalid_type"),
        ({"messages": [{"role": "user", "content": []}]}, "messages.0.content", "invalid_value"),
        (
            {"messages": [{"role": "user", "content": [{"type": "tool_use", "id": "a", "name": "b", "input": {}}]}]},
            "messages.0.content.0.type",
            "invalid_value",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "server_tool_use", "id": "a"}]}]},
            "messages.0.content.0.type",
            "invalid_value",
        ),
        (
            {
                "messages": [
                    {"role": "assistant", "content": [{"type": "tool_use", "id": "a", "name": "b", "input": []}]}
                ]
            },
            "messages.0.content.0.input",
            "invalid_type",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": 3}]}]},
            "messages.0.content.0.tool_use_id",
            "invalid_type",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "image", "source": {"type": "file", "file_id": "f"}}]}
                ]
            },
            "messages.0.content.0.source.type",
            "invalid_value",
        ),
        ({"system": 5}, "system", "invalid_type"),
        ({"system": [{"type": "image"}]}, "system.0", "invalid_type"),
        ({"tools": {"name": "x"}}, "tools", "invalid_type"),
        ({"tools": [{"name": "x"}]}, "tools.0.input_schema", "invalid_type"),
        ({"tools": [{"name": "", "input_schema": {}}]}, "tools.0.name", "invalid_type"),
        ({"tools": [{"type": 5, "name": "x"}]}, "tools.0.type", "invalid_type"),
        ({"tool_choice": "auto"}, "tool_choice", "invalid_type"),
        ({"tool_choice": {"type": "sometimes"}}, "tool_choice.type", "invalid_value"),
        ({"thinking": {"type": "enabled"}}, "thinking.budget_tokens", "invalid_type"),
        ({"thinking": {"type": "always"}}, "thinking.type", "invalid_value"),
        ({"thinking": "on"}, "thinking", "invalid_type"),
        ({"output_config": {"effort": "extreme"}}, "output_config.effort", "invalid_value"),
        ({"temperature": 1.5}, "temperature", "invalid_value"),
        ({"temperature": "hot"}, "temperature", "invalid_type"),
        ({"top_k": -1}, "top_k", "invalid_type"),
        ({"stop_sequences": "END"}, "stop_sequences", "invalid_type"),
        ({"stream": "yes"}, "stream", "invalid_type"),
        ({"inference_geo": "us"}, "inference_geo", "unsupported_parameter"),
        ({"mcp_servers": [{"type": "url", "url": "http://evil", "name": "m"}]}, "mcp_servers", "unsupported_parameter"),
        ({"thread": {"type": "continue", "previous_message_id": "m"}}, "thread", "unsupported_parameter"),
        ({"compaction": {"type": "enabled"}}, "compaction", "unsupported_parameter"),
        ({"billing_policy": {"bill_to": "user_profile"}}, "billing_policy", "unsupported_parameter"),
    ],
)
def test_bad_requests_get_a_400_naming_the_field(fields: dict[str, Any], param: str | None, code: str | None) -> None:
    request = body(**fields)
    if param is None:  # accepted: what it carried is not in the canonical body
        assert "api_key" not in orjson.dumps(translate_request(request).body).decode()
        return
    error = refused(request)
    assert (error.param, error.code) == (param, code), error.message
    assert param.split(".")[0] in error.message


def test_max_tokens_is_required_except_for_counting() -> None:
    request = body()
    del request["max_tokens"]
    assert refused(request).code == "missing_required_parameter"
    assert "max_tokens" not in translate_request(request, counting=True).body


def test_the_known_fields_are_the_sdks() -> None:
    """Every body field of the SDK's (beta) MessageCreateParams is known, so a new SDK field is a decision here."""
    from anthropic.types.beta.message_create_params import MessageCreateParamsBase

    headers = {"betas", "user_profile_id", "workspace_id"}  # the SDK sends these as headers, not in the body
    fields = set(MessageCreateParamsBase.__annotations__) - headers | {"stream"}
    assert fields - KNOWN_FIELDS == {"fallbacks"}  # refused: the gateway's fallbacks are the team's policy


# Any JSON value, nested a little.
# What orjson.loads can give a door: integers within 64 bits (a longer one is read as a float).
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=12,
)
PATHS = st.sampled_from(
    [
        ("model",),
        ("max_tokens",),
        ("messages",),
        ("messages", 0),
        ("messages", 0, "content"),
        ("messages", 0, "content", 0),
        ("messages", 0, "content", 0, "source"),
        ("messages", 1, "content", 0, "input"),
        ("messages", 1, "content", 0, "id"),
        ("messages", 2, "content", 0, "content"),
        ("messages", 2, "content", 0, "is_error"),
        ("system",),
        ("system", 0, "text"),
        ("tools",),
        ("tools", 0),
        ("tools", 0, "input_schema"),
        ("tools", 0, "type"),
        ("tool_choice",),
        ("tool_choice", "name"),
        ("thinking",),
        ("thinking", "budget_tokens"),
        ("output_config",),
        ("metadata",),
        ("stop_sequences",),
        ("temperature",),
    ]
)


def full_body() -> dict[str, Any]:
    return body(
        system=[{"type": "text", "text": "S"}],
        messages=[
            {"role": "user", "content": [{"type": "image", "source": {"type": "url", "url": "https://x.test/i.png"}}]},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "get_weather", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "ok"}]},
        ],
        tools=[WEATHER],
        tool_choice={"type": "tool", "name": "get_weather"},
        thinking={"type": "enabled", "budget_tokens": 2048},
        output_config={"effort": "low"},
        metadata={"user_id": "u"},
        stop_sequences=["x"],
        temperature=0.5,
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(PATHS, JSON)
def test_any_value_anywhere_is_translated_or_refused_with_a_400(path: tuple[Any, ...], value: Any) -> None:
    request = full_body()
    holder: Any = request
    for step in path[:-1]:
        holder = holder[step]
    holder[path[-1]] = value
    try:
        translated = translate_request(request)
        check_chat(translated.body)
        orjson.dumps(translated.body)  # what an adapter does with it next
    except GatewayError as error:
        assert error.status == 400 and error.param


# --- answers -------------------------------------------------------------------------------------------------------


def chat(message: dict[str, Any], finish: str = "stop", usage: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "kimi-k2.6",
        "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish}],
        "usage": usage
        or {"prompt_tokens": 100, "completion_tokens": 20, "prompt_tokens_details": {"cached_tokens": 60}},
    }


def renderer(**fields: Any) -> AnthropicRenderer:
    return AnthropicRenderer(translate(model="claude-sonnet-4-5", **fields))


def test_a_complete_answer_with_thinking_text_and_tools() -> None:
    message = {
        "content": "Let me check.",
        "reasoning_content": "The user wants weather.",
        "tool_calls": [
            {
                "id": "functions.get_weather:0",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
            },
            {
                "id": "functions.get_weather:1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": "{oops"},
            },
        ],
    }
    answer = renderer().reply(chat(message, "tool_calls"))
    assert answer["id"].startswith("msg_") and answer["model"] == "claude-sonnet-4-5"
    assert answer["content"] == [
        {"type": "thinking", "thinking": "The user wants weather.", "signature": signature("The user wants weather.")},
        {"type": "text", "text": "Let me check."},
        {"type": "tool_use", "id": "functions.get_weather:0", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "functions.get_weather:1", "name": "get_weather", "input": {"_raw": "{oops"}},
    ]
    assert answer["stop_reason"] == "tool_use" and answer["stop_sequence"] is None
    assert answer["usage"] == {
        "input_tokens": 40,  # Anthropic's input_tokens leave the cached ones out
        "output_tokens": 20,
        "cache_read_input_tokens": 60,
        "cache_creation_input_tokens": 0,
    }
    anthropic.types.Message.model_validate(answer)  # the SDK's own model of an answer takes it


@pytest.mark.parametrize(
    ("finish", "tools", "reason"),
    [
        ("stop", False, "end_turn"),
        ("stop", True, "tool_use"),
        ("length", True, "max_tokens"),
        ("model_length", False, "max_tokens"),
        ("tool_calls", True, "tool_use"),
        ("content_filter", False, "refusal"),
        (None, False, "end_turn"),
    ],
)
def test_stop_reasons(finish: str | None, tools: bool, reason: str) -> None:
    calls = [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}] if tools else None
    message = {"content": "x", **({"tool_calls": calls} if calls else {})}
    assert renderer().reply(chat(message, finish))["stop_reason"] == reason  # type: ignore[arg-type]


def test_omitted_thinking_keeps_the_signature_only() -> None:
    answer = renderer(thinking={"type": "enabled", "budget_tokens": 2048, "display": "omitted"}).reply(
        chat({"content": "Hi", "reasoning_content": "secret"})
    )
    assert answer["content"][0] == {"type": "thinking", "thinking": "", "signature": signature("secret")}


def stream_of(
    *deltas: dict[str, Any], finish: str = "stop", usage: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    out = [{"id": "c", "model": "m", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}]
    out += [{"id": "c", "model": "m", "choices": [{"index": 0, "delta": d, "finish_reason": None}]} for d in deltas]
    out[-1]["choices"][0]["finish_reason"] = finish
    if usage is not None:
        out.append({"id": "c", "choices": [], "usage": usage, "x_gateway": {"cost_usd": 0.0001, "model": "kimi-k2.6"}})
    return out


def rendered(chunks: list[dict[str, Any]], render: AnthropicRenderer | None = None) -> bytes:
    """The chunks as the pipeline sends them (SSE) through the door's renderer, as gateway/http/doors.py does."""
    render = render or renderer()
    return b"".join(render.chunk(c) for c in chunks) + render.end()


def sdk(answer: Callable[[httpx2.Request], httpx2.Response]) -> anthropic.Anthropic:
    transport = httpx2.MockTransport(answer)
    return anthropic.Anthropic(
        api_key="k", base_url="http://gateway", http_client=httpx2.Client(transport=transport), max_retries=0
    )


def sdk_messages(whole: dict[str, Any], stream: bytes) -> tuple[Any, Any]:
    """The same answer read by the SDK as a complete message and as a stream (its own accumulator)."""

    def answer(request: httpx2.Request) -> httpx2.Response:
        if json.loads(request.content).get("stream"):
            return httpx2.Response(200, content=stream, headers={"content-type": "text/event-stream"})
        return httpx2.Response(200, json=whole)

    client = sdk(answer)
    asked = {"model": "claude-sonnet-4-5", "max_tokens": 256, "messages": [{"role": "user", "content": "Hi"}]}
    created = client.messages.create(**asked)  # type: ignore[call-overload]
    with client.messages.stream(**asked) as events:  # type: ignore[arg-type]
        streamed = events.get_final_message()
    return created, streamed


USAGE = {"prompt_tokens": 50, "completion_tokens": 9, "prompt_tokens_details": {"cached_tokens": 10}}


@pytest.mark.parametrize(
    ("whole", "deltas", "finish"),
    [
        ({"content": "Hello, world"}, [{"content": "Hello"}, {"content": ", world"}], "stop"),
        (
            {"content": "Sure.", "reasoning_content": "Think first."},
            [{"reasoning_content": "Think"}, {"reasoning_content": " first."}, {"content": "Sure."}],
            "stop",
        ),
        (  # Kimi: tool calls in pieces (index, id and name first, then argument fragments), two of them
            {
                "content": "",
                "reasoning_content": "Two cities.",
                "tool_calls": [
                    {
                        "id": "functions.w:0",
                        "type": "function",
                        "function": {"name": "w", "arguments": '{"city": "Paris"}'},
                    },
                    {
                        "id": "functions.w:1",
                        "type": "function",
                        "function": {"name": "w", "arguments": '{"city": "Lyon"}'},
                    },
                ],
            },
            [
                {"reasoning_content": "Two cities."},
                {
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": "functions.w:0",
                            "type": "function",
                            "function": {"name": "w", "arguments": ""},
                        }
                    ]
                },
                {"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]},
                {"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]},
                {
                    "tool_calls": [
                        {
                            "index": 1,
                            "id": "functions.w:1",
                            "type": "function",
                            "function": {"name": "w", "arguments": '{"city"'},
                        }
                    ]
                },
                {"tool_calls": [{"index": 1, "function": {"arguments": ': "Lyon"}'}}]},
            ],
            "tool_calls",
        ),
        (  # Mistral: thinking arrives as reasoning_content (its adapter flattens the chunks), a tool call whole
            {
                "content": "Checking.",
                "tool_calls": [
                    {"id": "D681PevKs", "type": "function", "function": {"name": "w", "arguments": '{"city":"Rome"}'}}
                ],
            },
            [
                {"content": "Checking."},
                {
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": "D681PevKs",
                            "type": "function",
                            "function": {"name": "w", "arguments": '{"city":"Rome"}'},
                        }
                    ]
                },
            ],
            "tool_calls",
        ),
        ({"content": "Cut"}, [{"content": "Cut"}], "length"),
    ],
)
def test_a_stream_read_by_the_sdk_is_the_complete_answer(
    whole: dict[str, Any], deltas: list[dict[str, Any]], finish: str
) -> None:
    stream = rendered(stream_of(*deltas, finish=finish, usage=USAGE))
    complete = renderer().reply(chat(whole, finish, USAGE))
    created, streamed = sdk_messages(complete, stream)
    assert {**streamed.to_dict(exclude_none=True), "id": ""} == {**created.to_dict(exclude_none=True), "id": ""}
    assert created.usage.input_tokens == 40 and created.usage.cache_read_input_tokens == 10


def test_stream_events_are_named_and_ordered() -> None:
    raw = rendered(stream_of({"reasoning_content": "Hm."}, {"content": "Hi"}, usage=USAGE))
    text = raw.decode()
    names = [line.removeprefix("event: ") for line in text.splitlines() if line.startswith("event: ")]
    assert names == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",  # the signature, before the thinking block stops
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    data = [json.loads(frame) for frame in frames(raw)]
    assert len(data) == len(names) and all(d["type"] == n for d, n in zip(data, names, strict=True))
    assert data[4]["delta"] == {"type": "signature_delta", "signature": signature("Hm.")}
    assert data[-2]["x_gateway"]["cost_usd"] == 0.0001  # the settled cost, from the pipeline's usage chunk
    assert data[-2]["usage"]["output_tokens"] == 9


def test_a_stream_without_usage_says_zero() -> None:
    data = [json.loads(frame) for frame in frames(rendered(stream_of({"content": "Hi"})))]
    assert data[-2]["usage"] == {
        "input_tokens": 0,
        "output_tokens": 0,
        "cache_read_input_tokens": 0,
        "cache_creation_input_tokens": 0,
    }
    assert "x_gateway" not in data[-2]


def test_an_empty_stream_is_still_a_message() -> None:
    render = renderer()
    names = [line for line in render.end().decode().splitlines() if line.startswith("event: ")]
    assert names == ["event: message_start", "event: ping", "event: message_delta", "event: message_stop"]


def test_a_mid_stream_error_is_an_error_event_the_sdk_raises() -> None:
    render = renderer()
    raw = render.chunk(stream_of({"content": "Hel"})[1]) + render.error(
        {"message": "Moonshot closed the stream", "type": "upstream_error", "code": "upstream_stream_cut"}
    )
    last = raw.decode().split("\n\n")[-2]
    assert last.startswith("event: error\ndata: ")
    assert json.loads(last.split("data: ", 1)[1]) == {
        "type": "error",
        "error": {
            "type": "api_error",
            "message": "Moonshot closed the stream",
            "details": {"error_code": "upstream_stream_cut"},
        },
    }

    def answer(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, content=raw, headers={"content-type": "text/event-stream"})

    client = sdk(answer)
    with (
        pytest.raises(anthropic.APIStatusError, match="upstream_stream_cut"),
        client.messages.stream(model="m", max_tokens=5, messages=[{"role": "user", "content": "x"}]) as events,
    ):
        events.get_final_message()
    shutting = json.loads(
        render.error({"message": "bye", "type": "server_error", "code": "gateway_shutting_down"}).split(b"data: ")[1]
    )
    assert shutting["error"]["type"] == "overloaded_error"


# --- errors --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "kind", "exception"),
    [
        (400, "invalid_request_error", anthropic.BadRequestError),
        (401, "authentication_error", anthropic.AuthenticationError),
        (403, "permission_error", anthropic.PermissionDeniedError),
        (404, "not_found_error", anthropic.NotFoundError),
        (413, "request_too_large", anthropic.APIStatusError),
        (429, "rate_limit_error", anthropic.RateLimitError),
        (500, "api_error", anthropic.InternalServerError),
        (502, "api_error", anthropic.InternalServerError),
        (503, "overloaded_error", anthropic.InternalServerError),
        (504, "timeout_error", anthropic.InternalServerError),
    ],
)
def test_errors_take_anthropics_types_and_the_sdks_classes(status: int, kind: str, exception: type[Exception]) -> None:
    error = GatewayError(status, "Something.", "invalid_request_error", "some_code", headers={"Retry-After": "3"})
    shaped = gateway_error(error)
    assert shaped == {
        "type": "error",
        "error": {"type": kind, "message": "Something.", "details": {"error_code": "some_code"}},
    }

    def answer(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(status, json=shaped, headers=error_headers(error))

    with pytest.raises(exception) as caught:
        sdk(answer).messages.create(model="m", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert isinstance(caught.value, anthropic.APIStatusError) and "some_code" in str(caught.value)
    assert caught.value.response.headers["retry-after"] == "3"


def test_a_spent_budget_tells_the_sdk_not_to_retry() -> None:
    error = GatewayError(429, "Team 'alpha' has spent its budget.", "insufficient_quota", "budget_exceeded")
    assert error_headers(error) == {"x-should-retry": "false"}
    assert gateway_error(error)["error"]["type"] == "rate_limit_error"
    calls = []

    def answer(request: httpx2.Request) -> httpx2.Response:
        calls.append(request)
        return httpx2.Response(429, json=gateway_error(error), headers=error_headers(error))

    client = sdk(answer).with_options(max_retries=3)
    with pytest.raises(anthropic.RateLimitError, match="budget_exceeded"):
        client.messages.create(model="m", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert len(calls) == 1
