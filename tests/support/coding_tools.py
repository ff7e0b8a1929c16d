"""The real coding tools (tests/clients/): installed in isolated environments under .cache/clients/ (gitignored) and
cached; run as subprocesses that reach nothing but 127.0.0.1.

Every tool is pinned to an exact version. Python tools get a virtualenv of their own (made and filled by `uv`,
itself pinned and installed from PyPI into .cache/clients/uv); Node tools are installed with
`npm install --prefix .cache/clients/node`. An environment is reused while its stamp file names the same
pins. Installing needs PyPI and the npm registry; running the tools needs nothing but 127.0.0.1.

Every tool runs with a scratch HOME, a timeout, telemetry and update checks off, and a proxy on a closed 127.0.0.1
port for anything that is not 127.0.0.1 (Node tools also get tests/clients/offline_guard.cjs), so a test reaches
nothing but the gateway. A tool that cannot be installed fails its tests with the reason.

    .venv/bin/python -m tests.support.coding_tools        # install (or check) them all ahead of the tests
"""

from __future__ import annotations

import fcntl
import glob
import json
import os
import shutil
import subprocess
import sys
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.http.servers import ThreadedServer
from tests.support import ROOT
from tests.support.store import ledger_at_least

CLIENT_TESTS = ROOT / "tests" / "clients"  # the Node scripts the tests run, and offline_guard.cjs
CACHE = Path(os.environ.get("GATEWAY_CLIENTS_CACHE", ROOT / ".cache" / "clients"))
INSTALL_TIMEOUT_S = 900

UV = "uv==0.13.9"
AIDER = "aider-chat==0.86.2"
VIBE = "mistral-vibe==2.26.1"  # 3.0.x pins certifi==2026.10.19, which PyPI does not have (only .post1)
KIMI = "kimi-cli==1.51.0"  # 1.52.0, the last release, only prints a deprecation notice
# openai 7 needs Node 22. Claude Code 2.1.197 and Codex 0.171.0 are the versions whose requests issue 14 captured;
# both ship a native binary in a platform package (an optional dependency), installed from the npm registry.
NODE_PACKAGES = {
    "@continuedev/cli": "1.5.47",
    "opencode-ai": "1.18.33",
    "openai": "6.30.1",
    "@anthropic-ai/claude-code": "2.1.197",
    "@openai/codex": "0.171.0",
}
# Python 3.13 for Vibe and Kimi CLI (they need >= 3.12; kimi-cli fails on 3.12.1 with a typing bug of that release).
NEW_PYTHON = (3, 13)


class ToolUnavailable(Exception):
    """A tool could not be installed; the message says why and what to do."""


@dataclass(frozen=True)
class Tool:
    name: str
    kind: str  # "python" or "node"
    spec: str  # what is installed (pins)
    executable: str  # relative to the tool's directory
    python: str = "3.11"  # "3.11": the interpreter running the tests' own major; "new": NEW_PYTHON

    @property
    def directory(self) -> Path:
        return CACHE / ("node" if self.kind == "node" else self.name)

    @property
    def path(self) -> Path:
        return self.directory / self.executable


NODE_SPEC = " ".join(f"{name}@{version}" for name, version in NODE_PACKAGES.items())
TOOLS = {
    "aider": Tool("aider", "python", AIDER, "bin/aider"),
    "vibe": Tool("vibe", "python", VIBE, "bin/vibe", python="new"),
    "kimi": Tool("kimi", "python", KIMI, "bin/kimi", python="new"),
    "cn": Tool("cn", "node", NODE_SPEC, "node_modules/.bin/cn"),
    "opencode": Tool("opencode", "node", NODE_SPEC, "node_modules/.bin/opencode"),
    "node-openai": Tool("node-openai", "node", NODE_SPEC, "node_modules/openai/package.json"),
    "claude": Tool("claude", "node", NODE_SPEC, "node_modules/.bin/claude"),
    "codex": Tool("codex", "node", NODE_SPEC, "node_modules/.bin/codex"),
}


def _run(command: list[str], log: Path, cwd: Path | None = None, env: dict[str, str] | None = None) -> None:
    with log.open("a") as out:
        out.write(f"$ {' '.join(command)}\n")
        out.flush()
        try:
            result = subprocess.run(
                command,
                cwd=cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                timeout=INSTALL_TIMEOUT_S,
                env=env,
            )
        except subprocess.TimeoutExpired:
            raise ToolUnavailable(f"`{' '.join(command)}` took over {INSTALL_TIMEOUT_S} s (log: {log})") from None
        except FileNotFoundError as exc:
            raise ToolUnavailable(f"cannot run {command[0]}: {exc}") from None
    if result.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-25:])
        raise ToolUnavailable(f"`{' '.join(command)}` failed with exit code {result.returncode} (log: {log}):\n{tail}")


