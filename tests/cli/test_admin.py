"""`gateway teams|keys|spend` as users run them: subprocesses on the database itself, and against a running gateway."""

from __future__ import annotations

import csv
import io
import json
import subprocess
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from gateway.cli.tables import render_team
from gateway.money import usd_to_nanos
from gateway.store.base import GROUPS
from tests.support.admin import MASTER_KEY, chat, expected_groups, insert_key, sample_ledger, totals
from tests.support.gateways import GATEWAY, GatewayFactory, clean_env
from tests.support.postgres import fresh_database
from tests.support.store import record
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow


class Cli:
    """Runs `gateway ...` with a fixed environment."""

    def __init__(self, env: dict[str, str], *options: str) -> None:
        self.env = env
        self.options = list(options)  # --url or --database-url, appended to every command

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*GATEWAY, *args, *self.options], capture_output=True, text=True, timeout=60, env=self.env
        )

    def ok(self, *args: str) -> str:
        done = self.run(*args)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "--format", "json"))

    def fails(self, code: int, *args: str) -> str:
        done = self.run(*args)
        assert done.returncode == code, (args, done.returncode, done.stdout, done.stderr)
        return done.stderr


@pytest.fixture()
def direct(tmp_path: Path) -> tuple[Cli, str]:
    database_url = f"sqlite:///{tmp_path}/cli.db"
    return Cli(clean_env(GATEWAY_DATABASE_URL=database_url)), database_url


# -- direct mode -------------------------------------------------------------------------------------


def test_teams_on_the_database(direct: tuple[Cli, str]) -> None:
    cli, _ = direct
    out = cli.ok(
        "teams",
        "create",
        "alpha",
        "--budget",
        "12.50",
        "--period",
        "weekly",
        "--soft-limit",
        "80",
        "--regions",
        "eu",
        "--models",
        "codestral,mistral-medium-3.5",
    )
    assert "$12.50" in out and "weekly" in out and "80%" in out and "codestral,mistral-medium-3.5" in out
    cli.ok("teams", "create", "beta", "--period", "total")

    listing = cli.ok("teams", "list").splitlines()
    assert listing[0].split()[:3] == ["NAME", "BUDGET", "PERIOD"]
    assert [line.split()[0] for line in listing[1:]] == ["alpha", "beta"]
    assert listing[1].index("weekly") == listing[0].index("PERIOD") == listing[2].index("total")  # aligned columns

    shown = cli.json("teams", "show", "alpha")
    assert shown["budget_nanos"] == 12_500_000_000 and shown["remaining_nanos"] == 12_500_000_000
    assert shown["regions"] == ["eu"] and shown["period"] == "weekly"

    updated = cli.json("teams", "update", "alpha", "--budget", "none", "--models", "any", "--soft-limit", "none")
    assert updated["budget_usd"] is None and updated["models"] is None and updated["soft_limit_pct"] is None
    assert updated["regions"] == ["eu"] and updated["period"] == "weekly"

    assert "deleted team beta and its 0 key(s)" in cli.ok("teams", "delete", "beta")
    assert [t["name"] for t in cli.json("teams", "list")] == ["alpha"]


def test_bad_input_and_exit_codes(direct: tuple[Cli, str]) -> None:
    cli, _ = direct
    cli.ok("teams", "create", "alpha")
    assert "already exists" in cli.fails(2, "teams", "create", "alpha")
    assert "budget_usd" in cli.fails(2, "teams", "create", "beta", "--budget", "-5")
    assert "period" in cli.fails(2, "teams", "create", "beta", "--period", "yearly")
    assert "soft_limit_pct" in cli.fails(2, "teams", "create", "beta", "--soft-limit", "lots")
    assert "models" in cli.fails(2, "teams", "create", "beta", "--models", "gpt-9")
    assert "does not exist" in cli.fails(1, "teams", "show", "beta")
    assert "does not exist" in cli.fails(1, "teams", "delete", "beta")
    assert "nothing to update" in cli.fails(2, "teams", "update", "alpha")
    assert "team" in cli.fails(2, "keys", "create", "--team", "beta")
    assert "does not exist" in cli.fails(1, "keys", "revoke", "key_0000")
    cli.fails(2, "spend", "--group-by", "week")  # argparse: usage error
    assert "since" in cli.fails(2, "spend", "--since", "yesterday")
    assert [t["name"] for t in cli.json("teams", "list")] == ["alpha"]


