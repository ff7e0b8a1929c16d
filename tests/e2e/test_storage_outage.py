"""The database goes away and comes back, behind a TCP forwarder the test controls (PostgreSQL itself runs on).

While it is away: requests get 503 `storage_unavailable` with Retry-After before any provider is called, and
/readyz says not ready. A request whose provider answered meanwhile keeps its ledger row in the local journal,
which is written to the database when it is back: nothing billed is lost, nothing is counted twice. When it is
back, the gateway serves again within seconds, without a restart.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from gateway.http.servers import ThreadedServer
from tests.support import sse
from tests.support.emulators import EmulatorControl
from tests.support.forwarder import Forwarder
from tests.support.gateways import GatewayFactory
from tests.support.http import begin_post_json, post_json, request
from tests.support.store import ledger, make_key, make_team, team_usage
from tests.support.waiting import wait_until

CHAT = "/v1/chat/completions"
SHORT = [{"role": "user", "content": "Count to three."}]
BODY = {"model": "mistral-medium-3.5", "messages": SHORT, "max_tokens": 20}

pytestmark = pytest.mark.slow


def _via(forwarder: Forwarder, postgres_url: str) -> str:
    base, _, database = postgres_url.rpartition("/")
    return f"{base.rsplit(':', 1)[0]}:{forwarder.port}/{database}"


def _ready(url: str) -> bool:
    return request(url, "GET", "/readyz", timeout=5).status == 200


@pytest.fixture()
def outage(start_gateway: GatewayFactory, postgres_url: str, tmp_path: Path) -> Any:
    forwarder = Forwarder(5432).start()
    database = _via(forwarder, postgres_url)
    team = make_team(postgres_url, f"web-{uuid.uuid4().hex[:8]}", "5.00")  # the database lives for the session
    key, _ = make_key(postgres_url, team.name)
    server = start_gateway(database_url=database, data_dir=tmp_path / "data")
    try:
        yield server, forwarder, {"authorization": f"Bearer {key}"}, postgres_url, team
    finally:
        forwarder.stop()


def test_an_outage_is_a_503_before_any_provider_call_and_the_gateway_comes_back(
    outage: Any, mistral_log: EmulatorControl
) -> None:
    server, forwarder, auth, database, team = outage
    assert post_json(server.url, CHAT, BODY, auth).status == 200
    mistral_log.reset()
    forwarder.stop()
    for body in (BODY, {**BODY, "stream": True}):
        answer = post_json(server.url, CHAT, body, auth)
        assert answer.status == 503, answer.body
        assert answer.error["code"] == "storage_unavailable" and answer.error["type"] == "server_error"
        assert answer.headers["retry-after"] == "2"
        assert "5432" not in answer.body.decode() and "Traceback" not in answer.body.decode()
    assert mistral_log.requests() == []  # nothing was sent upstream
    assert not _ready(server.url)
    forwarder.start()  # the database is back: no restart
    wait_until(lambda: post_json(server.url, CHAT, BODY, auth).status == 200)
    assert _ready(server.url)
    metrics = request(server.url, "GET", "/metrics", timeout=5).text
    assert 'gateway_storage_errors_total{stage="request"}' in metrics
    rows = ledger(database, team=team.name)
    assert len(rows) == 2 and all(r.status == 200 for r in rows)  # the first and the one after the outage


@pytest.mark.parametrize("stream", [False, True])
def test_a_row_the_database_cannot_take_is_journaled_and_written_when_it_is_back(
    outage: Any, mistral_log: EmulatorControl, stream: bool
) -> None:
    server, forwarder, auth, database, team = outage
    assert post_json(server.url, CHAT, BODY, auth).status == 200  # connections warm
    mistral_log.reset()
    mistral_log.fault("latency=400")  # the provider takes a moment: the database goes away meanwhile
    connection = begin_post_json(server.url, CHAT, {**BODY, "stream": stream}, auth)
    wait_until(lambda: len(mistral_log.requests()) == 1)  # admitted and reserved: the prompt is upstream
    forwarder.stop()
    response = connection.getresponse()
    data = response.read()
    assert response.status == 200, data
    if stream:
        events = sse.events(data)
        assert data.rstrip().endswith(b"data: [DONE]") and not any("error" in e for e in events if isinstance(e, dict))
    forwarder.start()
    rows = wait_until(lambda: (lambda found: found if len(found) == 2 else None)(ledger(database, team=team.name)))
    usage = team_usage(database, team)
    assert usage.spent_nanos == sum(r.cost_nanos for r in rows) and usage.reserved_nanos == 0
    assert len({r.id for r in rows}) == 2  # once each
    gateway = server.app.state.gateway
    assert wait_until(lambda: gateway.accounting.journal.pending == 0 or None)


def test_a_row_neither_the_database_nor_the_journal_can_take_ends_the_stream_with_an_error(
    start_gateway: GatewayFactory, postgres_url: str, tmp_path: Path, mistral_log: EmulatorControl
) -> None:
    forwarder = Forwarder(5432).start()
    database = _via(forwarder, postgres_url)
    team = make_team(postgres_url, f"lost-{uuid.uuid4().hex[:8]}", "5.00")
    key, _ = make_key(postgres_url, team.name)
    auth = {"authorization": f"Bearer {key}"}
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("the journal cannot live under a file")
    server: ThreadedServer = start_gateway(database_url=database, data_dir=blocked)
    try:
        assert post_json(server.url, CHAT, BODY, auth).status == 200
        mistral_log.reset()
        mistral_log.fault("latency=400")
        connection = begin_post_json(server.url, CHAT, {**BODY, "stream": True}, auth)
        wait_until(lambda: len(mistral_log.requests()) == 1)
        forwarder.stop()
        response = connection.getresponse()
        events = sse.events(response.read())
        assert events[-1]["error"]["code"] == "ledger_unavailable", events[-1]
        metrics = request(server.url, "GET", "/metrics", timeout=5).text
        assert 'gateway_storage_errors_total{stage="lost"} 1.0' in metrics
    finally:
        forwarder.stop()
