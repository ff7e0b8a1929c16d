"""Codex CLI (`@openai/codex` 0.171.0, a native binary) edits a file through the gateway's Responses door.

`codex exec` runs headless, configured by `gateway clients codex` (config.toml in a scratch CODEX_HOME, the key in
gateway.env, sourced by bash as a user would), and always streams. The model's turns are scripted on the provider
emulators in Codex's own tool names and argument shapes, as captured from 0.171 (tests/clients/fixtures/): with the
gateway's model names Codex has no model metadata, so it offers `exec_command` (shell) and no `apply_patch` tool;
an `apply_patch <<'EOF' ...` command run through `exec_command` is intercepted and applied by Codex itself. The
gateway translates each emulator's chat answer into Responses events; Codex needs `response.output_item.done` for
every item and `response.completed` (found on the capture server: without the first it prints no answer, without
the second it retries the whole request).

Codex is a native binary, so tests/clients/offline_guard.cjs (Node) guards only its small Node launcher. What keeps
it on 127.0.0.1 is the written config.toml (analytics and plugin sync off, which would otherwise reach
ab.chatgpt.com, github.com, api.github.com and chatgpt.com) and proxies: here a recording proxy on 127.0.0.1 that
refuses every CONNECT, and the test asserts that Codex asked it for nothing.
"""

from __future__ import annotations

import json
import shlex
import socketserver
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.cli.main import main as gateway_cli
from tests.support import ROOT
from tests.support.coding_tools import (
    REFUSALS_MASTER_KEY,
    ClientGateway,
    Installer,
    Tool,
    check_turn_rows,
    describe,
    need,
    offline_env,
    run_tool,
)
from tests.support.emulators import Script
from tests.support.http import auth, post_json
from tests.support.metrics import scrape, total

pytestmark = pytest.mark.slow

FIXTURE = ROOT / "tests" / "clients" / "fixtures" / "codex_0.171_request.json"
NOTES = "The launch code is 4711.\n"
REASONING = "Reading the request before answering."  # the Moonshot emulator's reasoning for a scripted reply
# model: (the model served, the route reason)
ROUTES = {
    "auto": ("mistral-medium-3.5", "preferred"),
    "mistral-medium-3.5": ("mistral-medium-3.5", "pinned"),
    "kimi-k2.6": ("kimi-k2.6", "pinned"),
}


# -- a proxy that records where Codex tried to go ------------------------------------------------------------


