"""Conformance of the Mistral emulator with the wire facts in shared/reference/providers.md."""

from __future__ import annotations

import http.client
import json
import math
import re
import socket
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

from gateway.emulators import EmulatorOptions, start_emulator
from tests.support.emulators import RULE_PER_IMAGE, RULE_PER_MESSAGE, EmulatorClient, rule_count, running

pytestmark = pytest.mark.slow

MODEL = "mistral-medium-3.5"


@pytest.fixture(scope="module")
def tekken_count():
    """Tekken tokens of a text as mistral-common itself counts them (Mistral bills prompts in Tekken tokens)."""
    from pathlib import Path

    import mistral_common
    from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

    data = Path(mistral_common.__file__).parent / "data"
    tokenizer = MistralTokenizer.from_file(str(max(data.glob("tekken_*.json")))).instruct_tokenizer.tokenizer
    return lambda text: len(tokenizer.encode(text, bos=False, eos=False))


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}, "metric": {"type": "boolean"}},
            "required": ["city"],
        },
    },
}
OTHER_TOOL = {
    "type": "function",
    "function": {"name": "lookup", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}},
}


@pytest.fixture(scope="module")
def server():
    server = start_emulator("mistral", EmulatorOptions(seed=11))
    yield server
    server.stop()


@pytest.fixture
def client(server) -> EmulatorClient:
    client = EmulatorClient(server)
    client.reset()
    return client


def ask(text: str, **extra) -> dict:
    return {"model": MODEL, "messages": [{"role": "user", "content": text}], **extra}


def extra_forbidden(*items: tuple) -> dict:
    detail = [
        {"type": "extra_forbidden", "loc": ["body", *loc], "msg": "Extra inputs are not permitted", "input": value}
        for loc, value in items
    ]
    return {
        "object": "error",
        "message": {"detail": detail},
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }


# --- authentication -----------------------------------------------------------------------


def test_default_key_is_per_kind(server):
    assert server.api_key == "demo-key-mistral"


@pytest.mark.parametrize("key, body", [(None, {"detail": "Unauthorized"}), ("wrong", {"detail": "Invalid API Key"})])
def test_401_bodies(client, key, body):
    reply = client.chat(ask("hi"), key=key)
    assert reply.status == 401
    assert reply.json() == body


def test_custom_key_is_enforced():
    with running("mistral", api_key="sekrit") as (_, client):
        assert client.chat(ask("hi"), key="demo-key-mistral").status == 401
        assert client.chat(ask("hi")).status == 200


# --- chat completions ------------------------------------------------------------------------


def test_non_streaming_shape_and_headers(client):
    reply = client.chat(ask("Tell me something."))
    assert reply.status == 200
    body = reply.json()
    assert set(body) == {"id", "object", "created", "model", "choices", "usage"}
    assert body["object"] == "chat.completion" and body["model"] == MODEL
    choice = body["choices"][0]
    assert choice["index"] == 0 and choice["finish_reason"] == "stop"
    assert choice["message"]["role"] == "assistant" and choice["message"]["tool_calls"] is None
    assert isinstance(choice["message"]["content"], str) and choice["message"]["content"]
    usage = body["usage"]
    assert usage["completion_tokens"] == rule_count(choice["message"]["content"])
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["prompt_tokens_details"] == {"cached_tokens": 0} and usage["num_cached_tokens"] == 0
    for header in (
        "x-ratelimit-limit-req-minute",
        "x-ratelimit-remaining-req-minute",
        "x-ratelimit-limit-tokens-minute",
        "x-ratelimit-remaining-tokens-minute",
        "mistral-correlation-id",
    ):
        assert header in reply.headers
    assert int(reply.headers["x-ratelimit-remaining-req-minute"]) < int(reply.headers["x-ratelimit-limit-req-minute"])


def test_prompt_tokens_follow_the_documented_rule(client, tekken_count):
    messages = [
        {"role": "system", "content": "You are terse."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Hello, world!"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            ],
        },
    ]
    reply = client.chat({"model": MODEL, "messages": messages})
    expected = 2 * RULE_PER_MESSAGE + tekken_count("You are terse.") + tekken_count("Hello, world!") + RULE_PER_IMAGE
    assert reply.json()["usage"]["prompt_tokens"] == expected
    with_tools = client.chat({"model": MODEL, "messages": messages, "tools": [OTHER_TOOL]})
    tools_cost = tekken_count(json.dumps([OTHER_TOOL], separators=(",", ":")))
    assert with_tools.json()["usage"]["prompt_tokens"] == expected + tools_cost


