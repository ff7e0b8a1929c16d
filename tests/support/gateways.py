"""Gateways for the tests: the type of conftest's in-process factory, and `gateway` run as users run it (a
subprocess on a free 127.0.0.1 port)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable

from gateway.http.servers import ThreadedServer

# conftest.py's `start_gateway` fixture: (config=None, env=None, **settings) -> a started server
GatewayFactory = Callable[..., ThreadedServer]

GATEWAY = [sys.executable, "-m", "gateway.cli"]
_OWN_ENV = ("GATEWAY_", "MISTRAL_", "MOONSHOT_")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without the gateway's and providers' variables, a scratch data directory, and
    `extra`."""
    env = bare_env()
    env["GATEWAY_DATA_DIR"] = tempfile.mkdtemp(prefix="gateway-cli-test-")
    env.update(extra)
    return env


def bare_env(**extra: str) -> dict[str, str]:
    """This process's environment without the gateway's and providers' variables, and `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_OWN_ENV)}
    env.update(extra)
    return env


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60, cwd: str | os.PathLike[str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`gateway ARGS...` to its end (output captured), in `clean_env()` unless told."""
    return subprocess.run(
        [*GATEWAY, *args], capture_output=True, text=True, timeout=timeout, env=env or clean_env(), cwd=cwd
    )


def wait_for_startup(process: subprocess.Popen[str], workers: int = 1) -> list[str]:
    """Read stderr until uvicorn listens and every worker's application started (or the process dies)."""
    lines: list[str] = []
    listening = False
    assert process.stderr is not None
    for line in process.stderr:
        lines.append(line.rstrip())
        listening = listening or "Uvicorn running on" in line
        if "Application startup complete" in line:
            workers -= 1
        if listening and workers <= 0:
            return lines
    raise AssertionError("gateway exited before starting:\n" + "\n".join(lines))


def start_cli_gateway(db: str, env_extra: dict[str, str], workers: int = 1) -> tuple[subprocess.Popen[str], str]:
    """`gateway serve` on `db` with `env_extra`, started (stderr piped, read up to startup): (process, url)."""
    port = free_port()
    env = bare_env(**env_extra, GATEWAY_DATABASE_URL=db)
    process = subprocess.Popen(
        [*GATEWAY, "serve", "--port", str(port), "--workers", str(workers)],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    wait_for_startup(process, workers=workers)
    return process, f"http://127.0.0.1:{port}"


def stop(process: subprocess.Popen[str], timeout: float = 30) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `timeout`."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout)
