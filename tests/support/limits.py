"""Rate limits and provider capacity from a test's side (tests/e2e/test_rate_limits.py, test_provider_capacity.py):
real `gateway serve` processes whose log is kept, a Redis key prefix of a test's own, the built-in catalog with
`limits:` added, teams and keys with limits through the admin API, and requests sent on an absolute schedule."""

from __future__ import annotations

import math
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from tests.support.admin import MASTER_KEY, Admin, unique
from tests.support.gateways import GATEWAY, bare_env, free_port, stop, wait_for_startup
from tests.support.http import Answer, auth, post_json, request

CHAT = "/v1/chat/completions"
BUILTIN_CATALOG = Path(__file__).resolve().parents[2] / "gateway" / "defaults" / "catalog.yaml"
POLICIES = Path(__file__).resolve().parents[2] / "policies"
RATE_HEADERS = ("x-ratelimit-limit-requests", "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests")
TOKEN_HEADERS = ("x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens")

T = TypeVar("T")


# -- Redis: a prefix of the test's own, deleted by that prefix afterwards (never a flush: the Redis is shared) ----


# -- gateway processes -----------------------------------------------------------------------------------------


@dataclass
class GatewayProcess:
    """`gateway serve` in a subprocess: its URL, and its stderr (read on a thread, so that a chatty gateway never
    blocks on a full pipe) in `log`."""

    process: subprocess.Popen[str]
    url: str
    log: list[str] = field(default_factory=list)

    def readyz(self) -> Answer:
        return request(self.url, "GET", "/readyz", timeout=10)

    def logged(self, text: str) -> list[str]:
        return [line for line in list(self.log) if text in line]

    def stop(self) -> None:
        stop(self.process)


def start_gateway_process(database: str, env: dict[str, str], workers: int = 1) -> GatewayProcess:
    """`gateway serve` on `database` with the master key, the repository's policies and `env` (which should name a
    GATEWAY_DATA_DIR of the test's own), started: every worker's application is up when this returns."""
    port = free_port()
    environment = bare_env(
        GATEWAY_MASTER_KEY=MASTER_KEY, GATEWAY_POLICIES_DIR=str(POLICIES), **env, GATEWAY_DATABASE_URL=database
    )
    process = subprocess.Popen(
        [*GATEWAY, "serve", "--port", str(port), "--workers", str(workers)],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=environment,
    )
    try:
        lines = wait_for_startup(process, workers=workers)
    except BaseException:
        stop(process)
        raise
    gateway = GatewayProcess(process, f"http://127.0.0.1:{port}", lines)
    threading.Thread(target=_drain, args=(process, gateway.log), daemon=True).start()
    return gateway


def _drain(process: subprocess.Popen[str], log: list[str]) -> None:
    assert process.stderr is not None
    for line in process.stderr:
        log.append(line.rstrip())


@contextmanager
def gateway_processes(
    database: str, env: dict[str, str], count: int = 1, workers: int = 1
) -> Iterator[list[GatewayProcess]]:
    """`count` gateways on one database with the same environment, stopped afterwards."""
    started: list[GatewayProcess] = []
    try:
        for _ in range(count):
            started.append(start_gateway_process(database, env, workers))
        yield started
    finally:
        for gateway in reversed(started):
            gateway.stop()


# -- the catalog -----------------------------------------------------------------------------------------------


def catalog_with_limits(
    directory: Path, providers: dict[str, dict[str, Any]], models: dict[str, dict[str, Any]] | None = None
) -> Path:
    """The built-in catalog with `limits:` added to these providers and model entries (by name), written to
    `directory/catalog.yaml`."""
    catalog = yaml.safe_load(BUILTIN_CATALOG.read_text())
    for entry in catalog["providers"]:
        if entry["name"] in providers:
            entry["limits"] = providers[entry["name"]]
    for entry in catalog["models"]:
        if entry["name"] in (models or {}):
            entry["limits"] = (models or {})[entry["name"]]
    path = directory / "catalog.yaml"
    path.write_text(yaml.safe_dump(catalog, sort_keys=False))
    return path


# -- teams, keys, requests ---------------------------------------------------------------------------------------


def make_team(url: str, prefix: str = "team", **fields: Any) -> str:
    """A new team (its limits and policy in `fields`) through the admin API: its name."""
    name = unique(prefix)
    Admin(url).ok("POST", "/admin/teams", {"name": name, **fields}, status=201)
    return name


def make_key(url: str, team: str, **fields: Any) -> str:
    """A new key of `team` (its limits in `fields`) through the admin API: the key itself."""
    created = Admin(url).ok("POST", "/admin/keys", {"team": team, "name": "limits", **fields}, status=201)
    return str(created["key"])


def chat_body(model: str = "mistral-medium-3.5", content: str = "Say hello.", max_tokens: int = 8) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens}


def chat(url: str, key: str, body: dict[str, Any] | None = None, timeout: float = 60) -> Answer:
    return post_json(url, CHAT, body or chat_body(), auth(key), timeout=timeout)


@dataclass
class Timed:
    """An answer and when it was sent and answered (time.monotonic())."""

    answer: Answer
    sent: float
    answered: float

    @property
    def seconds(self) -> float:
        return self.answered - self.sent


def timed(call: Callable[[], Answer]) -> Timed:
    sent = time.monotonic()
    answer = call()
    return Timed(answer, sent, time.monotonic())


@dataclass
class Paced:
    """One request of a paced run: its place in the schedule, how late it was sent, and its answer."""

    index: int
    scheduled: float  # time.monotonic() it was due
    late: float  # seconds after `scheduled` that it was sent
    result: Timed


def paced(send: Callable[[int], Answer], rate: float, count: int, threads: int = 16) -> list[Paced]:
    """`send(i)` for i in range(count), the i-th due at start + i / rate (an absolute schedule: a late request
    does not push the later ones back), each on a pool thread so that a slow answer never delays the next send.
    The results in schedule order."""
    start = time.monotonic() + 0.05
    pause = threading.Event()  # never set: waits until each send is due (the load's schedule, not a synchronisation)

    def one(index: int, due: float) -> Paced:
        sent = time.monotonic()
        answer = send(index)
        return Paced(index, due, sent - due, Timed(answer, sent, time.monotonic()))

    with ThreadPoolExecutor(max_workers=threads) as pool:
        futures = []
        for index in range(count):
            due = start + index / rate
            ahead = due - time.monotonic()
            if ahead > 0:
                pause.wait(ahead)
            futures.append(pool.submit(one, index, due))
        return [future.result() for future in futures]


def percentile(values: list[float], pct: float) -> float:
    """The nearest-rank percentile (p95 of 10 values is the largest)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


def header_int(answer: Answer, name: str) -> int:
    assert name in answer.headers, (name, answer.status, answer.headers)
    return int(answer.headers[name])