def test_same_request_same_reply_and_seeds_change_it(client):
    first = client.chat(ask("determinism please")).json()["choices"][0]["message"]["content"]
    again = client.chat(ask("determinism please")).json()["choices"][0]["message"]["content"]
    seeded = client.chat(ask("determinism please", random_seed=5)).json()["choices"][0]["message"]["content"]
    assert first == again
    assert seeded != first
    with running("mistral", seed=99) as (_, other):
        assert other.chat(ask("determinism please")).json()["choices"][0]["message"]["content"] != first


def test_max_tokens_cuts_with_finish_reason_length(client):
    body = client.chat(ask("long story", max_tokens=2)).json()
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 2 == len(body["choices"][0]["message"]["content"].split())


def test_default_max_tokens_caps_reply():
    with running("mistral", default_max_tokens=1) as (_, client):
        body = client.chat(ask("anything")).json()
        assert body["usage"]["completion_tokens"] == 1 and body["choices"][0]["finish_reason"] == "length"


def test_n_returns_n_choices(client):
    body = client.chat(ask("several", n=3)).json()
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    assert len({c["message"]["content"] for c in body["choices"]}) == 3


def test_stop_sequence_truncates(client):
    full = client.chat(ask("stop test")).json()["choices"][0]["message"]["content"]
    word = full.split()[2]
    cut = client.chat(ask("stop test", stop=[word])).json()["choices"][0]
    assert cut["message"]["content"] == full[: full.index(word)]
    assert cut["finish_reason"] == "stop"


# --- strict validation -----------------------------------------------------------------------


# providers.md also lists `logprobs` and `service_tier` as seen refused; the newer SDK (mistralai 3.7.0
# ChatCompletionRequest) has both, so they are accepted (gateway/emulators/README.md).
@pytest.mark.parametrize(
    "field, value",
    [
        ("stream_options", {"include_usage": True}),
        ("max_completion_tokens", 10),
        ("seed", 1),
        ("user", "u-1"),
        ("store", False),
        ("verbosity", "low"),
    ],
)
def test_openai_only_fields_are_extra_forbidden(client, field, value):
    reply = client.chat(ask("hi", **{field: value}))
    assert reply.status == 422
    assert reply.json() == extra_forbidden(([field], value))


def test_every_extra_field_is_listed(client):
    reply = client.chat(ask("hi", user="u", seed=3))
    assert reply.status == 422
    assert reply.json() == extra_forbidden((["user"], "u"), (["seed"], 3))


def test_replayed_reasoning_content_is_refused(client):
    messages = [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b", "reasoning_content": "hmm"},
        {"role": "user", "content": "c"},
    ]
    reply = client.chat({"model": MODEL, "messages": messages})
    assert reply.status == 422
    assert reply.json() == extra_forbidden((["messages", 1, "assistant", "reasoning_content"], "hmm"))


def test_unknown_role_is_refused(client):
    messages = [{"role": "developer", "content": "x"}, {"role": "user", "content": "y"}]
    reply = client.chat({"model": MODEL, "messages": messages})
    assert reply.status == 422
    detail = reply.json()["message"]["detail"]
    assert detail[0]["type"] == "union_tag_invalid" and detail[0]["loc"] == ["body", "messages", 0]


@pytest.mark.parametrize(
    "field, value, kind",
    [
        ("max_tokens", "5", "int_type"),
        ("max_tokens", -1, "greater_than_equal"),
        ("n", 0, "greater_than_equal"),
    ],
)
def test_integer_fields(client, field, value, kind):
    reply = client.chat(ask("hi", **{field: value}))
    assert reply.status == 422
    assert [(d["type"], d["loc"]) for d in reply.json()["message"]["detail"]] == [(kind, ["body", field])]


def test_missing_model_and_messages(client):
    reply = client.chat({"temperature": 0.2})
    assert reply.status == 422
    detail = reply.json()["message"]["detail"]
    assert [(d["type"], d["loc"]) for d in detail] == [
        ("missing", ["body", "model"]),
        ("missing", ["body", "messages"]),
    ]
    assert all(d["msg"] == "Field required" for d in detail)


@pytest.mark.parametrize("temperature, status", [(0, 200), (1.5, 200), (1.6, 422), (-0.1, 422)])
def test_temperature_range(client, temperature, status):
    reply = client.chat(ask("hi", temperature=temperature))
    assert reply.status == status
    if status == 422:
        assert reply.json()["message"]["detail"][0]["loc"] == ["body", "temperature"]


