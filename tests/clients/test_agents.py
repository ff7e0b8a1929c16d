"""OpenCode (`opencode run`), Mistral Vibe (`vibe -p`) and Kimi CLI (`kimi --print`) answer headless through the
gateway, configured by `gateway clients opencode|vibe|kimi`, with their own tools offered to the model."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli.main import main as gateway_cli
from tests.support.coding_tools import (
    ClientGateway,
    Installer,
    check_turn_rows,
    describe,
    need,
    offline_env,
    run_tool,
)
from tests.support.emulators import Script

pytestmark = pytest.mark.slow

ROUTES = {"auto": ("mistral-medium-3.5", "preferred"), "kimi-k2.6": ("kimi-k2.6", "pinned")}


def _expect(client_gateway: ClientGateway, script: Script, model: str, answer: str, result) -> None:
    served, reason = ROUTES[model]
    assert answer in result.stdout.replace("\n", " ") or answer in result.stdout, describe(result)
    check_turn_rows(client_gateway.rows(), model, served, reason)
    with_tools = [body for body in script.chats() if body.get("tools")]
    assert with_tools, "the tool offered the model no tools"
    if served == "kimi-k2.6":  # K2.6's default reached Kimi: thinking on (a one-turn answer needs no change)
        assert all("thinking" not in body for body in script.chats()), [b.get("thinking") for b in script.chats()]
    assert script.state()["queued"] == []


def _script_for(model: str, mistral_script: Script, moonshot_script: Script) -> Script:
    return mistral_script if ROUTES[model][0].startswith("mistral") else moonshot_script


@pytest.mark.parametrize("model", list(ROUTES))
def test_opencode_runs_headless_through_the_gateway(
    model: str,
    installer: Installer,
    client_gateway: ClientGateway,
    mistral_script: Script,
    moonshot_script: Script,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    opencode = need(installer, "opencode")
    script = _script_for(model, mistral_script, moonshot_script)
    tag = f"opencode-{model}"
    answer = f"OpenCode reached the gateway ({tag})."
    script.queue({"match": tag, "tools": True, "content": answer})
    work = tmp_path / "project"
    work.mkdir()
    assert (
        gateway_cli(
            [
                "clients",
                "opencode",
                "--model",
                model,
                "--url",
                client_gateway.url,
                "--key",
                client_gateway.key,
                "--dir",
                str(work),
            ]
        )
        == 0
    )
    capsys.readouterr()
    env = offline_env(
        tmp_path / "home",
        OPENCODE_DISABLE_MODELS_FETCH="1",
        OPENCODE_DISABLE_AUTOUPDATE="1",
        OPENCODE_DISABLE_SHARE="1",
        OPENCODE_DISABLE_LSP_DOWNLOAD="1",
        OPENCODE_DISABLE_DEFAULT_PLUGINS="1",
    )
    result = run_tool([str(opencode.path), "run", f"Say hello ({tag})"], work, env)
    assert result.returncode == 0, describe(result)
    _expect(client_gateway, script, model, answer, result)


@pytest.mark.parametrize("model", list(ROUTES))
def test_vibe_runs_headless_through_the_gateway(
    model: str,
    installer: Installer,
    client_gateway: ClientGateway,
    mistral_script: Script,
    moonshot_script: Script,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    vibe = need(installer, "vibe")
    script = _script_for(model, mistral_script, moonshot_script)
    tag = f"vibe-{model}"
    answer = f"Vibe reached the gateway ({tag})."
    script.queue({"match": tag, "tools": True, "content": answer})
    vibe_home = tmp_path / "vibe-home"
    assert (
        gateway_cli(
            [
                "clients",
                "vibe",
                "--model",
                model,
                "--url",
                client_gateway.url,
                "--key",
                client_gateway.key,
                "--dir",
                str(vibe_home),
            ]
        )
        == 0
    )
    capsys.readouterr()
    work = tmp_path / "project"
    work.mkdir()
    env = offline_env(tmp_path / "home", VIBE_HOME=str(vibe_home))  # the key comes from VIBE_HOME/.env
    result = run_tool([str(vibe.path), "-p", f"Say hello ({tag})", "--trust", "--max-turns", "3"], work, env)
    assert result.returncode == 0, describe(result)
    _expect(client_gateway, script, model, answer, result)


@pytest.mark.parametrize("model", list(ROUTES))
def test_kimi_cli_runs_headless_through_the_gateway(
    model: str,
    installer: Installer,
    client_gateway: ClientGateway,
    mistral_script: Script,
    moonshot_script: Script,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    kimi = need(installer, "kimi")
    script = _script_for(model, mistral_script, moonshot_script)
    tag = f"kimi-{model}"
    answer = f"Kimi CLI reached the gateway ({tag})."
    script.queue({"match": tag, "tools": True, "content": answer})
    config_dir = tmp_path / "kimi"
    assert (
        gateway_cli(
            [
                "clients",
                "kimi",
                "--model",
                model,
                "--url",
                client_gateway.url,
                "--key",
                client_gateway.key,
                "--dir",
                str(config_dir),
            ]
        )
        == 0
    )
    capsys.readouterr()
    work = tmp_path / "project"
    work.mkdir()
    env = offline_env(tmp_path / "home", KIMI_SHARE_DIR=str(tmp_path / "kimi-share"))
    result = run_tool(
        [str(kimi.path), "--config-file", str(config_dir / "config.toml"), "--quiet", "-c", f"Say hello ({tag})"],
        work,
        env,
    )
    assert result.returncode == 0, describe(result)
    _expect(client_gateway, script, model, answer, result)
