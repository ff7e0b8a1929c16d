"""No client field can move a request, carry its key elsewhere, add headers or skip the provider.

Every provider kind (mistral, moonshot, openai-compatible, litellm) and every endpoint it serves,
streaming and not, against a real gateway on 127.0.0.1 with the emulators behind it and a tripwire:
a listener on 127.0.0.1 that the hostile bodies point at (`fallbacks[].api_base`, `api_base`,
`base_url`, ...). Each hostile body must get a 400 naming the field, the tripwire must see no
connection, the provider must not be called, and no provider key may appear in any answer.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from gateway.http.servers import ThreadedServer
from tests.support.emulators import MISTRAL_KEY, MOONSHOT_KEY, EmulatorControl
from tests.support.gateways import GatewayFactory
from tests.support.http import Answer, post_json

KEYS = (MISTRAL_KEY, MOONSHOT_KEY)
HI = [{"role": "user", "content": "Say hello"}]


class Tripwire:
    """A TCP listener on 127.0.0.1 that must never be reached: it records and drops every connection.

    The connection is recorded before it is closed, and a gateway that had connected would only
    answer after seeing the close, so a record exists by the time the answer arrives.
    """

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.connections: list[tuple[str, int]] = []
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, address = self.sock.accept()
            except OSError:
                return  # closed
            self.connections.append(address)
            conn.close()

    def close(self) -> None:
        self._closed.set()
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._thread.join(timeout=5)


@pytest.fixture(scope="module")
def tripwire() -> Iterator[Tripwire]:
    wire = Tripwire()
    yield wire
    wire.close()
    assert wire.connections == [], f"something connected to the tripwire: {wire.connections}"


@pytest.fixture(scope="module")
def refused_port() -> Iterator[int]:
    """A port bound but not listening: connecting to it is refused at once (nothing else can take it)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    yield sock.getsockname()[1]
    sock.close()


@pytest.fixture(scope="module")
def url(
    start_gateway: GatewayFactory,
    mistral: ThreadedServer,
    moonshot: ThreadedServer,
    refused_port: int,
    tmp_path_factory: pytest.TempPathFactory,
) -> str:
    path = tmp_path_factory.mktemp("isolation") / "catalog.yaml"
    price = "price: {input: '1', output: '2'}"
    path.write_text(
        "providers:\n"
        "  - {name: mistral, kind: mistral, region: eu, api_key_env: MISTRAL_API_KEY, base_url_env: MISTRAL_API_BASE}\n"
        "  - {name: moonshot, kind: moonshot, region: cn, api_key_env: MOONSHOT_API_KEY, base_url_env: MOONSHOT_API_BASE}\n"
        f"  - {{name: oc-chat, kind: openai-compatible, region: global, base_url: '{moonshot.url}/v1', api_key_env: MOONSHOT_API_KEY}}\n"
        f"  - {{name: oc-embed, kind: openai-compatible, region: global, base_url: '{mistral.url}/v1', api_key_env: MISTRAL_API_KEY}}\n"
        f"  - {{name: via-litellm, kind: litellm, litellm_provider: openai, region: cn, base_url: '{moonshot.url}/v1', api_key_env: MOONSHOT_API_KEY}}\n"
        f"  - {{name: dead-litellm, kind: litellm, litellm_provider: openai, region: cn, base_url: 'http://127.0.0.1:{refused_port}/v1', api_key_env: MOONSHOT_API_KEY}}\n"
        "models:\n"
        f"  - {{name: mistral-medium-3.5, provider: mistral, upstream_model: mistral-medium-3.5, context_window: 262144, max_output_tokens: 8192, {price}, capabilities: [chat, tools]}}\n"
        f"  - {{name: codestral, provider: mistral, upstream_model: codestral-latest, context_window: 262144, max_output_tokens: 8192, {price}, capabilities: [chat, fim]}}\n"
        f"  - {{name: mistral-embed, provider: mistral, upstream_model: mistral-embed, context_window: 8192, max_output_tokens: 0, {price}, capabilities: [embeddings]}}\n"
        f"  - {{name: kimi-k2.6, provider: moonshot, upstream_model: kimi-k2.6, context_window: 1048576, max_output_tokens: 8192, {price}, capabilities: [chat, tools], fixed_sampling: true}}\n"
        f"  - {{name: kimi-oc, provider: oc-chat, upstream_model: kimi-k2-0905-preview, context_window: 262144, max_output_tokens: 8192, {price}, capabilities: [chat, tools]}}\n"
        f"  - {{name: embed-oc, provider: oc-embed, upstream_model: mistral-embed, context_window: 8192, max_output_tokens: 0, {price}, capabilities: [embeddings]}}\n"
        f"  - {{name: kimi-litellm, provider: via-litellm, upstream_model: kimi-k2-turbo-preview, context_window: 262144, max_output_tokens: 8192, {price}, capabilities: [chat, tools]}}\n"
        f"  - {{name: kimi-dead, provider: dead-litellm, upstream_model: kimi-k2-turbo-preview, context_window: 262144, max_output_tokens: 8192, {price}, capabilities: [chat]}}\n"
    )
    return start_gateway(config=path).url


