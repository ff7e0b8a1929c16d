"""Adapter translations in isolation: every quirk in providers.md that the adapters must fix."""

from __future__ import annotations

import re
from decimal import Decimal

import orjson
import pytest

from gateway.catalog import ModelConfig, Price, Provider, Timeouts
from gateway.errors import GatewayError
from gateway.providers.base import ChunkAction, StreamOutcome
from gateway.providers.mistral import MistralAdapter, mistral_tool_id
from gateway.providers.moonshot import MoonshotAdapter
from gateway.providers.openai_compatible import OpenAICompatibleAdapter, usage_from
from gateway.providers.upstream_errors import map_status_error, provider_message


def provider(kind: str) -> Provider:
    return Provider(kind, kind, "eu", "http://127.0.0.1:9/v1", None, None, 8, Timeouts())  # type: ignore[arg-type]


def model(**extra: object) -> ModelConfig:
    return ModelConfig(
        name="m",
        provider="p",
        upstream_model="upstream-id",
        context_window=1000,
        max_output_tokens=100,
        price=Price(input=Decimal(1), output=Decimal(2)),
        **extra,  # type: ignore[arg-type]
    )


def test_mistral_tool_ids_are_valid_and_stable() -> None:
    for original in ["call_abc123", "functions.get_weather:0", "x", "call_" + "z" * 40]:
        mapped = mistral_tool_id(original)
        assert re.fullmatch(r"[A-Za-z0-9]{9}", mapped)
        assert mistral_tool_id(original) == mapped
    assert mistral_tool_id("abcDEF123") == "abcDEF123"
    assert mistral_tool_id("call_a") != mistral_tool_id("call_b")