@pytest.mark.parametrize("where", ["assistant", "tool"])
def test_tool_call_ids_must_be_nine_alphanumerics(client, where):
    tool_id = "turn1_0"
    messages = [
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": tool_id if where == "assistant" else "abcDEF123",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": "{}"},
                }
            ],
        },
        {
            "role": "tool",
            "content": "sunny",
            "tool_call_id": tool_id if where == "tool" else "abcDEF123",
            "name": "get_weather",
        },
    ]
    reply = client.chat({"model": MODEL, "messages": messages})
    assert reply.status == 400
    message = "Tool call id was turn1_0 but must be a-z, A-Z, 0-9, with a length of 9."
    assert reply.json() == {
        "object": "error",
        "message": message,
        "type": "invalid_function_call",
        "param": None,
        "code": "3280",
        "raw_status_code": 400,
    }


def test_valid_tool_round_trip_is_answered_in_text(client):
    messages = [
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"id": "abcDEF123", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "content": "sunny", "tool_call_id": "abcDEF123", "name": "get_weather"},
    ]
    body = client.chat({"model": MODEL, "messages": messages, "tools": [WEATHER_TOOL]}).json()
    assert body["choices"][0]["finish_reason"] == "stop" and body["choices"][0]["message"]["tool_calls"] is None


# --- mistral-common's request models and serving validator ------------------------------------------------------

CALL = {"id": "abcDEF123", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}


def _details(reply) -> list[tuple[str, list]]:
    assert reply.status == 422, reply.text
    assert reply.json()["object"] == "error" and reply.json()["type"] == "invalid_request_error"
    return [(d["type"], d["loc"]) for d in reply.json()["message"]["detail"]]


def test_tool_message_needs_content(client):
    """mistral-common ToolMessage.content is `str | list[ContentChunk]`: a null content is refused."""
    messages = [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": "", "tool_calls": [CALL]},
        {"role": "tool", "content": None, "tool_call_id": "abcDEF123"},
    ]
    details = _details(client.chat({"model": MODEL, "messages": messages}))
    assert ("string_type", ["body", "messages", 2, "tool", "content", "str"]) in details
    ok = [*messages[:2], {**messages[2], "content": ""}]
    assert client.chat({"model": MODEL, "messages": ok}).status == 200


def test_function_tool_needs_parameters(client):
    tool = {"type": "function", "function": {"name": "get_weather"}}
    details = _details(client.chat(ask("hi", tools=[tool])))
    assert details == [("missing", ["body", "tools", 0, "function", "parameters"])]


@pytest.mark.parametrize(
    "path, body",
    [
        ("/v1/chat/completions", ask("hi", random_seed=-1)),
        ("/v1/fim/completions", {"model": "codestral-latest", "prompt": "x", "random_seed": -1}),
    ],
)
def test_random_seed_must_not_be_negative(client, path, body):
    assert _details(client.post(path, body)) == [("greater_than_equal", ["body", "random_seed"])]


