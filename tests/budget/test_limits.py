"""Every parameter that multiplies or lengthens an answer is priced before the call, and the end of a budget
is exact: no request, and no number of concurrent requests, spends past it (real gateway on 127.0.0.1)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.emulators import EmulatorControl
from tests.support.gateways import GatewayFactory
from tests.support.http import auth, post_at_once, post_json
from tests.support.store import ledger, make_key, make_team, team_usage

pytestmark = pytest.mark.slow

CHAT = "/v1/chat/completions"
EXPLAIN = "/v1/route/explain"
SHORT = [{"role": "user", "content": "Count to three."}]
MISTRAL_OUT = 7.5e-6  # USD per output token, Mistral Medium 3.5


@pytest.fixture()
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'limits.db'}"


def _script(control: EmulatorControl, replies: list[dict[str, Any]]) -> None:
    control._call("POST", "/_emulator/script", {"replies": replies})


@pytest.fixture()
def long_answers(mistral_log: EmulatorControl) -> Any:
    """Mistral answers with 4,000 tokens (cut at max_tokens, as the provider does): $0.03 per answer."""
    control = mistral_log
    control._call("DELETE", "/_emulator/script")
    yield lambda count: _script(control, [{"content": " ".join(["alpha"] * 4000)}] * count)
    control._call("DELETE", "/_emulator/script")


def test_n_beyond_the_models_limit_is_refused_before_any_call(
    start_gateway: GatewayFactory, db: str, mistral_log: EmulatorControl
) -> None:
    make_team(db, "tiny", "0.001")
    key, _ = make_key(db, "tiny")
    url = start_gateway(database_url=db).url
    for n in (100, 2**63 - 1, 2**70):
        answer = post_json(url, CHAT, {"model": "mistral-medium-3.5", "messages": SHORT, "n": n}, auth(key))
        assert answer.status == 400 and answer.error["param"] == "n", answer.body
    answer = post_json(url, "/v1/completions", {"model": "mistral-medium-3.5", "prompt": "x", "best_of": 21}, auth(key))
    assert answer.status == 400 and answer.error["param"] == "best_of", answer.body
    assert mistral_log.requests() == [] and ledger(db) == []


def test_n_multiplies_the_reservation(start_gateway: GatewayFactory, db: str, mistral_log: EmulatorControl) -> None:
    # n=8 answers of up to 100 tokens: $0.006 of output at worst, six times the $0.001 budget.
    make_team(db, "tiny", "0.001")
    key, _ = make_key(db, "tiny")
    url = start_gateway(database_url=db).url
    body = {"model": "mistral-medium-3.5", "messages": SHORT, "n": 8, "max_tokens": 100}
    answer = post_json(url, CHAT, body, auth(key))
    assert answer.status == 429 and answer.error["code"] == "budget_exceeded", answer.body
    assert mistral_log.requests() == []
    roomy = make_team(db, "roomy", "1.00")
    roomy_key, _ = make_key(db, "roomy")
    explained = post_json(url, EXPLAIN, body, auth(roomy_key)).json()["admission"]
    assert float(explained["reservation_usd"]) >= 8 * 100 * MISTRAL_OUT
    served = post_json(url, CHAT, {**body, "n": 3}, auth(roomy_key))
    assert served.status == 200 and len(served.json()["choices"]) == 3
    assert team_usage(db, roomy).spent_nanos == sum(r.cost_nanos for r in ledger(db, team="roomy"))


def test_min_tokens_is_priced_on_fim(start_gateway: GatewayFactory, db: str, mistral_log: EmulatorControl) -> None:
    # Codestral: 20,000 tokens at least, $0.018 of output, eighteen times the budget.
    make_team(db, "tiny", "0.001")
    key, _ = make_key(db, "tiny")
    url = start_gateway(database_url=db).url
    body = {"model": "codestral", "prompt": "def add(a, b):", "suffix": "return c", "min_tokens": 20000}
    for path in ("/v1/fim/completions", "/v1/completions"):
        answer = post_json(url, path, body, auth(key))
        assert answer.status == 429 and answer.error["code"] == "budget_exceeded", (path, answer.body)
        inverted = post_json(url, path, {**body, "max_tokens": 10}, auth(key))
        assert inverted.status == 400 and inverted.error["param"] == "min_tokens", inverted.body
    assert mistral_log.requests() == [] and ledger(db) == []


def test_a_request_cannot_run_past_the_end_of_its_budget(
    start_gateway: GatewayFactory, db: str, mistral_log: EmulatorControl, long_answers: Any
) -> None:
    """Another team's short answers make the expected output tiny; the budget still bounds the worst case."""
    url = start_gateway(database_url=db).url
    make_team(db, "short", None)
    short_key, _ = make_key(db, "short")
    for index in range(12):  # another team's short answers: the model's learned output is a few tokens
        ask = {"model": "mistral-medium-3.5", "messages": [{"role": "user", "content": f"hi {index}"}], "max_tokens": 3}
        assert post_json(url, CHAT, ask, auth(short_key)).status == 200
    team = make_team(db, "agent", "0.02", policy="eu-only")  # lower_max_tokens down to 1,024
    key, _ = make_key(db, "agent")
    long_answers(1)
    answer = post_json(url, CHAT, {"model": "mistral-medium-3.5", "messages": SHORT, "max_tokens": 32768}, auth(key))
    assert answer.status == 200, answer.body
    sent = mistral_log.last()["body"]["max_tokens"]
    assert 1024 <= sent < 32768 and answer.json()["choices"][0]["finish_reason"] == "length"
    spent = team_usage(db, team).spent_nanos
    assert spent <= team.budget_nanos, (spent, team.budget_nanos)
    again = post_json(url, CHAT, {"model": "mistral-medium-3.5", "messages": SHORT, "max_tokens": 32768}, auth(key))
    assert again.status == 429  # what is left is below the policy's floor: refused, never overspent


def test_concurrent_long_answers_cannot_overspend(
    start_gateway: GatewayFactory, db: str, mistral_log: EmulatorControl, long_answers: Any
) -> None:
    """Thirty agents at once, each answer long enough to cost more than the whole budget."""
    team = make_team(db, "swarm", "0.05", policy="eu-only")
    key, _ = make_key(db, "swarm")
    url = start_gateway(database_url=db).url
    long_answers(30)
    body = {"model": "mistral-medium-3.5", "messages": SHORT, "max_tokens": 32768}
    statuses = [answer.status for answer in post_at_once(url, CHAT, body, 30, auth(key))]
    assert statuses.count(200) >= 1 and set(statuses) <= {200, 429}, statuses
    rows = ledger(db, team="swarm")
    usage = team_usage(db, team)
    assert usage.spent_nanos == sum(r.cost_nanos for r in rows) and usage.reserved_nanos == 0
    assert usage.spent_nanos <= team.budget_nanos, (usage.spent_nanos, team.budget_nanos)