def test_mistral_request_translation() -> None:
    body = {
        "model": "m",
        "stream": True,
        "stream_options": {"include_usage": True},
        "seed": 3,
        "max_completion_tokens": 50,
        "user": "u",
        "logprobs": False,
        "service_tier": "auto",
        "store": False,
        "functions": [{"name": "f", "parameters": {}}],
        "function_call": {"name": "f"},
        "messages": [
            {"role": "developer", "content": "be brief"},
            {
                "role": "assistant",
                "content": None,
                "reasoning_content": "hmm",
                "refusal": None,
                "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "ok"},
        ],
    }
    out = MistralAdapter(provider("mistral")).prepare_chat(body, model(), True)
    assert out["model"] == "upstream-id" and out["random_seed"] == 3 and out["max_tokens"] == 50
    assert out["tools"] == [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    assert out["tool_choice"] == {"type": "function", "function": {"name": "f"}}
    for dropped in (
        "stream_options",
        "seed",
        "max_completion_tokens",
        "user",
        "logprobs",
        "service_tier",
        "store",
        "functions",
        "function_call",
    ):
        assert dropped not in out
    assert out["messages"][0] == {"role": "system", "content": "be brief"}
    assistant = out["messages"][1]
    assert set(assistant) == {"role", "content", "tool_calls"} and assistant["content"] == ""
    assert assistant["tool_calls"][0]["id"] == out["messages"][2]["tool_call_id"] == mistral_tool_id("call_1")


def test_mistral_refuses_unknown_parameters_by_name() -> None:
    with pytest.raises(GatewayError) as refused:
        MistralAdapter(provider("mistral")).prepare_chat(
            {"model": "m", "messages": [], "logit_bias": {}}, model(), False
        )
    assert refused.value.status == 400 and refused.value.param == "logit_bias"


def test_mistral_stream_chunks() -> None:
    adapter = MistralAdapter(provider("mistral"))
    outcome = StreamOutcome()
    plain = {"id": "a", "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}], "p": "pad"}
    assert adapter.fix_chunk(plain, outcome) is ChunkAction.KEEP
    thinking = {
        "choices": [
            {
                "index": 0,
                "delta": {
                    "content": [
                        {"type": "thinking", "thinking": [{"type": "text", "text": "let me see"}], "closed": True},
                        {"type": "text", "text": "answer"},
                    ]
                },
            }
        ]
    }
    assert adapter.fix_chunk(thinking, outcome) is ChunkAction.CHANGED
    assert thinking["choices"][0]["delta"] == {"content": "answer", "reasoning_content": "let me see"}
    last = {
        "choices": [{"index": 0, "delta": {"content": "!"}, "finish_reason": "stop"}],
        "usage": {
            "prompt_tokens": 10,
            "completion_tokens": 3,
            "total_tokens": 13,
            "prompt_tokens_details": {"cached_tokens": 4},
        },
    }
    assert adapter.fix_chunk(last, outcome) is ChunkAction.CHANGED
    assert "usage" not in last and outcome.finish_reason == "stop"
    assert (outcome.usage.prompt_tokens, outcome.usage.completion_tokens, outcome.usage.cached_tokens) == (10, 3, 4)


def test_moonshot_fixed_sampling_dropped_only_for_fixed_models() -> None:
    adapter = MoonshotAdapter(provider("moonshot"))
    body = {
        "model": "m",
        "messages": [],
        "temperature": 0,
        "top_p": 1,
        "n": 1,
        "presence_penalty": 0,
        "stream_options": {"include_usage": True},
    }
    fixed = adapter.prepare_chat(dict(body), model(fixed_sampling=True), True)
    assert not {"temperature", "top_p", "n", "presence_penalty", "stream_options"} & set(fixed)
    free = adapter.prepare_chat(dict(body), model(), True)
    assert free["temperature"] == 0 and free["top_p"] == 1


def test_moonshot_usage_counted_once() -> None:
    adapter = MoonshotAdapter(provider("moonshot"))
    outcome = StreamOutcome()
    usage = {"prompt_tokens": 90, "completion_tokens": 50, "total_tokens": 140, "cached_tokens": 90}
    final = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop", "usage": dict(usage)}]}
    assert adapter.fix_chunk(final, outcome) is ChunkAction.CHANGED and "usage" not in final["choices"][0]
    trailing = {"choices": [], "usage": dict(usage)}
    assert adapter.fix_chunk(trailing, outcome) is ChunkAction.DROP
    assert (outcome.usage.prompt_tokens, outcome.usage.completion_tokens, outcome.usage.cached_tokens) == (90, 50, 90)


def test_moonshot_reply_usage_in_choice_moves_to_top() -> None:
    reply = {
        "choices": [{"index": 0, "message": {"content": "x"}, "usage": {"prompt_tokens": 1, "completion_tokens": 2}}]
    }
    assert MoonshotAdapter(provider("moonshot")).fix_reply(reply)
    assert reply["usage"] == {"prompt_tokens": 1, "completion_tokens": 2} and "usage" not in reply["choices"][0]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"prompt_tokens": 9, "completion_tokens": 1, "prompt_tokens_details": {"cached_tokens": 5}}, (9, 1, 5)),
        ({"prompt_tokens": 9, "completion_tokens": 1, "cached_tokens": 6}, (9, 1, 6)),
        ({"prompt_tokens": 9, "completion_tokens": 1, "num_cached_tokens": 7}, (9, 1, 7)),
        ({"prompt_tokens": 9, "completion_tokens": 0}, (9, 0, 0)),
    ],
)
def test_usage_shapes(raw: dict, expected: tuple[int, int, int]) -> None:
    usage = usage_from(raw)
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens) == expected
    assert usage.as_openai()["prompt_tokens_details"]["cached_tokens"] == expected[2]


def test_generic_adapter_asks_for_usage_and_hides_it_unless_asked() -> None:
    adapter = OpenAICompatibleAdapter(provider("openai-compatible"))
    assert adapter.prepare_chat({"model": "m", "messages": []}, model(), True)["stream_options"] == {
        "include_usage": True
    }
    outcome = StreamOutcome()
    assert (
        adapter.fix_chunk({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4}}, outcome)
        is ChunkAction.DROP
    )
    assert outcome.usage.total_tokens == 7


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"detail":"Invalid API Key"}', "Invalid API Key"),
        (b'{"message":"Unauthorized","request_id":"r1"}', "Unauthorized"),
        (
            b'{"object":"error","message":{"detail":[{"type":"extra_forbidden","loc":["body","n"],"msg":"Extra inputs are not permitted","input":1}]},"type":"invalid_request_error","param":null,"code":null}',
            "body.n: Extra inputs are not permitted",
        ),
        (
            b'{"detail":[{"type":"missing","loc":["body","model"],"msg":"Field required"}]}',
            "body.model: Field required",
        ),
        (
            b'{"object":"error","message":"Rate limit exceeded","type":"rate_limited","param":null,"code":"1300"}',
            "Rate limit exceeded",
        ),
        (
            b'{"error":{"message":"invalid temperature: only 0.6 is allowed for this model","type":"invalid_request_error"}}',
            "invalid temperature: only 0.6 is allowed for this model",
        ),
        (b"<html>bad gateway</html>", "<html>bad gateway</html>"),
    ],
)
def test_provider_error_shapes(body: bytes, message: str) -> None:
    assert provider_message(body)[0] == message