def test_text_part_keys_are_strict(client):
    part = {"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}
    details = _details(client.chat({"model": MODEL, "messages": [{"role": "user", "content": [part]}]}))
    # pydantic reports each branch of `str | list[ContentChunk]`, as the API's FastAPI list does.
    assert [kind for kind, loc in details if loc[-1] == "cache_control"] == ["extra_forbidden"]


def test_replayed_tool_call_index_is_refused(client):
    messages = [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": "", "tool_calls": [{**CALL, "index": 0}]},
        {"role": "tool", "content": "sunny", "tool_call_id": "abcDEF123"},
    ]
    details = _details(client.chat({"model": MODEL, "messages": messages}))
    assert details == [("extra_forbidden", ["body", "messages", 1, "assistant", "tool_calls", 0, "index"])]


@pytest.mark.parametrize(
    "messages, text",
    [
        (
            [
                {"role": "user", "content": "a"},
                {"role": "assistant", "content": "b"},
                {"role": "system", "content": "c"},
                {"role": "user", "content": "d"},
            ],
            "Unexpected role 'system' after role 'assistant'",
        ),
        (
            [
                {"role": "user", "content": "a"},
                {"role": "assistant", "content": "", "tool_calls": [CALL]},
                {"role": "user", "content": "d"},
            ],
            "Not the same number of function calls and responses",
        ),
        (
            [
                {"role": "user", "content": "a"},
                {"role": "assistant", "content": "", "tool_calls": [CALL]},
                {"role": "tool", "content": "r", "tool_call_id": "abcDEF123"},
                {"role": "tool", "content": "r", "tool_call_id": "abcDEF123"},
            ],
            "Duplicate tool call id abcDEF123 in tool results",
        ),
    ],
)
def test_conversation_structure_is_checked_by_the_serving_validator(client, messages, text):
    reply = client.chat({"model": MODEL, "messages": messages})
    assert reply.status == 400
    assert reply.json() == {
        "object": "error",
        "message": text,
        "type": "invalid_request_message_order",
        "param": None,
        "code": "3230",
    }


def test_bad_function_name_and_schema_are_refused(client):
    tool = {"type": "function", "function": {"name": "get weather", "parameters": {"type": "object"}}}
    reply = client.chat(ask("hi", tools=[tool]))
    assert reply.status == 400 and reply.json()["message"].startswith("Function name was get weather but must be")
    broken = {"type": "function", "function": {"name": "f", "parameters": {"type": "no-such-type"}}}
    reply = client.chat(ask("hi", tools=[broken]))
    assert reply.status == 400 and reply.json()["message"].startswith("Invalid tool schema")


def test_thinking_chunks_on_assistant_turns_are_accepted(client):
    """SDK 3.7.0 ThinkChunk (thinking as text chunks, as the API sends it) and mistral-common's (one string)."""
    for thinking in ([{"type": "text", "text": "hmm"}], "hmm"):
        content = [{"type": "thinking", "thinking": thinking, "closed": True}, {"type": "text", "text": "b"}]
        messages = [
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": content},
            {"role": "user", "content": "c"},
        ]
        assert client.chat({"model": MODEL, "messages": messages}).status == 200


def test_sdk_fields_are_accepted(client):
    """Fields of mistralai 3.7.0's request models that OpenAI clients do not send, and `metadata`."""
    body = ask(
        "hi",
        top_k=5,
        min_tokens=30,
        repetition_penalty=1.1,
        metadata={"k": "v"},
        prompt_cache_key="c",
        reasoning_effort="max",
        service_tier="standard_only",
        logprobs=False,
    )
    reply = client.chat(body)
    assert reply.status == 200 and reply.json()["usage"]["completion_tokens"] >= 30
    fim = {"model": "codestral-latest", "prompt": "def f(", "prompt_cache_key": "k", "metadata": {"k": "v"}}
    assert client.post("/v1/fim/completions", fim).status == 200
    embed = {"model": "mistral-embed", "input": "x", "metadata": {"k": "v"}}
    assert client.post("/v1/embeddings", embed).status == 200


def test_unknown_model(client):
    reply = client.chat({**ask("hi"), "model": "gpt-4o"})
    assert reply.status == 400
    assert reply.json()["message"] == "Invalid model: gpt-4o" and reply.json()["code"] == "1500"
    assert reply.json()["object"] == "error"


def test_last_message_must_be_user_tool_or_prefix(client):
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Sure"}]
    reply = client.chat({"model": MODEL, "messages": messages})
    assert reply.status == 400 and reply.json()["code"] == "3230"
    prefixed = client.chat({"model": MODEL, "messages": [messages[0], {**messages[1], "prefix": True}]})
    assert prefixed.status == 200
    assert prefixed.json()["choices"][0]["message"]["content"].startswith("Sure")


def test_context_window(client):
    reply = client.chat({**ask("hi", max_tokens=131072), "model": "mistral-small-latest"})
    assert reply.status == 400
    assert re.fullmatch(
        r"Prompt contains \d+ tokens and 0 draft tokens, "
        r"too large for model with 131072 maximum context length",
        reply.json()["message"],
    )
    assert reply.json()["type"] == "invalid_request_error"
    assert client.chat({**ask("hi", max_tokens=131072), "model": "mistral-medium-latest"}).status == 200


def test_malformed_json(client):
    reply = client.chat(b'{"model": ')
    assert reply.status == 422
    assert reply.json()["message"]["detail"][0]["type"] == "json_invalid"


# --- streaming -----------------------------------------------------------------------------


def test_stream_usage_on_last_content_chunk(client):
    request = ask("stream me", max_tokens=6)
    streamed = client.stream(request)
    assert streamed.status == 200 and streamed.complete and streamed.done
    assert streamed.headers["content-type"].startswith("text/event-stream")
    chunks = streamed.chunks
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all(isinstance(c["p"], str) and c["p"] for c in chunks)
    assert all(c["object"] == "chat.completion.chunk" and c["choices"] for c in chunks)  # no usage-only chunk
    last = chunks[-1]
    assert last["choices"][0]["finish_reason"] == "length" and last["choices"][0]["delta"]["content"]
    assert last["usage"]["completion_tokens"] == 6
    assert [c for c in chunks[:-1] if "usage" in c or c["choices"][0]["finish_reason"]] == []
    assert streamed.content() == client.chat(request).json()["choices"][0]["message"]["content"]


def test_stream_padding_is_deterministic(client):
    first = [c["p"] for c in client.stream(ask("pad")).chunks]
    second = [c["p"] for c in client.stream(ask("pad")).chunks]
    assert first == second and len(set(first)) > 1


def test_tokens_per_chunk():
    with running("mistral", tokens_per_chunk=3) as (_, client):
        chunks = client.stream(ask("chunky", max_tokens=7)).chunks
        pieces = [c["choices"][0]["delta"]["content"] for c in chunks[1:]]
        assert [len(p.split()) for p in pieces] == [3, 3, 1]


def test_streamed_tool_call_arrives_whole(client):
    streamed = client.stream({**ask("What's the weather in Paris?"), "tools": [WEATHER_TOOL]})
    chunks = streamed.chunks
    assert streamed.done and len(chunks) == 2
    choice = chunks[1]["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and "usage" in chunks[1]
    call = choice["delta"]["tool_calls"][0]
    assert re.fullmatch(r"[a-zA-Z0-9]{9}", call["id"]) and call["type"] == "function" and call["index"] == 0
    arguments = json.loads(call["function"]["arguments"])
    assert call["function"]["name"] == "get_weather"
    assert isinstance(arguments["city"], str) and isinstance(arguments["days"], int) and arguments["metric"] is True


def test_tool_choice(client):
    forced = client.chat({**ask("no trigger word"), "tools": [WEATHER_TOOL, OTHER_TOOL], "tool_choice": "any"}).json()
    assert forced["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert forced["choices"][0]["message"]["content"] == ""
    assert forced["choices"][0]["finish_reason"] == "tool_calls"
    named = client.chat(
        {
            **ask("x"),
            "tools": [WEATHER_TOOL, OTHER_TOOL],
            "tool_choice": {"type": "function", "function": {"name": "lookup"}},
        }
    ).json()
    assert named["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "lookup"
    none = client.chat({**ask("weather?"), "tools": [WEATHER_TOOL], "tool_choice": "none"}).json()
    assert none["choices"][0]["message"]["tool_calls"] is None


def test_reasoning_effort_thinking_chunks(client):
    request = ask("think first", reasoning_effort="high")
    chunks = client.stream(request).chunks
    thinking = chunks[1]["choices"][0]["delta"]["content"]
    assert isinstance(thinking, list) and thinking[0]["type"] == "thinking" and thinking[0]["closed"] is True
    assert thinking[0]["thinking"][0]["type"] == "text" and thinking[0]["thinking"][0]["text"]
    assert all(isinstance(c["choices"][0]["delta"]["content"], str) for c in chunks[2:])
    body = client.chat(request).json()
    content = body["choices"][0]["message"]["content"]
    assert [part["type"] for part in content] == ["thinking", "text"]
    reasoning = rule_count(content[0]["thinking"][0]["text"])
    assert body["usage"]["completion_tokens_details"]["reasoning_tokens"] == reasoning
    plain = client.chat(ask("think first", reasoning_effort="none")).json()
    assert isinstance(plain["choices"][0]["message"]["content"], str)


def test_cached_tokens_on_repeated_prefix(client):
    first_messages = [
        {"role": "system", "content": "Cache me: a long and stable system prompt."},
        {"role": "user", "content": "first question for caching"},
    ]
    first = client.chat({"model": MODEL, "messages": first_messages}).json()
    assert first["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    follow_up = first_messages + [first["choices"][0]["message"], {"role": "user", "content": "and then?"}]
    follow_up[2] = {"role": "assistant", "content": follow_up[2]["content"]}
    second = client.chat({"model": MODEL, "messages": follow_up}).json()["usage"]
    assert second["prompt_tokens_details"]["cached_tokens"] == first["usage"]["prompt_tokens"]
    assert second["num_cached_tokens"] == first["usage"]["prompt_tokens"]
    assert 0 < second["prompt_tokens_details"]["cached_tokens"] < second["prompt_tokens"]


def test_openai_sdk_against_emulator(server):
    sdk = openai.OpenAI(base_url=server.url + "/v1", api_key=server.api_key, max_retries=0)
    completion = sdk.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "sdk"}])
    assert completion.choices[0].message.content and completion.usage.prompt_tokens > 0
    stream = sdk.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "sdk"}], stream=True)
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == completion.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == completion.usage.completion_tokens
    with pytest.raises(openai.UnprocessableEntityError):
        sdk.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "sdk"}], seed=1)


