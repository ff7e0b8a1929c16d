"""Token counting: the estimate against Tekken, when exact counting happens, images and tools,
calibration from reported usage, and offline tokenizer loading. No timing assertions (see
tests/bench/tokens_bench.py)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import threading

import orjson
import pytest

import gateway.tokens.counter as counter_module
from gateway.catalog import ModelConfig, Price
from gateway.tokens import FAMILIES, Count, TokenCounter, estimate, family_of
from gateway.tokens.heuristic import collect
from gateway.tokens.vocab import (
    O200K_PATTERN,
    Lazy,
    TokenizerUnavailable,
    count_texts,
    load_o200k,
    load_tekken,
    split_text,
)
from tests.support import ROOT
from tests.support.token_texts import TEXTS, code, mixed, prose


def model(name: str, provider: str = "p", window: int = 262_144) -> ModelConfig:
    return ModelConfig(
        name=name,
        provider=provider,
        upstream_model=name,
        context_window=window,
        max_output_tokens=8192,
        price=Price(input=1, output=1),
    )


MISTRAL = model("mistral-medium-3.5")
KIMI = model("kimi-k2.6", window=1_048_576)
OTHER = model("gpt-x")


def chat(text: str, system: str = "You are a helpful assistant.") -> dict:
    return {"model": "m", "messages": [{"role": "system", "content": system}, {"role": "user", "content": text}]}


@pytest.fixture(scope="module")
def tekken():
    return load_tekken()


@pytest.fixture(scope="module")
def o200k():
    return load_o200k()


@pytest.fixture
def counter() -> TokenCounter:
    return TokenCounter()


# -- the estimate ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(TEXTS))
@pytest.mark.parametrize("size", [3_000, 60_000])
def test_estimate_within_band_of_tekken(kind: str, size: int, tekken) -> None:
    body = chat(TEXTS[kind](size))
    exact = count_texts(tekken, collect(body).texts) + collect(body).overhead(FAMILIES["mistral"])
    ratio = estimate(body) / exact
    assert 0.8 <= ratio <= 1.2, f"{kind}: estimate/Tekken = {ratio:.3f}"


def test_estimate_counts_system_prompt_tools_images_and_other_bodies() -> None:
    base = chat("What is the weather in Paris?", system="")
    with_system = chat("What is the weather in Paris?", system=prose(2000))
    assert estimate(with_system) - estimate(base) > 300
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": prose(400),
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    assert estimate({**base, "tools": tools}) - estimate(base) > 100
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 100_000}}
    with_images = {
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "What is the weather in Paris?"}, image, image]}
        ]
    }
    text_only = {"messages": [{"role": "user", "content": [{"type": "text", "text": "What is the weather in Paris?"}]}]}
    for family in ("mistral", "kimi", "other"):  # the base64 payload is never counted as text
        assert estimate(with_images, family) - estimate(text_only, family) == 2 * FAMILIES[family].image
    low = {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "low"}}
    assert estimate({"messages": [{"role": "user", "content": [low]}]}, "other") == FAMILIES["other"].image_low + 4 + 3
    calls = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "a1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": json.dumps({"city": "Paris"})},
            }
        ],
    }
    assert estimate({"messages": [*base["messages"], calls]}) - estimate(base) > 10
    assert estimate({"prompt": prose(4000), "suffix": code(4000)}) > 1500  # FIM
    assert estimate({"input": [prose(2000), prose(2000)]}) > 600  # embeddings
    assert estimate({}) == 1 and estimate({"messages": "nonsense"}) == 1


def test_estimate_of_a_4mb_body_is_about_a_million_tokens(tekken) -> None:
    body = {
        "messages": [{"role": "user" if i % 2 else "assistant", "content": mixed(4000, seed=i)} for i in range(1000)]
    }
    assert len(orjson.dumps(body)) > 4_000_000
    ratio = estimate(body) / (count_texts(tekken, collect(body).texts) + 3 * 1000)
    assert 0.8 <= ratio <= 1.2


# -- tokenizers --------------------------------------------------------------------------------------


def test_tekken_matches_mistral_common(tekken) -> None:
    from mistral_common.protocol.instruct.request import ChatCompletionRequest
    from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

    from gateway.tokens.vocab import tekken_path

    reference = MistralTokenizer.from_file(str(tekken_path()))
    raw = reference.instruct_tokenizer.tokenizer
    for kind, make in TEXTS.items():
        text = make(5000)
        offset = raw.num_special_tokens
        assert [t + offset for t in tekken.encode_ordinary(text)] == raw.encode(text, bos=False, eos=False), kind
    # The chat template (v3): our text + overhead count within a few percent of mistral_common's.
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather in a city.",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
            },
        }
    ]
    messages = [{"role": "system", "content": prose(500)}]
    for i in range(6):
        messages.append({"role": "user", "content": TEXTS[sorted(TEXTS)[i % 5]](800)})
        messages.append(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": f"call{i:05d}",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": json.dumps({"city": "Paris"})},
                    }
                ],
            }
        )
        messages.append(
            {
                "role": "tool",
                "tool_call_id": f"call{i:05d}",
                "name": "get_weather",
                "content": json.dumps({"temp": 20 + i}),
            }
        )
        messages.append({"role": "assistant", "content": prose(300)})
    messages.append({"role": "user", "content": "Thanks."})
    expected = len(reference.encode_chat_completion(ChatCompletionRequest(messages=messages, tools=tools)).tokens)
    body = {"messages": messages, "tools": tools}
    counted = TokenCounter().count(body, MISTRAL, "mistral", expected)  # limit = the truth: straddled
    assert counted.method == "tekken" and counted.exact
    assert 0.99 <= counted.basis / expected <= 1.05, (counted.basis, expected)
    assert counted.upper >= expected


def test_o200k_is_tiktokens_o200k_base(o200k, monkeypatch) -> None:
    import tiktoken_ext.openai_public as public

    monkeypatch.setattr(
        public, "load_tiktoken_bpe", lambda *a, **k: {}
    )  # no download: just the constructor's arguments
    spec = public.o200k_base()
    assert spec["pat_str"] == O200K_PATTERN == o200k._pat_str
    assert spec["special_tokens"] == o200k._special_tokens
    assert o200k.n_vocab == 200_019
    assert len(o200k.encode_ordinary("hello world")) == 2
    assert len(o200k.encode_ordinary("1234567")) == 3  # digits in groups of three (Tekken: one each)


@pytest.mark.slow
def test_offline_load_in_a_subprocess_without_network() -> None:
    script = """
