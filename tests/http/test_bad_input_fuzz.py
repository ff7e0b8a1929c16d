"""Property test: no body, however odd, gets a 5xx from any endpoint; every 4xx is OpenAI-shaped.

Hypothesis generates bodies (deep nesting on both sides of the depth limit, integers beyond 64 bits,
floats, NaN-like tokens and strings, wrong types for every known field, unicode, empty objects,
control fields) and content types, and posts them to every POST endpoint of a real gateway on
127.0.0.1 with the emulators behind it, the admin ones with the master key.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.http.body import MAX_DEPTH
from tests.support.emulators import MISTRAL_KEY, MOONSHOT_KEY
from tests.support.gateways import GatewayFactory
from tests.support.http import Answer, request

pytestmark = pytest.mark.slow

MASTER = "fuzz-master-key-0123456789"
AUTH = {"authorization": f"Bearer {MASTER}"}

# Every field the endpoints, the adapters or litellm know of, so wrong types reach every check.
CHAT_FIELDS = [
    "model",
    "messages",
    "stream",
    "stream_options",
    "temperature",
    "top_p",
    "n",
    "max_tokens",
    "max_completion_tokens",
    "stop",
    "seed",
    "tools",
    "tool_choice",
    "functions",
    "function_call",
    "response_format",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "logprobs",
    "top_logprobs",
    "user",
    "metadata",
    "store",
    "service_tier",
    "parallel_tool_calls",
    "reasoning_effort",
    "prediction",
    "thinking",
    "random_seed",
    "safe_prompt",
    "prompt_mode",
    "modalities",
    "audio",
    "fallbacks",
    "api_base",
    "mock_response",
    "extra_body",
    "headers",
]
COMPLETION_FIELDS = [
    "model",
    "prompt",
    "suffix",
    "stream",
    "stream_options",
    "max_tokens",
    "min_tokens",
    "n",
    "best_of",
    "echo",
    "logprobs",
    "temperature",
    "top_p",
    "stop",
    "seed",
    "user",
]
EMBEDDING_FIELDS = ["model", "input", "dimensions", "encoding_format", "user", "output_dtype"]
TEAM_FIELDS = ["name", "budget_usd", "period", "soft_limit_pct", "regions", "models", "policy"]
KEY_FIELDS = ["team", "name", "budget_usd", "models", "expires_at"]

MODELS = ["kimi-k2.6", "mistral-medium-3.5", "codestral", "mistral-embed", "auto", "", "nope"]
ODD_STRINGS = [
    "NaN",
    "Infinity",
    "-Infinity",
    "1e999",
    "-0",
    "null",
    "",
    " ",
    "\u0000",
    "\u202e",
    "🤖" * 3,
    "a" * 300,
    "monthly",
    "daily",
    "eu",
    "default",
    "text",
    "json_object",
    "function",
    "auto",
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.sampled_from([2**63, 2**63 - 1, -(2**63) - 1, 2**64, 2**64 + 1, 10**30, 0, -1, 1]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    st.sampled_from(ODD_STRINGS),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=10,
)
message = st.fixed_dictionaries(
    {"role": st.one_of(st.sampled_from(["user", "system", "developer", "assistant", "tool", "function"]), json_values)},
    optional={
        "content": st.one_of(
            st.text(max_size=20),
            json_values,
            st.lists(
                st.fixed_dictionaries(
                    {"type": st.sampled_from(["text", "image_url", "x"])},
                    optional={"text": json_values, "image_url": json_values},
                ),
                max_size=3,
            ),
        ),
        "tool_calls": json_values,
        "tool_call_id": json_values,
        "name": json_values,
        "prefix": json_values,
        "reasoning_content": json_values,
        "api_base": st.just("http://127.0.0.1:9/v1"),
    },
)


def fields_over(base: dict[str, Any], names: list[str], extra: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """A working body with some fields replaced or added (any JSON value), or removed."""
    values = {name: json_values for name in names} | extra
    changes = st.dictionaries(st.sampled_from(names), st.just(None), max_size=4).flatmap(
        lambda chosen: st.fixed_dictionaries({name: values[name] for name in chosen})
    )
    removed = st.sets(st.sampled_from(sorted(base)), max_size=2) if base else st.just(frozenset())
    return st.tuples(changes, removed).map(lambda t: {k: v for k, v in {**base, **t[0]}.items() if k not in t[1]})


def deep(depth: int, kind: str) -> str:
    return "[" * depth + "]" * depth if kind == "list" else '{"a":' * depth + "1" + "}" * depth


@st.composite
def deep_bodies(draw: st.DrawFn, base: dict[str, Any]) -> bytes:
    """A working body with one field nested `depth` levels: around the limit, and up to orjson's 1,024."""
    depth = draw(st.one_of(st.integers(MAX_DEPTH - 3, MAX_DEPTH + 3), st.integers(250, 260), st.integers(1000, 1030)))
    field = draw(st.sampled_from(["tools", "metadata", "messages", "response_format", "input", "prompt", "x", "model"]))
    kind = draw(st.sampled_from(["list", "dict"]))
    head = json.dumps({k: v for k, v in base.items() if k != field})[:-1]
    return f'{head}, "{field}": {deep(depth, kind)}}}'.encode()


