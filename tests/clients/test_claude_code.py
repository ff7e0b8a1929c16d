"""Claude Code (npm `@anthropic-ai/claude-code` 2.1.197, a native binary) headless (`claude -p`, streaming) through
the gateway's Anthropic Messages door, configured only by `gateway clients claude-code` (its `.claude/settings.json`).

Each loop is scripted on the emulators in Claude Code's own tool names and arguments: `Read` notes.txt (the
model's first turn), then `Edit` it (after the read's result), then the final text (after the edit's result). The
gateway turns the emulator's OpenAI-shaped answers into Anthropic's (tool_use blocks; thinking blocks from Kimi's
reasoning_content) and Claude Code's replies back (tool_result blocks; the replayed thinking as reasoning_content).
Each test checks the file Claude Code edited, the answer it printed, what the provider received, and the ledger.
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import re
import select
import shutil
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.cli.main import main as gateway_cli
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
from tests.support.metrics import scrape, total
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow

NOTES = "The launch code is 4711.\n"
EDITED = "The launch code is 4712.\n"
REASONING = "Reading the request before answering."  # the Moonshot emulator's reasoning for a scripted reply

# model asked for: (model served, route reason, the emulator that answers)
ROUTES = {
    "auto": ("mistral-medium-3.5", "preferred", "mistral"),
    "mistral-medium-3.5": ("mistral-medium-3.5", "pinned", "mistral"),
    "kimi-k2.6": ("kimi-k2.6", "pinned", "moonshot"),
}


def _configure(gateway: ClientGateway, model: str, work: Path) -> None:
    command = ["clients", "claude-code", "--model", model, "--url", gateway.url, "--key", gateway.key]
    assert gateway_cli([*command, "--dir", str(work), "--force"]) == 0
    settings = work / ".claude" / "settings.json"
    assert oct(settings.stat().st_mode & 0o777) == "0o600"  # it holds the key


def _claude(tool: Tool, work: Path, home: Path, prompt: str, **env: str):
    """`claude -p` in `work` with nothing but the offline environment: the gateway, the key, the models and the
    switches for other traffic come from the project's .claude/settings.json. acceptEdits lets the headless run
    apply Edit (without it, `-p` refuses every edit: "you haven't granted it yet")."""
    environment = offline_env(home, **env)
    environment.pop("NODE_OPTIONS")  # a native (Bun) binary: Node's preloaded guard does not apply
    return run_tool([str(tool.path), "-p", prompt, "--permission-mode", "acceptEdits"], work, environment)


def _project(tmp_path: Path) -> Path:
    work = tmp_path / "project"
    work.mkdir()
    (work / "notes.txt").write_text(NOTES)
    return work


def _replies(work: Path, tag: str, answer: str) -> list[dict[str, Any]]:
    notes = str(work / "notes.txt")
    edit = {"file_path": notes, "old_string": "4711", "new_string": "4712"}
    return [
        {
            "match": tag,
            "tools": True,
            "after_tool": False,
            "content": "",
            "tool_calls": [{"name": "Read", "arguments": {"file_path": notes}}],
        },
        {
            "match": tag,
            "tools": True,
            "after_tool": True,
            "content": "",
            "tool_calls": [{"name": "Edit", "arguments": edit}],
        },
        {"match": tag, "tools": True, "after_tool": True, "content": answer},
    ]


def _tool_turns(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in body.get("messages", []) if m.get("role") == "assistant" and m.get("tool_calls")]


def _tool_results(body: dict[str, Any]) -> list[str]:
    results = []
    for message in body.get("messages", []):
        if message.get("role") == "tool":
            content = message.get("content")
            results.append(content if isinstance(content, str) else json.dumps(content))
    return results


def _loop_requests(chats: list[dict[str, Any]], tag: str) -> list[dict[str, Any]]:
    return [body for body in chats if body.get("tools") and tag in json.dumps(body.get("messages"))]


def _check_loop(result, work: Path, answer: str, loop: list[dict[str, Any]]) -> None:
    assert result.returncode == 0, describe(result)
    assert len(loop) == 3, [json.dumps(b)[:300] for b in loop]
    first, second, third = loop
    assert [len(_tool_turns(b)) for b in loop] == [0, 1, 2]
    assert [t["tool_calls"][0]["function"]["name"] for t in _tool_turns(third)] == ["Read", "Edit"]
    assert "4711" in _tool_results(second)[-1], _tool_results(second)  # Claude Code read notes.txt, sent it back
    assert "updated successfully" in _tool_results(third)[-1], _tool_results(third)  # ... and applied the edit
    assert (work / "notes.txt").read_text() == EDITED
    assert answer in result.stdout, describe(result)
    names = {tool["function"]["name"] for tool in first["tools"]}
    assert {"Read", "Edit", "Write", "Bash"} <= names, names  # Claude Code's own tools reached the provider


def _check_ledger(gateway: ClientGateway, model: str, count: int) -> None:
    served, reason, _ = ROUTES[model]
    rows = gateway.rows(wait_for=count)
    assert len(rows) == count, rows
    check_turn_rows(rows, model, served, reason, stream=True, endpoint="messages")  # Claude Code streams every turn


def _check_kimi_thinking(loop: list[dict[str, Any]]) -> None:
    """Kimi K2.6 thinks by default; with thinking on, every replayed assistant tool-call turn must carry its
    reasoning_content (or Moonshot answers 400). Claude Code replays the thinking blocks the gateway made of Kimi's
    reasoning, so thinking stays on for the whole loop and each tool-call turn carries Kimi's own reasoning."""
    for index, body in enumerate(loop):
        thinking = body.get("thinking") if isinstance(body.get("thinking"), dict) else {}
        assert thinking.get("type") != "disabled", f"request {index}: thinking turned off: {thinking}"
        assert body.get("tool_choice") in (None, "auto", "none"), body.get("tool_choice")
        assert not any(m.get("role") == "developer" for m in body["messages"])
        for turn in _tool_turns(body):
            assert turn.get("reasoning_content") == REASONING, json.dumps(turn)[:600]