def new_python() -> str:
    """A Python >= NEW_PYTHON: $GATEWAY_CLIENTS_PYTHON, python3.13/3.14 on PATH, or a pyenv version."""
    wanted = f"{NEW_PYTHON[0]}.{NEW_PYTHON[1]}"
    candidates = [os.environ.get("GATEWAY_CLIENTS_PYTHON", "")]
    for minor in range(NEW_PYTHON[1], NEW_PYTHON[1] + 3):
        candidates.append(shutil.which(f"python3.{minor}") or "")
        pyenv = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
        candidates += sorted(glob.glob(f"{pyenv}/versions/3.{minor}*/bin/python3"))
    check = f"import sys, ssl, sqlite3; sys.exit(0 if sys.version_info >= {NEW_PYTHON} else 1)"
    for candidate in filter(None, candidates):
        try:
            if subprocess.run([candidate, "-c", check], timeout=30, capture_output=True).returncode == 0:
                return candidate
        except (OSError, subprocess.TimeoutExpired):
            continue
    raise ToolUnavailable(
        f"Mistral Vibe and Kimi CLI need Python {wanted} or newer and none was found (looked at "
        f"$GATEWAY_CLIENTS_PYTHON, python3.{NEW_PYTHON[1]}+ on PATH, ~/.pyenv/versions/3.{NEW_PYTHON[1]}*): "
        f"install one, or set GATEWAY_CLIENTS_PYTHON=/path/to/python{wanted}"
    )


