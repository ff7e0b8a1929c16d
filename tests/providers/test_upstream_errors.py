"""Provider failures become clear OpenAI-style errors; cut streams and gone clients are handled."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.support import sse
from tests.support.emulators import EmulatorControl
from tests.support.gateways import GatewayFactory
from tests.support.http import post_json, read_request, request

pytestmark = pytest.mark.slow

CHAT = "/v1/chat/completions"
HELLO = [{"role": "user", "content": "hello"}]

SHORT_TIMEOUTS = """
providers:
  - {name: mistral, kind: mistral, region: eu, api_key_env: MISTRAL_API_KEY, base_url_env: MISTRAL_API_BASE,
     timeouts: {connect: 2, first_byte: 1, total: 5}}
  - {name: moonshot, kind: moonshot, region: cn, api_key_env: MOONSHOT_API_KEY, base_url_env: MOONSHOT_API_BASE,
     timeouts: {connect: 2, first_byte: 1, total: 5}}
models:
  - {name: mistral-medium-3.5, provider: mistral, upstream_model: mistral-medium-3.5, context_window: 262144,
     max_output_tokens: 32768, price: {input: "1.5", output: "7.5"}, capabilities: [chat, tools, vision]}
  - {name: kimi-k2.6, provider: moonshot, upstream_model: kimi-k2.6, context_window: 1048576,
     max_output_tokens: 32768, price: {input: "0.6", output: "1.8"}, capabilities: [chat, tools], fixed_sampling: true}
"""


@pytest.fixture(scope="module")
def url(start_gateway: GatewayFactory, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("cfg") / "short.yaml"
    path.write_text(SHORT_TIMEOUTS)
    # These tests are about mapping each failure; circuit breaking (tested in tests/routing/test_failover.py) would mix them up.
    return start_gateway(config=path, circuit_failures=10_000).url


@pytest.mark.parametrize(
    ("fault", "status", "code"),
    [("status=503", 503, None), ("status=500", 502, None), ("status=502", 502, None)],
)
def test_provider_5xx(url: str, mistral_log: EmulatorControl, fault: str, status: int, code: str | None) -> None:
    mistral_log.fault(fault, count=2)  # the first attempt and the policy's one retry
    answer = post_json(url, CHAT, {"model": "mistral-medium-3.5", "messages": HELLO})
    assert answer.status == status
    assert answer.error["type"] == "upstream_error" and "mistral returned" in answer.error["message"]


@pytest.mark.parametrize("control", ["mistral_log", "moonshot_log"])
def test_provider_429_keeps_status_and_retry_after(url: str, control: str, request: pytest.FixtureRequest) -> None:
    log: EmulatorControl = request.getfixturevalue(control)
    log.fault("status=429,retry_after=7")
    model = "mistral-medium-3.5" if control == "mistral_log" else "kimi-k2.6"
    answer = post_json(url, CHAT, {"model": model, "messages": HELLO})
    assert answer.status == 429 and answer.headers.get("retry-after") == "7"
    assert answer.error["message"]


def test_provider_429_through_the_sdk(url: str, moonshot_log: EmulatorControl) -> None:
    moonshot_log.fault("status=429", count=2)
    client = openai.OpenAI(base_url=url + "/v1", api_key="k", max_retries=0)
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="kimi-k2.6", messages=HELLO)


def test_provider_422_message_is_kept(url: str, mistral_log: EmulatorControl) -> None:
    # OpenAI allows temperature up to 2, Mistral refuses above 1.5: the provider's own words come back.
    answer = post_json(url, CHAT, {"model": "mistral-medium-3.5", "messages": HELLO, "temperature": 1.9})
    assert answer.status == 400
    assert answer.error["message"].startswith("mistral returned 422")


def test_hang_is_504_after_first_byte_timeout(url: str, moonshot_log: EmulatorControl) -> None:
    moonshot_log.fault("hang", count=2)
    answer = post_json(url, CHAT, {"model": "kimi-k2.6", "messages": HELLO})
    assert answer.status == 504 and answer.error["code"] == "upstream_timeout"


@pytest.mark.parametrize(("control", "model"), [("mistral_log", "mistral-medium-3.5"), ("moonshot_log", "kimi-k2.6")])
def test_stream_cut_mid_way(url: str, control: str, model: str, request: pytest.FixtureRequest) -> None:
    log: EmulatorControl = request.getfixturevalue(control)
    log.fault("cut=2")
    answer = post_json(url, CHAT, {"model": model, "messages": HELLO, "stream": True, "max_tokens": 30})
    assert answer.status == 200
    events = sse.events(answer.body)
    assert events[-1] != "[DONE]"
    assert events[-1]["error"]["code"] == "upstream_stream_cut"
    client = openai.OpenAI(base_url=url + "/v1", api_key="k", max_retries=0)
    log.fault("cut=2")
    with pytest.raises(openai.APIError):
        list(client.chat.completions.create(model=model, messages=HELLO, stream=True, max_tokens=30))


def test_malformed_chunk_is_skipped(url: str, mistral_log: EmulatorControl) -> None:
    clean = post_json(url, CHAT, {"model": "mistral-medium-3.5", "messages": HELLO, "stream": True, "max_tokens": 10})
    mistral_log.fault("malformed=2")
    noisy = post_json(url, CHAT, {"model": "mistral-medium-3.5", "messages": HELLO, "stream": True, "max_tokens": 10})
    assert noisy.status == 200
    events = sse.events(noisy.body)  # every event the client gets is valid JSON
    assert events[-1] == "[DONE]"
    assert sse.text(events) == sse.text(sse.events(clean.body))


def test_moonshot_mid_stream_error_event(url: str, moonshot_log: EmulatorControl) -> None:
    moonshot_log.fault("stream_error=1")
    answer = post_json(url, CHAT, {"model": "kimi-k2.6", "messages": HELLO, "stream": True})
    events = sse.events(answer.body)
    assert events[-1]["error"]["code"] == "upstream_stream_error"


def test_wrong_provider_key_is_502_and_never_echoed(start_gateway: GatewayFactory) -> None:
    url = start_gateway(env={"MISTRAL_API_KEY": "wrong-provider-key-zzz"}).url
    answer = post_json(url, CHAT, {"model": "mistral-medium-3.5", "messages": HELLO})
    assert answer.status == 502 and answer.error["code"] == "upstream_auth_failed"
    assert "wrong-provider-key-zzz" not in answer.body.decode()


def test_unreachable_provider_is_502(start_gateway: GatewayFactory) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    url = start_gateway(env={"MOONSHOT_API_BASE": f"http://127.0.0.1:{port}/v1"}).url
    answer = post_json(url, CHAT, {"model": "kimi-k2.6", "messages": HELLO})
    assert answer.status == 502 and answer.error["code"] == "upstream_unreachable"


class SilentUpstream:
    """An OpenAI-compatible upstream that starts a stream, then waits, and records when the gateway hangs up."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.port = self.listener.getsockname()[1]
        self.request_seen = threading.Event()
        self.hung_up = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        connection, _ = self.listener.accept()
        with connection:
            read_request(connection)
            chunk = b'data: {"id":"x","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n'
            connection.sendall(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
                + f"{len(chunk):x}\r\n".encode()
                + chunk
                + b"\r\n"
            )
            self.request_seen.set()
            connection.settimeout(30)
            try:
                while connection.recv(65536):
                    pass
            except OSError:
                return
            self.hung_up.set()  # recv returned b"": the gateway closed the upstream connection


