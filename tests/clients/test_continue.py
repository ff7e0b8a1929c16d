"""Continue's command-line client (`cn -p`, @continuedev/cli) answers through the gateway with its tools
present: the emulator calls Continue's Read tool, cn runs it on a real file and sends the result back."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli.main import main as gateway_cli
from tests.support.coding_tools import (
    DEAD_PROXY,
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


@pytest.mark.parametrize("model", list(ROUTES))
def test_cn_answers_with_a_tool_call_through_the_gateway(
    model: str,
    installer: Installer,
    client_gateway: ClientGateway,
    mistral_script: Script,
    moonshot_script: Script,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cn = need(installer, "cn")
    served, reason = ROUTES[model]
    script = mistral_script if served.startswith("mistral") else moonshot_script
    tag = f"continue-{model}"
    script.queue(
        {
            "match": tag,
            "tools": True,
            "after_tool": False,
            "tool_calls": [{"name": "Read", "arguments": {"filepath": "notes.txt"}}],
        },
        {"match": tag, "tools": True, "after_tool": True, "content": f"Your notes say: remember the milk ({tag})."},
    )
    work = tmp_path / "project"
    work.mkdir()
    (work / "notes.txt").write_text("remember the milk\n")
    config_dir = tmp_path / "continue"
    assert (
        gateway_cli(
            [
                "clients",
                "continue",
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

    home = tmp_path / "home"
    env = offline_env(
        home,
        CONTINUE_GLOBAL_DIR=str(home / ".continue"),
        CONTINUE_CLI_ENABLE_TELEMETRY="0",
        CONTINUE_METRICS_ENABLED="0",
        CONTINUE_API_BASE=DEAD_PROXY + "/",
    )
    result = run_tool(
        [str(cn.path), "-p", f"What do my notes say? ({tag})", "--config", str(config_dir / "config.yaml")], work, env
    )
    assert result.returncode == 0, describe(result)
    assert f"Your notes say: remember the milk ({tag})." in result.stdout, describe(result)

    chats = script.chats()
    assert len(chats) == 2, chats
    offered = {tool["function"]["name"] for tool in chats[0]["tools"]}
    assert {"Read", "Bash"} <= offered and len(offered) >= 5  # cn's own tools went through
    assert chats[1]["messages"][-1]["role"] == "tool" and "remember the milk" in chats[1]["messages"][-1]["content"]
    if served.startswith("mistral"):
        assert "stream_options" not in chats[0]  # Continue always sends it; Mistral refuses it
    else:  # K2.6's default reached Kimi (thinking on); cn replays its tool call without the answer's
        # reasoning_content, which Kimi refuses in thinking mode: the gateway turned thinking off for that request
        assert "thinking" not in chats[0], chats[0].get("thinking")
        assert not chats[1]["messages"][-2].get("reasoning_content") and chats[1]["thinking"] == {"type": "disabled"}

    rows = client_gateway.rows(wait_for=2)
    assert len(rows) == 2, rows
    check_turn_rows(rows, model, served, reason, stream=True)
    assert all(row.prompt_tokens > 100 for row in rows), rows