# --- other endpoints -------------------------------------------------------------------------


def test_models_list(client):
    reply = client.call("GET", "/v1/models")
    body = reply.json()
    assert body["object"] == "list"
    cards = {card["id"]: card for card in body["data"]}
    assert set(cards) == {
        "mistral-medium-3.5",
        "mistral-medium-latest",
        "mistral-small-latest",
        "codestral-latest",
        "mistral-embed",
    }
    for card in cards.values():
        assert card["object"] == "model" and card["owned_by"] == "mistralai"
        assert {
            "id",
            "created",
            "name",
            "description",
            "capabilities",
            "max_context_length",
            "aliases",
            "deprecation",
            "default_model_temperature",
            "type",
        } <= set(card)
        assert {"completion_chat", "completion_fim", "function_calling", "vision"} <= set(card["capabilities"])
    assert cards["mistral-medium-3.5"]["max_context_length"] == 262144
    assert cards["mistral-small-latest"]["max_context_length"] == 131072
    assert cards["codestral-latest"]["capabilities"]["completion_fim"] is True
    assert "mistral-medium-latest" in cards["mistral-medium-3.5"]["aliases"]
    assert client.call("GET", "/v1/models", key=None).status == 401


def test_embeddings(client, tekken_count):
    body = client.post("/v1/embeddings", {"model": "mistral-embed", "input": ["hello world", "other text"]}).json()
    assert body["object"] == "list" and body["model"] == "mistral-embed"
    first, second = body["data"]
    assert first["object"] == "embedding" and [first["index"], second["index"]] == [0, 1]
    assert len(first["embedding"]) == 1024
    assert math.isclose(math.sqrt(sum(v * v for v in first["embedding"])), 1.0, rel_tol=1e-6)
    assert first["embedding"] != second["embedding"]
    usage = body["usage"]
    assert usage == {
        "prompt_tokens": tekken_count("hello world") + tekken_count("other text"),
        "total_tokens": usage["prompt_tokens"],
        "completion_tokens": 0,
    }
    single = client.post("/v1/embeddings", {"model": "mistral-embed", "input": "hello world"}).json()
    assert single["data"][0]["embedding"] == first["embedding"]
    hello = {"model": "mistral-embed", "input": "hello world"}
    # encoding_format: base64 is accepted and ignored: the API answers a float array (see _embedding's sources).
    encoded = client.post("/v1/embeddings", {**hello, "encoding_format": "base64"}).json()
    assert encoded["data"][0]["embedding"] == first["embedding"]
    small = client.post("/v1/embeddings", {"model": "mistral-embed", "input": "x", "output_dimension": 256}).json()
    assert len(small["data"][0]["embedding"]) == 256
    packed = client.post("/v1/embeddings", {**hello, "output_dtype": "ubinary"}).json()
    assert packed["data"][0]["embedding"][0] == sum((v > 0) << (7 - b) for b, v in enumerate(first["embedding"][:8]))
    assert len(packed["data"][0]["embedding"]) == 128


