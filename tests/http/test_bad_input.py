"""Bad input gets an OpenAI-style error with the right status, never a 500, and reaches no provider."""

from __future__ import annotations

import json

import pytest

from tests.support.emulators import EmulatorControl
from tests.support.gateways import GatewayFactory
from tests.support.http import post_json, request

pytestmark = pytest.mark.slow

CHAT = "/v1/chat/completions"
OK_MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    ("body", "status", "param", "code"),
    [
        (b"{not json", 400, None, "invalid_json"),
        (b"", 400, None, "invalid_json"),
        (b"[1, 2]", 400, None, "invalid_json"),
        (b'"a string"', 400, None, "invalid_json"),
        (
            b'{"messages": [{"role": "user", "content": "\xff\xfe"}], "model": "kimi-k2.6"}',
            400,
            None,
            "invalid_encoding",
        ),
        (json.dumps({"messages": OK_MESSAGES}).encode(), 400, "model", "missing_required_parameter"),
        (json.dumps({"model": 42, "messages": OK_MESSAGES}).encode(), 400, "model", "invalid_type"),
        (json.dumps({"model": "kimi-k2.6"}).encode(), 400, "messages", "missing_required_parameter"),
        (json.dumps({"model": "kimi-k2.6", "messages": "hi"}).encode(), 400, "messages", "invalid_type"),
        (json.dumps({"model": "kimi-k2.6", "messages": []}).encode(), 400, "messages", "empty_array"),
        (
            json.dumps({"model": "kimi-k2.6", "messages": [{"role": "wizard", "content": "x"}]}).encode(),
            400,
            "messages[0].role",
            None,
        ),
        (
            json.dumps({"model": "kimi-k2.6", "messages": [{"role": "user", "content": 5}]}).encode(),
            400,
            "messages[0].content",
            "invalid_type",
        ),
        # An unhashable role was a 500 (found by tests/http/test_bad_input_fuzz.py).
        (json.dumps({"model": "kimi-k2.6", "messages": [{"role": []}]}).encode(), 400, "messages[0].role", None),
        (
            json.dumps({"model": "kimi-k2.6", "messages": [{"role": {"a": 1}, "content": "x"}]}).encode(),
            400,
            "messages[0].role",
            None,
        ),
        (
            json.dumps(
                {
                    "model": "kimi-k2.6",
                    "messages": OK_MESSAGES,
                    "fallbacks": [{"model": "openai/x", "api_base": "http://127.0.0.1:9"}],
                }
            ).encode(),
            400,
            "fallbacks",
            "forbidden_parameter",
        ),
        (
            json.dumps({"model": "kimi-k2.6", "messages": OK_MESSAGES, "litellm_params": {}}).encode(),
            400,
            "litellm_params",
            "forbidden_parameter",
        ),
        (
            json.dumps({"model": "kimi-k2.6", "messages": OK_MESSAGES, "stream": "yes"}).encode(),
            400,
            "stream",
            "invalid_type",
        ),
        (
            json.dumps({"model": "kimi-k2.6", "messages": OK_MESSAGES, "temperature": 5}).encode(),
            400,
            "temperature",
            "invalid_value",
        ),
        (
            json.dumps({"model": "kimi-k2.6", "messages": OK_MESSAGES, "max_tokens": 0}).encode(),
            400,
            "max_tokens",
            "invalid_value",
        ),
        (
            json.dumps({"model": "kimi-k2.6", "messages": OK_MESSAGES, "max_tokens": 10**7}).encode(),
            400,
            "max_tokens",
            "invalid_value",
        ),
        (
            json.dumps({"model": "kimi-k2.6", "messages": OK_MESSAGES, "n": 2}).encode(),
            400,
            "n",
            "unsupported_parameter",
        ),
        (
            json.dumps(
                {"model": "kimi-k2.6", "messages": OK_MESSAGES, "stream_options": {"include_usage": True}}
            ).encode(),
            400,
            "stream_options",
            None,
        ),
        (
            json.dumps({"model": "mistral-medium-3.5", "messages": OK_MESSAGES, "logit_bias": {"1": 2}}).encode(),
            400,
            "logit_bias",
            "unsupported_parameter",
        ),
        (
            json.dumps({"model": "mistral-embed", "messages": OK_MESSAGES}).encode(),
            400,
            "model",
            "unsupported_capability",
        ),
        (
            json.dumps(
                {
                    "model": "codestral",
                    "messages": OK_MESSAGES,
                    "tools": [{"type": "function", "function": {"name": "f"}}],
                }
            ).encode(),
            400,
            "tools",
            "unsupported_capability",
        ),
        (
            json.dumps({"model": "kimi-k2.6", "messages": OK_MESSAGES, "api_base": "http://evil.example/v1"}).encode(),
            400,
            "api_base",
            "forbidden_parameter",
        ),
        (
            json.dumps({"model": "kimi-k2.6", "messages": OK_MESSAGES, "base_url": "http://evil.example/v1"}).encode(),
            400,
            "base_url",
            "forbidden_parameter",
        ),
    ],
)
def test_bad_chat_bodies(
    gateway_url: str,
    mistral_log: EmulatorControl,
    moonshot_log: EmulatorControl,
    body: bytes,
    status: int,
    param: str | None,
    code: str | None,
) -> None:
    answer = request(gateway_url, "POST", CHAT, body, {"content-type": "application/json"})
    assert answer.status == status, answer.body
    error = answer.error
    assert error["param"] == param and error["code"] == code and error["message"]
    assert error["type"] == "invalid_request_error"
    assert mistral_log.requests() == [] and moonshot_log.requests() == []


