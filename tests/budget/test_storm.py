"""The budget storm: 150 concurrent requests of about 10,700 Tekken tokens each against a budget that fits 9.

At least 90% of what fits is admitted (the reservation counts the prompt with Mistral's tokenizer, not by body
bytes), and never more than fits (the reservation is each request's worst case), on one process, on three
workers sharing one SQLite file, and on two gateway processes sharing PostgreSQL.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from gateway.http.servers import ThreadedServer
from tests.support.emulators import provider_env
from tests.support.gateways import GatewayFactory, start_cli_gateway, stop
from tests.support.http import auth, post_at_once, post_json
from tests.support.store import ledger, make_key, make_team, on_store, team_usage

pytestmark = pytest.mark.slow

CHAT = "/v1/chat/completions"
PROSE = (
    "The quick brown fox jumps over the lazy dog while the committee reviews quarterly budgets, "
    "and engineers refactor the payment service to reduce latency. "
) * 400  # about 10,700 Tekken tokens
BODY = {"model": "mistral-medium-3.5", "messages": [{"role": "user", "content": PROSE}], "max_tokens": 10}
FITS = 9
CONCURRENT = 150


@pytest.fixture()
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'storm.db'}"


def _true_cost(url: str, database: str) -> int:
    """What one such request really costs: served once for a team without a budget (all answers are alike)."""
    make_team(database, "calibration", None)
    key, _ = make_key(database, "calibration")
    answer = post_json(url, CHAT, BODY, auth(key))
    assert answer.status == 200, answer.body
    (row,) = ledger(database, team="calibration")
    assert 10_000 <= row.prompt_tokens <= 12_000 and not row.estimated
    return row.cost_nanos


def _storm(urls: list[str], database: str, name: str) -> None:
    cost = _true_cost(urls[0], database)
    team = make_team(database, name, None)
    team.budget_nanos = cost * FITS + cost // 2  # fits 9 requests, not 10
    on_store(database, lambda s: s.update_team(team))
    key, _ = make_key(database, name)
    results = post_at_once(urls, CHAT, BODY, CONCURRENT, auth(key))
    statuses = [answer.status for answer in results]
    admitted = statuses.count(200)
    assert set(statuses) <= {200, 429}, statuses
    assert all(answer.json()["error"]["code"] == "budget_exceeded" for answer in results if answer.status == 429)
    rows = [r for r in ledger(database, team=name)]
    spent = sum(r.cost_nanos for r in rows)
    usage = team_usage(database, team)
    # Never more than fits, and every admitted request is billed exactly once, nothing left reserved.
    assert admitted <= FITS and spent <= team.budget_nanos, (admitted, spent, team.budget_nanos)
    assert len(rows) == admitted and usage.spent_nanos == spent and usage.reserved_nanos == 0
    # At least 90% of what fits (before: 5 of 9, the prompt priced at body bytes / 4).
    assert admitted >= math.ceil(0.9 * FITS), f"admitted {admitted} of the {FITS} that fit"


def test_storm_on_one_process(start_gateway: GatewayFactory, db: str) -> None:
    _storm([start_gateway(database_url=db).url], db, "storm")


def test_storm_on_three_workers_sharing_sqlite(db: str, mistral: ThreadedServer, moonshot: ThreadedServer) -> None:
    make_team(db, "bootstrap", None)  # the schema exists before three workers open the file
    process, url = start_cli_gateway(db, provider_env(mistral, moonshot), workers=3)
    try:
        _storm([url], db, "storm-workers")
    finally:
        stop(process)


def test_storm_on_two_nodes_sharing_postgres(
    postgres_url: str, mistral: ThreadedServer, moonshot: ThreadedServer
) -> None:
    make_team(postgres_url, "bootstrap", None)
    nodes = [start_cli_gateway(postgres_url, provider_env(mistral, moonshot)) for _ in range(2)]
    try:
        _storm([url for _, url in nodes], postgres_url, "storm-nodes")
    finally:
        for process, _ in nodes:
            stop(process)