RAW_ODDITIES = [
    b'{"model": "kimi-k2.6", "messages": [{"role": "user", "content": "hi"}], "temperature": NaN}',
    b'{"model": "kimi-k2.6", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1e999}',
    b'{"model": "kimi-k2.6", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 18446744073709551616}',
    b'{"model": "kimi-k2.6", "messages": [{"role": "user", "content": "\\ud800"}]}',
    b'{"model": "kimi-k2.6", "messages": [{"role": "user", "content": "hi"}]} trailing',
    b'{"model": "kimi-k2.6", "model": 5, "messages": []}',
    b"{}",
    b"[]",
    b"null",
    b"0",
    b'""',
    b"\xef\xbb\xbf{}",
    b"\x00",
    b"{" * 2000,
]
CONTENT_TYPES = [
    "application/json",
    "application/json; charset=utf-8",
    "application/vnd.api+json",
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "",
    "application/JSON",
]


def body_bytes(base: dict[str, Any], names: list[str], extra: dict[str, Any] | None = None) -> st.SearchStrategy[bytes]:
    as_json = fields_over(base, names, extra or {}).map(lambda b: json.dumps(b, ensure_ascii=False).encode())
    return st.one_of(as_json, as_json, as_json, deep_bodies(base), st.sampled_from(RAW_ODDITIES))


HI = [{"role": "user", "content": "hi"}]
CHAT_BASE = {"model": "kimi-k2.6", "messages": HI, "max_tokens": 4}
CHAT_EXTRA = {"model": st.sampled_from(MODELS), "messages": st.one_of(st.lists(message, max_size=3), json_values)}
ENDPOINTS: list[tuple[str, str, st.SearchStrategy[bytes]]] = [
    ("POST", "/v1/chat/completions", body_bytes(CHAT_BASE, CHAT_FIELDS, CHAT_EXTRA)),
    ("POST", "/v1/route/explain", body_bytes(CHAT_BASE, CHAT_FIELDS, CHAT_EXTRA)),
    (
        "POST",
        "/v1/completions",
        body_bytes(
            {"model": "codestral", "prompt": "def f(", "suffix": "1", "max_tokens": 4},
            COMPLETION_FIELDS,
            {"model": st.sampled_from(MODELS)},
        ),
    ),
    (
        "POST",
        "/v1/fim/completions",
        body_bytes(
            {"model": "codestral", "prompt": "def f(", "suffix": "1", "max_tokens": 4},
            COMPLETION_FIELDS,
            {"model": st.sampled_from(MODELS)},
        ),
    ),
    (
        "POST",
        "/v1/embeddings",
        body_bytes({"model": "mistral-embed", "input": "hello"}, EMBEDDING_FIELDS, {"model": st.sampled_from(MODELS)}),
    ),
    ("POST", "/admin/teams", body_bytes({"name": "fuzz-team", "budget_usd": "10"}, TEAM_FIELDS)),
    ("PATCH", "/admin/teams/fuzz-base", body_bytes({"budget_usd": "10"}, TEAM_FIELDS)),
    ("POST", "/admin/keys", body_bytes({"team": "fuzz-base", "name": "k"}, KEY_FIELDS)),
    ("POST", "/admin/reload", body_bytes({}, ["x"])),
]