CHAT, COMPLETIONS, FIM, EMBEDDINGS = "/v1/chat/completions", "/v1/completions", "/v1/fim/completions", "/v1/embeddings"

# (model, endpoint, stream, a body that works, which emulator serves it)
CASES = [
    ("mistral-medium-3.5", CHAT, False, {"messages": HI}, "mistral"),
    ("mistral-medium-3.5", CHAT, True, {"messages": HI}, "mistral"),
    ("codestral", FIM, False, {"prompt": "def f(", "suffix": "return 1"}, "mistral"),
    ("codestral", FIM, True, {"prompt": "def f(", "suffix": "return 1"}, "mistral"),
    ("codestral", COMPLETIONS, False, {"prompt": "def f(", "suffix": "return 1"}, "mistral"),
    ("mistral-embed", EMBEDDINGS, False, {"input": "hello"}, "mistral"),
    ("kimi-k2.6", CHAT, False, {"messages": HI}, "moonshot"),
    ("kimi-k2.6", CHAT, True, {"messages": HI}, "moonshot"),
    ("kimi-k2.6", COMPLETIONS, True, {"prompt": "Say hello"}, "moonshot"),
    ("kimi-oc", CHAT, False, {"messages": HI}, "moonshot"),
    ("kimi-oc", CHAT, True, {"messages": HI}, "moonshot"),
    ("kimi-oc", COMPLETIONS, False, {"prompt": "Say hello"}, "moonshot"),
    ("embed-oc", EMBEDDINGS, False, {"input": "hello"}, "mistral"),
    ("kimi-litellm", CHAT, False, {"messages": HI}, "moonshot"),
    ("kimi-litellm", CHAT, True, {"messages": HI}, "moonshot"),
    ("kimi-litellm", COMPLETIONS, True, {"prompt": "Say hello"}, "moonshot"),
]


