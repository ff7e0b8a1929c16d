"""The upstream fault matrix, against a real gateway and real emulators on 127.0.0.1.

Each case injects one fault at the provider, then asserts what the client got (status, or the SSE events),
the ledger row the request left (status, estimated, cost), and that the gateway is healthy afterwards (a
normal request succeeds, /readyz is 200). Rows written after the response (cut or abandoned streams settle in
the background) are waited for with a bounded poll, never a sleep.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from gateway.store.base import LedgerRow
from tests.support import sse
from tests.support.emulators import EmulatorControl
from tests.support.gateways import GatewayFactory
from tests.support.http import Answer, post_json, read_request, request
from tests.support.metrics import scrape, total
from tests.support.store import ledger

pytestmark = pytest.mark.slow

CHAT = "/v1/chat/completions"
HELLO = [{"role": "user", "content": "hello"}]
MISTRAL, KIMI = "mistral-medium-3.5", "kimi-k2.6"
MB20 = 20_000_000

# Moonshot gets short timeouts (the timeout and hang cases run in about a second); Mistral gets room for
# 20 MB answers on a busy machine and for the disconnect cases, whose client must leave before any timeout.
CATALOG = """
providers:
  - {name: mistral, kind: mistral, region: eu, api_key_env: MISTRAL_API_KEY, base_url_env: MISTRAL_API_BASE,
     timeouts: {connect: 2, first_byte: 20, total: 60}}
  - {name: moonshot, kind: moonshot, region: cn, api_key_env: MOONSHOT_API_KEY, base_url_env: MOONSHOT_API_BASE,
     timeouts: {connect: 2, first_byte: 1, total: 10}}
models:
  - {name: mistral-medium-3.5, provider: mistral, upstream_model: mistral-medium-3.5, context_window: 262144,
     max_output_tokens: 32768, price: {input: "1.5", output: "7.5"}, capabilities: [chat, tools, vision]}
  - {name: kimi-k2.6, provider: moonshot, upstream_model: kimi-k2.6, context_window: 1048576,
     max_output_tokens: 32768, price: {input: "0.6", output: "1.8"}, capabilities: [chat, tools], fixed_sampling: true}