def test_configuration_errors(tmp_path: Path) -> None:
    cli = Cli(clean_env(GATEWAY_DATABASE_URL="mysql://nope/db"))
    assert "unsupported database URL" in cli.fails(2, "teams", "list")
    cli = Cli(clean_env(GATEWAY_DATABASE_URL=f"sqlite:///{tmp_path}/x.db", GATEWAY_BUDGET_TIMEZONE="Mars/Olympus"))
    assert "GATEWAY_" in cli.fails(2, "teams", "list")
    cli = Cli(
        clean_env(GATEWAY_DATABASE_URL=f"sqlite:///{tmp_path}/x.db", GATEWAY_CONFIG=str(tmp_path / "missing.yaml"))
    )
    assert "missing.yaml" in cli.fails(2, "teams", "create", "alpha")  # the catalog checks model names
    assert "cannot use the database" in cli.fails(
        1, "teams", "list", "--database-url", "postgresql://postgres@127.0.0.1:1/none"
    )
    assert "GATEWAY_MASTER_KEY" in Cli(clean_env()).fails(2, "teams", "list", "--url", "http://127.0.0.1:1")
    assert "cannot reach" in Cli(clean_env(GATEWAY_MASTER_KEY="k")).fails(
        1, "teams", "list", "--url", "http://127.0.0.1:1"
    )


def test_database_url_option_wins_over_the_environment(tmp_path: Path) -> None:
    cli = Cli(clean_env(GATEWAY_DATABASE_URL=f"sqlite:///{tmp_path}/env.db"))
    cli.ok("teams", "create", "from-option", "--database-url", f"sqlite:///{tmp_path}/option.db")
    assert cli.json("teams", "list") == []
    assert [t["name"] for t in cli.json("teams", "list", "--database-url", f"sqlite:///{tmp_path}/option.db")] == [
        "from-option"
    ]


def test_keys_on_the_database(direct: tuple[Cli, str]) -> None:
    cli, _ = direct
    cli.ok("teams", "create", "alpha", "--models", "kimi-k2.6,codestral")
    out = cli.ok(
        "keys",
        "create",
        "--team",
        "alpha",
        "--name",
        "ci",
        "--budget",
        "3",
        "--models",
        "codestral",
        "--expires",
        "30d",
    )
    key = out.splitlines()[0]
    assert key.startswith("gw-") and len(key) >= 46
    assert "shown only once" in out and "$3.00" in out

    listing = cli.ok("keys", "list")
    assert key not in listing and key[:10] + "..." in listing and "active" in listing
    (listed,) = cli.json("keys", "list", "--team", "alpha")
    assert listed["prefix"] == key[:10] and listed["models"] == ["codestral"] and "key" not in listed
    assert "models" in cli.fails(2, "keys", "create", "--team", "alpha", "--models", "mistral-embed")
    assert "expires_at" in cli.fails(2, "keys", "create", "--team", "alpha", "--expires", "2001-01-01")

    assert f"revoked key {listed['id']}" in cli.ok("keys", "revoke", listed["id"])
    assert cli.json("keys", "list")[0]["status"] == "revoked"
    assert "does not exist" in cli.fails(1, "keys", "list", "--team", "nobody")