def _uv(log: Path) -> Path:
    """uv, pinned, in a virtualenv of its own (fast, parallel installs from PyPI)."""
    directory = CACHE / "uv"
    uv = directory / "bin" / "uv"
    stamp = directory / ".installed"
    with open(CACHE / ".lock-uv", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the Python tools are installed in parallel: one makes uv
        if uv.exists() and stamp.exists() and stamp.read_text() == UV:
            return uv
        shutil.rmtree(directory, ignore_errors=True)
        _run([sys.executable, "-m", "venv", str(directory)], log)
        _run(
            [str(directory / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", UV],
            log,
        )
        stamp.write_text(UV)
    return uv


def _install_python_tool(tool: Tool, log: Path) -> None:
    python = new_python() if tool.python == "new" else sys.executable
    uv = _uv(log)
    shutil.rmtree(tool.directory, ignore_errors=True)
    env = {**os.environ, "UV_CACHE_DIR": str(CACHE / "uv-cache"), "UV_NO_PROGRESS": "1"}
    _run([str(uv), "venv", "--quiet", "--python", python, str(tool.directory)], log, env=env)
    _run(
        [str(uv), "pip", "install", "--quiet", "--python", str(tool.directory / "bin" / "python"), tool.spec],
        log,
        env=env,
    )


def _install_node_tools(tool: Tool, log: Path) -> None:
    if shutil.which("npm") is None:
        raise ToolUnavailable(
            "npm is not on PATH: the Node tools (Continue's cn, OpenCode, the openai SDK) need "
            "Node.js 20 or newer with npm"
        )
    directory = tool.directory
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    (directory / "package.json").write_text(json.dumps({"name": "gateway-client-tools", "private": True}) + "\n")
    env = {
        **os.environ,
        "npm_config_update_notifier": "false",
        "npm_config_fund": "false",
        "npm_config_audit": "false",
        "npm_config_cache": str(CACHE / "npm-cache"),
    }
    _run(
        ["npm", "install", "--no-audit", "--no-fund", "--save-exact", "--prefix", str(directory), *NODE_SPEC.split()],
        log,
        cwd=directory,
        env=env,
    )


def ensure(name: str) -> Tool:
    """Install `name` unless its cached environment already has the same pins; raises ToolUnavailable."""
    tool = TOOLS[name]
    CACHE.mkdir(parents=True, exist_ok=True)
    lock_name = "node" if tool.kind == "node" else tool.name
    log = CACHE / f"install-{lock_name}.log"
    with open(CACHE / f".lock-{lock_name}", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another pytest run may be installing the same tool
        stamp = tool.directory / ".installed"
        if tool.path.exists() and stamp.exists() and stamp.read_text() == tool.spec:
            return tool
        log.write_text("")
        if tool.kind == "node":
            _install_node_tools(tool, log)
        else:
            _install_python_tool(tool, log)
        if not tool.path.exists():
            raise ToolUnavailable(f"{tool.spec} installed, but {tool.path} is missing (log: {log})")
        stamp.write_text(tool.spec)
    return tool


class Installer:
    """Installs every tool at once in the background; `get` waits for one."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="install")
        self._futures: dict[str, Future[Tool]] = {}
        self._lock = threading.Lock()

    def start(self, names: list[str]) -> None:
        with self._lock:
            for name in names:
                key = "node" if TOOLS[name].kind == "node" else name
                if key not in self._futures:
                    self._futures[key] = self._pool.submit(ensure, name)

    def get(self, name: str) -> Tool:
        self.start([name])
        key = "node" if TOOLS[name].kind == "node" else name
        self._futures[key].result(timeout=INSTALL_TIMEOUT_S * 3)
        return ensure(name)  # cached now: returns at once (and names the right executable for node tools)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def need(installer: Installer, name: str) -> Tool:
    try:
        return installer.get(name)
    except ToolUnavailable as exc:
        pytest.fail(f"{name} is not available, so this end-to-end test cannot run: {exc}", pytrace=False)


# -- the gateway the tools talk to -----------------------------------------------------------------------------

DEAD_PROXY = "http://127.0.0.1:9"  # nothing listens there: a request through it is refused at once
RUN_TIMEOUT_S = 180
TEAM = "coders"
# The master key of the clients' conftest's `refusing_gateway` (a test reads that gateway's metrics with it).
REFUSALS_MASTER_KEY = "master-key-for-refusals"


@dataclass
class ClientGateway:
    url: str
    key: str
    key_id: str
    db: str
    server: ThreadedServer

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def rows(self, wait_for: int = 1, timeout: float = 10.0) -> list[Any]:
        """The ledger's rows (at least `wait_for` of them: settlement may trail the response by a moment)."""
        return ledger_at_least(self.db, wait_for, timeout)


def check_turn_rows(rows: list[Any], requested: str, served: str, reason: str, **fields: Any) -> None:
    """Every ledger row is a turn of team `coders` served as routed: the model the tool asked for, the one that
    served it, the route's reason, status 200, tokens both ways and a cost; and each of `fields` (endpoint, stream)
    as given."""
    assert rows, "no ledger row"
    for row in rows:
        assert (row.team, row.requested_model, row.model, row.route_reason, row.status) == (
            TEAM,
            requested,
            served,
            reason,
            200,
        ), row
        assert row.prompt_tokens > 0 and row.completion_tokens > 0 and row.cost_nanos > 0, row
        for name, value in fields.items():
            assert getattr(row, name) == value, (name, row)


# -- running a tool --------------------------------------------------------------------------------------------


def offline_env(home: Path, **extra: str) -> dict[str, str]:
    """A clean environment: scratch HOME and XDG dirs, no telemetry, only 127.0.0.1 reachable."""
    home.mkdir(parents=True, exist_ok=True)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_DATA_HOME": str(home / ".local" / "share"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "XDG_STATE_HOME": str(home / ".local" / "state"),
        "LANG": "C.UTF-8",
        "TERM": "dumb",
        "NO_COLOR": "1",
        "CI": "true",
        # Only 127.0.0.1: everything else goes to a proxy that is not there.
        "HTTP_PROXY": DEAD_PROXY,
        "HTTPS_PROXY": DEAD_PROXY,
        "ALL_PROXY": DEAD_PROXY,
        "http_proxy": DEAD_PROXY,
        "https_proxy": DEAD_PROXY,
        "all_proxy": DEAD_PROXY,
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
        "NODE_OPTIONS": f"--require {CLIENT_TESTS / 'offline_guard.cjs'}",
        "GATEWAY_TEST_BLOCKED_LOG": str(home / "blocked-hosts.txt"),
        "DO_NOT_TRACK": "1",
    }
    env.update(extra)
    return env


def run_tool(
    command: list[str], cwd: Path, env: dict[str, str], timeout: float = RUN_TIMEOUT_S, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    try:
        result = subprocess.run(
            command, cwd=cwd, env=env, input=stdin or "", capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        err = (exc.stderr or b"").decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        pytest.fail(
            f"{command[0]} did not finish in {timeout} s\nstdout:\n{out[-3000:]}\nstderr:\n{err[-3000:]}", pytrace=False
        )
    return result


def describe(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit code {result.returncode}\nstdout:\n{result.stdout[-4000:]}\nstderr:\n{result.stderr[-4000:]}"


if __name__ == "__main__":
    installer = Installer()
    installer.start(list(TOOLS))
    failed = 0
    for tool_name in TOOLS:
        try:
            print(f"{tool_name}: {installer.get(tool_name).path}")
        except ToolUnavailable as exc:
            failed += 1
            print(f"{tool_name}: UNAVAILABLE: {exc}", file=sys.stderr)
    installer.shutdown()
    sys.exit(1 if failed else 0)
