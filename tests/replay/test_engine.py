"""Replay over a ledger (gateway/replay/engine.py): the decision with other policies, compared with what happened,
on a real SQLite store that is only read."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from gateway.catalog import Catalog
from gateway.policy import PolicySet, builtin_policies, load_policies
from gateway.pricing import cost_nanos
from gateway.replay import engine, policy_set_from_text, replay
from gateway.replay.report import ReplayReport
from gateway.store.base import KeyRecord, Store, Team
from gateway.types import Usage
from tests.replay.rows import DAY, T0, catalog, inputs, on_store, row, write

REPO_POLICIES = Path(__file__).resolve().parents[2] / "policies"
# The shipped eu-only policy's routing, as the policy of teams that use `default`.
EU_DEFAULT = """
name: default
models: [mistral-medium-3.5, codestral, mistral-embed]
regions: [eu]
prefer: [mistral-medium-3.5]
named_model: refuse
"""


@pytest.fixture()
def cat() -> Catalog:
    return catalog()


@pytest.fixture()
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'gateway.db'}"


def ledger_dump(url: str) -> list[str]:
    """Every statement that would rebuild the database: the ledger and everything else, byte for byte."""
    db = sqlite3.connect(url.removeprefix("sqlite:///"))
    try:
        return list(db.iterdump())
    finally:
        db.close()


class ReadOnly:
    """A store that fails any call but the reads replay makes (teams, keys, ledger pages, spend)."""

    READS = ("list_teams", "list_keys", "ledger_page", "spend")

    def __init__(self, store: Store) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        if name not in self.READS:
            raise AssertionError(f"replay called store.{name}")
        return getattr(self._store, name)


def run_replay(url: str, policies: PolicySet, **options: Any) -> ReplayReport:
    options = {"team": None, "since": T0 - DAY, "until": None, "default_expected_output": 1024, **options}

    async def body(store: Store) -> ReplayReport:
        return await replay(ReadOnly(store), catalog(), policies, **options)  # type: ignore[arg-type]

    return on_store(url, body)


def price(cat: Catalog, model: str, prompt: int, completion: int, cached: int = 0) -> int:
    usage = Usage(prompt_tokens=prompt, completion_tokens=completion, cached_tokens=cached)
    return cost_nanos(cat.models[model], usage)


def current(cat: Catalog) -> PolicySet:
    policies = load_policies(REPO_POLICIES, cat)
    assert policies.ok, policies.errors
    return policies


def test_eu_only_moves_every_cn_row_to_eu_at_mistral_prices_and_refuses_kimi_by_name(url: str, cat: Catalog) -> None:
    rows = [
        row(cat, "kimi-k2.6", prompt=1_000, completion=200, cached=100),
        row(cat, "kimi-k2.6", prompt=5_000, completion=900, decision=inputs(cat, 5_000, ("chat", "tools"))),
        row(cat, "kimi-k2.6", requested="kimi-k2.6", prompt=700, completion=50),
        row(cat, "mistral-medium-3.5", prompt=300, completion=30),
        row(cat, "mistral-embed", requested="mistral-embed", prompt=80, completion=0, endpoint="embeddings",
            decision=inputs(cat, 80, ("embeddings",), max_tokens=None)),
    ]  # fmt: skip
    write(url, rows, lambda s: s.create_team(Team("web", created_at=1)))
    before = ledger_dump(url)

    report = run_replay(url, policy_set_from_text("", EU_DEFAULT, cat, current(cat)))
    data = report.as_dict()

    assert ledger_dump(url) == before  # the ledger (and the whole database) byte for byte as it was
    assert data["rows"] == {
        "replayed": 5,
        "approximated": 0,
        "skipped": {},
        "refused": 1,
        "changed_model": 2,
        "moved_region": 2,
        "over_budget": 0,
    }
    # Every cn row that was not named moved to eu, to Mistral Medium, at its price on the same tokens.
    assert data["region_moves"] == [{"from": "cn", "to": "eu", "requests": 2}]
    medium = {m["model"]: m for m in data["models"]}["mistral-medium-3.5"]
    assert (medium["requests_before"], medium["requests_after"]) == (1, 3)
    moved = price(cat, "mistral-medium-3.5", 1_000, 200, 100) + price(cat, "mistral-medium-3.5", 5_000, 900)
    assert medium["cost_after_nanos"] == moved + rows[3].cost_nanos
    kimi = {m["model"]: m for m in data["models"]}["kimi-k2.6"]
    assert (kimi["requests_before"], kimi["requests_after"], kimi["cost_after_nanos"]) == (3, 0, 0)
    # Kimi named by the client: refused, with the policy's reason.
    (refused,) = data["refused"]
    assert (refused["code"], refused["status"], refused["requests"]) == ("model_not_allowed", 403, 1)
    (example,) = refused["examples"]
    assert example["id"] == rows[2].id and example["requested_model"] == "kimi-k2.6"
    assert "kimi-k2.6" in example["message"] and "policy 'default'" in example["message"]
    # Cost, exactly: before is what was billed; after the new models' prices on the billed tokens.
    embed = rows[4].cost_nanos
    assert data["cost"]["before_nanos"] == sum(r.cost_nanos for r in rows)
    assert data["cost"]["after_nanos"] == moved + rows[3].cost_nanos + embed
    assert data["cost"]["delta_nanos"] == data["cost"]["after_nanos"] - data["cost"]["before_nanos"]
    assert {(m["from"], m["to"]): m["requests"] for m in data["model_moves"]} == {
        ("kimi-k2.6", "mistral-medium-3.5"): 2,
        ("kimi-k2.6", "(refused)"): 1,
        ("mistral-medium-3.5", "mistral-medium-3.5"): 1,
        ("mistral-embed", "mistral-embed"): 1,
    }
    providers = {p["provider"]: (p["requests_before"], p["requests_after"]) for p in data["providers"]}
    assert providers == {"moonshot": (3, 0), "mistral": (2, 4)}


def test_the_shipped_eu_only_file_applies_to_the_teams_that_use_it(url: str, cat: Catalog) -> None:
    rows = [row(cat, "kimi-k2.6", team="eu-team"), row(cat, "mistral-medium-3.5", team="other")]
    write(url, rows, lambda s: _teams(s, Team("eu-team", policy="eu-only"), Team("other")))
    text = (REPO_POLICIES / "eu-only.yaml").read_text()
    data = run_replay(url, policy_set_from_text("eu-only.yaml", text, cat, current(cat))).as_dict()
    teams = {t["team"]: t for t in data["teams"]}
    assert (teams["eu-team"]["policy"], teams["eu-team"]["moved_region"]) == ("eu-only", 1)
    assert (teams["other"]["policy"], teams["other"]["moved_region"]) == ("default", 0)


async def _teams(store: Store, *teams: Team) -> None:
    for team in teams:
        await store.create_team(team)


def test_a_policy_that_forbids_a_model_refuses_its_rows_and_reroutes_auto(url: str, cat: Catalog) -> None:
    no_kimi = "name: default\nmodels: [mistral-medium-3.5, codestral, mistral-embed]\nnamed_model: refuse\n"
    rows = [
        row(cat, "kimi-k2.6", requested="kimi-k2.6"),
        row(cat, "kimi-k2.6", requested="kimi-k2.6"),
        row(cat, "kimi-k2.6"),
    ]
    write(url, rows, lambda s: s.create_team(Team("web")))
    data = run_replay(url, policy_set_from_text("default.yaml", no_kimi, cat, current(cat))).as_dict()
    (refused,) = data["refused"]
    assert (refused["code"], refused["requests"]) == ("model_not_allowed", 2)
    assert [e["id"] for e in refused["examples"]] == [rows[0].id, rows[1].id]
    assert all("is not in the models of policy 'default'" in e["message"] for e in refused["examples"])
    assert data["rows"]["refused"] == 2 and data["rows"]["changed_model"] == 1
    # The rerouted `auto` row is not a refusal: it runs on Mistral Medium (the whole cost after is its new price).
    assert data["cost"]["after_nanos"] == price(cat, "mistral-medium-3.5", 1_000, 200)


def test_rows_without_inputs_are_approximated_from_what_they_have(url: str, cat: Catalog) -> None:
    long_prompt = 300_000  # over Mistral Medium's 256K window: only Kimi K2.6 (1M) holds it
    rows = [
        row(cat, "kimi-k2.6", prompt=long_prompt, decision=None),
        row(cat, "codestral", requested="codestral", endpoint="fim", decision=None),
        row(cat, "kimi-k2.6", decision=None),
    ]
    write(url, rows, lambda s: s.create_team(Team("web")))
    data = run_replay(url, policy_set_from_text("", EU_DEFAULT, cat, current(cat))).as_dict()
    assert data["rows"]["approximated"] == 3 and data["rows"]["replayed"] == 3
    # The billed prompt is the count: the long one fits nowhere in the eu, the FIM row keeps codestral (the endpoint is
    # its capability), the short one moves.
    (refused,) = data["refused"]
    assert (refused["code"], refused["examples"][0]["id"]) == ("no_route", rows[0].id)
    assert "mistral-medium-3.5 holds 262,144" in refused["examples"][0]["message"]
    moves = {(m["from"], m["to"]): m["requests"] for m in data["model_moves"]}
    assert moves == {
        ("kimi-k2.6", "(refused)"): 1,
        ("codestral", "codestral"): 1,
        ("kimi-k2.6", "mistral-medium-3.5"): 1,
    }


def test_recorded_inputs_decide_residency_capability_and_limits(url: str, cat: Catalog) -> None:
    rows = [
        # Asked for eu residency: under a policy preferring Kimi it still cannot leave the eu.
        row(cat, "mistral-medium-3.5", decision=inputs(cat, 1_000, residency=["eu"])),
        # Needs vision: codestral lacks it.
        row(cat, "mistral-medium-3.5", requested="codestral", decision=inputs(cat, 1_000, ("chat", "vision"))),
        # On Kimi K2.6 (max_n 1, 32,768 output tokens at most): n=2, or max_tokens over its limit, are the 400s the
        # pipeline answers before any call.
        row(cat, "mistral-medium-3.5", decision=inputs(cat, 1_000, max_tokens=40_000)),
        row(cat, "mistral-medium-3.5", decision=inputs(cat, 1_000, n=2)),
        # ... except on the doors whose max_tokens is a ceiling for another vendor's models: lowered, not refused.
        row(cat, "mistral-medium-3.5", endpoint="messages", decision=inputs(cat, 1_000, max_tokens=40_000)),
    ]
    write(url, rows, lambda s: s.create_team(Team("web")))
    kimi_first = "name: default\nprefer: [kimi-k2.6]\n"
    data = run_replay(url, policy_set_from_text("default", kimi_first, cat, current(cat))).as_dict()
    moves = {(m["from"], m["to"]): m["requests"] for m in data["model_moves"]}
    assert moves[("mistral-medium-3.5", "mistral-medium-3.5")] == 1  # the eu row stayed
    codes = {r["code"]: r for r in data["refused"]}
    assert codes["unsupported_capability"]["examples"][0]["id"] == rows[1].id
    assert "does not support vision" in codes["unsupported_capability"]["examples"][0]["message"]
    assert codes["invalid_value"]["examples"][0]["id"] == rows[2].id
    assert "more than model 'kimi-k2.6' can produce" in codes["invalid_value"]["examples"][0]["message"]
    assert codes["unsupported_parameter"]["examples"][0]["id"] == rows[3].id
    assert moves[("mistral-medium-3.5", "kimi-k2.6")] == 1  # the Messages row
    assert data["rows"]["refused"] == 3


def test_teams_keys_and_batches(url: str, cat: Catalog) -> None:
    key = KeyRecord("key_1", "web", "ci", "gw-abcd", "hash-1", models=["kimi-k2.6"])
    rows = [
        row(cat, "kimi-k2.6", key=("key_1", "gw-abcd")),  # the key allows Kimi K2.6 only: it stays there
        row(cat, "kimi-k2.6", key=("key_gone", "gw-gone")),  # a key that no longer exists: the team's models
        row(cat, "kimi-k2.6", team="deleted"),
        row(cat, "kimi-k2.6", batch_id="batch_1", decision=None),
        row(cat, "kimi-k2.6", batch_id="batch_2"),
        row(cat, "kimi-k2.6", team="admin"),  # the master key's built-in team: the default policy
    ]

    async def setup(store: Store) -> None:
        await store.create_team(Team("web"))
        await store.create_key(key)

    write(url, rows, setup)
    data = run_replay(url, current(cat)).as_dict()
    assert data["rows"]["skipped"] == {"batch_line": 2, "team_deleted": 1}
    assert data["rows"]["replayed"] == 3
    moves = {(m["from"], m["to"]): m["requests"] for m in data["model_moves"]}
    # The default policy prefers Mistral Medium: the key's row stays on Kimi, the other two move.
    assert moves == {("kimi-k2.6", "kimi-k2.6"): 1, ("kimi-k2.6", "mistral-medium-3.5"): 2}
    assert {t["team"]: t["policy"] for t in data["teams"]} == {"web": "default", "admin": "default"}
    # One team, and a window.
    only = run_replay(url, current(cat), team="admin").as_dict()
    assert only["rows"]["replayed"] == 1 and only["filters"]["team"] == "admin"
    none = run_replay(url, current(cat), since=T0 + DAY).as_dict()
    assert none["rows"]["replayed"] == 0 and none["cost"]["delta_pct"] is None


def test_a_team_whose_policy_the_replayed_set_lacks_is_refused(url: str, cat: Catalog) -> None:
    write(url, [row(cat, "kimi-k2.6", team="saver")], lambda s: s.create_team(Team("saver", policy="cost-saver")))
    data = run_replay(url, builtin_policies()).as_dict()
    (refused,) = data["refused"]
    assert (refused["code"], refused["status"], refused["requests"]) == ("policy_not_found", 503, 1)
    assert "'cost-saver' is not among the replayed policies (default)" in refused["examples"][0]["message"]


def test_the_budget_step_reads_the_spend_replay_keeps(url: str, cat: Catalog) -> None:
    # Mistral Medium first, but above half the budget spent the cheapest allowed model goes first.
    saver = "name: default\nprefer: [mistral-medium-3.5]\nbudget: {prefer_cheapest_above_pct: 50, downgrade_to: [kimi-k2.6]}\n"
    one = price(cat, "mistral-medium-3.5", 1_000, 200)
    budget = one * 3  # the third row starts above half: 2 x one = 66%
    rows = [row(cat, "mistral-medium-3.5", ts=T0 + i) for i in range(4)]
    write(url, rows, lambda s: s.create_team(Team("web", budget_nanos=budget, period="total")))
    data = run_replay(url, policy_set_from_text("default", saver, cat, current(cat))).as_dict()
    moves = {(m["from"], m["to"]): m["requests"] for m in data["model_moves"]}
    assert moves == {("mistral-medium-3.5", "mistral-medium-3.5"): 2, ("mistral-medium-3.5", "kimi-k2.6"): 2}
    assert data["rows"]["over_budget"] == 0
    # The same traffic on a budget of one request and a half: the rows served after it is spent are counted.
    url2 = url.replace("gateway.db", "small.db")
    write(url2, rows, lambda s: s.create_team(Team("web", budget_nanos=one + one // 2, period="total")))
    small = run_replay(url2, current(cat)).as_dict()
    (team,) = small["teams"]
    assert small["rows"]["over_budget"] == 3 == team["over_budget"]
    assert team["over_budget_from"] is not None


def test_the_ledger_is_read_a_page_at_a_time(url: str, cat: Catalog, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine, "PAGE_ROWS", 3)
    rows = [row(cat, "kimi-k2.6", ts=T0 + i) for i in range(7)]
    write(url, rows, lambda s: s.create_team(Team("web")))
    data = run_replay(url, policy_set_from_text("", EU_DEFAULT, cat, current(cat))).as_dict()
    assert data["rows"]["replayed"] == 7 and data["region_moves"] == [{"from": "cn", "to": "eu", "requests": 7}]