import json, socket, sys
def refuse(*a, **k):
    raise OSError("network used")
socket.socket.connect = refuse
socket.create_connection = refuse
socket.getaddrinfo = refuse
from gateway.tokens import TokenCounter
counter = TokenCounter()
loaded = {name: lazy.loaded for name, lazy in (("tekken", counter.tekken), ("o200k", counter.o200k))}
seconds = counter.preload()
print(json.dumps({"before": loaded, "seconds": seconds, "hello": len(counter.o200k.get().encode_ordinary("hello world")),
                  "modules": sorted(m for m in ("litellm", "mistral_common", "requests") if m in sys.modules)}))
"""
    env = {
        **os.environ,
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "HTTP_PROXY": "http://127.0.0.1:9",
        "https_proxy": "http://127.0.0.1:9",
        "http_proxy": "http://127.0.0.1:9",
        "no_proxy": "",
        "NO_PROXY": "",
        "TIKTOKEN_CACHE_DIR": "/nonexistent",
    }
    done = subprocess.run([sys.executable, "-c", script], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["before"] == {"tekken": False, "o200k": False}  # building the counter loads nothing
    assert all(isinstance(s, float) for s in result["seconds"].values())
    assert result["hello"] == 2
    assert result["modules"] == []  # neither litellm nor mistral_common is imported


@pytest.mark.parametrize("kind", ["mixed", "json", "cjk"])
def test_long_texts_are_split_without_changing_the_count(kind: str, tekken, o200k) -> None:
    text = TEXTS[kind](700_000)
    pieces = split_text(text, 50_000)
    assert "".join(pieces) == text and len(pieces) > 10
    for encoding in (tekken, o200k):
        whole = len(encoding.encode_ordinary(text))
        assert sum(len(encoding.encode_ordinary(p)) for p in pieces) == whole


def test_lazy_loads_once_across_threads() -> None:
    calls = []

    def loader():
        calls.append(1)
        return load_o200k()

    lazy = Lazy(loader)
    threads = [threading.Thread(target=lazy.get) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == [1] and lazy.loaded and lazy.load_seconds is not None


# -- counting: when exact, which method ---------------------------------------------------------------


def test_family_of() -> None:
    assert family_of(model("anything"), "mistral") == "mistral"
    assert family_of(model("anything"), "moonshot") == "kimi"
    for name in ("codestral-latest", "magistral-medium", "devstral-small", "mistral-large"):
        assert family_of(model(name), "litellm") == "mistral"
    assert family_of(model("kimi-k2.6"), "openai-compatible") == "kimi"
    assert family_of(model("gpt-x"), "openai-compatible") == "other"


def test_exact_counting_only_near_the_boundary(counter: TokenCounter) -> None:
    body = chat(mixed(40_000))
    exact = counter.count(body, MISTRAL, "mistral", 0)
    assert exact.method == "estimate" and not exact.exact  # far over: no tokenizer needed
    assert not counter.tekken.loaded
    far_above = counter.count(body, MISTRAL, "mistral", 10 * exact.tokens)
    assert far_above.method == "estimate" and far_above.fits(10 * exact.tokens)
    near = counter.count(body, MISTRAL, "mistral", exact.tokens)
    assert near.method == "tekken" and near.exact and counter.tekken.loaded
    assert near.basis == count_texts(counter.tekken.get(), collect(body).texts) + 2 * 3 + 1
    assert counter.count(body, MISTRAL, "mistral", near.upper).fits(near.upper)

    kimi = counter.count(body, KIMI, "moonshot", exact.tokens)
    assert kimi.method == "o200k" and not kimi.exact and kimi.margin > 0
    assert counter.count(body, KIMI, "moonshot", 10 * exact.tokens).method == "estimate"
    other = counter.count(body, OTHER, "openai-compatible", exact.tokens)
    assert other.method == "estimate" and other.margin > 0


def test_images_and_tools_in_exact_counts(counter: TokenCounter) -> None:
    tools = [
        {
            "type": "function",
            "function": {"name": "search", "description": prose(3000), "parameters": {"type": "object"}},
        }
    ]
    image = {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64," + "B" * 50_000}}
    body = {"messages": [{"role": "user", "content": [{"type": "text", "text": prose(8000)}, image]}], "tools": tools}
    rough = counter.count(body, MISTRAL, "mistral", 0)
    near = counter.count(body, MISTRAL, "mistral", rough.tokens)
    assert near.method == "tekken" and near.fixed == FAMILIES["mistral"].image
    tools_tokens = len(counter.tekken.get().encode_ordinary(json.dumps(tools)))
    text_tokens = len(counter.tekken.get().encode_ordinary(prose(8000)))
    assert near.tokens == text_tokens + tools_tokens + 3 + 1 + FAMILIES["mistral"].image


def test_count_async_encodes_large_texts_in_a_thread(counter: TokenCounter, monkeypatch) -> None:
    seen: list[int] = []
    real = counter_module.count_texts

    def spy(*args, **kwargs):
        seen.append(threading.get_ident())
        return real(*args, **kwargs)

    monkeypatch.setattr(counter_module, "count_texts", spy)
    big, small = chat(mixed(200_000)), chat(prose(2000))

    async def run() -> tuple[Count, Count, Count, int]:
        loop_thread = threading.get_ident()
        first = await counter.count_async(big, MISTRAL, "mistral", estimate(big))
        rough = counter.count(small, MISTRAL, "mistral", 0)
        second = await counter.count_async(small, MISTRAL, "mistral", rough.tokens)  # loaded, small: inline
        third = await counter.count_async(small, MISTRAL, "mistral", 10**9)  # far: no tokenizer
        return first, second, third, loop_thread

    first, second, third, loop_thread = asyncio.run(run())
    assert first.method == second.method == "tekken" and third.method == "estimate"
    assert len(seen) == 2 and seen[0] != loop_thread and seen[1] == loop_thread
    assert first == counter.count(big, MISTRAL, "mistral", estimate(big))


def test_unavailable_tokenizer_falls_back_to_the_estimate(counter: TokenCounter) -> None:
    def missing():
        raise TokenizerUnavailable("not installed")

    counter.tekken = Lazy(missing)
    body = chat(prose(20_000))
    rough = counter.count(body, MISTRAL, "mistral", 0)
    assert counter.count(body, MISTRAL, "mistral", rough.tokens) == rough
    assert counter.count(body, MISTRAL, "mistral", rough.tokens) == rough  # the failure is remembered


# -- calibration --------------------------------------------------------------------------------------


def test_calibration_moves_the_kimi_ratio_and_margin(counter: TokenCounter) -> None:
    body = chat(prose(30_000))
    rough = counter.count(body, KIMI, "moonshot", 0)
    before = counter.count(body, KIMI, "moonshot", rough.tokens)
    assert before.method == "o200k" and before.tokens == before.basis  # default ratio 1.0
    default_hi = counter.error_stats("kimi-k2.6", "o200k")["hi"]
    assert default_hi == pytest.approx(0.10)

    rng = random.Random(5)
    for i in range(40):  # Kimi reports 20% more than o200k, tightly
        counter.observe("kimi-k2.6", before, round(before.basis * rng.uniform(1.19, 1.21)))
        if i == 3:
            assert 1.0 < counter.error_stats("kimi-k2.6", "o200k")["ratio"] < 1.2  # moving, not there yet
    stats = counter.error_stats("kimi-k2.6", "o200k")
    assert stats["n"] == 40 and stats["ratio"] == pytest.approx(1.2, abs=0.01)
    assert stats["p50"] == pytest.approx(1.2, abs=0.01) and stats["p99"] <= 1.21
    assert stats["hi"] < default_hi  # consistent ratios narrow the margin
    after = counter.count(body, KIMI, "moonshot", round(rough.tokens * 1.2))
    assert after.method == "o200k" and after.tokens == pytest.approx(before.basis * 1.2, rel=0.01)
    assert after.margin < before.margin * 1.2

    for _ in range(60):  # then they start to scatter: the margin widens to cover the 99th percentile
        counter.observe("kimi-k2.6", before.basis, round(before.basis * rng.uniform(1.0, 1.6)), method="o200k")
    wide = counter.error_stats("kimi-k2.6", "o200k")
    assert wide["hi"] > default_hi and wide["ratio"] * (1 + wide["hi"]) >= wide["p99"] - 1e-9


def test_observe_skips_fixed_costs_and_nonsense(counter: TokenCounter) -> None:
    with_image = Count(tokens=5000, exact=False, method="estimate", margin=100, basis=1000, fixed=4000)
    counter.observe("m", with_image, 4500)
    counter.observe("m", 0, 100)
    counter.observe("m", 100, 0)
    counter.observe("m", 100, 10_000)  # ratio 100: not tokenizer error
    assert counter.error_stats("m")["n"] == 0
    counter.observe("m", 100, 110)
    stats = counter.error_stats("m")
    assert stats["n"] == 1 and stats["mean"] == pytest.approx(1.1) and stats["hi"] >= 0.2  # no narrowing on 1 sample
    assert ("m", "estimate") in counter.tracked()


def test_estimate_calibration_tightens_the_estimate_band(counter: TokenCounter) -> None:
    body = chat(prose(20_000))
    rough = counter.count(body, OTHER, "openai-compatible", 0)
    for _ in range(30):
        counter.observe("gpt-x", rough, round(rough.basis * 0.9))
    calibrated = counter.count(body, OTHER, "openai-compatible", 0)
    assert calibrated.tokens == pytest.approx(rough.basis * 0.9, rel=0.01)
    assert calibrated.margin < rough.margin / 5


def test_odd_json_values_do_not_break_counting(counter: TokenCounter) -> None:
    body = {
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"type": "function", "function": {"name": "f", "max": 2**70}}],
    }
    assert estimate(body) > estimate({"messages": body["messages"]})
    assert counter.count(body, MISTRAL, "mistral", estimate(body)).method == "tekken"
    assert counter.count(body, KIMI, "moonshot", estimate(body, "kimi")).method == "o200k"
