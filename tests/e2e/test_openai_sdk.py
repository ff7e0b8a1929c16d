"""The real `openai` SDK against the gateway under uvicorn, with the emulators as providers."""

from __future__ import annotations

import asyncio
import json

import openai
import pytest

from tests.support.emulators import MISTRAL_KEY, MOONSHOT_KEY, EmulatorControl

pytestmark = pytest.mark.slow

HELLO = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say hello to the gateway."}]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


@pytest.fixture(scope="module")
def client(gateway_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway_url + "/v1", api_key="client-key-that-must-not-leak", max_retries=0)


@pytest.fixture(scope="module")
def aclient(gateway_url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gateway_url + "/v1", api_key="client-key", max_retries=0)


@pytest.mark.parametrize("model", ["mistral-medium-3.5", "kimi-k2.6"])
def test_chat_non_streaming(client: openai.OpenAI, model: str) -> None:
    raw = client.chat.completions.with_raw_response.create(model=model, messages=HELLO, max_tokens=20)
    completion = raw.parse()
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content
    assert completion.usage.prompt_tokens > 0 and completion.usage.completion_tokens > 0
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens
    assert raw.headers["x-gateway-model"] == model
    assert raw.headers["x-gateway-provider"] == ("mistral" if model.startswith("mistral") else "moonshot")
    assert raw.headers["x-gateway-region"] == ("eu" if model.startswith("mistral") else "cn")
    assert raw.headers["x-gateway-route-reason"] == "pinned"