@pytest.mark.parametrize("model", list(ROUTES))
def test_claude_code_reads_then_edits_a_file_through_the_gateway(
    model: str,
    installer: Installer,
    client_gateway: ClientGateway,
    mistral_script: Script,
    moonshot_script: Script,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    claude = need(installer, "claude")
    served, _, provider = ROUTES[model]
    script, other = (mistral_script, moonshot_script) if provider == "mistral" else (moonshot_script, mistral_script)
    work = _project(tmp_path)
    tag = f"claude-code-{model}"
    answer = f"Done: the launch code in notes.txt is now 4712 ({tag})."
    script.queue(*_replies(work, tag, answer))
    _configure(client_gateway, model, work)
    capsys.readouterr()

    result = _claude(claude, work, tmp_path / "home", f"Read notes.txt, then add one to the launch code ({tag})")

    chats = script.chats()
    loop = _loop_requests(chats, tag)
    _check_loop(result, work, answer, loop)
    assert script.state()["queued"] == [] and other.chats() == []
    assert all(body["model"] == served for body in chats)
    if provider == "moonshot":
        _check_kimi_thinking(loop)
    _check_ledger(client_gateway, model, len(chats))


# -- nothing but 127.0.0.1 -----------------------------------------------------------------------------------------


class RefusingProxy:
    """An HTTP proxy on 127.0.0.1 that records what each client asked it for (a CONNECT's host, or a URL) and
    refuses it: pointed at by the proxy variables, it shows every connection a tool tries to open elsewhere."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return  # closed
            with connection:
                connection.settimeout(5)
                try:
                    line = connection.recv(4096).split(b"\r\n", 1)[0].decode(errors="replace")
                    self.asked.append(line)
                    connection.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                except OSError:
                    continue

    def close(self) -> None:
        self._listener.close()


@pytest.fixture()
def refusing_proxy() -> Iterator[RefusingProxy]:
    proxy = RefusingProxy()
    yield proxy
    proxy.close()


def _proxied(proxy: str) -> dict[str, str]:
    names = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")
    return dict.fromkeys(names, proxy)


def _connections(trace: str) -> set[tuple[str, str]]:
    """(port, address) of every IPv4 or IPv6 connect() in an `strace -e trace=connect` log, whatever its result."""
    opened = set()
    for line in trace.splitlines():
        port = re.search(r"sin6?_port=htons\((\d+)\)", line)
        address = re.search(r'inet_addr\("([^"]+)"\)|inet_pton\(AF_INET6, "([^"]+)"', line)
        if port and address:
            opened.add((port.group(1), address.group(1) or address.group(2)))
    return opened


def test_claude_code_reaches_nothing_but_the_gateway(
    installer: Installer,
    client_gateway: ClientGateway,
    mistral_script: Script,
    refusing_proxy: RefusingProxy,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The switches `gateway clients claude-code` writes keep Claude Code off every other host: through a proxy
    that records what it is asked for, a run asks it for nothing, and (with strace) every connection it opens goes
    to 127.0.0.1. Without them, the same run asks the proxy for api.anthropic.com: the proxy variables are honoured
    by the native binary, so the offline environment's dead proxy stops what the switches do not."""
    claude = need(installer, "claude")
    strace = shutil.which("strace")
    work = _project(tmp_path)
    tag = "claude-code-offline"
    mistral_script.queue({"match": tag, "content": f"offline ({tag})"}, {"match": tag, "content": f"again ({tag})"})
    _configure(client_gateway, "mistral-medium-3.5", work)
    capsys.readouterr()
    trace = tmp_path / "connect.trace"
    command = [str(claude.path), "-p", f"Say hello ({tag})"]
    if strace:
        command = [strace, "-f", "-e", "trace=connect", "-o", str(trace), *command]
    environment = offline_env(tmp_path / "home", **_proxied(refusing_proxy.url))
    environment.pop("NODE_OPTIONS")
    result = run_tool(command, work, environment)
    assert result.returncode == 0 and f"offline ({tag})" in result.stdout, describe(result)
    assert refusing_proxy.asked == []
    if strace:
        opened = _connections(trace.read_text())
        assert (client_gateway.url.rsplit(":", 1)[1], "127.0.0.1") in opened, opened
        assert {address for _, address in opened} == {"127.0.0.1"}, opened

    # The same run without the switches (settings.json stripped of them) asks the proxy for Anthropic's hosts.
    settings = work / ".claude" / "settings.json"
    config = json.loads(settings.read_text())
    for name in ("DISABLE_TELEMETRY", "DISABLE_ERROR_REPORTING", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"):
        del config["env"][name]
    settings.write_text(json.dumps(config))
    result = run_tool([str(claude.path), "-p", f"Say hello again ({tag})"], work, environment)
    assert result.returncode == 0 and f"again ({tag})" in result.stdout, describe(result)
    assert refusing_proxy.asked, "no request through the proxy without the switches: this check proves nothing"
    assert all("anthropic.com" in line for line in refusing_proxy.asked), refusing_proxy.asked


# -- Claude Code's own model names, through the policy's aliases --------------------------------------------------


def test_claude_code_own_model_names_are_routed_by_the_policy_aliases(
    installer: Installer,
    client_gateway: ClientGateway,
    mistral_script: Script,
    moonshot_script: Script,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Without the model variables, Claude Code sends its own id (`claude-opus-4-8` in 2.1.197); the default
    policy's aliases map `claude-*` to auto, which serves it on Mistral Medium 3.5 (route reason `alias`)."""
    claude = need(installer, "claude")
    work = _project(tmp_path)
    tag = "claude-code-aliases"
    mistral_script.queue({"match": tag, "tools": True, "content": f"Aliased ({tag})."})
    _configure(client_gateway, "auto", work)
    capsys.readouterr()
    settings = work / ".claude" / "settings.json"
    config = json.loads(settings.read_text())
    config["env"] = {name: value for name, value in config["env"].items() if not name.endswith("_MODEL")}
    settings.write_text(json.dumps(config))

    result = _claude(claude, work, tmp_path / "home", f"Say hello ({tag})")

    assert result.returncode == 0 and f"Aliased ({tag})." in result.stdout, describe(result)
    assert moonshot_script.chats() == [] and mistral_script.state()["queued"] == []
    assert mistral_script.chats()[0]["max_tokens"] == 32768  # CLAUDE_CODE_MAX_OUTPUT_TOKENS (64000 otherwise)
    rows = client_gateway.rows()
    assert [(r.requested_model, r.model, r.route_reason, r.status) for r in rows] == [
        ("claude-opus-4-8", "mistral-medium-3.5", "alias", 200)
    ], rows


# -- refusals ------------------------------------------------------------------------------------------------------


def _messages(url: str, team: str) -> float:
    """The Messages-door requests of `team` the gateway has counted (its metrics need the master key)."""
    samples = scrape(url, headers={"authorization": f"Bearer {REFUSALS_MASTER_KEY}"})
    return total(samples, "gateway_requests_total", endpoint="messages", team=team)


# team, model, what Claude Code prints (its own prefix, the status for a 4xx other than 429, the gateway's message)
REFUSALS = {
    "budget": ("broke", "auto", ["API Error: Request rejected (429)", "budget"]),
    "policy": ("eu-strict", "kimi-k2.6", ["API Error: 403", "kimi-k2.6", "eu-only"]),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_claude_code_shows_a_refusal_at_once_and_leaves_the_file(
    case: str,
    installer: Installer,
    refusing_gateway: tuple[ClientGateway, dict[str, str]],
    mistral_script: Script,
    moonshot_script: Script,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A refusal reaches Claude Code in Anthropic's error shape: it prints the gateway's message and exits 1. The
    budget's 429 carries `x-should-retry: false`, so Claude Code does not retry it (it retries a plain 429 up to
    ten times, for minutes): one request, no provider call, the file untouched."""
    team, model, shown = REFUSALS[case]
    claude = need(installer, "claude")
    gateway, keys = refusing_gateway
    url = gateway.url
    work = _project(tmp_path)
    command = ["clients", "claude-code", "--model", model, "--url", url, "--key", keys[team], "--dir", str(work)]
    assert gateway_cli(command) == 0
    capsys.readouterr()

    result = _claude(claude, work, tmp_path / "home", "Read notes.txt, then add one to the launch code")

    assert result.returncode == 1, describe(result)
    printed = (result.stdout + result.stderr).replace("\n", " ")
    assert all(text.casefold() in printed.casefold() for text in shown), describe(result)
    counted = wait_until(lambda: _messages(url, team), what="the refused request in the metrics")
    assert counted == 1  # not retried
    assert mistral_script.chats() == [] and moonshot_script.chats() == []
    assert (work / "notes.txt").read_text() == NOTES


# -- the interactive TUI -------------------------------------------------------------------------------------------

ANSI = re.compile(rb"\x1b\[[0-9;?<>=]*[A-Za-z~]|\x1b\][^\x07]*\x07|\x1b[()][A-Z0-9]|\x1b[=>78]")


class Terminal:
    """Claude Code's TUI on a pseudo-terminal: what it drew so far (escape sequences and white space removed, since
    the TUI moves the cursor between words), read until a text appears or a deadline passes."""

    def __init__(self, command: list[str], cwd: Path, env: dict[str, str]) -> None:
        pid, fd = pty.fork()
        if pid == 0:  # the child: becomes the TUI, or ends (it must never go on running the tests)
            try:
                os.chdir(cwd)
                os.execve(command[0], command, env)
            finally:
                os._exit(127)
        self._pid, self._fd, self._drawn = pid, fd, b""

    def wait_for(self, text: str, seconds: float = 60) -> None:
        wanted = "".join(text.split()).encode()
        deadline = time.monotonic() + seconds
        while wanted not in "".join(ANSI.sub(b"", self._drawn).decode(errors="replace").split()).encode():
            left = deadline - time.monotonic()
            ready = select.select([self._fd], [], [], max(left, 0))[0] if left > 0 else []
            if not ready:
                tail = ANSI.sub(b"", self._drawn)[-1500:].decode(errors="replace")
                pytest.fail(f"the TUI did not show {text!r} in {seconds} s; it shows:\n{tail}", pytrace=False)
            try:
                self._drawn += os.read(self._fd, 65536)
            except OSError:  # the TUI exited
                pytest.fail(f"the TUI exited before showing {text!r}", pytrace=False)

    def type(self, text: str) -> None:
        os.write(self._fd, text.encode())

    def close(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self._pid, signal.SIGKILL)
        os.waitpid(self._pid, 0)
        os.close(self._fd)


def test_claude_code_tui_answers_and_reaches_nothing_else(
    installer: Installer,
    client_gateway: ClientGateway,
    mistral_script: Script,
    moonshot_script: Script,
    refusing_proxy: RefusingProxy,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`claude` as a person runs it (the TUI, on a pseudo-terminal), configured by the written settings: it answers
    through the gateway, names the session on the small model, and asks the recording proxy for nothing. The TUI
    does more at start than `-p`: without CLAUDE_CODE_DISABLE_OFFICIAL_MARKETPLACE_AUTOINSTALL it fetches the plugin
    marketplace from github.com and downloads.claude.ai (checked by the second start)."""
    claude = need(installer, "claude")
    work = _project(tmp_path)
    tag = "claude-code-tui"
    answer = f"Hello from the gateway ({tag})"
    mistral_script.queue({"match": tag, "tools": True, "content": answer})
    _configure(client_gateway, "mistral-medium-3.5", work)
    capsys.readouterr()

    def returning_user(home: Path) -> dict[str, str]:
        """A scratch HOME where the first start's questions (a theme, whether to trust the folder) are answered."""
        home.mkdir()
        projects = {str(work): {"hasTrustDialogAccepted": True}}
        (home / ".claude.json").write_text(json.dumps({"hasCompletedOnboarding": True, "projects": projects}))
        environment = offline_env(home, **_proxied(refusing_proxy.url), TERM="xterm-256color")
        for name in ("NODE_OPTIONS", "CI", "NO_COLOR"):  # CI would make the TUI behave as in a pipeline
            environment.pop(name)
        return environment

    terminal = Terminal([str(claude.path)], work, returning_user(tmp_path / "home"))
    try:
        terminal.wait_for("? for shortcuts")
        terminal.type(f"Say hello ({tag})")
        terminal.wait_for(f"Say hello ({tag})")
        terminal.type("\r")
        terminal.wait_for(answer)
        titles = wait_until(moonshot_script.chats, what="the session title request on the small model")
    finally:
        terminal.close()
    assert refusing_proxy.asked == []
    # The TUI names the session with the small/fast model (kimi-k2.6, the cheapest listed): no tools, a JSON schema.
    assert [(b["model"], b.get("tools"), b["response_format"]["type"]) for b in titles] == [
        ("kimi-k2.6", None, "json_schema")
    ], titles
    rows = client_gateway.rows(wait_for=2)
    assert sorted((r.requested_model, r.model, r.status, r.endpoint) for r in rows) == [
        ("kimi-k2.6", "kimi-k2.6", 200, "messages"),
        ("mistral-medium-3.5", "mistral-medium-3.5", 200, "messages"),
    ], rows

    # The same start without the marketplace switch asks the proxy for GitHub and Anthropic's download host (in a new
    # HOME: once a start has passed the marketplace over, later starts in that HOME do not fetch it either).
    settings = work / ".claude" / "settings.json"
    config = json.loads(settings.read_text())
    del config["env"]["CLAUDE_CODE_DISABLE_OFFICIAL_MARKETPLACE_AUTOINSTALL"]
    settings.write_text(json.dumps(config))
    terminal = Terminal([str(claude.path)], work, returning_user(tmp_path / "new-home"))
    try:
        terminal.wait_for("? for shortcuts")
        wait_until(lambda: refusing_proxy.asked, 30, "the marketplace fetch through the proxy")
    finally:
        terminal.close()
    hosts = {line.split()[1] for line in refusing_proxy.asked}
    assert hosts <= {"github.com:443", "downloads.claude.ai:443"} and hosts, refusing_proxy.asked
