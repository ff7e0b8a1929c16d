"""Conformance of the Moonshot (Kimi) emulator with the wire facts in shared/reference/providers.md."""

from __future__ import annotations

import http.client
import json
import socket

import openai
import pytest

from gateway.emulators import KINDS, EmulatorOptions, create_app, start_emulator
from tests.support.emulators import RULE_PER_IMAGE, RULE_PER_MESSAGE, EmulatorClient, rule_count, running

K26, K25, K2, THINKING = "kimi-k2.6", "kimi-k2.5", "kimi-k2-0905-preview", "kimi-k2-thinking"
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "days": {"type": "integer"},
                "unit": {"type": "string", "enum": ["c", "f"]},
            },
        },
    },
}
THINK = {"thinking": {"type": "enabled"}}
NO_THINK = {"thinking": {"type": "disabled"}}
CALL = {"id": "functions.get_weather:0", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}


@pytest.fixture(scope="module")
def server():
    server = start_emulator("moonshot", EmulatorOptions(seed=3))
    yield server
    server.stop()


@pytest.fixture
def client(server) -> EmulatorClient:
    client = EmulatorClient(server)
    client.reset()
    return client


def ask(text: str, model: str = K26, **extra) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


def error(message: str, type_: str = "invalid_request_error") -> dict:
    return {"error": {"message": message, "type": type_}}


# --- public API ----------------------------------------------------------------------------


def test_public_api():
    assert KINDS == ("mistral", "moonshot")
    with pytest.raises(ValueError):
        create_app("openai")
    first, second = create_app("moonshot"), create_app("moonshot")
    assert first.state.emulator is not second.state.emulator  # no state shared between apps


@pytest.mark.slow
def test_start_emulator_is_a_started_context_manager():
    with start_emulator("moonshot") as server:  # already started: entering must not start it again
        assert server.api_key == "demo-key-moonshot"
        assert EmulatorClient(server).chat(ask("hi")).status == 200


# --- authentication -------------------------------------------------------------------------


@pytest.mark.parametrize("key", [None, "demo-key-mistral"])
@pytest.mark.slow
def test_401(client, key):
    reply = client.chat(ask("hi"), key=key)
    assert reply.status == 401
    assert reply.json() == error("Invalid Authentication", "invalid_authentication_error")
    assert client.call("GET", "/v1/users/me/balance", key=key).status == 401


# --- chat completions ------------------------------------------------------------------------


@pytest.mark.slow
def test_non_streaming_shape(client):
    body = client.chat(ask("hello kimi", **NO_THINK)).json()
    assert body["id"].startswith("chatcmpl-") and body["object"] == "chat.completion" and body["model"] == K26
    choice = body["choices"][0]
    assert choice["finish_reason"] == "stop" and choice["message"]["role"] == "assistant"
    assert "reasoning_content" not in choice["message"] and "tool_calls" not in choice["message"]
    usage = body["usage"]
    assert usage["prompt_tokens"] == RULE_PER_MESSAGE + rule_count("hello kimi")
    assert usage["completion_tokens"] == rule_count(choice["message"]["content"])
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["cached_tokens"] == 0 and usage["prompt_tokens_details"] == {"cached_tokens": 0}


@pytest.mark.slow
def test_older_model_has_only_top_level_cached_tokens(client):
    usage = client.chat(ask("hello", K2)).json()["usage"]
    assert "cached_tokens" in usage and "prompt_tokens_details" not in usage


@pytest.mark.slow
def test_determinism(client):
    first = client.chat(ask("same again")).json()["choices"][0]["message"]["content"]
    assert client.chat(ask("same again")).json()["choices"][0]["message"]["content"] == first
    assert client.chat(ask("same again", seed=42)).json()["choices"][0]["message"]["content"] != first


@pytest.mark.parametrize(
    "model, body",
    [
        (K26, {"temperature": 0, **NO_THINK}),
        (K25, {"temperature": 1.0}),
    ],
)
@pytest.mark.slow
def test_fixed_temperature(client, model, body):
    reply = client.chat(ask("hi", model, **body))
    assert reply.status == 400
    assert reply.json() == error("invalid temperature: only 0.6 is allowed for this model")