def hostile_fields(tripwire: Tripwire) -> dict[str, Any]:
    """Fields that move, re-key, re-head or short-circuit a request in litellm or an HTTP client."""
    elsewhere = tripwire.url + "/v1"
    return {
        "fallbacks": [{"model": "openai/x", "api_base": elsewhere, "api_key": "sk-attacker"}],
        "api_base": elsewhere,
        "base_url": elsewhere,
        "api_key": "sk-attacker",
        "api_version": "2024-01-01",
        "headers": {"Authorization": "Bearer sk-attacker", "Host": "evil.example"},
        "extra_headers": {"X-Injected": "1"},
        "extra_body": {"api_base": elsewhere},
        "extra_query": {"redirect": elsewhere},
        "mock_response": "forged answer",
        "mock_tool_calls": [{"id": "x", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
        "mock_timeout": True,
        "deployment_id": "x",
        "custom_llm_provider": "openai",
        "user_api_key": "sk-attacker",
        "user_api_key_hash": "x",
        "litellm_params": {"api_base": elsewhere},
        "litellm_call_id": "x",
        "litellm_logging_obj": "x",
        "model_list": [{"model_name": "x", "litellm_params": {"model": "openai/x", "api_base": elsewhere}}],
        "context_window_fallback_dict": {"x": "openai/x"},
        "timeout": 0.001,
        "num_retries": 50,
        "max_retries": 50,
        "client": "x",
        "callbacks": ["x"],
        "success_callback": ["x"],
        "caching": True,
        "cache": {"no-cache": True},
        "organization": "org-attacker",
        "input_cost_per_token": 0,
        "proxy_server_request": {"url": elsewhere},
        "aws_access_key_id": "x",
        "vertex_credentials": "x",
    }


def nested_hostile_fields(tripwire: Tripwire) -> list[str]:
    return [
        "api_base",
        "api_key",
        "headers",
        "extra_headers",
        "mock_response",
        "litellm_params",
        "base_url",
        "fallbacks",
    ]


def body_for(model: str, stream: bool, base: dict[str, Any], **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, **json.loads(json.dumps(base)), **extra}
    if stream:
        body["stream"] = True
    if "input" not in body:
        body.setdefault("max_tokens", 8)
    return body


def no_secret(answer: Answer) -> None:
    text = answer.body.decode("utf-8", "replace")
    for key in KEYS:
        assert key not in text, "a provider key reached the client"


def refused(answer: Answer, param: str, name: str) -> None:
    assert answer.status == 400, (param, answer.status, answer.body[:300])
    error = answer.error
    assert error["param"] == param, (param, error)
    assert name in error["message"] and error["type"] == "invalid_request_error", error
    no_secret(answer)


@pytest.mark.parametrize(("model", "path", "stream", "base", "emulator"), CASES)
@pytest.mark.slow
def test_hostile_fields_are_refused_and_reach_nobody(
    url: str,
    tripwire: Tripwire,
    mistral_log: EmulatorControl,
    moonshot_log: EmulatorControl,
    model: str,
    path: str,
    stream: bool,
    base: dict[str, Any],
    emulator: str,
) -> None:
    log = mistral_log if emulator == "mistral" else moonshot_log
    # The control: this very body works, reaches the emulator, and carries the gateway's key only.
    ok = post_json(url, path, body_for(model, stream, base))
    assert ok.status == 200, ok.body[:300]
    no_secret(ok)
    assert len(log.requests()) == 1
    log.reset()

    for name, value in hostile_fields(tripwire).items():
        answer = post_json(url, path, body_for(model, stream, base, **{name: value}))
        refused(answer, name, name)
    if "messages" in base:
        for name in nested_hostile_fields(tripwire):
            value = hostile_fields(tripwire)[name]
            messages = [{**HI[0], name: value}]
            answer = post_json(url, path, body_for(model, stream, base, messages=messages))
            refused(answer, f"messages[0].{name}", name)
            # Inside a content part as well.
            parts = [{"role": "user", "content": [{"type": "text", "text": "hi", name: value}]}]
            answer = post_json(url, path, body_for(model, stream, base, messages=parts))
            refused(answer, f"messages[0].content[0].{name}", name)
    assert log.requests() == [], "a refused body reached the provider"
    assert tripwire.connections == [], "a refused body reached the tripwire"


def test_the_tripwire_notices_a_connection(tripwire: Tripwire) -> None:
    """The check above could fail: a connection to the tripwire is recorded before it is dropped."""
    probe = Tripwire()
    try:
        with socket.create_connection(("127.0.0.1", probe.port), timeout=5) as conn:
            assert conn.recv(1) == b""  # the tripwire closed it, so it was accepted and recorded
        assert len(probe.connections) == 1
    finally:
        probe.close()
    assert tripwire.connections == []


@pytest.mark.parametrize("model", ["mistral-medium-3.5", "kimi-k2.6", "kimi-oc", "kimi-litellm"])
@pytest.mark.slow
def test_hints_are_dropped_and_known_twins_translated(
    url: str, mistral_log: EmulatorControl, moonshot_log: EmulatorControl, model: str
) -> None:
    """Benign OpenAI fields still work on every kind: what reaches the provider is only its own fields."""
    log = mistral_log if model.startswith("mistral") else moonshot_log
    body = {
        "model": model,
        "max_completion_tokens": 8,
        "user": "u-1",
        "metadata": {"k": "v"},
        "store": False,
        "functions": [{"name": "f", "parameters": {"type": "object", "properties": {}}}],
        # The developer role (an OpenAI one), except on kimi-oc: that openai-compatible provider forwards roles as
        # they are, and its server here (the Moonshot emulator) refuses `developer` as Moonshot does.
        "messages": [
            {"role": "system" if model == "kimi-oc" else "developer", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}]},
        ],
    }
    answer = post_json(url, CHAT, body)
    assert answer.status == 200, answer.body[:300]
    sent = log.last()["body"]
    assert "cache_control" not in sent["messages"][1]["content"][0]
    if model == "kimi-oc":  # OpenAI's own parameters and roles, forwarded as they are
        assert sent["metadata"] == {"k": "v"} and sent["store"] is False and sent["messages"][0]["role"] == "system"
        assert sent["max_completion_tokens"] == 8
        assert sent["functions"][0]["name"] == "f"
        return
    # litellm reads `metadata` as its own and Moonshot lacks it; Mistral takes it (mistralai 3.7.0
    # ChatCompletionRequest.metadata, providers.md), in the body it sends to its one configured URL. None has `store`.
    assert "store" not in sent
    if model.startswith("mistral"):
        assert sent["metadata"] == {"k": "v"}
    else:
        assert "metadata" not in sent
    # Mistral and Moonshot refuse the developer role (the adapter sends system; litellm translates it itself).
    assert sent["messages"][0]["role"] == "system"
    assert "functions" not in sent and sent["tools"][0]["function"]["name"] == "f"
    if model.startswith("mistral"):  # Mistral's name for it
        assert "max_completion_tokens" not in sent and sent["max_tokens"] == 8
    else:  # Moonshot documents max_tokens as deprecated for max_completion_tokens; litellm sends OpenAI's name
        assert "max_tokens" not in sent and sent["max_completion_tokens"] == 8