def test_embeddings_validation(client):
    assert client.post(
        "/v1/embeddings", {"model": "mistral-embed", "input": "x", "dimensions": 3}
    ).json() == extra_forbidden((["dimensions"], 3))
    assert client.post("/v1/embeddings", {"model": MODEL, "input": "x"}).json()["code"] == "1500"
    assert (
        client.post("/v1/embeddings", {"model": "mistral-embed", "input": "x", "encoding_format": "hex"}).status == 422
    )


def test_fim(client, tekken_count):
    request = {"model": "codestral-latest", "prompt": "def add(a, b):", "suffix": "return result", "max_tokens": 4}
    body = client.post("/v1/fim/completions", request).json()
    assert body["object"] == "chat.completion" and body["model"] == "codestral-latest"
    message = body["choices"][0]["message"]
    assert message["role"] == "assistant" and len(message["content"].split()) == 4
    assert body["usage"]["prompt_tokens"] == tekken_count("def add(a, b):") + tekken_count("return result")
    streamed = client.stream(request, path="/v1/fim/completions")
    assert streamed.done and streamed.content() == body["choices"][0]["message"]["content"]
    assert streamed.chunks[-1]["usage"] == body["usage"]
    longer = client.post("/v1/fim/completions", {**request, "min_tokens": 40, "max_tokens": None}).json()
    assert longer["usage"]["completion_tokens"] >= 40