@pytest.mark.parametrize("model", ["mistral-medium-3.5", "kimi-k2.6"])
def test_stream_matches_non_stream_and_usage_only_when_asked(client: openai.OpenAI, model: str) -> None:
    whole = client.chat.completions.create(model=model, messages=HELLO, max_tokens=12)
    chunks = list(client.chat.completions.create(model=model, messages=HELLO, max_tokens=12, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert all(c.usage is None for c in chunks), "usage sent although the client did not ask"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.choices[0].finish_reason

    asked = list(
        client.chat.completions.create(
            model=model, messages=HELLO, max_tokens=12, stream=True, stream_options={"include_usage": True}
        )
    )
    with_usage = [c for c in asked if c.usage is not None]
    assert len(with_usage) == 1, "usage must be counted and sent exactly once"
    assert asked[-1] is with_usage[0] and asked[-1].choices == []
    assert asked[-1].usage.prompt_tokens == whole.usage.prompt_tokens
    assert asked[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_auto_model_picks_a_configured_model(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model="auto", messages=HELLO)
    assert raw.headers["x-gateway-model"] == "mistral-medium-3.5"
    assert raw.headers["x-gateway-route-reason"] == "preferred"
    assert raw.parse().choices[0].message.content


def test_aider_style_temperature_zero_reaches_kimi(client: openai.OpenAI, moonshot_log: EmulatorControl) -> None:
    chunks = list(client.chat.completions.create(model="kimi-k2.6", messages=HELLO, temperature=0, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    sent = moonshot_log.last()["body"]
    assert "temperature" not in sent and "top_p" not in sent


def test_continue_style_stream_options_reach_mistral_fixed(client: openai.OpenAI, mistral_log: EmulatorControl) -> None:
    chunks = list(
        client.chat.completions.create(
            model="mistral-medium-3.5",
            messages=HELLO,
            stream=True,
            stream_options={"include_usage": True},
            seed=7,
            max_completion_tokens=9,
            user="someone",
            logprobs=False,
            service_tier="auto",
        )
    )
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens <= 9
    sent = mistral_log.last()["body"]
    assert sent["random_seed"] == 7 and sent["max_tokens"] == 9
    for refused in ("stream_options", "seed", "max_completion_tokens", "user", "logprobs", "service_tier"):
        assert refused not in sent


def test_client_authorization_never_reaches_provider(
    client: openai.OpenAI, mistral_log: EmulatorControl, moonshot_log: EmulatorControl
) -> None:
    client.chat.completions.create(model="mistral-medium-3.5", messages=HELLO)
    client.chat.completions.create(model="kimi-k2.6", messages=HELLO)
    assert mistral_log.last()["headers"]["authorization"] == f"Bearer {MISTRAL_KEY}"
    assert moonshot_log.last()["headers"]["authorization"] == f"Bearer {MOONSHOT_KEY}"
    for log in (mistral_log, moonshot_log):
        assert "client-key-that-must-not-leak" not in json.dumps(log.last())


def test_tool_call_round_trip_with_openai_ids_on_mistral(client: openai.OpenAI, mistral_log: EmulatorControl) -> None:
    first = client.chat.completions.create(
        model="mistral-medium-3.5",
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=[WEATHER_TOOL],
    )
    call = first.choices[0].message.tool_calls[0]
    assert first.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather" and "city" in json.loads(call.function.arguments)
    history = [
        {"role": "user", "content": "What is the weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_abc123XYZ_openai_style",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_abc123XYZ_openai_style", "content": "sunny"},
    ]
    for _ in range(2):  # the same conversation maps to the same ids every turn
        answer = client.chat.completions.create(model="mistral-medium-3.5", messages=history, tools=[WEATHER_TOOL])
        assert answer.choices[0].message.content is not None
    sent = [r["body"]["messages"] for r in mistral_log.requests()[-2:]]
    ids = {m[1]["tool_calls"][0]["id"] for m in sent} | {m[2]["tool_call_id"] for m in sent}
    assert len(ids) == 1 and len(next(iter(ids))) == 9 and next(iter(ids)).isalnum()


def test_streamed_tool_call(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="kimi-k2.6",
            messages=[{"role": "user", "content": "weather in Berlin?"}],
            tools=[WEATHER_TOOL],
            stream=True,
        )
    )
    calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert calls and calls[0].function.name == "get_weather"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"


def test_mistral_thinking_arrays_become_strings(client: openai.OpenAI) -> None:
    whole = client.chat.completions.create(model="mistral-medium-3.5", messages=HELLO, reasoning_effort="high")
    assert isinstance(whole.choices[0].message.content, str) and whole.choices[0].message.content
    chunks = list(
        client.chat.completions.create(model="mistral-medium-3.5", messages=HELLO, reasoning_effort="high", stream=True)
    )
    assert all(isinstance(c.choices[0].delta.content, (str, type(None))) for c in chunks if c.choices)


def test_kimi_cached_tokens_are_where_openai_clients_look(client: openai.OpenAI) -> None:
    history = [{"role": "system", "content": "A long shared system prompt " * 20}, {"role": "user", "content": "one"}]
    client.chat.completions.create(model="kimi-k2.6", messages=history)
    again = client.chat.completions.create(
        model="kimi-k2.6",
        messages=history + [{"role": "assistant", "content": "x"}, {"role": "user", "content": "two"}],
    )
    assert again.usage.prompt_tokens_details.cached_tokens > 0
    assert again.usage.prompt_tokens_details.cached_tokens < again.usage.prompt_tokens


def test_image_parts_reach_a_vision_model(client: openai.OpenAI) -> None:
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    answer = client.chat.completions.create(
        model="mistral-medium-3.5",
        messages=[{"role": "user", "content": [{"type": "text", "text": "What is this?"}, image]}],
    )
    assert answer.choices[0].message.content


def test_response_format_and_stop(client: openai.OpenAI, mistral_log: EmulatorControl) -> None:
    client.chat.completions.create(
        model="mistral-medium-3.5", messages=HELLO, response_format={"type": "json_object"}, stop=["\n\n"], top_p=0.9
    )
    sent = mistral_log.last()["body"]
    assert sent["response_format"] == {"type": "json_object"} and sent["stop"] == ["\n\n"] and sent["top_p"] == 0.9


def test_embeddings_default_base64_and_float(client: openai.OpenAI) -> None:
    result = client.embeddings.create(model="mistral-embed", input=["alpha", "beta"])
    assert [d.index for d in result.data] == [0, 1]
    assert len(result.data[0].embedding) == 1024 and result.data[0].embedding != result.data[1].embedding
    floats = client.embeddings.create(model="mistral-embed", input="alpha", encoding_format="float")
    assert floats.data[0].embedding == pytest.approx(result.data[0].embedding, rel=1e-6)
    assert floats.usage.prompt_tokens > 0


def test_models_list_and_retrieve(client: openai.OpenAI) -> None:
    listing = client.models.list()
    cards = {m.id: m for m in listing.data}
    assert {"auto", "mistral-medium-3.5", "kimi-k2.6", "mistral-embed"} <= set(cards)
    assert cards["auto"].model_extra["context_window"] == 1_048_576
    assert cards["mistral-medium-3.5"].model_extra["context_window"] == 262_144
    assert client.models.retrieve("kimi-k2.6").model_extra["context_length"] == 1_048_576
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


def test_legacy_completion_and_fim(client: openai.OpenAI, mistral_log: EmulatorControl) -> None:
    plain = client.completions.create(model="mistral-medium-3.5", prompt="def add(a, b):", max_tokens=8)
    assert plain.object == "text_completion" and plain.choices[0].text
    fim = client.completions.create(model="codestral", prompt="def add(a, b):\n    ", suffix="\n\nprint(add(1, 2))")
    assert fim.choices[0].text and mistral_log.last()["path"] == "/v1/fim/completions"
    streamed = list(client.completions.create(model="codestral", prompt="x = ", suffix="\n", stream=True))
    assert "".join(c.choices[0].text for c in streamed if c.choices)
    with pytest.raises(openai.BadRequestError) as refused:
        client.completions.create(model="mistral-medium-3.5", prompt="x = ", suffix="\n")
    assert refused.value.body["param"] == "suffix"


def test_async_client_concurrent_streams(aclient: openai.AsyncOpenAI) -> None:
    async def one(index: int) -> str:
        stream = await aclient.chat.completions.create(
            model=["mistral-medium-3.5", "kimi-k2.6"][index % 2],
            messages=[{"role": "user", "content": f"request {index}"}],
            stream=True,
        )
        return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

    async def main() -> list[str]:
        try:
            return await asyncio.gather(*(one(i) for i in range(16)))
        finally:
            await aclient.close()

    texts = asyncio.run(main())
    assert all(texts) and len(set(texts)) > 1