"""


@dataclass
class Gw:
    url: str
    db: str


@pytest.fixture(scope="module")
def gw(start_gateway: GatewayFactory, tmp_path_factory: pytest.TempPathFactory) -> Gw:
    folder = tmp_path_factory.mktemp("faults")
    (folder / "catalog.yaml").write_text(CATALOG)
    db = f"sqlite:///{folder / 'gateway.db'}"
    # The circuit breaker (tests/routing/test_failover.py, test_circuits.py) would turn later cases into circuit_open.
    server = start_gateway(config=folder / "catalog.yaml", database_url=db, circuit_failures=10_000)
    return Gw(server.url, db)


def wait_for_rows(db: str, seen: set[str], count: int = 1) -> list[LedgerRow]:
    """The ledger rows not in `seen`, once there are `count` of them (bounded poll: about 10 s)."""
    for _ in range(200):
        rows = [row for row in ledger(db) if row.id not in seen]
        if len(rows) >= count:
            return sorted(rows, key=lambda row: row.ts)
        threading.Event().wait(0.05)
    raise AssertionError(f"expected {count} new ledger rows, found {len([r for r in ledger(db) if r.id not in seen])}")


def row_ids(db: str) -> set[str]:
    return {row.id for row in ledger(db)}


def assert_healthy(gw: Gw, model: str) -> None:
    """After the fault: an ordinary request of the same model is answered, and the gateway says it is ready."""
    seen = row_ids(gw.db)
    answer = post_json(gw.url, CHAT, {"model": model, "messages": HELLO, "max_tokens": 8})
    assert answer.status == 200, answer.body[:500]
    assert answer.json()["choices"][0]["message"]["content"]
    assert request(gw.url, "GET", "/readyz").status == 200
    (row,) = wait_for_rows(gw.db, seen)
    assert row.status == 200 and not row.estimated and row.cost_nanos > 0


def upstream_errors(gw: Gw, provider: str, kind: str) -> float:
    return total(scrape(gw.url), "gateway_upstream_errors_total", provider=provider, kind=kind)


@dataclass(frozen=True)
class Case:
    name: str
    model: str
    fault: str
    stream: bool
    status: int  # the client's HTTP status
    code: str | None  # the error code: of the body, or of the stream's last event; None: a good answer
    row_status: int
    estimated: bool
    billed: bool  # cost > 0: the provider answered (and bills the prompt)
    fault_count: int = 1
    metric: str | None = None  # gateway_upstream_errors_total kind that must go up
    body: dict[str, Any] = field(default_factory=dict)
    check: Callable[[Answer], None] | None = None


def _long_answer(answer: Answer) -> None:
    assert len(answer.body) > MB20
    assert len(answer.json()["choices"][0]["message"]["content"]) > MB20


def _long_stream(answer: Answer) -> None:
    assert len(sse.text(sse.events(answer.body))) > MB20


def _no_error_chunk_relayed(answer: Answer) -> None:
    # The provider's error event must not reach the client as if it were a chunk.
    events = sse.events(answer.body)
    assert all(e.get("object") != "error" for e in events if isinstance(e, dict)), events
    assert sum(1 for e in events if isinstance(e, dict) and "error" in e) == 1


def _slow_first_token(answer: Answer) -> None:
    assert sse.text(sse.events(answer.body))


CASES = [
    # Before the first byte: failures the policy retries (retries: 1), then the client's error.
    Case(
        "timeout-before-headers",
        KIMI,
        "hang",
        False,
        504,
        "upstream_timeout",
        504,
        False,
        False,
        fault_count=2,
        metric="timeout",
    ),
    Case("500", MISTRAL, "status=500", False, 502, None, 502, False, False, fault_count=2, metric="status_5xx"),
    Case("503", MISTRAL, "status=503", False, 503, None, 503, False, False, fault_count=2, metric="status_5xx"),
    # A Retry-After up to the policy's retry_after_max_ms (5000, policies/default.yaml) is waited for, then
    # the same model is tried again; a longer one goes to the client (a named model is not swapped).
    Case("429-retry-after-below-cap", MISTRAL, "status=429,retry_after=0.2", False, 200, None, 200, False, True),
    Case(
        "429-retry-after-above-cap",
        MISTRAL,
        "status=429,retry_after=7",
        False,
        429,
        None,
        429,
        False,
        False,
        metric="status_429",
    ),
    # Answers that are not what they claim.
    Case("html-200", MISTRAL, "html", False, 502, "upstream_malformed", 502, False, False),
    Case("html-200-stream", MISTRAL, "html", True, 502, "upstream_malformed", 502, False, False),
    Case("non-json-200", MISTRAL, "malformed=0", False, 502, "upstream_malformed", 502, False, False),
    # Streams that start well and end badly: an error event instead of [DONE], what was relayed billed.
    Case("slow-first-token", MISTRAL, "first_token=400", True, 200, None, 200, False, True, check=_slow_first_token),
    Case("stream-cut", MISTRAL, "cut=2", True, 200, "upstream_stream_cut", 200, True, True, metric="stream_cut"),
    Case("one-malformed-event", MISTRAL, "malformed=2", True, 200, None, 200, False, True, metric="malformed"),
    Case(
        "all-malformed", MISTRAL, "malformed_all", True, 200, "upstream_malformed", 200, True, True, metric="malformed"
    ),
    Case(
        "all-malformed-moonshot",
        KIMI,
        "malformed_all",
        True,
        200,
        "upstream_malformed",
        200,
        True,
        True,
        metric="malformed",
    ),
    Case("hang-mid-stream", KIMI, "stall=2", True, 200, "upstream_timeout", 200, True, True, metric="timeout"),
    # In-band errors: Mistral's {"object": "error", ...} and Moonshot's {"error": {...}} (providers.md).
    Case(
        "in-band-error-mistral",
        MISTRAL,
        "stream_error=2",
        True,
        200,
        "upstream_stream_error",
        200,
        True,
        True,
        metric="status_5xx",
        check=_no_error_chunk_relayed,
    ),
    Case(
        "in-band-error-moonshot",
        KIMI,
        "stream_error=2",
        True,
        200,
        "upstream_stream_error",
        200,
        True,
        True,
        metric="status_5xx",
        check=_no_error_chunk_relayed,
    ),
    # Size: one event past GATEWAY_MAX_SSE_EVENT_BYTES (16 MiB by default) ends the stream; many ordinary
    # events adding up to 20 MB, and a 20 MB complete answer, are relayed whole.
    Case(
        "huge-event",
        MISTRAL,
        f"big_event={MB20}",
        True,
        200,
        "upstream_event_too_large",
        200,
        True,
        True,
        metric="malformed",
    ),
    Case("20mb-answer", MISTRAL, f"pad={MB20}", False, 200, None, 200, False, True, check=_long_answer),
    Case("20mb-stream", MISTRAL, f"pad={MB20}", True, 200, None, 200, False, True, check=_long_stream),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_fault(gw: Gw, case: Case, mistral_log: EmulatorControl, moonshot_log: EmulatorControl) -> None:
    control = mistral_log if case.model == MISTRAL else moonshot_log
    provider = "mistral" if case.model == MISTRAL else "moonshot"
    metric_before = upstream_errors(gw, provider, case.metric) if case.metric else 0.0
    seen = row_ids(gw.db)
    control.fault(case.fault, count=case.fault_count)
    body = {"model": case.model, "messages": HELLO, "max_tokens": 30, **case.body}
    if case.stream:
        body["stream"] = True
    answer = post_json(gw.url, CHAT, body)

    assert answer.status == case.status, answer.body[:500]
    if case.stream and answer.status == 200:
        events = sse.events(answer.body)
        if case.code is None:
            assert events[-1] == "[DONE]", events[-3:]
        else:
            assert events[-1] != "[DONE]" and "[DONE]" not in events
            error = events[-1]["error"]
            assert set(error) == {"message", "type", "param", "code"} and error["code"] == case.code, error
    elif case.code is not None:
        assert answer.error["code"] == case.code, answer.error
    elif answer.status != 200:
        assert answer.error["type"] in ("upstream_error", "rate_limited", "rate_limit_error"), answer.error
    if case.check is not None:
        case.check(answer)

    (row,) = wait_for_rows(gw.db, seen)
    assert (row.status, row.estimated) == (case.row_status, case.estimated), row
    assert (row.cost_nanos > 0) == case.billed, row
    assert row.model == case.model and row.stream == case.stream
    if case.metric:
        assert upstream_errors(gw, provider, case.metric) > metric_before
    if case.name == "429-retry-after-below-cap":
        assert len(control.requests()) == 2  # retried once, after the provider's Retry-After
    if case.name == "429-retry-after-above-cap":
        assert answer.headers.get("retry-after") == "7" and len(control.requests()) == 1
    if case.name == "slow-first-token":
        assert row.ttft_ms is not None and row.ttft_ms >= 400
    control.reset()
    assert_healthy(gw, case.model)


def test_connect_refused(start_gateway: GatewayFactory, tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    db = f"sqlite:///{tmp_path / 'gateway.db'}"
    url = start_gateway(env={"MOONSHOT_API_BASE": f"http://127.0.0.1:{port}/v1"}, database_url=db).url
    answer = post_json(url, CHAT, {"model": KIMI, "messages": HELLO})
    assert answer.status == 502 and answer.error["code"] == "upstream_unreachable"
    (row,) = wait_for_rows(db, set())
    assert (row.status, row.estimated, row.cost_nanos) == (502, False, 0)
    assert upstream_errors(Gw(url, db), "moonshot", "connect") >= 1
    assert_healthy(Gw(url, db), MISTRAL)  # the other provider still serves; the gateway is ready
    assert request(url, "GET", "/readyz").status == 200


async def _leave(url: str, body: dict[str, Any], after_first_event: bool, seen: Callable[[], bool]) -> bytes:
    """Send a request on a raw connection; leave once `seen()` (the provider has it), or after the first event."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    data = json.dumps(body).encode()
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        + f"content-length: {len(data)}\r\n\r\n".encode()
        + data
    )
    await writer.drain()
    got = b""
    if after_first_event:
        got = await reader.readuntil(b"\n\n")  # the head, then the first event
        if b"data:" not in got:
            got += await reader.readuntil(b"\n\n")
    else:
        for _ in range(200):  # bounded: about 10 s
            if await asyncio.to_thread(seen):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the provider never received the request")
    writer.close()
    await writer.wait_closed()
    return got