def test_spend_on_the_database(direct: tuple[Cli, str]) -> None:
    cli, database_url = direct
    cli.ok("teams", "create", "alpha")
    cli.ok("teams", "create", "beta")
    keys = (insert_key(database_url, "alpha")[1], insert_key(database_url, "alpha")[1])
    rows = sample_ledger(("alpha", "beta"), keys)
    record(database_url, rows)
    expected_cost = sum(r.cost_nanos for r in rows)

    table = cli.ok("spend", "--group-by", "team").splitlines()
    assert table[0].split() == ["TEAM", "REQUESTS", "PROMPT", "COMPLETION", "CACHED", "COST"]
    assert table[-1].split()[:2] == ["TOTAL", str(len(rows))]
    assert table[-1].split()[-1] == "$3.04323457"  # 3_043_234_570 nano-dollars, every digit kept
    assert len({len(line) for line in table}) == 1  # right-aligned numbers: every line ends in the same column

    for group_by in GROUPS:
        report = cli.json("spend", "--group-by", group_by)
        got = {r[group_by]: {k: r[k] for k in totals(rows)} for r in report["rows"]}
        assert got == expected_groups(rows, group_by)
        lines = list(csv.DictReader(io.StringIO(cli.ok("spend", "--group-by", group_by, "--format", "csv"))))
        assert usd_to_nanos(sum(Decimal(line["cost_usd"]) for line in lines)) == expected_cost
        assert sum(int(line["requests"]) for line in lines) == len(rows)

    filtered = cli.json("spend", "--team", "alpha", "--provider", "mistral")
    assert filtered["total"]["cost_nanos"] == sum(
        r.cost_nanos for r in rows if r.team == "alpha" and r.provider == "mistral"
    )
    by_key = cli.json("spend", "--key", keys[0].prefix, "--since", "2026-03-10", "--until", "2026-03-11")
    assert by_key["total"]["requests"] == 2
    one_batch = cli.json("spend", "--batch", "batch_one", "--group-by", "team")
    assert one_batch["filters"]["batch"] == "batch_one"
    assert [(r["team"], r["cost_nanos"]) for r in one_batch["rows"]] == [
        ("alpha", sum(r.cost_nanos for r in rows if r.batch_id == "batch_one"))
    ]


# -- against a running gateway --------------------------------------------------------------------------


def test_url_mode_matches_direct_mode(start_gateway: GatewayFactory, tmp_path: Path) -> None:
    database_url = f"sqlite:///{tmp_path}/shared.db"
    server = start_gateway(master_key=MASTER_KEY, database_url=database_url)
    remote = Cli(clean_env(GATEWAY_MASTER_KEY=MASTER_KEY), "--url", server.url)
    local = Cli(clean_env(GATEWAY_DATABASE_URL=database_url))

    remote.ok("teams", "create", "alpha", "--budget", "50", "--soft-limit", "75")
    assert "already exists" in remote.fails(2, "teams", "create", "alpha")
    assert "budget_usd" in remote.fails(2, "teams", "create", "beta", "--budget", "-1")
    assert "does not exist" in remote.fails(1, "teams", "show", "beta")
    local.ok("teams", "create", "beta", "--period", "daily")

    out = remote.ok("keys", "create", "--team", "alpha", "--name", "remote")
    key = out.splitlines()[0]
    assert "shown only once" in out
    assert chat(server.url, key).status == 200

    for args in (("teams", "list"), ("teams", "show", "alpha"), ("keys", "list"), ("spend", "--group-by", "model")):
        assert remote.ok(*args) == local.ok(*args), args
        assert remote.json(*args) == local.json(*args), args
    assert remote.ok("spend", "--group-by", "day", "--format", "csv") == local.ok(
        "spend", "--group-by", "day", "--format", "csv"
    )

    (listed,) = remote.json("keys", "list", "--team", "alpha")
    remote.ok("keys", "revoke", listed["id"])
    refused = chat(server.url, key)
    assert refused.status == 401 and refused.error["code"] == "invalid_api_key"
    assert local.json("keys", "list")[0]["status"] == "revoked"

    wrong = Cli(clean_env(GATEWAY_MASTER_KEY="not-the-master-key"), "--url", server.url)
    assert "Incorrect API key" in wrong.fails(1, "teams", "list")
    team_key = Cli(clean_env(GATEWAY_MASTER_KEY=key), "--url", server.url)
    team_key.fails(1, "teams", "list")