def test_status_mapping() -> None:
    assert map_status_error("p", 429, b"{}", {"Retry-After": "3"}).headers == {"Retry-After": "3"}
    assert map_status_error("p", 401, b"{}", {}).status == 502
    assert map_status_error("p", 503, b"{}", {}).status == 503
    assert map_status_error("p", 500, b"{}", {}).status == 502
    error = map_status_error("p", 422, b'{"detail":[{"loc":["body","x"],"msg":"bad"}]}', {})
    assert error.status == 400 and orjson.loads(error.body())["error"]["message"] == "p returned 422: body.x: bad"


def test_mistral_reply_is_made_openai_shaped() -> None:
    # Mistral's documented reply: `tool_calls: null`, no logprobs or refusal; OpenAI's schema requires
    # choices[].logprobs and message.refusal (null) and types tool_calls as an array when present.
    reply = {
        "id": "a",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "finish_reason": "model_length",
                "message": {"role": "assistant", "tool_calls": None, "content": "hi"},
            }
        ],
    }
    assert MistralAdapter(provider("mistral")).fix_reply(reply)
    choice = reply["choices"][0]
    assert choice["logprobs"] is None and choice["finish_reason"] == "length"
    assert choice["message"] == {"role": "assistant", "content": "hi", "refusal": None}


def test_a_conforming_reply_is_sent_as_the_providers_bytes() -> None:
    # Re-encoding only when something changed: an OpenAI-shaped answer keeps its exact bytes (and cost).
    body = (
        b'{"id":"a","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"finish_reason":"stop",'
        b'"logprobs":null,"message":{"role":"assistant","content":"hi","refusal":null}}],'
        b'"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2,"prompt_tokens_details":{"cached_tokens":0}}}'
    )
    assert OpenAICompatibleAdapter(provider("openai-compatible"))._complete(body, None).body is body
    missing = body.replace(b'"logprobs":null,', b"")
    fixed = OpenAICompatibleAdapter(provider("openai-compatible"))._complete(missing, None).body
    assert orjson.loads(fixed)["choices"][0]["logprobs"] is None


def test_explicit_defaults_and_nulls_are_dropped_where_the_provider_lacks_the_field() -> None:
    mistral = MistralAdapter(provider("mistral"))
    chat = mistral.prepare_chat(
        {
            "model": "m",
            "messages": [],
            "logit_bias": None,
            "n": 1,
            "temperature": None,
            "seed": None,
            "random_seed": 4,
            "parallel_tool_calls": True,
        },
        model(),
        False,
    )
    assert chat == {"model": "upstream-id", "messages": [], "n": 1, "random_seed": 4, "parallel_tool_calls": True}
    fim = mistral.prepare_fim(
        {
            "model": "m",
            "prompt": "a",
            "suffix": "b",
            "n": 1,
            "best_of": 1,
            "echo": False,
            "logprobs": None,
            "presence_penalty": 0,
            "max_tokens": None,
        },
        model(),
        False,
    )
    assert fim == {"model": "upstream-id", "prompt": "a", "suffix": "b"}
    for refused, value in (("n", 2), ("n", True), ("echo", True), ("presence_penalty", 0.5), ("api_base", None)):
        with pytest.raises(GatewayError) as error:
            mistral.prepare_fim({"model": "m", "prompt": "a", refused: value}, model(), False)
        assert error.value.status == 400 and error.value.param == refused


def test_legacy_echo_is_refused_unless_at_its_default() -> None:
    from gateway.http.legacy import prompt_as_chat

    assert prompt_as_chat({"model": "m", "prompt": "p", "echo": False, "best_of": 1})["messages"][0]["content"] == "p"
    with pytest.raises(GatewayError) as error:
        prompt_as_chat({"model": "m", "prompt": "p", "echo": True})
    assert error.value.param == "echo"


# --- Mistral: every history Mistral takes (mistral-common's models and serving validator; see
# gateway/emulators/README.md). Each rule here also runs end to end in tests/providers/test_mistral_reference.py.


