"""What a tool shows when the gateway refuses: budget (429), a model the policy refuses (403), no route (400).
Through the official openai SDK for Node, and Aider for the 403 (it stops and shows the gateway's message)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from gateway.cli.main import main as gateway_cli
from tests.support.coding_tools import CLIENT_TESTS, ClientGateway, Installer, describe, need, offline_env, run_tool

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    "team, model, status, code",
    [
        ("broke", "auto", 429, "budget_exceeded"),
        ("eu-strict", "kimi-k2.6", 403, "model_not_allowed"),
        ("kimi-eu", "auto", 400, "no_route"),
    ],
)
def test_node_sdk_sees_the_refusal_as_an_openai_error(
    team: str,
    model: str,
    status: int,
    code: str,
    installer: Installer,
    refusing_gateway: tuple[ClientGateway, dict[str, str]],
    tmp_path: Path,
) -> None:
    sdk = need(installer, "node-openai")
    gateway, keys = refusing_gateway
    url = gateway.url
    env = offline_env(
        tmp_path / "home", CLIENTS_NODE_DIR=str(sdk.directory), GATEWAY_URL=url, GATEWAY_KEY=keys[team], MODEL=model
    )
    result = run_tool(
        [shutil.which("node") or "node", str(CLIENT_TESTS / "node_openai_error.cjs")], tmp_path, env, timeout=60
    )
    assert result.returncode == 0, describe(result)
    error = json.loads(result.stdout.strip().splitlines()[-1])
    assert error["refused"] and (error["status"], error["code"]) == (status, code), error


def test_aider_shows_a_policy_refusal_and_leaves_the_file(
    installer: Installer,
    refusing_gateway: tuple[ClientGateway, dict[str, str]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    aider = need(installer, "aider")
    gateway, keys = refusing_gateway
    url = gateway.url
    work = tmp_path / "project"
    work.mkdir()
    (work / "hello.py").write_text("x = 1\n")
    assert (
        gateway_cli(
            ["clients", "aider", "--model", "kimi-k2.6", "--url", url, "--key", keys["eu-strict"], "--dir", str(work)]
        )
        == 0
    )
    capsys.readouterr()
    result = run_tool(
        [
            str(aider.path),
            "--no-git",
            "--yes-always",
            "--no-pretty",
            "--no-fancy-input",
            "--map-tokens",
            "0",
            "--message",
            "Set x to 2",
            "hello.py",
        ],
        work,
        offline_env(tmp_path / "home", LITELLM_LOCAL_MODEL_COST_MAP="True"),
        timeout=120,
    )
    output = " ".join((result.stdout + result.stderr).split())  # Aider wraps long lines
    assert "is not in the models of policy 'eu-only'" in output, describe(result)
    assert (work / "hello.py").read_text() == "x = 1\n"