@pytest.fixture()
def silent(tmp_path: Path) -> Iterator[tuple[SilentUpstream, Path]]:
    upstream = SilentUpstream()
    path = tmp_path / "silent.yaml"
    path.write_text(
        "providers:\n"
        f"  - {{name: local, kind: openai-compatible, region: onprem, base_url: 'http://127.0.0.1:{upstream.port}/v1'}}\n"
        "models:\n"
        "  - {name: local-model, provider: local, upstream_model: m, context_window: 8192, max_output_tokens: 1024,"
        " price: {input: '0', output: '0'}}\n"
    )
    yield upstream, path
    upstream.listener.close()


def test_client_disconnect_cancels_the_upstream_request(
    start_gateway: GatewayFactory, silent: tuple[SilentUpstream, Path]
) -> None:
    upstream, path = silent
    url = start_gateway(config=path).url

    async def read_first_chunk_then_leave() -> bytes:
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        body = json.dumps({"model": "local-model", "messages": HELLO, "stream": True}).encode()
        writer.write(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            + f"content-length: {len(body)}\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        first = await reader.readuntil(b"\n\n")
        writer.close()
        await writer.wait_closed()
        return first

    first = asyncio.run(asyncio.wait_for(read_first_chunk_then_leave(), 20))
    assert b'"content":"hi"' in first
    assert upstream.request_seen.is_set()
    assert upstream.hung_up.wait(15), "the gateway kept the upstream request open after the client left"


def test_health_endpoints(url: str) -> None:
    assert request(url, "GET", "/healthz").json() == {"status": "ok"}
    ready = request(url, "GET", "/readyz").json()
    assert ready["status"] == "ready" and ready["mode"] == "live" and ready["auth"] == "open"
