"""Agent loops of the real tools through the gateway to Kimi K2.6 with its defaults (thinking on), and one that
starts on Mistral and goes on on Kimi with the history Mistral produced.

Each loop is scripted on the emulators: a first tool call the tool really runs (it reads `notes.txt`), a second one
(it writes `answer.txt`), then the final text. Every request must be accepted by the strict Moonshot emulator (Kimi
K2.6 refuses, in thinking mode, a replayed tool-call turn without `reasoning_content`), so each test checks what
the emulator received: every replayed assistant tool-call turn carries `reasoning_content`, or thinking was turned
off for that request (`thinking: {"type": "disabled"}`, the gateway's rule for a history that has none).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.cli.main import main as gateway_cli
from tests.support.coding_tools import DEAD_PROXY, TEAM, ClientGateway, Installer, describe, need, offline_env, run_tool
from tests.support.emulators import Script

pytestmark = pytest.mark.slow

NOTES = "The launch code is 4711.\n"
CODE = "4711"
REASONING = "Reading the request before answering."  # the Moonshot emulator's reasoning for a scripted reply


@dataclass(frozen=True)
class Loop:
    """How one tool runs a headless agent loop: its read and write tools, and how it is configured and started."""

    tool: str
    read: Callable[[Path], dict[str, Any]]  # the tool call reading notes.txt, given the work dir
    write: Callable[[Path, str], dict[str, Any]]  # the tool call writing answer.txt with this text
    run: Callable[..., Any]  # (tool, gateway, model, work, tmp, prompt, **options): the finished process
    # OpenCode and cn have no turn limit: the script bounds them (an unscripted request gets text, which ends the
    # loop) and so does run_tool's timeout; Vibe gets --max-turns, Kimi CLI --max-steps-per-turn.


def _opencode(tool, gateway: ClientGateway, model: str, work: Path, tmp: Path, prompt: str):
    assert (
        gateway_cli(
            [
                "clients",
                "opencode",
                "--model",
                model,
                "--url",
                gateway.url,
                "--key",
                gateway.key,
                "--dir",
                str(work),
                "--force",
            ]
        )
        == 0
    )
    env = offline_env(
        tmp / "home",
        OPENCODE_DISABLE_MODELS_FETCH="1",
        OPENCODE_DISABLE_AUTOUPDATE="1",
        OPENCODE_DISABLE_SHARE="1",
        OPENCODE_DISABLE_LSP_DOWNLOAD="1",
        OPENCODE_DISABLE_DEFAULT_PLUGINS="1",
    )
    return run_tool([str(tool.path), "run", "--auto", "--thinking", prompt], work, env)


def _vibe(tool, gateway: ClientGateway, model: str, work: Path, tmp: Path, prompt: str, thinking: str | None = None):
    vibe_home = tmp / "vibe-home"
    assert (
        gateway_cli(
            [
                "clients",
                "vibe",
                "--model",
                model,
                "--url",
                gateway.url,
                "--key",
                gateway.key,
                "--dir",
                str(vibe_home),
                "--force",
            ]
        )
        == 0
    )
    if thinking:  # Vibe's per-model thinking level, sent as reasoning_effort
        config = vibe_home / "config.toml"
        alias = f'alias = "gateway-{model}"\n'
        assert alias in config.read_text()
        config.write_text(config.read_text().replace(alias, alias + f'thinking = "{thinking}"\n'))
    env = offline_env(tmp / "home", VIBE_HOME=str(vibe_home))
    return run_tool([str(tool.path), "-p", prompt, "--trust", "--auto-approve", "--max-turns", "6"], work, env)


def _kimi(tool, gateway: ClientGateway, model: str, work: Path, tmp: Path, prompt: str):
    config_dir = tmp / "kimi"
    assert (
        gateway_cli(
            [
                "clients",
                "kimi",
                "--model",
                model,
                "--url",
                gateway.url,
                "--key",
                gateway.key,
                "--dir",
                str(config_dir),
                "--force",
            ]
        )
        == 0
    )
    env = offline_env(tmp / "home", KIMI_SHARE_DIR=str(tmp / "kimi-share"))
    return run_tool(
        [
            str(tool.path),
            "--config-file",
            str(config_dir / "config.toml"),
            "--print",
            "--max-steps-per-turn",
            "6",
            "-c",
            prompt,
        ],
        work,
        env,
    )


def _cn(tool, gateway: ClientGateway, model: str, work: Path, tmp: Path, prompt: str):
    config_dir = tmp / "continue"
    assert (
        gateway_cli(
            [
                "clients",
                "continue",
                "--model",
                model,
                "--url",
                gateway.url,
                "--key",
                gateway.key,
                "--dir",
                str(config_dir),
                "--force",
            ]
        )
        == 0
    )
    home = tmp / "home"
    env = offline_env(
        home,
        CONTINUE_GLOBAL_DIR=str(home / ".continue"),
        CONTINUE_CLI_ENABLE_TELEMETRY="0",
        CONTINUE_METRICS_ENABLED="0",
        CONTINUE_API_BASE=DEAD_PROXY + "/",
    )
    return run_tool([str(tool.path), "-p", prompt, "--config", str(config_dir / "config.yaml"), "--auto"], work, env)


LOOPS = {
    "opencode": Loop(
        "opencode",
        lambda w: {"name": "read", "arguments": {"filePath": str(w / "notes.txt")}},
        lambda w, text: {"name": "write", "arguments": {"filePath": str(w / "answer.txt"), "content": text}},
        _opencode,
    ),
    "vibe": Loop(
        "vibe",
        lambda w: {"name": "read_file", "arguments": {"path": "notes.txt"}},
        lambda w, text: {"name": "write_file", "arguments": {"path": "answer.txt", "content": text}},
        _vibe,
    ),
    "kimi": Loop(
        "kimi",
        lambda w: {"name": "ReadFile", "arguments": {"path": str(w / "notes.txt")}},
        lambda w, text: {"name": "WriteFile", "arguments": {"path": str(w / "answer.txt"), "content": text}},
        _kimi,
    ),
    "cn": Loop(
        "cn",
        lambda w: {"name": "Read", "arguments": {"filepath": "notes.txt"}},
        lambda w, text: {"name": "Write", "arguments": {"filepath": "answer.txt", "content": text}},
        _cn,
    ),
}


def _project(tmp_path: Path) -> Path:
    work = tmp_path / "project"
    work.mkdir()
    (work / "notes.txt").write_text(NOTES)
    return work


def _replies(loop: Loop, work: Path, tag: str, answer: str) -> list[dict[str, Any]]:
    """Three rounds: read notes.txt (an agent's first turn), write answer.txt (after the read's result), then the
    final text (after the write's result). FIFO among the replies that fit keeps rounds two and three in order."""
    return [
        {"match": tag, "tools": True, "after_tool": False, "content": "", "tool_calls": [loop.read(work)]},
        {
            "match": tag,
            "tools": True,
            "after_tool": True,
            "content": "",
            "tool_calls": [loop.write(work, f"launch code {CODE} ({tag})\n")],
        },
        {"match": tag, "tools": True, "after_tool": True, "content": answer},
    ]


def _loop_requests(chats: list[dict[str, Any]], tag: str) -> list[dict[str, Any]]:
    """The agent's own requests (with tools, for this prompt), leaving out side requests such as a title."""

    def user_text(body: dict[str, Any]) -> str:
        return json.dumps([m.get("content") for m in body.get("messages", []) if m.get("role") == "user"])

    return [body for body in chats if body.get("tools") and tag in user_text(body)]


def _tool_turns(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in body.get("messages", []) if m.get("role") == "assistant" and m.get("tool_calls")]


def _thinking_modes(chats: list[dict[str, Any]]) -> list[str]:
    """For each request Moonshot's emulator received: "on" (K2.6's default, or asked) or "off" (disabled).

    A request with thinking on must replay every assistant tool-call turn with its reasoning_content and must not
    force a tool_choice (Kimi refuses both in thinking mode); thinking may be off only where a replayed tool-call
    turn has no reasoning (the gateway's rule: it never turns thinking off for a history Kimi would accept); no
    request carries the developer role (refused by Kimi at all times)."""
    modes = []
    for index, body in enumerate(chats):
        assert not any(m.get("role") == "developer" for m in body.get("messages", [])), body
        thinking = body.get("thinking") if isinstance(body.get("thinking"), dict) else {}
        turns = _tool_turns(body)
        if thinking.get("type") == "disabled":
            assert any(not turn.get("reasoning_content") for turn in turns), (
                f"request {index}: thinking turned off although every tool-call turn carries its reasoning"
            )
            modes.append("off")
            continue
        modes.append("on")
        choice = body.get("tool_choice")
        assert choice in (None, "auto", "none"), f"request {index}: tool_choice {choice!r} with thinking on"
        for turn in turns:
            assert turn.get("reasoning_content"), (
                f"request {index} to Kimi has thinking on but replays a tool-call turn without reasoning_content: "
                f"{json.dumps(turn)[:600]}"
            )
    return modes


def _tool_result(body: dict[str, Any]) -> str:
    last = body["messages"][-1]
    assert last.get("role") == "tool", last
    content = last.get("content")
    return content if isinstance(content, str) else json.dumps(content)


def _check_loop(result, work: Path, tag: str, answer: str, loop_chats: list[dict[str, Any]]) -> None:
    assert result.returncode == 0, describe(result)
    assert len(loop_chats) == 3, [json.dumps(b)[:300] for b in loop_chats]
    first, second, third = loop_chats
    assert _tool_turns(first) == [] and len(_tool_turns(second)) == 1 and len(_tool_turns(third)) == 2
    assert CODE in _tool_result(second), _tool_result(second)  # the tool read notes.txt and sent its text back
    written = work / "answer.txt"
    assert written.exists(), f"answer.txt was not written; the tool's result: {_tool_result(third)}"
    assert written.read_text().strip() == f"launch code {CODE} ({tag})"
    assert answer in result.stdout.replace("\n", " ") or answer in result.stdout, describe(result)


def _check_ledger(gateway: ClientGateway, at_least: int) -> list[Any]:
    rows = gateway.rows(wait_for=at_least)
    assert len(rows) >= at_least, rows
    for row in rows:
        assert row.team == TEAM and row.status == 200, row  # no request refused, by the gateway or by Kimi
        assert row.prompt_tokens > 0 and row.completion_tokens > 0 and row.cost_nanos > 0, row
    return rows


# -- a loop on Kimi K2.6, thinking on by default ------------------------------------------------------------------

# Thinking per loop request (read, write, final), with these pinned versions: OpenCode (@ai-sdk/openai-compatible),
# Vibe and Kimi CLI replay the answer's reasoning_content, so K2.6 thinks on every turn; cn drops it from the
# replayed tool-call turn, so the gateway turns thinking off for the two requests that replay one.
THINKING = {
    "opencode": ["on", "on", "on"],
    "vibe": ["on", "on", "on"],
    "kimi": ["on", "on", "on"],
    "cn": ["on", "off", "off"],
}
SHOWS_REASONING = {"opencode", "kimi"}  # `opencode run --thinking` and `kimi --print` print the reasoning


@pytest.mark.parametrize("tool", list(THINKING))
def test_agent_loop_of_two_tool_rounds_on_kimi_with_thinking_on(
    tool: str,
    installer: Installer,
    client_gateway: ClientGateway,
    moonshot_script: Script,
    mistral_script: Script,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The tool reads notes.txt and writes answer.txt on Kimi K2.6's scripted tool calls, then prints the final
    answer; every request is accepted by the strict emulator with K2.6's defaults."""
    loop = LOOPS[tool]
    executable = need(installer, tool)
    work = _project(tmp_path)
    tag = f"loop-{tool}-kimi"
    answer = f"Done: the launch code {CODE} is in answer.txt ({tag})."
    moonshot_script.queue(*_replies(loop, work, tag, answer))

    result = loop.run(
        executable,
        client_gateway,
        "kimi-k2.6",
        work,
        tmp_path,
        f"Read notes.txt, then write the launch code to answer.txt ({tag})",
    )
    capsys.readouterr()
    chats = moonshot_script.chats()
    loop_chats = _loop_requests(chats, tag)
    _check_loop(result, work, tag, answer, loop_chats)
    assert moonshot_script.state()["queued"] == []
    assert mistral_script.chats() == []  # pinned: nothing went to Mistral

    _thinking_modes(chats)  # side requests too (OpenCode's session title)
    assert _thinking_modes(loop_chats) == THINKING[tool], [b.get("thinking") for b in loop_chats]
    for body in loop_chats:  # what is replayed with thinking on is Kimi's own reasoning, sent back unchanged
        if "thinking" not in body:
            assert all(turn["reasoning_content"] == REASONING for turn in _tool_turns(body))
    if tool in SHOWS_REASONING:
        assert REASONING in result.stdout, describe(result)
    rows = _check_ledger(client_gateway, len(chats))
    assert len(rows) == len(chats)
    assert {(r.requested_model, r.model, r.route_reason) for r in rows} == {("kimi-k2.6", "kimi-k2.6", "pinned")}


# -- a loop that starts on Mistral and goes on on Kimi -----------------------------------------------------------

# tool, its options, and the thinking of the two Kimi requests. With K2.6's defaults the Mistral tool-call turn has
# no reasoning, so the gateway turns thinking off for those requests; Vibe with `thinking = "high"` sends
# reasoning_effort high, Mistral answers with thinking (passed on as reasoning_content, which Vibe replays), and
# the gateway keeps thinking on for Kimi (`thinking: enabled`) with that reasoning on Mistral's turn.
HANDOVERS = {
    "kimi": ("kimi", {}, ["off", "off"]),
    "vibe": ("vibe", {}, ["off", "off"]),
    "vibe-thinking-high": ("vibe", {"thinking": "high"}, ["on", "on"]),
}


@pytest.mark.parametrize("case", list(HANDOVERS))
def test_agent_loop_started_on_mistral_continues_on_kimi(
    case: str,
    installer: Installer,
    client_gateway: ClientGateway,
    moonshot_script: Script,
    mistral_script: Script,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`auto` serves the first turn on Mistral Medium 3.5 (the read call); then Mistral answers 503 (twice per
    request: the try and the policy's one retry), so the gateway moves the next two turns to Kimi K2.6, which gets
    the history Mistral produced (a tool-call turn with Mistral's 9-character id) and accepts it."""
    tool, options, thinking = HANDOVERS[case]
    loop = LOOPS[tool]
    executable = need(installer, tool)
    work = _project(tmp_path)
    tag = f"handover-{case}"
    answer = f"Done on Kimi: the launch code {CODE} is in answer.txt ({tag})."
    read, write, final = _replies(loop, work, tag, answer)
    mistral_script.queue({**read, "model": "mistral-medium-3.5"})
    moonshot_script.queue({**write, "model": "kimi-k2.6"}, {**final, "model": "kimi-k2.6"})
    mistral_script.fault("latency=1", count=1)  # the first request is served
    mistral_script.fault("status=503,retry_after=0", count=4)  # the next two fail on Mistral, try and retry

    result = loop.run(
        executable,
        client_gateway,
        "auto",
        work,
        tmp_path,
        f"Read notes.txt, then write the launch code to answer.txt ({tag})",
        **options,
    )
    capsys.readouterr()
    mistral_chats, kimi_chats = mistral_script.chats(), moonshot_script.chats()
    assert len(mistral_chats) == 5, [json.dumps(b)[:300] for b in mistral_chats]  # 1 served + 2 x (try, retry)
    _check_loop(result, work, tag, answer, [mistral_chats[0], *kimi_chats])
    assert mistral_script.state()["queued"] == [] and moonshot_script.state()["queued"] == []

    mistral_turn = _tool_turns(kimi_chats[0])[0]
    assert len(mistral_turn["tool_calls"][0]["id"]) == 9, mistral_turn  # Mistral's own id, replayed to Kimi
    assert _thinking_modes(kimi_chats) == thinking, [b.get("thinking") for b in kimi_chats]
    if thinking[0] == "on":
        assert all(b.get("thinking") == {"type": "enabled"} for b in kimi_chats)  # asked for: kept on
        assert all(b.get("reasoning_effort") == "high" for b in mistral_chats)
    rows = _check_ledger(client_gateway, 3)
    assert [(r.requested_model, r.model) for r in rows] == [
        ("auto", "mistral-medium-3.5"),
        ("auto", "kimi-k2.6"),
        ("auto", "kimi-k2.6"),
    ], rows
    assert rows[0].route_reason == "preferred" and {r.route_reason for r in rows[1:]} == {"fallback:upstream-503"}
