"""Retries and fallbacks before the first byte, against emulator faults: never outside the allowed regions."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.budget_util import ledger, make_key, make_team
from tests.conftest import EmulatorControl, GatewayFactory
from tests.http_util import post_json

CHAT = "/v1/chat/completions"
HELLO = [{"role": "user", "content": "hello there"}]


@pytest.fixture()
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'failover.db'}"


def test_a_failed_attempt_is_retried_on_the_same_model(
    start_gateway: GatewayFactory, db: str, mistral_log: EmulatorControl
) -> None:
    url = start_gateway(database_url=db).url
    mistral_log.fault("status=503")
    answer = post_json(url, CHAT, {"model": "mistral-medium-3.5", "messages": HELLO})
    assert answer.status == 200 and answer.headers["x-gateway-model"] == "mistral-medium-3.5"
    assert len(mistral_log.requests()) == 2
    assert [(r.status, r.model) for r in ledger(db)] == [(200, "mistral-medium-3.5")]  # one row per request


def test_mistral_outage_moves_auto_traffic_to_kimi(
    start_gateway: GatewayFactory, db: str, mistral_log: EmulatorControl, moonshot_log: EmulatorControl
) -> None:
    url = start_gateway(database_url=db).url
    mistral_log.fault("status=503", count=2)
    answer = post_json(url, CHAT, {"model": "auto", "messages": HELLO})
    assert answer.status == 200, answer.body
    assert answer.headers["x-gateway-model"] == "kimi-k2.6"
    assert answer.headers["x-gateway-route-reason"] == "fallback:upstream-503"
    assert len(mistral_log.requests()) == 2 and len(moonshot_log.requests()) == 1


def test_mistral_outage_never_sends_an_eu_team_to_kimi(
    start_gateway: GatewayFactory, db: str, mistral_log: EmulatorControl, moonshot_log: EmulatorControl
) -> None:
    make_team(db, "eu-team", None, regions=["eu"])
    key, _ = make_key(db, "eu-team")
    url = start_gateway(database_url=db).url
    mistral_log.fault("status=503", count=20)
    answer = post_json(url, CHAT, {"model": "auto", "messages": HELLO}, {"authorization": f"Bearer {key}"})
    assert answer.status == 503 and answer.error["type"] == "upstream_error"
    assert moonshot_log.requests() == []
    assert all(r["path"] == "/v1/chat/completions" for r in mistral_log.requests())
    rows = ledger(db)
    assert len(rows) == 1 and rows[0].status == 503 and rows[0].region == "eu"


def test_residency_header_also_holds_on_fallback(
    start_gateway: GatewayFactory, db: str, mistral_log: EmulatorControl, moonshot_log: EmulatorControl
) -> None:
    url = start_gateway(database_url=db).url
    mistral_log.fault("status=502", count=20)
    answer = post_json(url, CHAT, {"model": "auto", "messages": HELLO}, {"x-gateway-residency": "eu"})
    assert answer.status == 502 and moonshot_log.requests() == []


def test_a_named_model_is_not_swapped_when_it_fails(
    start_gateway: GatewayFactory, db: str, mistral_log: EmulatorControl, moonshot_log: EmulatorControl
) -> None:
    url = start_gateway(database_url=db).url
    mistral_log.fault("status=500", count=2)
    answer = post_json(url, CHAT, {"model": "mistral-medium-3.5", "messages": HELLO})
    assert answer.status == 502 and moonshot_log.requests() == []


def test_client_errors_are_not_retried(start_gateway: GatewayFactory, db: str, mistral_log: EmulatorControl) -> None:
    url = start_gateway(database_url=db).url
    answer = post_json(url, CHAT, {"model": "mistral-medium-3.5", "messages": HELLO, "temperature": 1.9})
    assert answer.status == 400 and len(mistral_log.requests()) == 1


def test_the_budget_is_reserved_again_for_the_fallback_model(
    start_gateway: GatewayFactory, db: str, mistral_log: EmulatorControl
) -> None:
    team = make_team(db, "web", "5.00")
    key, _ = make_key(db, "web")
    url = start_gateway(database_url=db).url
    mistral_log.fault("status=503", count=2)
    answer = post_json(url, CHAT, {"model": "auto", "messages": HELLO}, {"authorization": f"Bearer {key}"})
    assert answer.status == 200 and answer.headers["x-gateway-model"] == "kimi-k2.6"
    from tests.budget_util import team_usage

    usage = team_usage(db, team)
    rows = ledger(db)
    assert usage.reserved_nanos == 0 and len(rows) == 1 and usage.spent_nanos == rows[0].cost_nanos
    assert rows[0].route_reason == "fallback:upstream-503"


def test_an_open_circuit_is_skipped_without_calling_the_provider(
    start_gateway: GatewayFactory, db: str, mistral_log: EmulatorControl, moonshot_log: EmulatorControl
) -> None:
    url = start_gateway(database_url=db, circuit_failures=2, circuit_cooldown_seconds=3600).url
    mistral_log.fault("status=503", count=2)
    assert post_json(url, CHAT, {"model": "mistral-medium-3.5", "messages": HELLO}).status == 503  # two failures: open
    mistral_log.reset()
    answer = post_json(url, CHAT, {"model": "auto", "messages": HELLO})
    assert answer.status == 200 and answer.headers["x-gateway-model"] == "kimi-k2.6"
    assert answer.headers["x-gateway-route-reason"] == "fallback:circuit-open"
    assert mistral_log.requests() == []  # skipped, not tried
    pinned = post_json(url, CHAT, {"model": "mistral-medium-3.5", "messages": HELLO})
    assert pinned.status == 503 and pinned.error["code"] == "circuit_open" and mistral_log.requests() == []


def test_circuit_states_half_open_probe_and_recovery() -> None:
    from gateway.routing.circuits import CLOSED, HALF_OPEN, OPEN, CircuitBreakers

    now = [0.0]
    breakers = CircuitBreakers(failures=3, cooldown=10, clock=lambda: now[0])
    for _ in range(2):
        breakers.failed("p/m")
    assert breakers.state("p/m") == CLOSED and breakers.allows("p/m")
    breakers.failed("p/m")
    assert breakers.state("p/m") == OPEN and not breakers.allows("p/m")
    now[0] = 10.0
    assert breakers.allows("p/m") and breakers.state("p/m") == HALF_OPEN
    assert not breakers.allows("p/m")  # one probe at a time
    breakers.failed("p/m")
    assert breakers.state("p/m") == OPEN and not breakers.allows("p/m")
    now[0] = 20.0
    assert breakers.allows("p/m")
    breakers.succeeded("p/m")
    assert breakers.state("p/m") == CLOSED and breakers.allows("p/m")
    breakers.failed("p/m")
    assert breakers.state("p/m") == CLOSED  # the count restarted after the success
