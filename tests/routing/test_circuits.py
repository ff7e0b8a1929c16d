"""Every way a half-open circuit's probe can end moves the circuit: it never stays half-open until a restart.

The gateways are real servers on 127.0.0.1; the breaker's clock is replaced in-process, so the cool-down
passes when the test says so instead of by sleeping.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

from gateway.http.servers import ThreadedServer
from gateway.routing.circuits import CLOSED, HALF_OPEN, OPEN, deployment
from tests.support.emulators import EmulatorControl
from tests.support.gateways import GatewayFactory
from tests.support.http import begin_post_json, post_json
from tests.support.store import ledger
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow

CHAT = "/v1/chat/completions"
BODY = {"model": "mistral-medium-3.5", "messages": [{"role": "user", "content": "probe me"}]}
CIRCUIT = deployment("mistral", "mistral-medium-3.5")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture()
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'circuits.db'}"


def _opened(start_gateway: GatewayFactory, db: str, mistral_log: EmulatorControl) -> tuple[ThreadedServer, Any, Clock]:
    """A gateway whose Mistral Medium circuit is open and whose cool-down has passed (the next request probes)."""
    server = start_gateway(database_url=db, circuit_failures=2, circuit_cooldown_seconds=30)
    gateway = server.app.state.gateway
    clock = Clock()
    gateway.circuits.clock = clock
    mistral_log.fault("status=503", count=2)  # the attempt and its one retry: two failures open the circuit
    assert post_json(server.url, CHAT, BODY).status == 503
    assert gateway.circuits.state(CIRCUIT) == OPEN
    assert post_json(server.url, CHAT, BODY).error["code"] == "circuit_open"
    mistral_log.reset()
    clock.now += 31
    return server, gateway, clock


def test_a_probe_answered_with_a_client_error_closes_the_circuit(
    start_gateway: GatewayFactory, db: str, mistral_log: EmulatorControl
) -> None:
    server, gateway, _ = _opened(start_gateway, db, mistral_log)
    mistral_log.fault("status=422")  # the provider answered: it is up, the request was wrong
    probe = post_json(server.url, CHAT, BODY)
    assert probe.status == 400, probe.body
    assert gateway.circuits.state(CIRCUIT) == CLOSED
    assert post_json(server.url, CHAT, BODY).status == 200


def test_a_probe_failing_in_the_gateway_reopens_the_circuit_and_the_next_probe_recovers(
    start_gateway: GatewayFactory, db: str, mistral_log: EmulatorControl
) -> None:
    server, gateway, clock = _opened(start_gateway, db, mistral_log)
    adapter = gateway.adapter_for(gateway.catalog.models["mistral-medium-3.5"])
    original = adapter.chat

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("an unexpected failure inside the provider call")

    adapter.chat = broken
    try:
        answer = post_json(server.url, CHAT, BODY)
    finally:
        adapter.chat = original
    assert answer.status == 500 and "Traceback" not in answer.body.decode()
    assert gateway.circuits.state(CIRCUIT) == OPEN  # outcome unknown: open again, not wedged half-open
    assert post_json(server.url, CHAT, BODY).error["code"] == "circuit_open"
    clock.now += 31
    assert post_json(server.url, CHAT, BODY).status == 200  # the next probe is let through and closes it
    assert gateway.circuits.state(CIRCUIT) == CLOSED


def test_a_probe_whose_client_left_reopens_the_circuit_and_is_billed_as_estimated(
    start_gateway: GatewayFactory, db: str, mistral_log: EmulatorControl
) -> None:
    server, gateway, clock = _opened(start_gateway, db, mistral_log)
    mistral_log.fault("hang")  # the provider takes the prompt and never answers
    connection = begin_post_json(server.url, CHAT, BODY)
    wait_until(lambda: len(mistral_log.requests()) == 1)  # the prompt reached the provider
    connection.sock.shutdown(socket.SHUT_RDWR)  # the client leaves before the first byte
    connection.close()
    rows = wait_until(lambda: [r for r in ledger(db) if r.status == 499])
    row = rows[0]
    assert row.estimated and row.prompt_tokens > 0 and row.cost_nanos > 0 and row.model == "mistral-medium-3.5"
    assert gateway.circuits.state(CIRCUIT) == OPEN
    clock.now += 31
    assert post_json(server.url, CHAT, BODY).status == 200
    assert gateway.circuits.state(CIRCUIT) == CLOSED


def test_a_probe_refused_before_the_provider_passes_the_probe_on(
    start_gateway: GatewayFactory, db: str, mistral_log: EmulatorControl
) -> None:
    server, gateway, _ = _opened(start_gateway, db, mistral_log)
    refused = post_json(server.url, CHAT, {**BODY, "unknown_field": 1})  # refused by the adapter's whitelist
    assert refused.status == 400, refused.body
    assert mistral_log.requests() == []
    assert gateway.circuits.state(CIRCUIT) in (OPEN, HALF_OPEN)
    assert post_json(server.url, CHAT, BODY).status == 200  # the probe was handed on, not kept
    assert gateway.circuits.state(CIRCUIT) == CLOSED
