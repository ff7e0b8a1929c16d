"""Fixes from an outside security review, each reproduced against a real gateway on 127.0.0.1:

- `/metrics` on the main port needs the master key (or the metrics token) when a master key is set;
- `gateway clients` writes key files 0600 from the start and refuses symlinked targets;
- unknown policy names are refused when teams are created or updated, when a reload would remove a policy a
  team uses, and at request time (fail closed, never the default policy);
- slow or idle clients cannot hold connections: keep-alive, request-head and request-body deadlines;
- a trailing-slash path is never redirected to a Location built from the client's Host header.
"""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from tests.conftest import EmulatorControl, GatewayFactory, MISTRAL_KEY, MOONSHOT_KEY
from tests.http_util import post_json, request

CHAT = "/v1/chat/completions"
SHORT = [{"role": "user", "content": "hi"}]


def auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


# ------------------------------------------------------------------------------------ d. connection deadlines


def _connect(port: int, timeout: float = 20.0) -> socket.socket:
    # A generous socket timeout: the server's deadline, not this one, must end the wait.
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def _read_until_eof(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (raises socket.timeout if it never does)."""
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


def _read_response(sock: socket.socket) -> bytes:
    """One response with a content-length body (the connection stays open)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before a response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
    while len(body) < length:
        body += sock.recv(65536)
    return head


@pytest.fixture(scope="module")
def quick(start_gateway: GatewayFactory) -> int:
    """A gateway with deadlines short enough to wait for (open: no master key, so bodies are read at once)."""
    return start_gateway(
        master_key=None, keepalive_seconds=0.6, header_timeout_seconds=0.6, body_timeout_seconds=0.8
    ).port


def test_a_connection_that_sends_nothing_is_closed_after_the_header_timeout(quick: int) -> None:
    with _connect(quick) as sock:
        start = time.monotonic()
        assert _read_until_eof(sock) == b""  # closed without an answer: the client never asked anything
        assert 0.5 <= time.monotonic() - start < 10


def test_an_idle_kept_alive_connection_is_closed_after_the_keepalive_timeout(quick: int) -> None:
    with _connect(quick) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert _read_response(sock).startswith(b"HTTP/1.1 200")
        start = time.monotonic()
        assert _read_until_eof(sock) == b""
        assert 0.5 <= time.monotonic() - start < 10


def test_a_half_sent_request_head_is_answered_408_and_closed(quick: int) -> None:
    with _connect(quick) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        start = time.monotonic()
        answer = _read_until_eof(sock)
        assert answer.startswith(b"HTTP/1.1 408") and b'"code":"request_timeout"' in answer, answer
        assert 0.5 <= time.monotonic() - start < 10


def _trickle(sock: socket.socket, first: bytes, each: bytes) -> tuple[bytes, float]:
    """Send `first`, then `each` every 50 ms from a thread (a slow client that never stops) while reading
    what the server answers until it closes; the answer and how long that took."""
    stop = threading.Event()

    def send() -> None:
        try:
            sock.sendall(first)
            while not stop.wait(0.05):  # the slow client's pace, not synchronisation
                sock.sendall(each)
        except OSError:  # the server closed the connection
            pass

    sender = threading.Thread(target=send, daemon=True)
    start = time.monotonic()
    sender.start()
    try:
        return _read_until_eof(sock), time.monotonic() - start
    finally:
        stop.set()
        sender.join(10)


def test_a_head_trickled_line_by_line_is_cut_at_the_header_timeout(quick: int) -> None:
    """The deadline is for the whole head, not between bytes: activity does not extend it."""
    with _connect(quick) as sock:
        answer, took = _trickle(sock, b"GET /healthz HTTP/1.1\r\n", b"X-A: b\r\n")
    assert answer.startswith(b"HTTP/1.1 408") and 0.5 <= took < 10, (answer, took)


def test_a_body_trickled_byte_by_byte_is_cut_at_the_body_timeout(quick: int) -> None:
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        b"content-length: 100000\r\n\r\n"
    )
    with _connect(quick) as sock:
        answer, took = _trickle(sock, head, b" ")
    assert answer.startswith(b"HTTP/1.1 408") and 0.7 <= took < 10, (answer, took)


def test_a_half_sent_body_is_answered_408_and_closed(quick: int) -> None:
    with _connect(quick) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/json\r\n"
            b"content-length: 1000\r\n\r\n{\"model\": \"auto\""
        )
        start = time.monotonic()
        answer = _read_until_eof(sock)
        assert answer.startswith(b"HTTP/1.1 408") and b"request body was not received" in answer, answer
        assert 0.7 <= time.monotonic() - start < 10


def test_a_slow_answer_is_not_cut_by_the_deadlines(quick: int, mistral_log: EmulatorControl) -> None:
    """The deadlines are for reading the request: the provider may take longer than all of them."""
    mistral_log.fault("latency=1500")
    answer = post_json(f"http://127.0.0.1:{quick}", CHAT, {"model": "mistral-medium-3.5", "messages": SHORT})
    assert answer.status == 200, answer.body


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture()
def served(tmp_path: Path, mistral: object, moonshot: object) -> Iterator[int]:
    """`gateway serve` as a subprocess, with short deadlines from GATEWAY_* settings."""
    from tests.test_cli import wait_for_startup

    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "MISTRAL_", "MOONSHOT_"))}
    env.update(
        GATEWAY_DATA_DIR=str(tmp_path), GATEWAY_KEEPALIVE_SECONDS="0.7", GATEWAY_HEADER_TIMEOUT_SECONDS="0.7",
        GATEWAY_BODY_TIMEOUT_SECONDS="0.7", GATEWAY_REQUEST_LOG="false",
    )  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", "--port", str(port)],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env,
    )  # fmt: skip
    try:
        wait_for_startup(process)
        yield port
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


def test_gateway_serve_applies_the_deadlines_from_its_settings(served: int) -> None:
    with _connect(served) as idle, _connect(served) as half_head, _connect(served) as half_body:
        half_head.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        half_body.sendall(
            b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: 99\r\n\r\n{"
        )
        assert _read_until_eof(idle) == b""
        assert _read_until_eof(half_head).startswith(b"HTTP/1.1 408")
        assert _read_until_eof(half_body).startswith(b"HTTP/1.1 408")
    with _connect(served) as kept:
        kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _read_response(kept).startswith(b"HTTP/1.1 200")
        assert _read_until_eof(kept) == b""