def _chat(body: dict, **extra: object) -> dict:
    return MistralAdapter(provider("mistral")).prepare_chat({"model": "m", **body}, model(**extra), False)


def _call(call_id: str, name: str = "f", **extra: object) -> dict:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": "{}"}, **extra}


def test_mistral_tool_message_content_null_becomes_empty_text() -> None:
    out = _chat(
        {
            "messages": [
                {"role": "user", "content": "a"},
                {"role": "assistant", "tool_calls": [_call("call_1")]},
                {"role": "tool", "tool_call_id": "call_1", "content": None},
            ]
        }
    )
    assert out["messages"][2] == {"role": "tool", "tool_call_id": mistral_tool_id("call_1"), "content": ""}


def test_mistral_tool_without_parameters_gets_an_empty_object_schema() -> None:
    tools = [
        {"type": "function", "function": {"name": "now", "description": None}, "cache_control": {"type": "ephemeral"}}
    ]
    out = _chat({"messages": [{"role": "user", "content": "a"}], "tools": tools})
    assert out["tools"] == [
        {"type": "function", "function": {"name": "now", "parameters": {"type": "object", "properties": {}}}}
    ]
    with pytest.raises(GatewayError) as refused:
        _chat(
            {
                "messages": [{"role": "user", "content": "a"}],
                "tools": [{"type": "function", "function": {"name": "f", "x": 1}}],
            }
        )
    assert refused.value.param == "tools[0].function.x"


@pytest.mark.parametrize("field", ["seed", "random_seed"])
def test_mistral_negative_seed_is_dropped(field: str) -> None:
    assert "random_seed" not in _chat({"messages": [{"role": "user", "content": "a"}], field: -1})
    assert _chat({"messages": [{"role": "user", "content": "a"}], field: 0})["random_seed"] == 0
    fim = MistralAdapter(provider("mistral")).prepare_fim({"model": "m", "prompt": "p", field: -5}, model(), False)
    assert "random_seed" not in fim


def test_mistral_cache_control_and_replayed_index_are_removed() -> None:
    part = {"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}
    out = _chat(
        {
            "messages": [
                {"role": "user", "content": [part], "cache_control": {"type": "ephemeral"}},
                {"role": "assistant", "content": None, "tool_calls": [_call("call_1", index=0)]},
                {"role": "tool", "tool_call_id": "call_1", "content": "ok"},
            ]
        }
    )
    assert out["messages"][0] == {"role": "user", "content": [{"type": "text", "text": "hi"}]}
    assert out["messages"][1]["tool_calls"] == [_call(mistral_tool_id("call_1"))]


def test_mistral_reasoning_becomes_a_thinking_chunk_only_when_reasoning_is_asked() -> None:
    history = [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b", "reasoning_content": "hmm"},
        {"role": "user", "content": "c"},
    ]
    asked = _chat({"messages": history, "reasoning_effort": "high"})["messages"][1]
    assert asked == {
        "role": "assistant",
        "content": [
            {"type": "thinking", "thinking": [{"type": "text", "text": "hmm"}], "closed": True},
            {"type": "text", "text": "b"},
        ],
    }
    assert _chat({"messages": history})["messages"][1] == {"role": "assistant", "content": "b"}
    openrouter = [history[0], {"role": "assistant", "content": "b", "reasoning": "r"}, history[2]]
    assert (
        _chat({"messages": openrouter, "prompt_mode": "reasoning"})["messages"][1]["content"][0]["thinking"][0]["text"]
        == "r"
    )


def test_mistral_kimi_partial_on_the_last_message_is_prefix() -> None:
    out = _chat(
        {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "Sure", "partial": True}]}
    )
    assert out["messages"][1] == {"role": "assistant", "content": "Sure", "prefix": True}
    earlier = _chat(
        {
            "messages": [
                {"role": "user", "content": "a"},
                {"role": "assistant", "content": "b", "partial": True},
                {"role": "user", "content": "c"},
            ]
        }
    )
    assert earlier["messages"][1] == {"role": "assistant", "content": "b"}