def test_cli_on_postgresql(start_gateway: GatewayFactory) -> None:
    with fresh_database() as database_url:
        server = start_gateway(master_key=MASTER_KEY, database_url=database_url)
        try:
            local = Cli(clean_env(GATEWAY_DATABASE_URL=database_url))
            remote = Cli(clean_env(GATEWAY_MASTER_KEY=MASTER_KEY), "--url", server.url)
            local.ok("teams", "create", "alpha", "--budget", "100")
            remote.ok("teams", "create", "beta", "--period", "total")
            assert "already exists" in local.fails(2, "teams", "create", "beta")
            key = local.ok("keys", "create", "--team", "alpha").splitlines()[0]
            assert chat(server.url, key).status == 200
            (listed,) = remote.json("keys", "list")
            local.ok("keys", "revoke", listed["id"])
            # The server caches keys; the database's notification of the CLI's write reaches it within a second.
            wait_until(lambda: chat(server.url, key).status == 401, seconds=2, what="the revoked key refused")

            keys = (insert_key(database_url, "alpha")[1], insert_key(database_url, "alpha")[1])
            rows = sample_ledger(("alpha", "beta"), keys)
            record(database_url, rows)
            report = local.json("spend", "--group-by", "team")
            assert report == remote.json("spend", "--group-by", "team")
            assert sum(r["cost_nanos"] for r in report["rows"]) == report["total"]["cost_nanos"]
            assert report["total"]["requests"] == len(rows) + 1  # and the one real request
            lines = list(csv.DictReader(io.StringIO(local.ok("spend", "--format", "csv", "--group-by", "provider"))))
            assert usd_to_nanos(sum(Decimal(line["cost_usd"]) for line in lines)) == report["total"]["cost_nanos"]
            assert local.ok("teams", "list") == remote.ok("teams", "list")
        finally:
            server.stop()  # before the database is dropped


# -- rate limits -----------------------------------------------------------------------------------------


def test_rate_limits_on_the_database(direct: tuple[Cli, str]) -> None:
    cli, _ = direct
    out = cli.ok(
        "teams",
        "create",
        "alpha",
        "--rpm",
        "600",
        "--max-concurrent",
        "8",
        "--model-limit",
        "kimi-k2.6:rpm=3,max-concurrent=1",
        "--model-limit",
        "codestral:tpm=50000",
    )
    lines = out.splitlines()
    assert "rpm             600" in lines and "tpm             no limit" in lines and "max concurrent  8" in lines
    assert (
        "model limits    codestral: tpm 50000" in lines
        and "                kimi-k2.6: rpm 3, max concurrent 1" in lines
    )
    # The CLI on the database has no limit store: it says where the current use is known.
    assert any(line.startswith("limits' use") and "running gateway" in line for line in lines)

    shown = cli.json("teams", "show", "alpha")
    assert (shown["rpm"], shown["tpm"], shown["max_concurrent"], shown["rate_usage"]) == (600, None, 8, None)
    assert shown["model_limits"] == {
        "codestral": {"rpm": None, "tpm": 50_000, "max_concurrent": None},
        "kimi-k2.6": {"rpm": 3, "tpm": None, "max_concurrent": 1},
    }

    # On update, --model-limit merges: kimi-k2.6's rpm cleared and tpm set, codestral's removed.
    options = "--tpm 90000 --rpm none --model-limit kimi-k2.6:rpm=none,tpm=7000 --model-limit codestral:none"
    updated = cli.json("teams", "update", "alpha", *options.split())
    assert (updated["rpm"], updated["tpm"], updated["max_concurrent"]) == (None, 90_000, 8)
    assert updated["model_limits"] == {"kimi-k2.6": {"rpm": None, "tpm": 7_000, "max_concurrent": 1}}

    listing = cli.ok("teams", "list").splitlines()
    assert listing[0].split()[-5:] == ["RPM", "TPM", "CONCURRENT", "MODEL", "LIMITS"]
    assert listing[1].endswith("kimi-k2.6:tpm=7000,max_concurrent=1")
    assert cli.json("teams", "update", "alpha", "--model-limit", "none")["model_limits"] == {}

    out = cli.ok("keys", "create", "--team", "alpha", "--rpm", "30", "--tpm", "20000")
    assert "limits   rpm=30,tpm=20000" in out.splitlines()
    (key,) = cli.json("keys", "list", "--team", "alpha")
    assert (key["rpm"], key["tpm"], key["max_concurrent"]) == (30, 20_000, None)
    keys = cli.ok("keys", "list").splitlines()
    assert "LIMITS" in keys[0].split() and "rpm=30,tpm=20000" in keys[1].split()