@pytest.mark.slow
def test_litellm_failures_never_leak_tracebacks_paths_or_keys(url: str, moonshot_log: EmulatorControl) -> None:
    """litellm's exception text (tracebacks, file paths, request details) never reaches a client."""
    answers = [post_json(url, CHAT, {"model": "kimi-dead", "messages": HI})]  # connection refused
    answers.append(post_json(url, CHAT, {"model": "kimi-dead", "messages": HI, "stream": True}))
    for status in (400, 401, 404, 429, 500, 503):
        moonshot_log.fault(f"status={status}", count=5)  # the attempt and any retries
        answers.append(post_json(url, CHAT, {"model": "kimi-litellm", "messages": HI}))
        moonshot_log.reset()
    for answer in answers:
        assert answer.status >= 400
        error = answer.error
        text = answer.body.decode()
        for leak in ("Traceback", ".py", 'File "', "litellm.", "site-packages", "/work/", *KEYS):
            assert leak not in text, (leak, text)
        assert error["message"].startswith(("kimi", "dead-litellm", "via-litellm", "cannot reach")), error
    assert answers[0].status == 502 and answers[0].error["code"] == "upstream_unreachable"
    assert [a.status for a in answers[2:]] == [400, 502, 400, 429, 502, 503]
    assert answers[2].error["message"] == "via-litellm returned 400"