def test_mistral_tool_ids_map_consistently_and_parallel_calls_stay_distinct() -> None:
    kimi = [_call("functions.get_weather:0", "get_weather"), _call("functions.get_weather:1", "get_weather")]
    same = [_call("x"), _call("x")]  # a client that repeats (or leaves out) ids in one turn
    out = _chat(
        {
            "messages": [
                {"role": "user", "content": "a"},
                {"role": "assistant", "content": "", "tool_calls": kimi},
                {"role": "tool", "tool_call_id": "functions.get_weather:1", "content": "r1"},
                {"role": "tool", "tool_call_id": "functions.get_weather:0", "content": "r0"},
                {"role": "user", "content": "b"},
                {"role": "assistant", "content": "", "tool_calls": same},
                {"role": "tool", "tool_call_id": "x", "content": "1"},
                {"role": "tool", "tool_call_id": "x", "content": "2"},
            ]
        }
    )["messages"]
    first = [call["id"] for call in out[1]["tool_calls"]]
    assert first == [mistral_tool_id("functions.get_weather:0"), mistral_tool_id("functions.get_weather:1")]
    assert [out[2]["tool_call_id"], out[3]["tool_call_id"]] == [first[1], first[0]]
    second = [call["id"] for call in out[5]["tool_calls"]]
    assert len(set(second)) == 2 and [out[6]["tool_call_id"], out[7]["tool_call_id"]] == second
    assert all(re.fullmatch(r"[A-Za-z0-9]{9}", i) for i in first + second)


def test_mistral_history_order_and_pairing_are_repaired() -> None:
    out = _chat(
        {
            "messages": [
                {"role": "user", "content": "a"},
                {"role": "assistant", "content": "", "tool_calls": [_call("c1"), _call("c2")]},
                {
                    "role": "tool",
                    "tool_call_id": "c1",
                    "content": "r1",
                },  # c2 never answered (the client was interrupted)
                {"role": "system", "content": "reminder"},
                {"role": "tool", "tool_call_id": "gone", "content": "orphan"},
                {"role": "user", "content": "b"},
            ]
        }
    )["messages"]
    assert [call["id"] for call in out[1]["tool_calls"]] == [mistral_tool_id("c1")]
    assert out[3] == {"role": "user", "content": "reminder"} and out[4] == {"role": "user", "content": "orphan"}


def test_mistral_legacy_function_messages_become_tool_calls_and_results() -> None:
    out = _chat(
        {
            "messages": [
                {"role": "user", "content": "a"},
                {"role": "assistant", "content": None, "function_call": {"name": "lookup", "arguments": "{}"}},
                {"role": "function", "name": "lookup", "content": "found"},
            ]
        }
    )["messages"]
    call_id = out[1]["tool_calls"][0]["id"]
    assert out[1] == {"role": "assistant", "content": "", "tool_calls": [_call(call_id, "lookup")]}
    assert out[2] == {"role": "tool", "tool_call_id": call_id, "content": "found", "name": "lookup"}


def test_mistral_valid_parameters_are_forwarded() -> None:
    out = _chat(
        {
            "messages": [{"role": "user", "content": "a"}],
            "top_k": 5,
            "min_tokens": 3,
            "repetition_penalty": 1.1,
            "metadata": {"k": "v"},
            "prompt_cache_key": "c",
        }
    )
    assert {k: out[k] for k in ("top_k", "min_tokens", "repetition_penalty", "metadata", "prompt_cache_key")} == {
        "top_k": 5,
        "min_tokens": 3,
        "repetition_penalty": 1.1,
        "metadata": {"k": "v"},
        "prompt_cache_key": "c",
    }
    fim = MistralAdapter(provider("mistral")).prepare_fim(
        {"model": "m", "prompt": "p", "prompt_cache_key": "k", "metadata": {"a": 1}}, model(), False
    )
    assert fim["prompt_cache_key"] == "k" and fim["metadata"] == {"a": 1}
    embed = MistralAdapter(provider("mistral")).prepare_embeddings(
        {"model": "m", "input": "x", "encoding_format": "base64", "metadata": {"a": 1}}, model()
    )
    assert embed == {"model": "upstream-id", "input": "x", "metadata": {"a": 1}}  # base64 is encoded by the gateway


def test_mistral_model_length_is_length_in_fim_replies_too() -> None:
    body = (
        b'{"id":"a","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,'
        b'"finish_reason":"model_length","message":{"role":"assistant","tool_calls":null,"content":"x"}}],'
        b'"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}'
    )
    reply = MistralAdapter(provider("mistral"))._complete(body, None)
    assert orjson.loads(reply.body)["choices"][0]["finish_reason"] == "length"