def test_fim_validation(client):
    request = {"model": "codestral-latest", "prompt": "x"}
    assert client.post("/v1/fim/completions", {**request, "presence_penalty": 0.1}).json() == extra_forbidden(
        (["presence_penalty"], 0.1)
    )
    assert (
        client.post("/v1/fim/completions", {**request, "model": MODEL}).json()["message"] == f"Invalid model: {MODEL}"
    )


def test_unknown_path_is_fastapi_404(client):
    reply = client.call("GET", "/v1/nothing-here")
    assert reply.status == 404 and reply.json() == {"detail": "Not Found"}


# --- faults ----------------------------------------------------------------------------------


def test_fault_status_429(client):
    reply = client.chat(ask("hi"), headers={"x-emulator-fault": "status=429,retry_after=7"})
    assert reply.status == 429
    assert reply.json() == {
        "object": "error",
        "message": "Rate limit exceeded",
        "type": "rate_limited",
        "param": None,
        "code": "1300",
    }
    assert reply.headers["retry-after"] == "7"


@pytest.mark.parametrize("status", [500, 502, 503])
def test_fault_server_errors(client, status):
    reply = client.chat(ask("hi"), headers={"x-emulator-fault": f"status={status}"})
    assert reply.status == status
    assert reply.json()["object"] == "error" and isinstance(reply.json()["message"], str) and reply.json()["type"]


def test_fault_latency_and_first_token_still_answer(client):
    assert client.chat(ask("hi"), headers={"x-emulator-fault": "latency=20"}).status == 200
    streamed = client.stream(ask("hi"), headers={"x-emulator-fault": "first_token=20"})
    assert streamed.done


def test_fault_cut_stream_drops_connection(client):
    streamed = client.stream(ask("cut me"), headers={"x-emulator-fault": "cut=2"})
    assert streamed.status == 200 and not streamed.complete and not streamed.done
    contents = [c["choices"][0]["delta"]["content"] for c in streamed.chunks[1:]]
    assert len(contents) == 2 and all(contents)
    assert not any(c["choices"][0]["finish_reason"] or "usage" in c for c in streamed.chunks)


def test_fault_cut_never_sends_the_finishing_chunk(client):
    streamed = client.stream(ask("short", max_tokens=2), headers={"x-emulator-fault": "cut=50"})
    assert not streamed.complete
    assert not any(c["choices"][0]["finish_reason"] for c in streamed.chunks)


def test_fault_cut_non_stream_closes_without_response(client):
    with pytest.raises(http.client.RemoteDisconnected):
        client.chat(ask("hi"), headers={"x-emulator-fault": "cut=0"})


def test_fault_malformed(client):
    streamed = client.stream(ask("mal", max_tokens=3), headers={"x-emulator-fault": "malformed=2"})
    assert streamed.done and streamed.complete
    bad = [f for f in streamed.frames if f != "[DONE]" and not _is_json(f)]
    assert len(bad) == 1 and streamed.frames.index(bad[0]) == 2
    assert len([f for f in streamed.frames if _is_json(f)]) == 4  # role + 3 content chunks: nothing lost
    body = client.chat(ask("mal"), headers={"x-emulator-fault": "malformed=0"})
    assert body.status == 200 and not _is_json(body.text)


def test_fault_stream_error(client):
    streamed = client.stream(ask("err"), headers={"x-emulator-fault": "stream_error=1"})
    assert streamed.complete and not streamed.done
    assert streamed.chunks[-1]["object"] == "error"


def test_fault_malformed_all(client):
    streamed = client.stream(ask("mal", max_tokens=3), headers={"x-emulator-fault": "malformed_all"})
    assert streamed.done and streamed.complete
    assert len(streamed.frames) == 5 and not any(_is_json(f) for f in streamed.frames[:-1])


def test_fault_big_event_and_pad(client):
    streamed = client.stream(ask("big", max_tokens=3), headers={"x-emulator-fault": "big_event=200000"})
    assert streamed.done and max(len(f) for f in streamed.frames) > 200_000
    assert len(streamed.frames) == 5  # one of the same chunks, larger
    padded = client.stream(ask("pad", max_tokens=3), headers={"x-emulator-fault": f"pad={3 * 65536 + 5}"})
    assert padded.done and len(padded.content()) >= 3 * 65536 + 5 and len(padded.frames) == 5 + 4
    assert not any(c["choices"][0]["finish_reason"] for c in padded.chunks[1:5])  # padding precedes the end
    whole = client.chat(ask("pad"), headers={"x-emulator-fault": "pad=100000"})
    assert whole.status == 200 and len(whole.json()["choices"][0]["message"]["content"]) >= 100_000