@pytest.mark.parametrize(
    "field, value, allowed",
    [
        ("top_p", 1.0, "0.95"),
        ("n", 2, "1"),
        ("presence_penalty", 0.5, "0"),
        ("frequency_penalty", 0.1, "0"),
    ],
)
@pytest.mark.slow
def test_other_fixed_sampling_values(client, field, value, allowed):
    reply = client.chat(ask("hi", **{field: value}))
    assert reply.status == 400
    assert reply.json() == error(f"invalid {field}: only {allowed} is allowed for this model")


@pytest.mark.slow
def test_fixed_values_themselves_are_accepted(client):
    reply = client.chat(
        ask("hi", temperature=0.6, top_p=0.95, n=1, presence_penalty=0, frequency_penalty=0, **NO_THINK)
    )
    assert reply.status == 200
    assert client.chat(ask("hi", temperature=1.0, top_p=0.95)).status == 200  # thinking (the default): 1.0


@pytest.mark.slow
def test_k26_thinks_by_default(client):
    """providers.md: on kimi-k2.6 thinking is enabled by default; `thinking: disabled` turns it off. K2.5 and the
    non-thinking K2 models do not think unless asked."""
    body = client.chat(ask("default mode")).json()
    message = body["choices"][0]["message"]
    assert message["reasoning_content"] and message["content"]
    assert body["usage"]["completion_tokens_details"]["reasoning_tokens"] == rule_count(message["reasoning_content"])
    refused = client.chat(ask("default mode", temperature=0.6))  # the thinking mode's fixed value is 1
    assert refused.json() == error("invalid temperature: only 1 is allowed for this model")
    assert "reasoning_content" not in client.chat(ask("off", **NO_THINK)).json()["choices"][0]["message"]
    assert "reasoning_content" not in client.chat(ask("k2.5", K25)).json()["choices"][0]["message"]
    streamed = client.stream(ask("streamed default"))
    assert any(c["choices"][0]["delta"].get("reasoning_content") for c in streamed.chunks)


