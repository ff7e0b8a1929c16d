"""`gateway replay` (gateway/cli/replay.py): on the database itself (in this process), and against a running gateway
(`--url`, slow); the table, CSV and JSON; exit codes; the ledger left as it was."""

from __future__ import annotations

import csv
import io
import json
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.cli.main import main
from gateway.store.base import Team
from tests.replay.rows import T0, catalog, row, write
from tests.support.admin import MASTER_KEY, Admin, chat
from tests.support.gateways import GatewayFactory

REPO_POLICIES = Path(__file__).resolve().parents[2] / "policies"
EU_DEFAULT = "models: [mistral-medium-3.5, codestral, mistral-embed]\nregions: [eu]\nnamed_model: reroute\n"


@pytest.fixture()
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The environment of a person running the command: no GATEWAY_* settings but the policies and a data dir."""
    for name in list(os.environ):
        if name.startswith(("GATEWAY_", "MISTRAL_", "MOONSHOT_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("GATEWAY_POLICIES_DIR", str(REPO_POLICIES))
    monkeypatch.setenv("GATEWAY_DATA_DIR", str(tmp_path / "data"))
    yield


def replay(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["replay", *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture()
def ledger_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'gateway.db'}"
    cat = catalog()
    rows = [
        row(cat, "kimi-k2.6", ts=T0),
        row(cat, "kimi-k2.6", requested="kimi-k2.6", ts=T0 + 1),
        row(cat, "mistral-medium-3.5", ts=T0 + 2),
        row(cat, "kimi-k2.6", team="ops", ts=T0 + 3),
    ]
    write(url, rows, lambda s: _teams(s, Team("web"), Team("ops")))
    return url


async def _teams(store: Any, *teams: Team) -> None:
    for team in teams:
        await store.create_team(team)


def dump(url: str) -> list[str]:
    db = sqlite3.connect(url.removeprefix("sqlite:///"))
    try:
        return list(db.iterdump())
    finally:
        db.close()


def test_direct_mode_with_one_policy_file(
    env: None, ledger_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = tmp_path / "default.yaml"
    policy.write_text(EU_DEFAULT)
    before = dump(ledger_url)
    window = ("--since", str(T0 - 10), "--database-url", ledger_url)

    code, out, err = replay(capsys, "--policy", str(policy), *window, "--format", "json")
    assert (code, err) == (0, "")
    report = json.loads(out)
    assert report["rows"]["replayed"] == 4 and report["region_moves"] == [{"from": "cn", "to": "eu", "requests": 3}]
    assert report["policies"]["names"] == ["cost-saver", "default", "eu-only"]  # GATEWAY_POLICIES_DIR's, one replaced

    code, out, _ = replay(capsys, "--policy", str(policy), *window, "--team", "web")
    assert code == 0
    assert "team web  from 2026-09-21T" in out and "moved region 2" in out
    assert "kimi-k2.6           moonshot  cn" in out
    assert "REGION FROM  TO  REQUESTS\ncn           eu         2" in out

    code, out, _ = replay(capsys, "--policy", str(policy), *window, "--format", "csv")
    lines = list(csv.reader(io.StringIO(out)))
    assert code == 0 and lines[0][0] == "section" and ["region_move", "cn -> eu", "", "", "3", "", "", ""] in lines

    # Without --policy: the policies in use, replayed (the default prefers Mistral Medium too, and reroutes).
    code, out, _ = replay(capsys, *window, "--format", "json")
    assert code == 0 and json.loads(out)["policies"]["source"] == str(REPO_POLICIES)
    assert dump(ledger_url) == before  # nothing written


def test_direct_mode_with_a_directory(
    env: None, ledger_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = tmp_path / "next"
    directory.mkdir()
    (directory / "default.yaml").write_text("prefer: [kimi-k2.6]\n")
    code, out, _ = replay(
        capsys, "--policy", str(directory), "--since", str(T0 - 10), "--database-url", ledger_url, "--format", "json"
    )
    report = json.loads(out)
    assert code == 0 and report["policies"] == {"source": str(directory), "names": ["default"]}
    moves = {(m["from"], m["to"]): m["requests"] for m in report["model_moves"]}
    assert moves == {("kimi-k2.6", "kimi-k2.6"): 3, ("mistral-medium-3.5", "kimi-k2.6"): 1}


def test_bad_usage_and_invalid_policies_exit_2_naming_the_field(
    env: None, ledger_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "eu-next.yaml"
    broken.write_text("models: [gpt-5]\nprefer: [kimi-k2.6]\n")
    code, out, err = replay(capsys, "--policy", str(broken), "--database-url", ledger_url)
    assert (code, out) == (2, "")
    assert "eu-next.yaml: models[0]: unknown model 'gpt-5'" in err and "(line 1)" in err
    code, _, err = replay(capsys, "--policy", str(tmp_path / "missing.yaml"), "--database-url", ledger_url)
    assert code == 2 and "cannot read" in err and "missing.yaml" in err
    code, _, err = replay(capsys, "--since", "last week", "--database-url", ledger_url)
    assert code == 2 and "Invalid 'since'" in err
    code, _, err = replay(capsys, "--database-url", "mysql://db/gateway")
    assert code == 2 and "unsupported database URL" in err
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code, _, err = replay(capsys, "--database-url", f"sqlite:///{blocker}/gateway.db")
    assert code == 1 and "cannot use the database" in err
    with pytest.raises(SystemExit) as usage:
        main(["replay", "--format", "xml"])
    assert usage.value.code == 2


@pytest.mark.slow
def test_url_mode_matches_direct_mode(
    start_gateway: GatewayFactory,
    env: None,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    database_url = f"sqlite:///{tmp_path}/shared.db"
    server = start_gateway(
        master_key=MASTER_KEY, database_url=database_url, policies_dir=REPO_POLICIES, request_log=False
    )
    admin = Admin(server.url)
    admin.ok("POST", "/admin/teams", {"name": "web"}, 201)
    key = admin.ok("POST", "/admin/keys", {"team": "web"}, 201)["key"]
    for model in ("kimi-k2.6", "kimi-k2.6", "auto"):  # auto: Mistral Medium, the default policy's first choice
        assert chat(server.url, key, model).status == 200
    policy = tmp_path / "default.yaml"
    policy.write_text(EU_DEFAULT)
    directory = tmp_path / "next"
    directory.mkdir()
    (directory / "default.yaml").write_text("prefer: [kimi-k2.6]\n")
    monkeypatch.setenv("GATEWAY_MASTER_KEY", MASTER_KEY)

    for chosen in (policy, directory):
        remote_code, remote, _ = replay(capsys, "--policy", str(chosen), "--url", server.url, "--format", "json")
        local_code, local, _ = replay(
            capsys, "--policy", str(chosen), "--database-url", database_url, "--format", "json"
        )
        assert remote_code == local_code == 0
        remote_report, local_report = json.loads(remote), json.loads(local)
        for report in (remote_report, local_report):
            report.pop("generated_at")
            report["filters"].pop("since")  # (each "30d" from its own now)
            report["policies"].pop("source")  # (the files' text sent, or the directory read)
        assert remote_report == local_report
        assert remote_report["rows"]["replayed"] == 3
    assert json.loads(remote)["model_moves"] == [
        {"from": "kimi-k2.6", "to": "kimi-k2.6", "requests": 2},
        {"from": "mistral-medium-3.5", "to": "kimi-k2.6", "requests": 1},
    ]
    code, _, _ = replay(capsys, "--policy", str(policy), "--url", server.url)
    assert code == 0

    broken = tmp_path / "eu-next.yaml"
    broken.write_text("models: [gpt-5]\n")
    code, _, err = replay(capsys, "--policy", str(broken), "--url", server.url)
    assert code == 2 and "eu-next.yaml: models[0]: unknown model 'gpt-5'" in err
    monkeypatch.setenv("GATEWAY_MASTER_KEY", "not-the-master-key")
    code, _, err = replay(capsys, "--url", server.url)
    assert code == 1 and "Incorrect API key" in err
    monkeypatch.delenv("GATEWAY_MASTER_KEY")
    code, _, err = replay(capsys, "--url", server.url)
    assert code == 2 and "GATEWAY_MASTER_KEY" in err