def test_bad_rate_limits_on_the_cli(direct: tuple[Cli, str]) -> None:
    cli, _ = direct
    cli.ok("teams", "create", "alpha", "--rpm", "10")
    assert "Invalid 'rpm'" in cli.fails(2, "teams", "create", "beta", "--rpm", "0")
    assert "Invalid 'tpm'" in cli.fails(2, "teams", "update", "alpha", "--tpm", "lots")
    assert "Invalid 'max_concurrent'" in cli.fails(2, "keys", "create", "--team", "alpha", "--max-concurrent", "-1")
    unknown = cli.fails(2, "teams", "update", "alpha", "--model-limit", "gpt-9:rpm=1")
    assert "Invalid 'model_limits'" in unknown and "'gpt-9'" in unknown
    assert "unknown field 'rps'" in cli.fails(2, "teams", "update", "alpha", "--model-limit", "codestral:rps=1")
    for bad in ("codestral", "codestral:", ":rpm=1", "codestral:rpm"):
        assert "MODEL:rpm=N" in cli.fails(2, "teams", "update", "alpha", "--model-limit", bad), bad
    assert "give it alone" in cli.fails(
        2, "teams", "update", "alpha", "--model-limit", "none", "--model-limit", "codestral:rpm=1"
    )
    assert "--rpm" in cli.fails(2, "teams", "update", "alpha")  # nothing to update names the new options too
    (team,) = cli.json("teams", "list")
    assert (team["rpm"], team["tpm"], team["model_limits"]) == (10, None, {})  # nothing changed
    assert cli.json("keys", "list") == []


def test_rate_limits_through_a_running_gateway(start_gateway: GatewayFactory, tmp_path: Path) -> None:
    database_url = f"sqlite:///{tmp_path}/shared.db"
    server = start_gateway(master_key=MASTER_KEY, database_url=database_url)
    remote = Cli(clean_env(GATEWAY_MASTER_KEY=MASTER_KEY), "--url", server.url)
    local = Cli(clean_env(GATEWAY_DATABASE_URL=database_url))

    remote.ok("teams", "create", "alpha", "--tpm", "100000", "--model-limit", "codestral:max_concurrent=2")
    remote.ok("teams", "update", "alpha", "--model-limit", "kimi-k2.6:rpm=6")
    assert "Invalid 'model_limits'" in remote.fails(2, "teams", "update", "alpha", "--model-limit", "gpt-9:rpm=1")
    key = remote.ok("keys", "create", "--team", "alpha", "--max-concurrent", "3").splitlines()[0]
    assert chat(server.url, key).status == 200

    fields = ("rpm", "tpm", "max_concurrent", "model_limits")
    shown = local.json("teams", "show", "alpha")
    assert {f: shown[f] for f in fields} == {
        "rpm": None,
        "tpm": 100_000,
        "max_concurrent": None,
        "model_limits": {
            "codestral": {"rpm": None, "tpm": None, "max_concurrent": 2},
            "kimi-k2.6": {"rpm": 6, "tpm": None, "max_concurrent": None},
        },
    }
    assert {f: shown[f] for f in fields} == {
        f: v for f, v in remote.json("teams", "show", "alpha").items() if f in fields
    }
    (listed,) = local.json("keys", "list")
    assert listed["max_concurrent"] == 3 and remote.json("keys", "list") == [listed]


def test_teams_show_renders_each_limits_current_use() -> None:
    team = {
        "name": "alpha",
        "budget_nanos": None,
        "period": "total",
        "regions": None,
        "models": None,
        "policy": "default",
        "created_at": "2026-01-01T00:00:00Z",
        "rpm": 60,
        "tpm": None,
        "max_concurrent": 4,
        "model_limits": {"kimi-k2.6": {"rpm": 3, "tpm": 9000, "max_concurrent": None}},
        "rate_usage": {
            "rpm": {"limit": 60, "used": 2, "remaining": 58, "reset_seconds": 2.0},
            "max_concurrent": {"limit": 4, "used": 1, "remaining": 3, "reset_seconds": 0.0},
            "models": {
                "kimi-k2.6": {
                    "rpm": {"limit": 3, "used": 1, "remaining": 2, "reset_seconds": 20.0},
                    "tpm": {"limit": 9000, "used": 450, "remaining": 8550, "reset_seconds": 3.125},
                }
            },
        },
    }
    lines = render_team(team).splitlines()
    assert "rpm             60 (2 used, 58 left, whole in 2s)" in lines
    assert "tpm             no limit" in lines
    assert "max concurrent  4 (1 in use, 3 free)" in lines
    assert (
        "model limits    kimi-k2.6: rpm 3 (1 used, 2 left, whole in 20s), tpm 9000 (450 used, 8550 left, whole in 3.125s)"
        in lines
    )
    assert not any(line.startswith("limits' use") for line in lines)  # known: nothing to explain