@pytest.mark.parametrize("role", ["developer", "critic"])
@pytest.mark.slow
def test_roles_other_than_moonshots_are_refused(client, role):
    reply = client.chat(
        {"model": K26, "messages": [{"role": role, "content": "Be brief."}, {"role": "user", "content": "hi"}]}
    )
    assert reply.status == 400 and reply.json() == error("unsupported role ROLE_UNSPECIFIED")
    assert (
        client.chat(
            {"model": K26, "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]}
        ).status
        == 200
    )


@pytest.mark.slow
def test_max_completion_tokens_and_deprecated_max_tokens(client):
    """The API reference documents max_completion_tokens (max_tokens deprecated, still accepted); the first wins."""
    for body in ({"max_completion_tokens": 3}, {"max_tokens": 3}, {"max_completion_tokens": 3, "max_tokens": 50}):
        reply = client.chat(ask("a long answer please", **NO_THINK, **body)).json()
        assert reply["choices"][0]["finish_reason"] == "length" and reply["usage"]["completion_tokens"] == 3
    bad = client.chat(ask("hi", max_completion_tokens="many"))
    assert bad.status == 400 and "max_completion_tokens must be an integer" in bad.json()["error"]["message"]


@pytest.mark.slow
def test_thinking_mode_temperature_and_reasoning(client):
    refused = client.chat(ask("think", **THINK, temperature=0.6))
    assert refused.status == 400 and refused.json() == error("invalid temperature: only 1 is allowed for this model")
    body = client.chat(ask("think", **THINK, temperature=1.0)).json()
    message = body["choices"][0]["message"]
    assert message["reasoning_content"]
    assert body["usage"]["completion_tokens_details"]["reasoning_tokens"] == rule_count(message["reasoning_content"])
    reasoning = rule_count(message["reasoning_content"])
    assert body["usage"]["completion_tokens"] == rule_count(message["content"]) + reasoning
    assert client.chat(ask("think", thinking={"type": "disabled"}, temperature=0.6)).status == 200


@pytest.mark.slow
def test_older_models_sampling_ranges(client):
    body = client.chat(ask("three please", K2, n=3, temperature=0.7)).json()
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    assert len({c["message"]["content"] for c in body["choices"]}) == 3
    assert client.chat(ask("hi", K2, n=6)).status == 400
    assert client.chat(ask("hi", K2, temperature=1.5)).status == 400
    assert client.chat(ask("hi", K2, temperature=0)).status == 200
    assert client.chat(ask("hi", K2, temperature=0, n=2)).status == 400


@pytest.mark.parametrize(
    "tool_choice, name",
    [
        ("required", "required"),
        ({"type": "function", "function": {"name": "get_weather"}}, "specified"),
    ],
)
@pytest.mark.slow
def test_thinking_refuses_forced_tool_choice(client, tool_choice, name):
    reply = client.chat(ask("hi", **THINK, tools=[WEATHER_TOOL], tool_choice=tool_choice))
    assert reply.status == 400
    assert reply.json() == error(f"tool_choice '{name}' is incompatible with thinking enabled")
    by_default = client.chat(ask("hi", tools=[WEATHER_TOOL], tool_choice=tool_choice))  # K2.6 thinks by default
    assert by_default.status == 400 and by_default.json() == reply.json()
    assert client.chat(ask("hi", tools=[WEATHER_TOOL], tool_choice="auto")).status == 200
    answered = client.chat(ask("hi", **NO_THINK, tools=[WEATHER_TOOL], tool_choice=tool_choice))  # without thinking
    assert answered.status == 200 and answered.json()["choices"][0]["message"]["tool_calls"]


@pytest.mark.slow
def test_thinking_requires_replayed_reasoning_content(client):
    call = {"id": "functions.get_weather:0", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
    messages = [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call["id"], "content": "sunny"},
    ]
    reply = client.chat({"model": THINKING, "messages": messages, "tools": [WEATHER_TOOL]})
    assert reply.status == 400
    assert reply.json() == error(
        "thinking is enabled but reasoning_content is missing in assistant tool call message at index 1"
    )
    messages[1]["reasoning_content"] = "I should call the tool."
    answered = client.chat({"model": THINKING, "messages": messages, "tools": [WEATHER_TOOL]})
    assert answered.status == 200 and answered.json()["choices"][0]["finish_reason"] == "stop"
    without_reasoning = [messages[0], {**messages[1], "reasoning_content": None}, messages[2]]
    by_default = client.chat({"model": K26, "messages": without_reasoning})  # K2.6 thinks by default
    assert by_default.status == 400 and by_default.json() == reply.json()
    assert client.chat({"model": K26, "messages": without_reasoning, **NO_THINK}).status == 200
    assert client.chat({"model": K26, "messages": messages}).status == 200  # replayed reasoning: accepted


@pytest.mark.slow
def test_partial_mode(client):
    messages = [{"role": "user", "content": "Give JSON"}, {"role": "assistant", "content": "{", "partial": True}]
    body = client.chat({"model": K26, "messages": messages}).json()
    assert not body["choices"][0]["message"]["content"].startswith("{")
    refused = client.chat({"model": K26, "messages": messages, "response_format": {"type": "json_object"}})
    assert refused.status == 400 and refused.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.slow
def test_unknown_model(client):
    reply = client.chat(ask("hi", "moonshot-v9"))
    assert reply.status == 404
    assert reply.json() == error("Not found the model moonshot-v9 or Permission denied", "resource_not_found_error")


@pytest.mark.slow
def test_context_window(client):
    reply = client.chat(ask("hi", K25, max_tokens=262144))
    assert reply.status == 400 and reply.json() == error("Your request exceeded model token limit : 262144")
    assert client.chat(ask("hi", K26, max_tokens=262144)).status == 200  # K2.6 has a 1M window
    big = client.chat(ask("hi", K26, max_tokens=1_048_576))
    assert big.json() == error("Your request exceeded model token limit : 1048576")


@pytest.mark.slow
def test_malformed_json_and_bad_max_tokens(client):
    assert client.chat(ask("hi", max_tokens="many")).json()["error"]["type"] == "invalid_request_error"
    reply = client.chat(b"{oops")
    assert reply.status == 400 and reply.json()["error"]["type"] == "invalid_request_error"
    assert set(reply.json()) == {"error"}


@pytest.mark.slow
def test_tool_call_non_streaming(client):
    body = client.chat(ask("What is the weather in Beijing?", tools=[WEATHER_TOOL])).json()
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    call = choice["message"]["tool_calls"][0]
    assert call["id"] == "functions.get_weather:0" and call["type"] == "function"
    arguments = json.loads(call["function"]["arguments"])
    assert isinstance(arguments["city"], str) and isinstance(arguments["days"], int) and arguments["unit"] == "c"


@pytest.mark.slow
def test_tool_call_ids_count_the_conversation(client):
    earlier = {
        "id": "functions.get_weather:0",
        "type": "function",
        "function": {"name": "get_weather", "arguments": "{}"},
    }
    messages = [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": "", "tool_calls": [earlier]},
        {"role": "tool", "tool_call_id": earlier["id"], "content": "sunny"},
        {"role": "user", "content": "and the weather tomorrow?"},
    ]
    body = client.chat({"model": K26, "messages": messages, "tools": [WEATHER_TOOL], **NO_THINK}).json()
    assert body["choices"][0]["message"]["tool_calls"][0]["id"] == "functions.get_weather:1"


# --- streaming ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_stream_usage_inside_final_choice_only(client):
    request = ask("stream please", max_tokens=5, **NO_THINK)
    streamed = client.stream(request)
    assert streamed.done and streamed.complete
    chunks = streamed.chunks
    assert all(c["id"].startswith("chatcmpl-") and "system_fingerprint" in c for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all("usage" not in c for c in chunks)  # no top-level usage without stream_options
    assert all(c["choices"] for c in chunks)  # and no trailing usage chunk
    final = chunks[-1]["choices"][0]
    assert final["delta"] == {} and final["finish_reason"] == "length"
    assert final["usage"]["completion_tokens"] == 5
    assert [c for c in chunks[:-1] if "usage" in c["choices"][0]] == []
    assert streamed.content() == client.chat(request).json()["choices"][0]["message"]["content"]


@pytest.mark.slow
def test_stream_include_usage_adds_trailing_chunk(client):
    streamed = client.stream(ask("stream with usage", stream_options={"include_usage": True}))
    chunks = streamed.chunks
    assert streamed.done
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0
    assert chunks[-2]["choices"][0]["usage"] == chunks[-1]["usage"]
    assert sum(1 for c in chunks if "usage" in c) == 1


@pytest.mark.slow
def test_stream_reasoning_content_comes_first(client):
    chunks = client.stream(ask("reason", THINKING)).chunks
    kinds = [next(iter(c["choices"][0]["delta"]), None) for c in chunks[1:-1]]
    assert kinds[0] == "reasoning_content" and "content" in kinds
    assert kinds.index("content") > max(i for i, k in enumerate(kinds) if k == "reasoning_content")


@pytest.mark.slow
def test_stream_tool_call(client):
    chunks = client.stream(ask("weather in Oslo?", tools=[WEATHER_TOOL])).chunks
    calls = [c["choices"][0]["delta"]["tool_calls"][0] for c in chunks if "tool_calls" in c["choices"][0]["delta"]]
    assert calls[0]["id"] == "functions.get_weather:0" and calls[0]["function"]["name"] == "get_weather"
    assert len(calls) > 1  # arguments arrive in pieces
    assert json.loads("".join(c["function"]["arguments"] for c in calls))["unit"] == "c"
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


@pytest.mark.slow
def test_cached_tokens_both_shapes(client):
    for model, both in ((K26, True), (K2, False)):
        history = [
            {"role": "system", "content": f"Stable system prompt for {model} caching."},
            {"role": "user", "content": "first turn"},
        ]
        first = client.chat({"model": model, "messages": history}).json()
        assert first["usage"]["cached_tokens"] == 0
        history += [
            {"role": "assistant", "content": first["choices"][0]["message"]["content"]},
            {"role": "user", "content": "second turn"},
        ]
        usage = client.chat({"model": model, "messages": history}).json()["usage"]
        assert usage["cached_tokens"] == first["usage"]["prompt_tokens"]
        if both:
            assert usage["prompt_tokens_details"]["cached_tokens"] == first["usage"]["prompt_tokens"]
        else:
            assert "prompt_tokens_details" not in usage
        streamed = client.stream({"model": model, "messages": history})  # the same prompt again, streamed
        # A repeat: the longest seen prefix shorter than the prompt is all but the last message.
        repeat_cached = usage["prompt_tokens"] - rule_count("second turn") - RULE_PER_MESSAGE
        assert streamed.chunks[-1]["choices"][0]["usage"]["cached_tokens"] == repeat_cached


@pytest.mark.slow
def test_openai_sdk_against_emulator(server):
    sdk = openai.OpenAI(base_url=server.url + "/v1", api_key=server.api_key, max_retries=0)
    completion = sdk.chat.completions.create(
        model=K26, messages=[{"role": "user", "content": "sdk"}], extra_body={"thinking": {"type": "enabled"}}
    )
    assert completion.choices[0].message.content and completion.choices[0].message.model_extra["reasoning_content"]
    stream = sdk.chat.completions.create(
        model=K2, messages=[{"role": "user", "content": "sdk"}], stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens > 0
    with pytest.raises(openai.BadRequestError):
        sdk.chat.completions.create(model=K26, messages=[{"role": "user", "content": "x"}], temperature=0)
    with pytest.raises(openai.NotFoundError):
        sdk.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])


# --- other endpoints -----------------------------------------------------------------------------


@pytest.mark.slow
def test_estimate_token_count_equals_chat_prompt_tokens(client):
    request = {
        "model": K26,
        "tools": [WEATHER_TOOL],
        "messages": [
            {"role": "system", "content": "Be brief."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in this picture?"},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
                ],
            },
        ],
    }
    estimate = client.post("/v1/tokenizers/estimate-token-count", request)
    assert estimate.status == 200 and set(estimate.json()) == {"data"}
    total = estimate.json()["data"]["total_tokens"]
    assert total == client.chat(request).json()["usage"]["prompt_tokens"]
    assert total > RULE_PER_IMAGE + 2 * RULE_PER_MESSAGE
    assert client.post("/v1/tokenizers/estimate-token-count", {**request, "model": "x"}).status == 404