@pytest.mark.parametrize("after_first_event", [False, True], ids=["before-first-byte", "after-first-byte"])
def test_client_disconnect(gw: Gw, mistral_log: EmulatorControl, after_first_event: bool) -> None:
    # Before: the provider holds the request (hang) and the client leaves once the provider has it: the
    # provider bills the prompt, so the row is 499, estimated, priced (gateway/http/openai.py).
    # After: the stream stalls after its first events and the client leaves: what was relayed is billed.
    seen = row_ids(gw.db)
    mistral_log.fault("stall=2" if after_first_event else "hang")
    body = {"model": MISTRAL, "messages": HELLO, "max_tokens": 30, "stream": True}
    got = asyncio.run(
        asyncio.wait_for(_leave(gw.url, body, after_first_event, lambda: bool(mistral_log.requests())), 30)
    )
    if after_first_event:
        assert b"data:" in got
    (row,) = wait_for_rows(gw.db, seen)
    assert row.estimated and row.cost_nanos > 0 and row.prompt_tokens > 0, row
    assert row.status == (200 if after_first_event else 499), row
    mistral_log.reset()
    assert_healthy(gw, MISTRAL)


class ByteByByteUpstream:
    """An OpenAI-compatible upstream that writes its stream one byte per send, with CRLF line ends: events and
    line ends are split across reads wherever TCP splits them."""

    def __init__(self, events: list[bytes]) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.port = self.listener.getsockname()[1]
        self.stream = b"".join(events)
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            with connection:
                connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                read_request(connection)
                connection.sendall(
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: "
                    + str(len(self.stream)).encode()
                    + b"\r\nconnection: close\r\n\r\n"
                )
                for index in range(len(self.stream)):
                    connection.sendall(self.stream[index : index + 1])