class _Refuse(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        self.server.requests.append(self.rfile.readline().decode(errors="replace").strip())  # type: ignore[attr-defined]
        self.wfile.write(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")


class RecordingProxy(socketserver.ThreadingTCPServer):
    """An HTTP(S) proxy on 127.0.0.1 that refuses everything and keeps each request line (`CONNECT host:443`)."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Refuse)
        self.requests: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture()
def proxy() -> Iterator[RecordingProxy]:
    server = RecordingProxy()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


# -- running Codex ---------------------------------------------------------------------------------------------


def _configure(gateway: ClientGateway, model: str, codex_home: Path) -> None:
    arguments = ["clients", "codex", "--model", model, "--url", gateway.url, "--key", gateway.key]
    assert gateway_cli([*arguments, "--dir", str(codex_home)]) == 0


def _run_codex(codex: Tool, codex_home: Path, work: Path, home: Path, proxy: RecordingProxy, prompt: str) -> Any:
    """`codex exec` after `source $CODEX_HOME/gateway.env`, every proxy variable on the recording proxy.

    `--sandbox workspace-write` lets the shell tool write in the project: Codex 0.171 runs each command in its
    bundled bubblewrap (no system bwrap here), which works in this container as root (user namespaces are
    allowed) and keeps the rest of the file system read-only (checked: `touch /var/tmp/x` fails with EROFS).
    The default, read-only, would refuse the edit. `--skip-git-repo-check`: the scratch project is no git repo."""
    env = offline_env(home, CODEX_HOME=str(codex_home))
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        env[name] = proxy.url
    command = [
        "bash",
        "-c",
        'source "$CODEX_HOME/gateway.env" && exec "$0" "$@"',
        str(codex.path),
        "exec",
        "--skip-git-repo-check",
        "--sandbox",
        "workspace-write",
        prompt,
    ]
    return run_tool(command, work, env)


def _project(tmp_path: Path) -> Path:
    work = tmp_path / "project"
    work.mkdir()
    (work / "notes.txt").write_text(NOTES)
    return work


def _patch(new_line: str) -> str:
    """The patch command a GPT model sends through exec_command (Codex's apply_patch format, in a heredoc)."""
    return (
        "apply_patch <<'EOF'\n*** Begin Patch\n*** Update File: notes.txt\n@@\n"
        f"-{NOTES.strip()}\n+{new_line}\n*** End Patch\nEOF"
    )


def _replies(tag: str, new_line: str, answer: str) -> list[dict[str, Any]]:
    """Read notes.txt (the first turn), patch it (after the read's output), then the final text (after the
    patch's). FIFO among the replies that fit keeps rounds two and three in order."""
    return [
        {
            "match": tag,
            "tools": True,
            "after_tool": False,
            "content": "",
            "tool_calls": [{"name": "exec_command", "arguments": {"cmd": "cat notes.txt"}}],
        },
        {
            "match": tag,
            "tools": True,
            "after_tool": True,
            "content": "",
            "tool_calls": [{"name": "exec_command", "arguments": {"cmd": _patch(new_line)}}],
        },
        {"match": tag, "tools": True, "after_tool": True, "content": answer},
    ]


def _tool_results(body: dict[str, Any]) -> list[str]:
    return [str(m.get("content")) for m in body.get("messages", []) if m.get("role") == "tool"]


def _tool_names(body: dict[str, Any]) -> list[str]:
    return [t.get("function", {}).get("name") or t.get("type") for t in body.get("tools") or []]


def _check_provider_calls(chats: list[dict[str, Any]], tag: str) -> None:
    """Three provider calls, streamed, each offering Codex's function tools (the namespace flattened) and never
    the built-in web_search; the tool outputs Codex sent back are the file's text and apply_patch's success."""
    assert len(chats) == 3, [json.dumps(b)[:300] for b in chats]
    for body in chats:
        names = _tool_names(body)
        assert all(t.get("type") == "function" for t in body["tools"]), names
        assert "web_search" not in names and "exec_command" in names, names
        assert "multi_agent_v1__spawn_agent" in names, names  # the namespace tool, flattened
        assert body.get("stream") is True
        assert tag in json.dumps(body["messages"])
    first, second, third = (_tool_results(body) for body in chats)
    assert first == [] and len(second) == 1 and len(third) == 2
    assert NOTES.strip() in second[0], second  # Codex ran `cat notes.txt`
    assert "Success. Updated the following files" in third[1], third  # and applied the patch itself


def _check_ledger(gateway: ClientGateway, model: str, count: int) -> None:
    served, reason = ROUTES[model]
    rows = gateway.rows(wait_for=count)
    assert len(rows) == count, rows
    check_turn_rows(rows, model, served, reason, stream=True, endpoint="responses")  # the front door, in the ledger


@pytest.mark.parametrize("model", list(ROUTES))
def test_codex_edits_a_file_with_two_tool_rounds_through_the_gateway(
    model: str,
    installer: Installer,
    client_gateway: ClientGateway,
    mistral_script: Script,
    moonshot_script: Script,
    proxy: RecordingProxy,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Codex reads notes.txt with exec_command, patches it with apply_patch run through exec_command, then
    answers; the file has the new line, stdout the answer, the ledger a row per turn with the route's reason."""
    codex = need(installer, "codex")
    served, _ = ROUTES[model]
    script, other = (
        (mistral_script, moonshot_script) if served.startswith("mistral") else (moonshot_script, mistral_script)
    )
    tag = f"codex-{model}"
    new_line = f"The launch code is 4712 ({tag})."
    answer = f"Done: notes.txt now says 4712 ({tag})."
    script.queue(*_replies(tag, new_line, answer))
    work = _project(tmp_path)
    codex_home = tmp_path / "codex-home"
    _configure(client_gateway, model, codex_home)
    capsys.readouterr()

    result = _run_codex(codex, codex_home, work, tmp_path / "home", proxy, f"Change the launch code to 4712 ({tag})")

    assert result.returncode == 0, describe(result)
    assert (work / "notes.txt").read_text() == new_line + "\n", describe(result)
    assert answer in result.stdout, describe(result)
    assert script.state()["queued"] == [], script.state()
    chats = script.chats()
    _check_provider_calls(chats, tag)
    assert other.chats() == []
    if served == "kimi-k2.6":  # K2.6 thinks by default: Codex replays the reasoning items, Kimi gets them back
        for body in chats:
            assert "thinking" not in body, body.get("thinking")  # never turned off
            for turn in (m for m in body["messages"] if m.get("role") == "assistant" and m.get("tool_calls")):
                assert turn.get("reasoning_content") == REASONING, turn
    _check_ledger(client_gateway, model, 3)
    assert proxy.requests == [], proxy.requests  # Codex asked for no host but the gateway


def test_codex_namespace_tool_call_comes_back_under_its_namespace(
    installer: Installer,
    client_gateway: ClientGateway,
    mistral_script: Script,
    proxy: RecordingProxy,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The provider calls `multi_agent_v1__close_agent` (the flattened name it was offered); Codex must get it back
    as `close_agent` in namespace `multi_agent_v1` and run it (an unknown agent id: Codex's own error), not
    answer `unsupported call`, which is what it says for a name it does not know."""
    codex = need(installer, "codex")
    tag = "codex-namespace"
    answer = f"No such agent ({tag})."
    call = {"name": "multi_agent_v1__close_agent", "arguments": {"target": "no-such-agent"}}
    mistral_script.queue(
        {"match": tag, "tools": True, "after_tool": False, "content": "", "tool_calls": [call]},
        {"match": tag, "tools": True, "after_tool": True, "content": answer},
    )
    work = _project(tmp_path)
    codex_home = tmp_path / "codex-home"
    _configure(client_gateway, "auto", codex_home)
    capsys.readouterr()

    result = _run_codex(codex, codex_home, work, tmp_path / "home", proxy, f"Close the helper agent ({tag})")

    assert result.returncode == 0, describe(result)
    assert answer in result.stdout, describe(result)
    chats = mistral_script.chats()
    assert len(chats) == 2, [json.dumps(b)[:300] for b in chats]
    (output,) = _tool_results(chats[1])
    assert "unsupported call" not in output and "no-such-agent" in output, output
    replayed = [m for m in chats[1]["messages"] if m.get("role") == "assistant" and m.get("tool_calls")]
    assert replayed[0]["tool_calls"][0]["function"]["name"] == "multi_agent_v1__close_agent", replayed
    _check_ledger(client_gateway, "auto", 2)


def test_captured_codex_request_is_served_and_names_the_dropped_web_search(
    client_gateway: ClientGateway, mistral_script: Script
) -> None:
    """The first request Codex 0.171 really sent (the fixture), posted as it is: served as a Responses event
    stream that ends with response.completed, web_search named in x-gateway-dropped-tools, not sent to Mistral."""
    body = json.loads(FIXTURE.read_text())
    assert {"type": "web_search", "external_web_access": False} in body["tools"]
    mistral_script.queue({"tools": True, "content": "Hello from the gateway."})
    answer = post_json(client_gateway.url, "/v1/responses", body, auth(client_gateway.key, originator="codex_exec"))
    assert answer.status == 200, answer.body[:2000]
    assert answer.headers.get("x-gateway-dropped-tools") == "web_search", answer.headers
    events = answer.chunks
    kinds = [event["type"] for event in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed", kinds
    assert "response.output_item.done" in kinds and "response.output_text.delta" in kinds, kinds
    assert events[-1]["response"]["usage"]["input_tokens"] > 0, events[-1]
    (chat,) = mistral_script.chats()
    assert "web_search" not in _tool_names(chat)
    _check_ledger(client_gateway, "auto", 1)


# -- refusals ----------------------------------------------------------------------------------------------------


# team: the model asked for, the status the gateway answers, what Codex 0.171 prints, and how many requests it sends
# (the first and `request_max_retries = 1` retry for a 403: Codex retries 401, 403 and 5xx, never 400 or 429).
REFUSALS = {
    "broke": ("auto", 429, "Quota exceeded. Check your plan and billing details.", 1),  # budget_exceeded
    "eu-strict": ("kimi-k2.6", 403, "is not in the models of policy 'eu-only'", 2),  # model_not_allowed
    "kimi-eu": ("auto", 400, '"code":"no_route"', 1),  # Codex prints a 400's body as it is
}


@pytest.mark.parametrize("team", list(REFUSALS))
def test_codex_shows_a_refusal_and_edits_nothing(
    team: str,
    installer: Installer,
    refusing_gateway: tuple[ClientGateway, dict[str, str]],
    mistral_script: Script,
    moonshot_script: Script,
    proxy: RecordingProxy,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A budget refusal shows as Codex's own quota text (the gateway's message is not shown: the README says where
    to look); a policy refusal and a request with no route show the gateway's message; Codex exits 1, edits
    nothing, and no provider is called."""
    model, status, shown, sent = REFUSALS[team]
    codex = need(installer, "codex")
    gateway, keys = refusing_gateway
    work = _project(tmp_path)
    codex_home = tmp_path / "codex-home"
    # The writer lists the models as the key's team sees them, and kimi-eu has no route for `auto` (it says so):
    # write the configuration as the unrestricted team "broke", then put the refused team's key in gateway.env.
    gateway.key = keys["broke"]
    _configure(gateway, model, codex_home)
    (codex_home / "gateway.env").write_text(f"export GATEWAY_API_KEY={shlex.quote(keys[team])}\n")
    capsys.readouterr()

    result = _run_codex(codex, codex_home, work, tmp_path / "home", proxy, "Change the launch code to 4712")

    assert result.returncode == 1, describe(result)
    assert shown in result.stderr, describe(result)
    assert (work / "notes.txt").read_text() == NOTES
    assert mistral_script.chats() == [] and moonshot_script.chats() == []
    samples = scrape(gateway.url, auth(REFUSALS_MASTER_KEY))
    assert total(samples, "gateway_requests_total", endpoint="responses", team=team, status=str(status)) == sent
    assert total(samples, "gateway_requests_total", endpoint="responses") == sent
    assert proxy.requests == []
