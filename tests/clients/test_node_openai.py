"""The official openai SDK for Node (npm `openai`) streams and calls tools through the gateway."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.support.coding_tools import (
    CLIENT_TESTS,
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

ROUTES = {
    "auto": ("mistral-medium-3.5", "preferred"),
    "mistral-medium-3.5": ("mistral-medium-3.5", "pinned"),
    "kimi-k2.6": ("kimi-k2.6", "pinned"),
}


@pytest.mark.parametrize("model", list(ROUTES))
def test_node_sdk_streams_a_tool_call_and_its_answer(
    model: str,
    installer: Installer,
    client_gateway: ClientGateway,
    mistral_script: Script,
    moonshot_script: Script,
    tmp_path: Path,
) -> None:
    sdk = need(installer, "node-openai")
    served, reason = ROUTES[model]
    script = mistral_script if served.startswith("mistral") else moonshot_script
    tag = f"node-{model}"
    script.queue(
        {"match": tag, "after_tool": False, "tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]},
        {"match": tag, "after_tool": True, "content": "Clear skies in Paris."},
    )
    node = shutil.which("node")
    assert node, "node is not on PATH"
    env = offline_env(
        tmp_path / "home",
        CLIENTS_NODE_DIR=str(sdk.directory),
        GATEWAY_URL=client_gateway.url,
        GATEWAY_KEY=client_gateway.key,
        MODEL=model,
        TAG=tag,
    )
    result = run_tool([node, str(CLIENT_TESTS / "node_openai_check.cjs")], tmp_path, env, timeout=60)
    assert result.returncode == 0, describe(result)
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    first, second = summary["first"], summary["second"]
    assert first["finish"] == "tool_calls" and first["text"] == ""
    assert [(c["name"], json.loads(c["arguments"])) for c in first["calls"]] == [("get_weather", {"city": "Paris"})]
    assert second["text"] == "Clear skies in Paris." and second["finish"] == "stop"

    rows = client_gateway.rows(wait_for=2)
    assert len(rows) == 2, rows
    check_turn_rows(rows, model, served, reason, stream=True)
    for row, answer in zip(rows, (first, second), strict=True):
        assert (row.prompt_tokens, row.completion_tokens) == (
            answer["usage"]["prompt_tokens"],
            answer["usage"]["completion_tokens"],
        )
        assert answer["gateway"]["model"] == served and answer["gateway"]["route_reason"] == reason
    tool_turn = script.chats()[1]["messages"]
    assert tool_turn[-1]["role"] == "tool" and "clear" in tool_turn[-1]["content"]