def test_fault_html_200(client):
    for reply in (
        client.chat(ask("hi"), headers={"x-emulator-fault": "html"}),
        client.chat(ask("hi", stream=True), headers={"x-emulator-fault": "html"}),
    ):
        assert reply.status == 200 and reply.headers["content-type"].startswith("text/html")
        assert reply.text.startswith("<!DOCTYPE html>")


def test_fault_stall_keeps_the_connection_open(client):
    sock = client.raw_request("/v1/chat/completions", ask("stall", stream=True), {"x-emulator-fault": "stall=2"})
    try:
        sock.settimeout(5)
        received = b""
        while received.count(b"data:") < 2:
            received += sock.recv(65536)
        sock.settimeout(0.3)
        with pytest.raises(socket.timeout):
            sock.recv(65536)  # nothing more, and not closed
        assert client.chat(ask("meanwhile")).status == 200
    finally:
        sock.close()


def test_fault_hang_does_not_block_and_ends_on_disconnect(client):
    sock = client.raw_request("/v1/chat/completions", ask("hang"), {"x-emulator-fault": "hang"})
    try:
        assert client.wait_hanging(1)
        assert client.chat(ask("meanwhile")).status == 200  # other requests are served
        sock.settimeout(0.2)
        with pytest.raises(socket.timeout):
            sock.recv(1)  # nothing was answered
    finally:
        sock.close()
    assert client.wait_hanging(0)


def test_fault_hang_ends_when_server_stops():
    server = start_emulator("mistral")
    client = EmulatorClient(server)
    sock = client.raw_request("/v1/chat/completions", ask("hang"), {"x-emulator-fault": "hang"})
    assert client.wait_hanging(1)
    server.stop()
    sock.settimeout(5)
    assert sock.recv(100) == b""  # closed, never answered
    sock.close()


def test_bad_fault_syntax(client):
    reply = client.chat(ask("hi"), headers={"x-emulator-fault": "explode=1"})
    assert reply.status == 400 and "explode" in reply.json()["emulator_error"]
    with pytest.raises(ValueError):
        start_emulator("mistral", EmulatorOptions(fault="bogus"))


def test_server_wide_fault_and_precedence():
    with running("mistral", fault="status=503") as (_, client):
        assert client.chat(ask("hi")).status == 503
        assert client.control("POST", "faults", {"fault": "status=502", "count": 1}).status == 200
        assert client.chat(ask("hi"), headers={"x-emulator-fault": "latency=1"}).status == 200  # header wins
        assert client.chat(ask("hi")).status == 502  # then the queue
        assert client.chat(ask("hi")).status == 503  # then the option


# --- control endpoints -----------------------------------------------------------------------


def test_fault_queue(client):
    queued = client.control("POST", "faults", {"fault": "status=429", "count": 2})
    assert queued.json()["queued"] == [{"fault": "status=429", "count": 2}]
    assert [client.chat(ask("q")).status for _ in range(3)] == [429, 429, 200]
    client.control("POST", "faults", {"fault": "status=500", "count": 5})
    assert client.control("DELETE", "faults").status == 200
    assert client.chat(ask("q")).status == 200
    assert client.control("POST", "faults", {"fault": "nope"}).status == 400


def test_request_log(client):
    client.chat(ask("logged one"), headers={"X-Custom-Thing": "yes"})
    client.call("GET", "/v1/models")
    log = client.control("GET", "requests").json()
    assert [(r["method"], r["path"]) for r in log] == [("POST", "/v1/chat/completions"), ("GET", "/v1/models")]
    assert log[0]["body"]["messages"][0]["content"] == "logged one" and log[1]["body"] is None
    assert log[0]["headers"]["authorization"] == "Bearer demo-key-mistral"
    assert log[0]["headers"]["x-custom-thing"] == "yes"
    assert all(name == name.lower() for name in log[0]["headers"])
    client.control("DELETE", "requests")
    assert client.control("GET", "requests").json() == []


def test_request_log_is_bounded_newest_last(client):
    for index in range(55):
        client.chat(b"{not json" if index % 2 else ask(f"n{index}"))
    log = client.control("GET", "requests").json()
    assert len(log) == 50
    assert log[-1]["body"]["messages"][0]["content"] == "n54" and log[-2]["body"] is None


def test_concurrent_load(server):
    client = EmulatorClient(server)
    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(lambda i: client.chat(ask(f"load {i}")).status, range(80)))
    assert statuses == [200] * 80


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
        return True
    except ValueError:
        return False