@pytest.mark.slow
def test_models_list(client):
    body = client.call("GET", "/v1/models").json()
    assert body["object"] == "list"
    cards = {card["id"]: card for card in body["data"]}
    assert set(cards) == {K26, K25, K2, "kimi-k2-turbo-preview", THINKING}
    assert all(c["object"] == "model" and c["owned_by"] == "moonshot" and "created" in c for c in cards.values())
    assert cards[K26]["context_length"] == 1048576 and cards[K25]["context_length"] == 262144
    assert cards[K26]["supports_image_in"] is True and cards[K2]["supports_reasoning"] is False
    assert cards[THINKING]["supports_reasoning"] is True


@pytest.mark.slow
def test_balance(client):
    body = client.call("GET", "/v1/users/me/balance").json()
    assert body["code"] == 0 and body["scode"] == "0x0" and body["status"] is True
    assert set(body["data"]) == {"available_balance", "voucher_balance", "cash_balance"}


@pytest.mark.slow
def test_unknown_path(client):
    reply = client.call("GET", "/v1/files-that-do-not-exist")
    assert reply.status == 404 and reply.json()["error"]["type"] == "resource_not_found_error"


# --- faults ----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_fault_429(client):
    reply = client.chat(ask("hi"), headers={"x-emulator-fault": "status=429"})
    assert reply.status == 429 and reply.headers["retry-after"] == "1"
    assert reply.json() == error(
        "The engine is currently overloaded, please try again later", "engine_overloaded_error"
    )


