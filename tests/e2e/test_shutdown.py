"""SIGTERM with requests in flight: what finishes within the drain time finishes; what does not is ended with
a clear error (an SSE error event, or a 503) and a ledger row, and the process exits without a traceback."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest

from gateway.http.servers import ThreadedServer
from tests.support import sse
from tests.support.emulators import EmulatorControl, provider_env
from tests.support.gateways import GatewayFactory, start_cli_gateway
from tests.support.http import auth, begin_post_json, request
from tests.support.store import ledger, make_key, make_team
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow

CHAT = "/v1/chat/completions"
BODY = {"model": "mistral-medium-3.5", "messages": [{"role": "user", "content": "take your time"}], "max_tokens": 20}


def exited_cleanly(process: subprocess.Popen[str]) -> None:
    """Ended by the signal it was sent (uvicorn re-raises SIGTERM once it has shut down cleanly), no traceback."""
    assert process.wait(timeout=30) in (0, -signal.SIGTERM)
    assert process.stderr is not None
    log = process.stderr.read()
    assert "Traceback" not in log, log


def test_sigterm_drains_then_ends_what_is_left_with_a_clear_error(
    tmp_path: Path, mistral: ThreadedServer, moonshot: ThreadedServer, mistral_log: EmulatorControl
) -> None:
    db = f"sqlite:///{tmp_path / 'drain.db'}"
    make_team(db, "web", "5.00")
    key, _ = make_key(db, "web")
    env = {**provider_env(mistral, moonshot), "GATEWAY_SHUTDOWN_DRAIN_SECONDS": "3"}
    process, url = start_cli_gateway(db, env)
    try:
        mistral_log.fault("first_token=1000")  # finishes within the drain time
        quick = begin_post_json(url, CHAT, {**BODY, "stream": True}, auth(key), timeout=60)
        wait_until(lambda: len(mistral_log.requests()) == 1)
        mistral_log.fault("first_token=60000", count=2)  # streams that would outlive the drain
        slow = [begin_post_json(url, CHAT, {**BODY, "stream": True}, auth(key), timeout=60) for _ in range(2)]
        wait_until(lambda: len(mistral_log.requests()) == 3)
        mistral_log.fault("hang")  # a non-streaming request whose provider never answers
        waiting = begin_post_json(url, CHAT, BODY, auth(key), timeout=60)
        wait_until(lambda: len(mistral_log.requests()) == 4)
        process.send_signal(signal.SIGTERM)

        finished = quick.getresponse()
        assert finished.status == 200 and finished.read().rstrip().endswith(b"data: [DONE]")
        for connection in slow:
            response = connection.getresponse()
            assert response.status == 200
            events = sse.events(response.read())
            assert events[-1]["error"]["code"] == "gateway_shutting_down", events[-1]
        refused = waiting.getresponse()
        assert refused.status == 503 and json.loads(refused.read())["error"]["code"] == "gateway_shutting_down"
        exited_cleanly(process)
    finally:
        if process.poll() is None:
            process.kill()
    rows = ledger(db, team="web")
    assert len(rows) == 4, [(r.status, r.stream) for r in rows]
    assert sorted(r.status for r in rows if not r.stream) == [503]
    assert all(r.prompt_tokens > 0 for r in rows)  # each prompt reached the provider and is billed


def test_readyz_says_draining_once_shutdown_begins(start_gateway: GatewayFactory, tmp_path: Path) -> None:
    server = start_gateway(database_url=f"sqlite:///{tmp_path / 'ready.db'}", shutdown_drain_seconds=3600)
    assert request(server.url, "GET", "/readyz", timeout=5).status == 200
    # What uvicorn's graceful shutdown does on each open connection (GatewayHttpProtocol.shutdown), on the
    # server's own loop.
    server.loop.call_soon_threadsafe(server.app.state.gateway.begin_drain)

    def draining() -> bool:
        ready = request(server.url, "GET", "/readyz", timeout=5)
        return ready.status == 503 and ready.json()["status"] == "draining"

    assert wait_until(draining)


def test_sigterm_ends_messages_and_responses_streams_in_their_own_format(
    tmp_path: Path, mistral: ThreadedServer, moonshot: ThreadedServer, mistral_log: EmulatorControl
) -> None:
    """A stream of the Messages door outliving the drain ends with Anthropic's `error` event; one of the Responses
    door with `response.failed`, numbered after the events already sent; both are settled."""
    db = f"sqlite:///{tmp_path / 'drain.db'}"
    make_team(db, "web", "5.00")
    key, _ = make_key(db, "web")
    env = {**provider_env(mistral, moonshot), "GATEWAY_SHUTDOWN_DRAIN_SECONDS": "2"}
    process, url = start_cli_gateway(db, env)
    try:
        mistral_log.fault("first_token=60000", count=2)
        message = {**BODY, "stream": True}
        messages = begin_post_json(url, "/v1/messages", message, {"x-api-key": key}, timeout=60)
        wait_until(lambda: len(mistral_log.requests()) == 1)
        response = {"model": "mistral-medium-3.5", "input": "take your time", "stream": True, "max_output_tokens": 20}
        responses = begin_post_json(url, "/v1/responses", response, auth(key), timeout=60)
        wait_until(lambda: len(mistral_log.requests()) == 2)
        process.send_signal(signal.SIGTERM)

        answer = messages.getresponse()
        assert answer.status == 200
        raw = answer.read().decode()
        last = raw.rstrip().split("\n\n")[-1]
        assert last.startswith("event: error\n"), raw
        error = json.loads(last.split("data: ", 1)[1])
        assert error["type"] == "error" and error["error"]["type"] == "overloaded_error", error

        answer = responses.getresponse()
        assert answer.status == 200
        decoded = sse.events(answer.read())
        assert decoded[-1]["type"] == "response.failed", decoded[-1]
        assert decoded[-1]["response"]["error"]["code"] == "gateway_shutting_down"
        numbers = [event["sequence_number"] for event in decoded]
        assert numbers == list(range(len(numbers))), numbers  # the farewell continues the stream's numbering
        exited_cleanly(process)
    finally:
        if process.poll() is None:
            process.kill()
    rows = ledger(db, team="web")
    assert sorted(r.endpoint for r in rows) == ["messages", "responses"], [(r.endpoint, r.status) for r in rows]
