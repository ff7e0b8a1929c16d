"""Aider (aider-chat, headless with --message) edits a file through the gateway: auto, Mistral and Kimi, streaming
and not, configured by `gateway clients aider`; the emulator answers with a SEARCH/REPLACE block."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli.main import main as gateway_cli
from tests.support.coding_tools import TEAM, ClientGateway, Installer, describe, need, offline_env, run_tool
from tests.support.emulators import Script

pytestmark = pytest.mark.slow

# model asked for: (model that serves it under the default policy, route reason)
ROUTES = {
    "auto": ("mistral-medium-3.5", "preferred"),
    "mistral-medium-3.5": ("mistral-medium-3.5", "pinned"),
    "kimi-k2.6": ("kimi-k2.6", "pinned"),
}
ORIGINAL = 'def greet():\n    return "hello"\n'
EDIT = (
    'I will change the greeting.\n\nhello.py\n```python\n<<<<<<< SEARCH\n    return "hello"\n=======\n'
    '    return "goodbye {tag}"\n>>>>>>> REPLACE\n```\n'
)


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "no-stream"])
@pytest.mark.parametrize("model", list(ROUTES))
def test_aider_edits_a_file_through_the_gateway(
    model: str,
    stream: bool,
    installer: Installer,
    client_gateway: ClientGateway,
    mistral_script: Script,
    moonshot_script: Script,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    aider = need(installer, "aider")
    served, reason = ROUTES[model]
    script = mistral_script if served.startswith("mistral") else moonshot_script
    tag = f"{model}-{'stream' if stream else 'once'}"
    script.queue({"match": f"say goodbye {tag}", "content": EDIT.format(tag=tag)})

    work = tmp_path / "project"
    work.mkdir()
    (work / "hello.py").write_text(ORIGINAL)
    assert (
        gateway_cli(
            [
                "clients",
                "aider",
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
    assert "wrote" in capsys.readouterr().out

    command = [
        str(aider.path),
        "--no-git",
        "--yes-always",
        "--no-pretty",
        "--no-fancy-input",
        "--map-tokens",
        "0",
        "--message",
        f"Make greet say goodbye {tag}",
        "hello.py",
    ]
    if not stream:
        command.insert(1, "--no-stream")
    result = run_tool(command, work, offline_env(tmp_path / "home", LITELLM_LOCAL_MODEL_COST_MAP="True"))
    assert result.returncode == 0, describe(result)
    assert "Applied edit to hello.py" in result.stdout, describe(result)
    assert "Unknown context window" not in result.stdout + result.stderr, describe(result)  # the metadata was read
    assert (work / "hello.py").read_text() == f'def greet():\n    return "goodbye {tag}"\n'

    rows = client_gateway.rows()
    assert len(rows) == 1, rows
    row = rows[0]
    assert (row.team, row.key_id, row.requested_model, row.model, row.route_reason, row.status) == (
        TEAM,
        client_gateway.key_id,
        model,
        served,
        reason,
        200,
    )
    assert row.stream is stream and not row.estimated
    assert row.prompt_tokens > 100 and row.completion_tokens > 10 and row.cost_nanos > 0
    forwarded = script.chats()[-1]
    assert forwarded.get("stream", False) is stream
    assert "temperature" not in forwarded or served.startswith("mistral")  # Kimi K2.6's sampling is fixed
    if served == "kimi-k2.6":  # K2.6's default reached Kimi: thinking on, and Aider shows the answer's reasoning
        assert "thinking" not in forwarded, forwarded.get("thinking")
        assert "Reading the request before answering." in result.stdout, describe(result)
    assert script.state()["queued"] == []