@pytest.fixture()
def byte_upstream(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    words = ["Hello", ", ", "wor", "ld", "!"]
    chunk = lambda delta, finish=None: (  # noqa: E731
        b"data: "
        + json.dumps(
            {
                "id": "c1",
                "object": "chat.completion.chunk",
                "created": 1,
                "model": "m",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
        ).encode()
        + b"\r\n\r\n"
    )
    usage = (
        b'data: {"id":"c1","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":5,"total_tokens":10}}\r\n\r\n'
    )
    events = [
        b": keep-alive comment\r\n\r\n",
        *(chunk({"content": w}) for w in words),
        chunk({}, "stop"),
        usage,
        b"data: [DONE]\r\n\r\n",
    ]
    upstream = ByteByByteUpstream(events)
    path = tmp_path / "local.yaml"
    path.write_text(
        "providers:\n"
        f"  - {{name: local, kind: openai-compatible, region: onprem, base_url: 'http://127.0.0.1:{upstream.port}/v1'}}\n"
        "models:\n"
        "  - {name: local-model, provider: local, upstream_model: m, context_window: 8192, max_output_tokens: 1024,"
        " price: {input: '1', output: '1'}}\n"
    )
    yield "".join(words), path
    upstream.listener.close()


def test_events_split_across_reads(
    start_gateway: GatewayFactory, byte_upstream: tuple[str, Path], tmp_path: Path
) -> None:
    # The relay's buffering joins pieces of an event and CRLF line ends that arrive in different reads.
    text, path = byte_upstream
    db = f"sqlite:///{tmp_path / 'gateway.db'}"
    url = start_gateway(config=path, database_url=db).url
    answer = post_json(
        url,
        CHAT,
        {"model": "local-model", "messages": HELLO, "stream": True, "stream_options": {"include_usage": True}},
    )
    events = sse.events(answer.body)
    assert answer.status == 200 and events[-1] == "[DONE]", events
    assert sse.text(events) == text
    assert events[-2]["usage"]["completion_tokens"] == 5
    (row,) = wait_for_rows(db, set())
    assert (row.status, row.estimated, row.completion_tokens) == (200, False, 5)


def test_max_sse_event_bytes_is_configurable(start_gateway: GatewayFactory, mistral_log: EmulatorControl) -> None:
    url = start_gateway(max_sse_event_bytes=1_000_000).url
    mistral_log.fault("big_event=2000000")
    answer = post_json(url, CHAT, {"model": MISTRAL, "messages": HELLO, "max_tokens": 10, "stream": True})
    assert sse.events(answer.body)[-1]["error"]["code"] == "upstream_event_too_large"