def test_unknown_model_is_404(gateway_url: str) -> None:
    answer = post_json(gateway_url, CHAT, {"model": "gpt-17", "messages": OK_MESSAGES})
    assert answer.status == 404
    assert answer.error["code"] == "model_not_found" and "gpt-17" in answer.error["message"]


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_wrong_content_type_is_415(gateway_url: str, content_type: str | None) -> None:
    headers = {"content-type": content_type} if content_type else {}
    answer = request(
        gateway_url, "POST", CHAT, json.dumps({"model": "kimi-k2.6", "messages": OK_MESSAGES}).encode(), headers
    )
    assert answer.status == 415 and answer.error["code"] == "unsupported_media_type"


def test_json_with_charset_is_accepted(gateway_url: str) -> None:
    body = json.dumps({"model": "kimi-k2.6", "messages": OK_MESSAGES}).encode()
    answer = request(gateway_url, "POST", CHAT, body, {"content-type": "application/json; charset=utf-8"})
    assert answer.status == 200


def test_body_over_the_limit_is_413(start_gateway: GatewayFactory, moonshot_log: EmulatorControl) -> None:
    url = start_gateway(max_body_bytes=4096).url
    big = json.dumps({"model": "kimi-k2.6", "messages": [{"role": "user", "content": "x" * 5000}]}).encode()
    declared = request(url, "POST", CHAT, big, {"content-type": "application/json"})
    assert declared.status == 413 and declared.error["code"] == "request_too_large"
    chunked = request(url, "POST", CHAT, iter([big[:3000], big[3000:]]), {"content-type": "application/json"})
    assert chunked.status == 413 and chunked.error["code"] == "request_too_large"
    small = request(
        url,
        "POST",
        CHAT,
        json.dumps({"model": "kimi-k2.6", "messages": OK_MESSAGES}).encode(),
        {"content-type": "application/json"},
    )
    assert small.status == 200
    assert len(moonshot_log.requests()) == 1


def test_default_limit_admits_a_million_token_prompt(gateway_url: str, moonshot_log: EmulatorControl) -> None:
    words = "lorem " * 700_000  # about 4 MB: a 1M-token-class prompt
    answer = post_json(
        gateway_url, CHAT, {"model": "kimi-k2.6", "messages": [{"role": "user", "content": words}], "max_tokens": 4}
    )
    assert answer.status == 200, answer.body[:300]
    assert len(moonshot_log.last()["body"]["messages"][0]["content"]) == len(words)


def test_unknown_path_and_method_are_openai_errors(gateway_url: str) -> None:
    missing = request(gateway_url, "GET", "/v1/nothing-here")
    assert missing.status == 404 and missing.error["code"] == "not_found"
    wrong = request(gateway_url, "GET", CHAT)
    assert wrong.status == 405 and wrong.error["code"] == "method_not_allowed"


def test_bad_embeddings_and_completions(gateway_url: str) -> None:
    no_input = post_json(gateway_url, "/v1/embeddings", {"model": "mistral-embed"})
    assert no_input.status == 400 and no_input.error["param"] == "input"
    not_embedding = post_json(gateway_url, "/v1/embeddings", {"model": "kimi-k2.6", "input": "x"})
    assert not_embedding.status == 400 and not_embedding.error["param"] == "model"
    no_prompt = post_json(gateway_url, "/v1/completions", {"model": "codestral"})
    assert no_prompt.status == 400 and no_prompt.error["param"] == "prompt"
    fim_on_chat_model = post_json(
        gateway_url, "/v1/fim/completions", {"model": "kimi-k2.6", "prompt": "a", "suffix": "b"}
    )
    assert fim_on_chat_model.status == 400 and fim_on_chat_model.error["param"] == "suffix"


@pytest.fixture(scope="module")
def locked_url(start_gateway: GatewayFactory) -> str:
    return start_gateway(master_key="gw-master-secret-value").url


class TestMasterKey:
    def test_missing_wrong_and_right_key(self, locked_url: str) -> None:
        url = locked_url
        body = {"model": "kimi-k2.6", "messages": OK_MESSAGES}
        missing = post_json(url, CHAT, body)
        assert missing.status == 401 and missing.error["code"] == "invalid_api_key"
        wrong = post_json(url, CHAT, body, {"authorization": "Bearer gw-master-secret-valuf"})
        assert wrong.status == 401 and wrong.error["code"] == "invalid_api_key"
        assert "gw-master" not in wrong.body.decode()
        right = post_json(url, CHAT, body, {"authorization": "Bearer gw-master-secret-value"})
        assert right.status == 200
        via_x_api_key = post_json(url, CHAT, body, {"x-api-key": "gw-master-secret-value"})
        assert via_x_api_key.status == 200

    def test_models_need_the_key_but_health_does_not(self, locked_url: str) -> None:
        url = locked_url
        assert request(url, "GET", "/v1/models").status == 401
        assert (
            request(url, "GET", "/v1/models", headers={"authorization": "Bearer gw-master-secret-value"}).status == 200
        )
        assert request(url, "GET", "/healthz").status == 200
        ready = request(url, "GET", "/readyz")
        assert ready.status == 200 and ready.json()["auth"] == "master_key"