@pytest.mark.parametrize(
    "fault, status, type_, transient",
    [
        ("status=429,error=engine_overloaded_error", 429, "engine_overloaded_error", True),
        ("status=429,error=rate_limit_reached_error,retry_after=2", 429, "rate_limit_reached_error", True),
        ("status=429,error=exceeded_current_quota_error", 429, "exceeded_current_quota_error", False),
        ("status=403", 403, "exceeded_current_quota_error", False),
    ],
)
@pytest.mark.slow
def test_fault_the_three_429s(client, fault, status, type_, transient):
    """providers.md, Moonshot errors: two transient 429s and the account without balance (also given as a 403)."""
    reply = client.chat(ask("hi"), headers={"x-emulator-fault": fault})
    assert (
        reply.status == status and set(reply.json()) == {"error"} and set(reply.json()["error"]) == {"message", "type"}
    )
    assert reply.json()["error"]["type"] == type_ and reply.json()["error"]["message"]
    assert ("retry-after" in reply.headers) is transient
    if type_ == "exceeded_current_quota_error":
        assert "balance" in reply.json()["error"]["message"]


@pytest.mark.slow
def test_fault_error_type_needs_a_status(client):
    assert client.chat(ask("hi"), headers={"x-emulator-fault": "error=rate_limit_reached_error"}).status == 400


