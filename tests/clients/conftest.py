"""Fixtures for the real-client tests: installed tools, a gateway with a team and key, scripted emulators.

Every tool runs as a subprocess with a scratch HOME, a timeout, telemetry and update checks off, and a proxy
on a closed 127.0.0.1 port for anything that is not 127.0.0.1 (Node tools also get offline_guard.cjs), so a
test reaches nothing but the gateway. A tool that cannot be installed fails its tests with the reason.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.http.servers import ThreadedServer
from tests.budget_util import ledger, make_key, make_team
from tests.clients.tools import Installer, Tool, ToolUnavailable
from tests.conftest import EmulatorControl, GatewayFactory

HERE = Path(__file__).resolve().parent
DEAD_PROXY = "http://127.0.0.1:9"  # nothing listens there: a request through it is refused at once
RUN_TIMEOUT_S = 180
TEAM = "coders"


@pytest.fixture(scope="session")
def installer() -> Iterator[Installer]:
    installs = Installer()
    installs.start(["aider", "cn", "vibe", "kimi"])  # all at once, in the background
    yield installs
    installs.shutdown()


def need(installer: Installer, name: str) -> Tool:
    try:
        return installer.get(name)
    except ToolUnavailable as exc:
        pytest.fail(f"{name} is not available, so this end-to-end test cannot run: {exc}", pytrace=False)


# -- the gateway -----------------------------------------------------------------------------------------------


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
        deadline = time.monotonic() + timeout
        while True:
            rows = ledger(self.db)
            if len(rows) >= wait_for or time.monotonic() > deadline:
                return sorted(rows, key=lambda r: r.ts)
            time.sleep(0.1)


@pytest.fixture()
def client_gateway(start_gateway: GatewayFactory, tmp_path: Path) -> ClientGateway:
    """A gateway of its own (own ledger), with team `coders` ($5 a month) and a key of that team."""
    db = f"sqlite:///{tmp_path / 'ledger.db'}"
    make_team(db, TEAM, "5.00")
    key, record = make_key(db, TEAM)
    server = start_gateway(database_url=db, master_key="master-key-for-client-tests")
    return ClientGateway(server.url, key, record.id, db, server)


# -- scripted emulators ----------------------------------------------------------------------------------------


class Script(EmulatorControl):
    """An emulator's control endpoints: scripted replies, and (inherited) the log of what reached it and faults."""

    def queue(self, *replies: dict[str, Any]) -> None:
        self._call("POST", "/_emulator/script", {"replies": list(replies)})

    def state(self) -> dict[str, list]:
        return self._call("GET", "/_emulator/script")

    def clear(self) -> None:
        self._call("DELETE", "/_emulator/script")
        self._call("DELETE", "/_emulator/requests")
        self._call("DELETE", "/_emulator/faults")  # a test's faults must not reach the next test

    def chats(self) -> list[dict[str, Any]]:
        return [r["body"] for r in self.requests() if r["path"] == "/v1/chat/completions"]


@pytest.fixture()
def mistral_script(mistral: ThreadedServer) -> Iterator[Script]:
    script = Script(mistral.url)
    script.clear()
    yield script
    script.clear()  # other tests rely on the emulator's generated replies


@pytest.fixture()
def moonshot_script(moonshot: ThreadedServer) -> Iterator[Script]:
    script = Script(moonshot.url)
    script.clear()
    yield script
    script.clear()


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
        "NODE_OPTIONS": f"--require {HERE / 'offline_guard.cjs'}",
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