@pytest.fixture(scope="module")
def url(start_gateway: GatewayFactory) -> str:
    base = start_gateway(master_key=MASTER).url
    created = request(
        base,
        "POST",
        "/admin/teams",
        json.dumps({"name": "fuzz-base"}).encode(),
        {"content-type": "application/json", **AUTH},
    )
    assert created.status == 201, created.body
    return base


def check(answer: Answer, method: str, path: str, body: bytes, content_type: str) -> None:
    where = f"{method} {path} content-type={content_type!r} body={body[:400]!r}"
    assert answer.status < 500, f"{answer.status} for {where}: {answer.body[:400]!r}"
    if answer.status >= 400:
        error = answer.error  # asserts the OpenAI shape {"error": {message, type, param, code}}
        assert isinstance(error["message"], str) and error["message"] and isinstance(error["type"], str), where
    text = answer.body.decode("utf-8", "replace")
    assert MISTRAL_KEY not in text and MOONSHOT_KEY not in text and "Traceback" not in text, where


@pytest.mark.parametrize(("method", "path", "bodies"), ENDPOINTS, ids=[f"{m} {p}" for m, p, _ in ENDPOINTS])
def test_no_body_gets_a_5xx(url: str, method: str, path: str, bodies: st.SearchStrategy[bytes]) -> None:
    @settings(
        max_examples=int(os.environ.get("GATEWAY_FUZZ_EXAMPLES", "40")),
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
    )
    @given(body=bodies, content_type=st.sampled_from(CONTENT_TYPES[:3] * 4 + CONTENT_TYPES[3:]))
    def post(body: bytes, content_type: str) -> None:
        headers = {**AUTH, **({"content-type": content_type} if content_type else {})}
        check(request(url, method, path, body, headers), method, path, body, content_type)

    post()


def test_depth_limit_on_every_endpoint(url: str) -> None:
    """Just past the limit is refused with 400 invalid_json everywhere (admin included); at it, it is not."""
    # POST /admin/reload reads no body at all (so it cannot fail on one); every other endpoint parses it.
    for method, path in [(m, p) for m, p, _ in ENDPOINTS if p != "/admin/reload"]:
        for depth, field in [(MAX_DEPTH, "metadata"), (300, "tools"), (1024 - 1, "metadata")]:
            body = f'{{"model": "kimi-k2.6", "messages": [{{"role": "user", "content": "hi"}}], "{field}": {deep(depth, "list")}}}'
            answer = request(url, method, path, body.encode(), {"content-type": "application/json", **AUTH})
            assert answer.status == 400 and answer.error["code"] == "invalid_json", (
                method,
                path,
                depth,
                answer.body[:200],
            )
        # The body itself is level 1, so a field nested MAX_DEPTH - 1 levels is exactly at the limit.
        at_limit = f'{{"model": "kimi-k2.6", "messages": [{{"role": "user", "content": "hi"}}], "metadata": {deep(MAX_DEPTH - 1, "list")}}}'
        answer = request(url, method, path, at_limit.encode(), {"content-type": "application/json", **AUTH})
        assert answer.status < 500 and not (answer.status == 400 and "nested" in answer.error["message"]), (
            path,
            answer.body[:200],
        )
