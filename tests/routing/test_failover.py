"""Retries and fallbacks before the first byte, against emulator faults: never outside the allowed regions."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.emulators import EmulatorControl
from tests.support.gateways import GatewayFactory
from tests.support.http import auth, post_json, request
from tests.support.metrics import scrape, total
from tests.support.store import ledger, make_key, make_team, team_usage

CHAT = "/v1/chat/completions"
HELLO = [{"role": "user", "content": "hello there"}]


@pytest.fixture()
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'failover.db'}"


@pytest.mark.slow
def test_a_failed_attempt_is_retried_on_the_same_model(
    start_gateway: GatewayFactory, db: str, mistral_log: EmulatorControl
) -> None:
    url = start_gateway(database_url=db).url
    mistral_log.fault("status=503")
    answer = post_json(url, CHAT, {"model": "mistral-medium-3.5", "messages": HELLO})
    assert answer.status == 200 and answer.headers["x-gateway-model"] == "mistral-medium-3.5"
    assert len(mistral_log.requests()) == 2
    assert [(r.status, r.model) for r in ledger(db)] == [(200, "mistral-medium-3.5")]  # one row per request


@pytest.mark.slow
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


@pytest.mark.slow
def test_mistral_outage_never_sends_an_eu_team_to_kimi(
    start_gateway: GatewayFactory, db: str, mistral_log: EmulatorControl, moonshot_log: EmulatorControl
) -> None:
    make_team(db, "eu-team", None, regions=["eu"])
    key, _ = make_key(db, "eu-team")
    url = start_gateway(database_url=db).url
    mistral_log.fault("status=503", count=20)
    answer = post_json(url, CHAT, {"model": "auto", "messages": HELLO}, auth(key))
    assert answer.status == 503 and answer.error["type"] == "upstream_error"
    assert moonshot_log.requests() == []
    assert all(r["path"] == "/v1/chat/completions" for r in mistral_log.requests())
    rows = ledger(db)
    assert len(rows) == 1 and rows[0].status == 503 and rows[0].region == "eu"


@pytest.mark.slow
def test_residency_header_also_holds_on_fallback(
    start_gateway: GatewayFactory, db: str, mistral_log: EmulatorControl, moonshot_log: EmulatorControl
) -> None:
    url = start_gateway(database_url=db).url
    mistral_log.fault("status=502", count=20)
    answer = post_json(url, CHAT, {"model": "auto", "messages": HELLO}, {"x-gateway-residency": "eu"})
    assert answer.status == 502 and moonshot_log.requests() == []


@pytest.mark.slow
def test_a_named_model_is_not_swapped_when_it_fails(
    start_gateway: GatewayFactory, db: str, mistral_log: EmulatorControl, moonshot_log: EmulatorControl
) -> None:
    url = start_gateway(database_url=db).url
    mistral_log.fault("status=500", count=2)
    answer = post_json(url, CHAT, {"model": "mistral-medium-3.5", "messages": HELLO})
    assert answer.status == 502 and moonshot_log.requests() == []


@pytest.mark.slow
def test_client_errors_are_not_retried(start_gateway: GatewayFactory, db: str, mistral_log: EmulatorControl) -> None:
    url = start_gateway(database_url=db).url
    answer = post_json(url, CHAT, {"model": "mistral-medium-3.5", "messages": HELLO, "temperature": 1.9})
    assert answer.status == 400 and len(mistral_log.requests()) == 1


@pytest.mark.slow
def test_the_budget_is_reserved_again_for_the_fallback_model(
    start_gateway: GatewayFactory, db: str, mistral_log: EmulatorControl
) -> None:
    team = make_team(db, "web", "5.00")
    key, _ = make_key(db, "web")
    url = start_gateway(database_url=db).url
    mistral_log.fault("status=503", count=2)
    answer = post_json(url, CHAT, {"model": "auto", "messages": HELLO}, auth(key))
    assert answer.status == 200 and answer.headers["x-gateway-model"] == "kimi-k2.6"
    usage = team_usage(db, team)
    rows = ledger(db)
    assert usage.reserved_nanos == 0 and len(rows) == 1 and usage.spent_nanos == rows[0].cost_nanos
    assert rows[0].route_reason == "fallback:upstream-503"


@pytest.mark.slow
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


# ---------------------------------------------------------------------------------------------- account out of balance
# Moonshot's three 429s (../shared/reference/providers.md, Moonshot errors): engine_overloaded_error and
# rate_limit_reached_error are transient; exceeded_current_quota_error (also sent as a 403) means the account has
# no balance: not retried, the provider held open for every model until an operator acts.

MASTER = "mk-failover-quota"
QUOTA = "status=429,error=exceeded_current_quota_error"
KIMI = {"model": "kimi-k2.6", "messages": HELLO}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _kimi_first(tmp_path: Path) -> Path:
    """The default policy, but preferring Kimi K2.6 (so `auto` tries Moonshot first and may fall back to Mistral)."""
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "default.yaml").write_text("name: default\nprefer: [kimi-k2.6, mistral-medium-3.5]\n")
    return policies


def _quota_gateway(start_gateway: GatewayFactory, db: str, tmp_path: Path) -> tuple[str, object, Clock]:
    server = start_gateway(
        database_url=db,
        master_key=MASTER,
        policies_dir=_kimi_first(tmp_path),
        circuit_cooldown_seconds=30,
        quota_cooldown_seconds=3600,
    )
    gateway = server.app.state.gateway
    clock = Clock()
    gateway.circuits.clock = clock
    return server.url, gateway, clock


def _auth() -> dict[str, str]:
    return auth(MASTER)


@pytest.mark.slow
def test_quota_exhausted_is_not_retried_holds_the_provider_and_falls_back(
    start_gateway: GatewayFactory, db: str, tmp_path: Path, mistral_log: EmulatorControl, moonshot_log: EmulatorControl
) -> None:
    from gateway.routing.circuits import CLOSED, OPEN

    url, gateway, clock = _quota_gateway(start_gateway, db, tmp_path)
    moonshot_log.fault(QUOTA, count=10)
    answer = post_json(url, CHAT, {"model": "auto", "messages": HELLO}, _auth())
    assert answer.status == 200, answer.body
    assert answer.headers["x-gateway-model"] == "mistral-medium-3.5"
    assert answer.headers["x-gateway-route-reason"] == "fallback:quota-exhausted"
    assert len(moonshot_log.requests()) == 1  # not retried: no wait tops the account up
    assert gateway.circuits.state("moonshot/kimi-k2.6") == OPEN and gateway.circuits.held("moonshot/kimi-k2.6")
    assert gateway.circuits.state("mistral/mistral-medium-3.5") == CLOSED
    samples = scrape(url, _auth())
    assert total(samples, "gateway_upstream_errors_total", provider="moonshot", kind="quota_exhausted") == 1
    assert total(samples, "gateway_upstream_errors_total", provider="moonshot", kind="status_429") == 0
    assert total(samples, "gateway_circuit_state", provider="moonshot", model="kimi-k2.6") == 2

    again = post_json(url, CHAT, {"model": "auto", "messages": HELLO}, _auth())
    assert again.status == 200 and again.headers["x-gateway-route-reason"] == "fallback:circuit-open"
    pinned = post_json(url, CHAT, KIMI, _auth())
    assert pinned.status == 503 and pinned.error["code"] == "upstream_quota_exhausted"
    assert "out of balance" in pinned.error["message"] and "moonshot" in pinned.error["message"]
    assert len(moonshot_log.requests()) == 1  # held: nothing more reached Moonshot

    clock.now += 31  # past the ordinary cool-down: an account hold lasts longer
    assert post_json(url, CHAT, KIMI, _auth()).error["code"] == "upstream_quota_exhausted"
    assert len(moonshot_log.requests()) == 1
    moonshot_log.reset()  # the account was topped up
    reload = request(url, "POST", "/admin/reload", headers=_auth())
    assert reload.status == 200, reload.body
    served = post_json(url, CHAT, KIMI, _auth())
    assert served.status == 200 and served.headers["x-gateway-provider"] == "moonshot", served.body
    assert gateway.circuits.state("moonshot/kimi-k2.6") == CLOSED
    statuses = [(r.status, r.model) for r in ledger(db)]
    assert statuses.count((503, "kimi-k2.6")) == 2 and statuses[-1] == (200, "kimi-k2.6")


@pytest.mark.slow
def test_quota_hold_ends_after_the_quota_cooldown_with_one_probe(
    start_gateway: GatewayFactory, db: str, tmp_path: Path, moonshot_log: EmulatorControl
) -> None:
    from gateway.routing.circuits import CLOSED, OPEN

    url, gateway, clock = _quota_gateway(start_gateway, db, tmp_path)
    moonshot_log.fault("status=403")  # Moonshot's quota body as a 403: the account, not the gateway's key
    first = post_json(url, CHAT, KIMI, _auth())
    assert first.status == 503 and first.error["code"] == "upstream_quota_exhausted", first.body
    assert "exceeded_current_quota_error" in first.error["message"]
    clock.now += 3599
    assert post_json(url, CHAT, KIMI, _auth()).error["code"] == "upstream_quota_exhausted"
    assert len(moonshot_log.requests()) == 1
    clock.now += 1
    moonshot_log.fault(QUOTA)  # the probe finds the account still empty: held again for another hour
    assert post_json(url, CHAT, KIMI, _auth()).error["code"] == "upstream_quota_exhausted"
    assert len(moonshot_log.requests()) == 2 and gateway.circuits.state("moonshot/kimi-k2.6") == OPEN
    clock.now += 3600
    assert post_json(url, CHAT, KIMI, _auth()).status == 200  # topped up: the next probe closes it
    assert gateway.circuits.state("moonshot/kimi-k2.6") == CLOSED and len(moonshot_log.requests()) == 3


def test_quota_hold_covers_every_deployment_of_the_provider() -> None:
    from gateway.routing.circuits import CLOSED, HALF_OPEN, OPEN, CircuitBreakers

    now = [0.0]
    changes: list[tuple[str, int]] = []
    breakers = CircuitBreakers(
        failures=5, cooldown=10, clock=lambda: now[0], on_change=lambda d, s: changes.append((d, s))
    )
    breakers.hold(["moonshot/a", "moonshot/b"], 100)
    assert changes == [("moonshot/a", OPEN), ("moonshot/b", OPEN)]
    now[0] = 50
    assert not breakers.allows("moonshot/a") and not breakers.allows("moonshot/b") and breakers.allows("mistral/c")
    now[0] = 100
    assert (
        breakers.allows("moonshot/a")
        and breakers.state("moonshot/a") == HALF_OPEN
        and not breakers.allows("moonshot/a")
    )
    breakers.failed("moonshot/a")  # the probe met an ordinary failure: an ordinary cool-down from here
    assert breakers.state("moonshot/a") == OPEN and not breakers.held("moonshot/a")
    now[0] = 110
    assert breakers.allows("moonshot/a")
    assert breakers.held("moonshot/b")  # nobody acted yet
    assert breakers.release_holds() == ["moonshot/b"]  # what a successful reload does
    assert breakers.state("moonshot/b") == CLOSED and not breakers.held("moonshot/b")


@pytest.mark.parametrize("kind", ["engine_overloaded_error", "rate_limit_reached_error"])
@pytest.mark.slow
def test_transient_429s_keep_retries_and_retry_after(
    start_gateway: GatewayFactory, db: str, moonshot_log: EmulatorControl, kind: str
) -> None:
    url = start_gateway(database_url=db).url
    moonshot_log.fault(f"status=429,error={kind},retry_after=0")
    answer = post_json(url, CHAT, KIMI)
    assert answer.status == 200 and len(moonshot_log.requests()) == 2, answer.body  # retried on the same model
    moonshot_log.reset()
    moonshot_log.fault(f"status=429,error={kind},retry_after=60", count=2)  # longer than retry_after_max_ms
    refused = post_json(url, CHAT, KIMI)
    assert refused.status == 429 and refused.headers["retry-after"] == "60" and refused.error["type"] == kind
    assert len(moonshot_log.requests()) == 1  # the provider's Retry-After is over the policy's limit: not waited for