@pytest.mark.parametrize("status", [500, 502, 503])
@pytest.mark.slow
def test_fault_server_errors(client, status):
    reply = client.chat(ask("hi"), headers={"x-emulator-fault": f"status={status}"})
    assert reply.status == status and set(reply.json()) == {"error"} and reply.json()["error"]["message"]


@pytest.mark.slow
def test_fault_stream_error(client):
    streamed = client.stream(ask("boom"), headers={"x-emulator-fault": "stream_error=2"})
    assert streamed.complete and not streamed.done
    assert len(streamed.frames) == 3
    overloaded = error("The engine is currently overloaded, please try again later", "engine_overloaded_error")
    assert streamed.chunks[-1] == overloaded


@pytest.mark.slow
def test_fault_cut(client):
    streamed = client.stream(
        ask("cut", stream_options={"include_usage": True}, **NO_THINK),
        headers={"x-emulator-fault": "first_token=5,cut=3"},
    )
    assert not streamed.complete and not streamed.done
    contents = [c["choices"][0]["delta"].get("content") for c in streamed.chunks]
    assert contents[0] == "" and len(contents) == 4 and all(contents[1:])  # role chunk + 3 content chunks
    assert not any(c["choices"][0].get("finish_reason") or "usage" in c for c in streamed.chunks)
    with pytest.raises(http.client.RemoteDisconnected):
        client.chat(ask("cut"), headers={"x-emulator-fault": "cut=3"})


@pytest.mark.slow
def test_fault_malformed_stream(client):
    streamed = client.stream(ask("mal", max_tokens=2, **NO_THINK), headers={"x-emulator-fault": "malformed=1"})
    assert streamed.done
    with pytest.raises(ValueError):
        json.loads(streamed.frames[1])
    assert json.loads(streamed.frames[2])["choices"][0]["delta"]["content"]


@pytest.mark.slow
def test_queued_hang_ends_on_disconnect(client):
    client.control("POST", "faults", {"fault": "hang", "count": 1})
    sock = client.raw_request("/v1/chat/completions", ask("hang"), {})
    try:
        assert client.wait_hanging(1)
        assert client.control("GET", "faults").json()["queued"] == []  # the queued fault was used up
        assert client.chat(ask("not hanging")).status == 200
        sock.settimeout(0.2)
        with pytest.raises(socket.timeout):
            sock.recv(1)
    finally:
        sock.close()
    assert client.wait_hanging(0)


@pytest.mark.slow
def test_control_log_shows_forwarded_headers(client):
    client.chat(ask("what reached the provider"))
    entry = client.control("GET", "requests").json()[-1]
    assert entry["method"] == "POST" and entry["path"] == "/v1/chat/completions"
    assert entry["headers"]["authorization"] == "Bearer demo-key-moonshot"
    assert entry["body"]["messages"][0]["content"] == "what reached the provider"


@pytest.mark.slow
def test_two_emulators_do_not_share_state(client):
    with running("moonshot") as (_, other):
        other.control("POST", "faults", {"fault": "status=500", "count": 3})
        assert client.chat(ask("isolated")).status == 200
        assert other.chat(ask("isolated")).status == 500
        assert len(client.control("GET", "requests").json()) == 1
