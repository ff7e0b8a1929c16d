"""Issue 15: what rate limits cost on the request path, and two gateway nodes on PostgreSQL + Redis against one on
SQLite.

    bash tests/bench/run.sh --limits                     # 3 rounds x 3 loads x 6 configurations, 5 s each: ~8 min
    bash tests/bench/run.sh --limits --quick             # 1 round of 1 s cells: a smoke run
    bash tests/bench/run.sh --limits --profile redis     # py-spy on the limits-on-Redis gateway instead

One upstream (upstream.py, fast and fixed), one team and one gateway key (`gw-...`, created with the gateway's CLI on
the configuration's database before it starts), the same request bodies (load.make_body) and the same wrk loads for
every configuration, on the same machine in the same run:

- **passthrough**: Starlette + uvicorn + aiohttp forwarding the bytes (passthrough.py), the floor;
- **limits off**: one gateway on SQLite; the team and the key have no limits, the catalog declares none;
- **limits on, memory**: the same with the team's and the key's `rpm`, `tpm` and `max_concurrent` set and the
  provider's `limits: {concurrency, rpm, tpm}` in the catalog, all far above what the load reaches (nothing is ever
  refused: checked), held in the process's memory (one worker);
- **limits on, Redis**: the same limits in the machine's Redis (GATEWAY_REDIS_URL, a prefix unique to the run; its
  keys are deleted at the end, nothing else is touched);
- **PostgreSQL + Redis, 1 node** and **2 nodes**: the ledger, teams and keys in a fresh PostgreSQL database (dropped
  at the end), the limits in Redis; with two nodes the load is split between them (half the connections each, two
  wrk at once) and the total is reported. The one-node SQLite configuration to compare them with is "limits on,
  memory" (one node keeps its limits in memory).

Every gateway process (both nodes too) runs on core 0, wrk, the upstream and this script on core 1, so every
configuration has the same one core for the gateway: the two-node figures say what the split costs in CPU, not
what a second machine would add. Configurations take turns within each round (the order rotates from round to
round) and each figure is the median over the rounds; "vs off" is the median of the rounds' own ratios or
differences, so the drift of a shared machine between rounds cancels out.

Measured per cell: 2xx req/s, wrk's p50 and p99 (two nodes: the higher of the two), non-2xx answers and socket
errors, and CPU per 2xx answer of the gateway processes (user + system, from /proc), of the Redis server (INFO cpu:
the whole server, so other users of the machine's Redis show up too; the configurations that do not use Redis show
that background) and of the PostgreSQL backends serving the bench's database.

Checked, for each configuration: one request before the load reads the `x-ratelimit-*` headers (present with limits
on, absent with limits off); after the load, each node's /metrics has no `gateway_rate_limited_total` and (limits on)
a `gateway_provider_queue_wait_seconds_count` for the provider of at least the answers it gave, i.e. every request
went through the provider's capacity; /readyz names the limit store and the database; Redis holds the run's keys;
after the gateways stop, the ledger has a row for every 2xx answer. Then, with Redis's MONITOR on for a few
hundred sequential requests to the Redis configuration, the Redis commands per request, by script.

Results: printed, and written to .bench/limits-results.md and .bench/limits-results.json; logs in .bench/logs/.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import http.client
import json
import os
import platform
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import yaml  # noqa: E402
from driver import (  # noqa: E402
    MASTER_KEY,
    base_env,
    count_log_errors,
    gateway_version,
    make_gateway,
    pinned,
    render_template,
)
from load import DOOR_PATHS, MODES, WrkResult, check_answer, run_wrk, write_bodies  # noqa: E402
from procs import Service, cpu_seconds, free_port, http_get  # noqa: E402
from stacks import read, report  # noqa: E402

ROOT = HERE.parent.parent
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_ADMIN_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
TEAM = "bench"
PROVIDER = "bench"
# Far above what one core serves (a few thousand requests a second, ~600 tokens reserved each): never refused, yet
# every request takes and gives back each of them. The key's differ from the team's so the headers name one.
TEAM_LIMITS = {"rpm": 100_000_000, "tpm": 100_000_000_000, "max_concurrent": 10_000}
KEY_LIMITS = {"rpm": 90_000_000, "tpm": 90_000_000_000, "max_concurrent": 9_000}
PROVIDER_LIMITS = {"concurrency": 10_000, "rpm": 100_000_000, "tpm": 100_000_000_000}
BODY = "2KB"
LEASE_SECONDS = 60.0  # a concurrency slot's lease (gateway/limits/leases.py): an unrenewed slot is back by then
PASSTHROUGH = "passthrough"


@dataclass(frozen=True)
class Config:
    name: str
    label: str
    callers: bool = False  # the team's and the key's limits
    providers: bool = False  # the provider's limits (the catalog)
    redis: bool = False
    postgres: bool = False
    nodes: int = 1
    passthrough: bool = False

    @property
    def limits(self) -> bool:
        return self.callers or self.providers


ON = {"callers": True, "providers": True}
CONFIGS = (
    Config(PASSTHROUGH, "passthrough (Starlette + aiohttp)", passthrough=True),
    Config("off", "limits off (SQLite)"),
    Config("memory", "limits on, in memory (SQLite)", **ON),
    Config("redis", "limits on, Redis (SQLite)", **ON, redis=True),
    Config("pg-redis", "PostgreSQL + Redis, 1 node", **ON, redis=True, postgres=True),
    Config("pg-redis-2", "PostgreSQL + Redis, 2 nodes", **ON, redis=True, postgres=True, nodes=2),
    # Not run by default (--configs): each half of the limits alone, to tell their costs apart.
    Config("memory-callers", "team and key limits only, in memory", callers=True),
    Config("memory-provider", "provider limits only, in memory", providers=True),
    Config("redis-callers", "team and key limits only, Redis", callers=True, redis=True),
    Config("redis-provider", "provider limits only, Redis", providers=True, redis=True),
)
CONFIG_NAMES = tuple(c.name for c in CONFIGS)
DEFAULT_CONFIGS = CONFIG_NAMES[:6]


@dataclass(frozen=True)
class Load:
    mode: str  # json or stream (load.MODES)
    conc: int

    @property
    def label(self) -> str:
        return f"{self.mode} {BODY} c={self.conc}"


@dataclass
class Sample:
    """One configuration under one load in one round."""

    config: str
    load: str
    round: int
    requests: int = 0
    ok: int = 0
    non2xx: int = 0
    socket_errors: int = 0
    rps: float = 0.0
    p50_ms: float | None = None
    p99_ms: float | None = None
    gateway_us: float | None = None
    redis_us: float | None = None
    postgres_us: float | None = None
    per_node_rps: list[float] = field(default_factory=list)
    error: str | None = None
    skipped: bool = False  # not run by design (two nodes, one connection)


@dataclass
class Deployment:
    """A configuration as it runs: its node(s), their ports, the key to send, where its state lives."""

    config: Config
    nodes: list[Service] = field(default_factory=list)
    ports: list[int] = field(default_factory=list)
    key: str = ""
    team: str = ""
    prefix: str = ""  # its keys in Redis (the nodes of one configuration share them, configurations do not)
    env: dict[str, str] = field(default_factory=dict)  # for the CLI on its database
    database: str | None = None  # PostgreSQL database name
    answered: int = 0  # 2xx answers, warm-ups and checks included (the ledger must hold at least as many rows)
    redis_keys: int = 0  # the most keys of its prefix seen in Redis right after a cell (idle keys expire)
    checks: list[str] = field(default_factory=list)  # what failed
    notes: list[str] = field(default_factory=list)  # what was seen


class Interrupted(Exception):
    pass


def _on_signal(signum: int, frame: object) -> None:
    raise Interrupted(f"signal {signum}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="issue 15: the cost of rate limits (use tests/bench/run.sh --limits)")
    p.add_argument("--quick", action="store_true", help="smoke run: 1 round of 1 s cells, no warm-up")
    p.add_argument("--duration", type=int, default=None, help="seconds per cell (default 5; 1 with --quick)")
    p.add_argument("--rounds", type=int, default=None, help="rounds (default 3; 1 with --quick)")
    p.add_argument(
        "--loads",
        default="json:32,stream:32,json:1",
        help="comma list of MODE:CONNECTIONS (json or stream, 2 KB bodies); two nodes skip loads of 1 connection",
    )
    p.add_argument(
        "--configs",
        default=",".join(DEFAULT_CONFIGS),
        help=f"comma list of {', '.join(CONFIG_NAMES)} (default: the first six)",
    )
    p.add_argument("--monitor-requests", type=int, default=300, help="requests counted under Redis MONITOR (0: skip)")
    p.add_argument(
        "--profile",
        metavar="CONFIG",
        default=None,
        help="instead of the rounds: py-spy on CONFIG's gateway (e.g. redis) under json 2KB c=32 "
        "(py-spy from .bench/tools-venv, which `run.sh --limits --profile` installs)",
    )
    p.add_argument("--profile-seconds", type=int, default=15)
    p.add_argument("--no-pin", action="store_true")
    p.add_argument("--gateway-bin", type=Path, default=ROOT / ".venv" / "bin" / "gateway")
    p.add_argument("--gateway-src", type=Path, default=None, help="run the gateway from this source tree")
    p.add_argument("--py-spy", type=Path, default=ROOT / ".bench" / "tools-venv" / "bin" / "py-spy")
    p.add_argument("--work", type=Path, default=ROOT / ".bench")
    p.add_argument("--wrk-timeout", type=int, default=30)
    return p.parse_args(argv)


def parse_loads(text: str) -> list[Load]:
    loads = []
    for item in (x.strip() for x in text.split(",") if x.strip()):
        mode, _, conc = item.partition(":")
        if mode not in MODES[:2] or not conc.isdigit() or int(conc) < 1:
            raise SystemExit(f"limits_bench.py: load {item!r} is not MODE:CONNECTIONS with MODE json or stream")
        loads.append(Load(mode, int(conc)))
    return loads


# -- the machine's Redis and PostgreSQL ---------------------------------------------------------------------------


def redis_client() -> Any:
    import redis

    return redis.Redis.from_url(REDIS_URL, socket_timeout=5, socket_connect_timeout=5)


def redis_cpu_seconds() -> float | None:
    try:
        cpu = redis_client().info("cpu")
    except Exception:
        return None
    return float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"])


def redis_keys(prefix: str) -> list[bytes]:
    """The keys of this run (its unique prefix): nothing else in the machine's Redis is read or touched."""
    return list(redis_client().scan_iter(match=f"{prefix}:*", count=1000))


def delete_redis_keys(prefix: str) -> int:
    keys = redis_keys(prefix)
    if keys:
        redis_client().delete(*keys)
    return len(keys)


@contextmanager
def postgres_database(prefix: str = "bench_limits") -> Iterator[str]:
    """A fresh database of its own (its name), dropped afterwards (FORCE: a node still closing must not keep it)."""
    import psycopg

    name = f"{prefix}_{secrets.token_hex(5)}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def postgres_url(database: str) -> str:
    return POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + "/" + database


def postgres_backend_pids(database: str) -> list[int]:
    import psycopg

    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=5) as admin:
        rows = admin.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", (database,)).fetchall()
    return [int(row[0]) for row in rows]


# -- the gateway's own answers --------------------------------------------------------------------------------------


def metric_values(port: int, name: str) -> dict[str, float]:
    """`name`'s samples on a node's /metrics, by their label text (`{...}`, or '' without labels)."""
    status, raw = http_get(
        f"http://127.0.0.1:{port}/metrics", headers={"Authorization": f"Bearer {MASTER_KEY}"}, timeout=15.0
    )
    if status != 200:
        raise RuntimeError(f"/metrics answered {status}")
    out: dict[str, float] = {}
    for line in raw.decode(errors="replace").splitlines():
        if line.startswith(name) and (line[len(name)] in "{ "):
            labels, _, value = line[len(name) :].rpartition(" ")
            out[labels.strip()] = float(value)
    return out


def ratelimit_headers(port: int, body: bytes, key: str) -> tuple[int, dict[str, str]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(
            "POST",
            DOOR_PATHS["chat"],
            body=body,
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
        )
        response = conn.getresponse()
        response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders() if k.lower().startswith("x-ratelimit")}
    finally:
        conn.close()


def script_names() -> dict[str, str]:
    """{sha1: script name} of the Redis limit store's scripts, to name what MONITOR sees (EVALSHA sha ...)."""
    try:
        from gateway.limits.redis_store import SCRIPTS
    except ImportError:
        return {}
    return {hashlib.sha1(source.encode()).hexdigest(): name for name, source in SCRIPTS.items()}


_MONITOR_LINE = re.compile(r'^[\d.]+ \[\d+ (?P<addr>[^\]]+)\] "(?P<cmd>[^"]+)"(?: "(?P<arg>[^"]*)")?(?P<rest>.*)$')


def count_monitor(lines: list[str], prefix: str, names: dict[str, str]) -> tuple[Counter[str], Counter[str]]:
    """The run's gateway's Redis commands in MONITOR's output: (round trips: the commands its connections sent, by
    command, EVALSHA by its script's name; the commands its scripts ran inside Redis). A connection is the
    gateway's when one of its commands names a key of the run's prefix."""
    ours: set[str] = set()
    parsed = []
    for line in lines:
        m = _MONITOR_LINE.match(line)
        if not m:
            continue
        parsed.append(m)
        if f'"{prefix}:' in line and m.group("addr") != "lua":
            ours.add(m.group("addr"))
    sent: Counter[str] = Counter()
    inside: Counter[str] = Counter()
    in_ours = False  # a script's commands follow the EVALSHA that ran them
    for m in parsed:
        cmd = m.group("cmd").lower()
        if m.group("addr") == "lua":
            if in_ours:
                inside[cmd] += 1
            continue
        in_ours = m.group("addr") in ours
        if not in_ours:
            continue
        if cmd == "evalsha":
            cmd = f"evalsha {names.get(m.group('arg') or '', (m.group('arg') or '?')[:8])}"
        sent[cmd] += 1
    return sent, inside


# -- the bench ------------------------------------------------------------------------------------------------------


class LimitsBench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work: Path = args.work.resolve()
        self.home = self.work / "limits"
        self.logs = self.work / "logs"
        self.quick = args.quick
        self.duration = args.duration or (1 if args.quick else 5)
        self.rounds = args.rounds or (1 if args.quick else 3)
        self.warmup = 0 if args.quick else 1
        self.loads = parse_loads(args.loads)
        chosen = {x.strip() for x in args.configs.split(",") if x.strip()}
        unknown = chosen - set(CONFIG_NAMES)
        if unknown:
            raise SystemExit(f"limits_bench.py: unknown configuration(s) {', '.join(sorted(unknown))}")
        self.configs = [c for c in CONFIGS if c.name in chosen]
        self.pin = not args.no_pin and (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None
        self.proxy_core = "0" if self.pin else None
        self.load_core = "1" if self.pin else None
        self.env = base_env(self.work)
        for name in list(self.env):  # nothing from the caller's environment decides where limits live
            if name.startswith(("GATEWAY_REDIS", "GATEWAY_WORKERS", "GATEWAY_DATABASE_URL")):
                del self.env[name]
        self.prefix = f"bench-limits-{secrets.token_hex(4)}"
        self.services: list[Service] = []
        self.deployments: dict[str, Deployment] = {}
        self.samples: list[Sample] = []
        self.cleanup = ExitStack()  # the run's PostgreSQL database, dropped at the end
        self.database: str | None = None
        self.postgres_key = ""  # the PostgreSQL configurations share one database, one team and one key
        self.upstream: Service | None = None

    # -- starting ------------------------------------------------------------------------------------------------

    def catalogs(self, up_port: int) -> tuple[Path, Path]:
        """The bench's catalog as it is (no limits) and with the provider's limits."""
        self.home.mkdir(parents=True, exist_ok=True)
        plain = render_template(HERE / "gateway.yaml", self.home / "gateway.yaml", UPSTREAM_PORT=up_port)
        catalog = yaml.safe_load(plain.read_text())
        for provider in catalog["providers"]:
            if provider["name"] == PROVIDER:
                provider["limits"] = dict(PROVIDER_LIMITS)
        limited = self.home / "gateway-limits.yaml"
        limited.write_text(
            "# The bench's catalog (tests/bench/gateway.yaml) with the provider's limits (limits_bench.py).\n"
            + yaml.safe_dump(catalog, sort_keys=False)
        )
        return plain, limited

    def cli(self, env: dict[str, str], *argv: str) -> str:
        out = subprocess.run(
            [str(self.args.gateway_bin), *argv], env=env, capture_output=True, text=True, timeout=120, cwd=self.work
        )
        if out.returncode != 0:
            raise RuntimeError(f"gateway {' '.join(argv[:2])} exited {out.returncode}: {out.stderr.strip()[-400:]}")
        return out.stdout

    def create_team_and_key(self, env: dict[str, str], limits: bool, name: str) -> str:
        team = ["teams", "create", name]
        key = ["keys", "create", "--team", name, "--name", "bench", "--format", "json"]
        if limits:
            team += ["--rpm", str(TEAM_LIMITS["rpm"]), "--tpm", str(TEAM_LIMITS["tpm"])]
            team += ["--max-concurrent", str(TEAM_LIMITS["max_concurrent"])]
            key += ["--rpm", str(KEY_LIMITS["rpm"]), "--tpm", str(KEY_LIMITS["tpm"])]
            key += ["--max-concurrent", str(KEY_LIMITS["max_concurrent"])]
        self.cli(env, *team)
        created = json.loads(self.cli(env, *key))
        if not created["key"].startswith("gw-"):
            raise RuntimeError(f"unexpected key from 'gateway keys create': {created['key'][:6]!r}...")
        return created["key"]

    def start(self, config: Config, up_port: int, plain: Path, limited: Path) -> Deployment:
        dep = Deployment(config)
        self.deployments[config.name] = dep
        # A team and a Redis prefix of its own: what one configuration holds is seen apart from the others'.
        dep.team = f"{TEAM}-pg" if config.postgres else f"{TEAM}-{config.name}"
        dep.prefix = f"{self.prefix}-{config.name}"
        if config.passthrough:
            port = free_port()
            argv = [sys.executable, str(HERE / "passthrough.py"), "--port", str(port)]
            argv += ["--upstream", f"http://127.0.0.1:{up_port}/v1"]
            svc = Service(PASSTHROUGH, pinned(argv, self.proxy_core), self.env, self.logs / "limits-passthrough.log")
            svc.spawn()
            self.services.append(svc)
            svc.wait_ready(lambda: http_get(f"http://127.0.0.1:{port}/readyz")[0] == 200)
            dep.nodes, dep.ports, dep.key = [svc], [port], MASTER_KEY  # (the passthrough reads no key)
            return dep
        database_url = None
        if config.postgres:
            if self.database is None:
                self.database = self.cleanup.enter_context(postgres_database())
            dep.database = self.database
            database_url = postgres_url(self.database)
        catalog = limited if config.providers else plain
        for index in range(config.nodes):
            suffix = "" if config.nodes == 1 else f"-{index + 1}"
            svc, port, probe, env = make_gateway(
                f"{config.name}{suffix}",
                self.env,
                self.home / f"data-{config.name}{suffix}",
                self.args.gateway_bin,
                self.args.gateway_src,
                catalog,
                self.logs / f"limits-{config.name}{suffix}.log",
                self.proxy_core,
            )
            if database_url is not None:
                env["GATEWAY_DATABASE_URL"] = database_url
            if config.redis:
                env.update(GATEWAY_REDIS_URL=REDIS_URL, GATEWAY_REDIS_PREFIX=dep.prefix)
            if index == 0:
                dep.env = env
                if config.postgres and self.postgres_key:  # the team and key of the first such configuration
                    dep.key = self.postgres_key
                else:
                    dep.key = self.create_team_and_key(env, config.callers, dep.team)
                    if config.postgres:
                        self.postgres_key = dep.key
            svc.spawn()
            self.services.append(svc)
            dep.nodes.append(svc)
            dep.ports.append(port)
            svc.wait_ready(probe)
            self.check_ready(dep, port)
        return dep

    def check_ready(self, dep: Deployment, port: int) -> None:
        """/readyz names the limit store and the database the configuration is meant to have."""
        status, raw = http_get(f"http://127.0.0.1:{port}/readyz")
        ready = json.loads(raw)
        kind = ready.get("limits", {}).get("kind")
        want = "redis" if dep.config.redis else "memory"
        storage = ready.get("storage", {}).get("kind", "")
        want_storage = "postgresql" if dep.config.postgres else "sqlite"
        if status != 200 or kind != want or not storage.startswith(want_storage[:8]):
            dep.checks.append(f"/readyz on :{port}: status {status}, limits {kind!r}, storage {storage!r}")
        else:
            dep.notes.append(f"ready: limits in {kind}, storage {storage}")

    # -- measuring -------------------------------------------------------------------------------------------------

    def settle(self, pids: list[int], window: float = 0.2, busy: float = 0.1, limit: float = 15.0) -> None:
        """Until the gateway(s) and the upstream are idle (as driver.Bench.settle)."""
        start = time.perf_counter()
        before = cpu_seconds(pids)
        while time.perf_counter() - start < limit:
            time.sleep(window)
            now = cpu_seconds(pids)
            if now - before <= busy * window:
                return
            before = now

    def wrk_all(self, dep: Deployment, body: Path, load: Load, seconds: int) -> list[WrkResult]:
        """wrk on every node at once, the connections split between them."""
        per_node = load.conc // len(dep.ports)
        with ThreadPoolExecutor(len(dep.ports)) as pool:
            futures = [
                pool.submit(run_wrk, port, body, per_node, seconds, dep.key, self.load_core, self.args.wrk_timeout, 1)
                for port in dep.ports
            ]
            return [f.result() for f in futures]

    def measure(self, dep: Deployment, load: Load, round_: int) -> Sample:
        sample = Sample(dep.config.name, load.label, round_)
        self.samples.append(sample)
        if load.conc < len(dep.ports):
            sample.error, sample.skipped = "fewer connections than nodes", True
            return sample
        body = self.bodies[(load.mode, BODY)]
        gateway_pids = [pid for svc in dep.nodes for pid in svc.pids()]
        assert self.upstream is not None
        self.settle(gateway_pids + self.upstream.pids())
        if self.warmup:
            for result in self.wrk_all(dep, body, load, self.warmup):
                dep.answered += result.requests - result.non2xx
            self.settle(gateway_pids + self.upstream.pids())
        pg_pids = postgres_backend_pids(dep.database) if dep.database else []
        cpu0, redis0, pg0 = cpu_seconds(gateway_pids), redis_cpu_seconds(), cpu_seconds(pg_pids)
        results = self.wrk_all(dep, body, load, self.duration)
        cpu1, redis1 = cpu_seconds(gateway_pids), redis_cpu_seconds()
        pg1 = cpu_seconds(pg_pids)  # (the same backends: a pool's connection opened meanwhile is not counted)
        errors = [r.error for r in results if r.error]
        if errors:
            sample.error = "; ".join(errors)
            return sample
        sample.requests = sum(r.requests for r in results)
        sample.non2xx = sum(r.non2xx for r in results)
        sample.ok = sample.requests - sample.non2xx
        sample.socket_errors = sum(r.socket_error_count for r in results)
        sample.per_node_rps = [(r.requests - r.non2xx) / r.duration_s if r.duration_s else 0.0 for r in results]
        sample.rps = sum(sample.per_node_rps)
        sample.p50_ms = max(r.p50_ms or 0.0 for r in results)
        sample.p99_ms = max(r.p99_ms or 0.0 for r in results)
        dep.answered += sample.ok
        if dep.config.redis:
            dep.redis_keys = max(dep.redis_keys, len(redis_keys(dep.prefix)))
        if sample.ok:
            sample.gateway_us = (cpu1 - cpu0) * 1e6 / sample.ok
            if redis0 is not None and redis1 is not None:
                sample.redis_us = (redis1 - redis0) * 1e6 / sample.ok
            if dep.database:
                sample.postgres_us = (pg1 - pg0) * 1e6 / sample.ok
        return sample

    def check_before(self, dep: Deployment) -> None:
        """Each node answers right, and its rate-limit headers say whether limits are on."""
        for port in dep.ports:
            for mode in dict.fromkeys(load.mode for load in self.loads):
                problem = check_answer(port, self.bodies[(mode, BODY)].read_bytes(), mode, dep.key)
                if problem:
                    dep.checks.append(f":{port} {mode}: {problem}")
                else:
                    dep.answered += 1
            if dep.config.passthrough:
                continue
            status, headers = ratelimit_headers(port, self.bodies[("json", BODY)].read_bytes(), dep.key)
            dep.answered += status == 200
            limited = {"x-ratelimit-limit-requests", "x-ratelimit-limit-tokens"} <= set(headers)
            if dep.config.callers and not limited:
                dep.checks.append(f":{port}: caller limits on, but no x-ratelimit-* headers ({headers})")
            elif not dep.config.callers and headers:
                dep.checks.append(f":{port}: no caller limits, but x-ratelimit-* headers {headers}")
            elif limited:
                dep.notes.append(
                    f"headers: x-ratelimit-limit-requests {headers['x-ratelimit-limit-requests']}, "
                    f"-tokens {headers['x-ratelimit-limit-tokens']}"
                )

    def check_slots(self, deps: list[Deployment]) -> None:
        """Once the nodes are idle, no concurrency slot is held. A slot still held a lease later (its lease ended
        unless the gateway renews it: `gateway.limits.leases`) is a leak: it is held for as long as the node lives.
        One held now but not then was taken by a request cancelled mid-call and came back when its lease ended."""
        deps = [dep for dep in deps if dep.config.limits]
        for dep in deps:
            self.settle([pid for svc in dep.nodes for pid in svc.pids()])
        now = {dep.config.name: self.slots_held(dep) for dep in deps}
        later: dict[str, dict[str, int]] = {}
        if any(any(held.values()) for held in now.values()):
            print(f"slots held after the load: {now}; again in {LEASE_SECONDS + 5:.0f} s", flush=True)
            time.sleep(LEASE_SECONDS + 5)
            later = {dep.config.name: self.slots_held(dep) for dep in deps}
        for dep in deps:
            held, then = now[dep.config.name], later.get(dep.config.name, {})
            dep.notes.append(
                f"slots held after the load: {held}" + (f", {LEASE_SECONDS + 5:.0f} s later: {then}" if then else "")
            )
            if any(then.values()):
                dep.checks.append(
                    f"concurrency slots held with nothing in flight, still a lease later (a leak): {then}"
                )

    def check_after(self, dep: Deployment) -> None:
        """No request was rate limited; with limits on, every request went through the provider's capacity."""
        if dep.config.passthrough:
            return
        self.settle([pid for svc in dep.nodes for pid in svc.pids()])
        for port in dep.ports:
            try:
                refused = sum(metric_values(port, "gateway_rate_limited_total").values())
                waits = metric_values(port, "gateway_provider_queue_wait_seconds_count")
                status, raw = http_get(f"http://127.0.0.1:{port}/readyz", timeout=15.0)
            except (OSError, RuntimeError, ValueError) as exc:
                dep.checks.append(f":{port}: metrics not read: {exc}")
                continue
            seated = sum(v for labels, v in waits.items() if f'provider="{PROVIDER}"' in labels)
            cache = json.loads(raw).get("key_cache", {})
            note = f":{port}: rate limited {refused:.0f}, provider queue passed {seated:.0f}"
            note += f", key cache hits {cache.get('hits')} / reads {cache.get('reads')}"
            dep.notes.append(note)
            if refused:
                dep.checks.append(f":{port}: {refused:.0f} requests rate limited: the figures are not valid")
            if dep.config.providers and seated <= 0:
                dep.checks.append(f":{port}: provider limits on, but no request went through its capacity")
            if not dep.config.providers and seated:
                dep.checks.append(f":{port}: no provider limits, but {seated:.0f} requests waited for capacity")
        if dep.config.redis:
            if not dep.redis_keys:
                dep.checks.append(f"no Redis keys under {dep.prefix} after any cell: the limits were not in Redis")
            else:
                dep.notes.append(f"{dep.redis_keys} Redis keys under its prefix after a cell")

    def slots_held(self, dep: Deployment) -> dict[str, int]:
        """Concurrency slots held now: the team's (GET /admin/teams, from the limit store), each node's seats at the
        provider (/readyz), and on Redis the live leases of every concurrency limit of the configuration."""
        held: dict[str, int] = {}
        port = dep.ports[0]
        if dep.config.callers:
            status, raw = http_get(
                f"http://127.0.0.1:{port}/admin/teams/{dep.team}", headers={"Authorization": f"Bearer {MASTER_KEY}"}
            )
            usage = (json.loads(raw).get("rate_usage") or {}).get("max_concurrent") if status == 200 else None
            held["team"] = -1 if usage is None else int(usage["used"])
        if dep.config.providers:
            for index, node in enumerate(dep.ports):
                queues = json.loads(http_get(f"http://127.0.0.1:{node}/readyz")[1]).get("provider_queues", {})
                held[f"seats on node {index + 1}"] = int(queues.get(PROVIDER, {}).get("seats", 0))
        if dep.config.redis:
            client, now = redis_client(), time.time()
            for key in redis_keys(dep.prefix):
                if key.endswith(b":concurrency"):
                    live = client.zrangebyscore(key, f"({now!r}", "+inf")
                    held[key.decode().split(":limit:", 1)[1]] = sum(1 for m in live if not m.startswith(b"\x00"))
        return held

    def check_ledger(self, dep: Deployment, answered: int) -> None:
        """After the node(s) stopped: a ledger row for every 2xx answer (wrk's abandoned requests may add a few)."""
        spend = json.loads(self.cli(dep.env, "spend", "--format", "json", "--team", dep.team))["total"]
        note = f"ledger: {spend['requests']} rows for {answered} 2xx answers"
        dep.notes.append(note)
        if spend["requests"] < answered:
            dep.checks.append(f"{note}: fewer rows than answers")

    def round_trips(self, dep: Deployment, requests: int) -> dict[str, Any]:
        """Redis commands per request: MONITOR on while `requests` sequential requests go to the first node."""
        names = script_names()
        out_path = self.logs / "limits-redis-monitor.log"
        body = self.bodies[("json", BODY)].read_bytes()
        host = REDIS_URL.split("//", 1)[1].split("/", 1)[0]
        address, _, port = host.rpartition(":")
        with open(out_path, "wb") as out:
            monitor = subprocess.Popen(
                ["redis-cli", "-h", address or "127.0.0.1", "-p", port or "6379", "monitor"],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            time.sleep(0.5)  # MONITOR is on before the first request
            ok = 0
            for _ in range(requests):
                status, _ = ratelimit_headers(dep.ports[0], body, dep.key)
                ok += status == 200
            time.sleep(0.5)  # the last settlement's commands reach MONITOR
        finally:
            os.killpg(monitor.pid, signal.SIGTERM)
            monitor.wait(5)
        dep.answered += ok
        sent, inside = count_monitor(out_path.read_text(errors="replace").splitlines(), dep.prefix, names)
        return {
            "requests": requests,
            "ok": ok,
            "round_trips": sum(sent.values()),
            "per_request": sum(sent.values()) / requests,
            "by_command": {name: n / requests for name, n in sent.most_common()},
            "in_scripts_per_request": sum(inside.values()) / requests,
            "in_scripts": {name: n / requests for name, n in inside.most_common()},
        }

    # -- the whole run ---------------------------------------------------------------------------------------------

    def run(self) -> int:
        if self.pin:
            os.sched_setaffinity(0, {1})
        self.logs.mkdir(parents=True, exist_ok=True)
        self.bodies = write_bodies(self.work / "bodies")
        started = time.time()
        up_port = free_port()
        self.upstream = Service(
            "upstream",
            pinned([sys.executable, str(HERE / "upstream.py"), "--port", str(up_port)], self.load_core),
            self.env,
            self.logs / "limits-upstream.log",
        )
        plain, limited = self.catalogs(up_port)
        meta = {
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "gateway": gateway_version(self.args.gateway_src),
            "bench": gateway_version(None),
            "machine": f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}, "
            f"Linux {platform.release()}, load average {os.getloadavg()[0]:.1f} at the start",
            "pinning": "gateways and passthrough on core 0; wrk, upstream and this script on core 1"
            if self.pin
            else "none",
            "per cell": f"{self.duration} s after a {self.warmup} s warm-up, {self.rounds} round(s), wrk -t1",
            "redis prefix": self.prefix,
        }
        print("limits benchmark\n" + "\n".join(f"  {k}: {v}" for k, v in meta.items()), flush=True)
        rt: dict[str, Any] | None = None
        interrupted = ""
        try:
            self.upstream.spawn()
            self.services.append(self.upstream)
            self.upstream.wait_ready(lambda: http_get(f"http://127.0.0.1:{up_port}/v1/models")[0] == 200)
            for config in self.configs:
                dep = self.start(config, up_port, plain, limited)
                self.check_before(dep)
                print(f"[{config.name}] ready on {dep.ports}; {'; '.join(dep.notes) or ''}", flush=True)
            if self.args.profile:
                return self.profile(self.args.profile)
            for round_ in range(self.rounds):
                order = self.configs[round_ % len(self.configs) :] + self.configs[: round_ % len(self.configs)]
                for load in self.loads:
                    for config in order:
                        sample = self.measure(self.deployments[config.name], load, round_)
                        print(_sample_line(sample), flush=True)
            for dep in self.deployments.values():
                self.check_after(dep)
            self.check_slots(list(self.deployments.values()))
            if "redis" in self.deployments and self.args.monitor_requests:
                rt = self.round_trips(self.deployments["redis"], self.args.monitor_requests)
                print(f"[redis] Redis commands per request: {rt['per_request']:.2f} {rt['by_command']}", flush=True)
        except Interrupted as exc:
            interrupted = str(exc)
        finally:
            for svc in reversed(self.services):
                svc.stop()
            self.finish()
        doc, raw = self.results(meta, rt, time.time() - started, interrupted)
        print("\n" + doc, flush=True)
        (self.work / "limits-results.md").write_text(doc)
        (self.work / "limits-results.json").write_text(json.dumps(raw, indent=1))
        print(f"written: {self.work / 'limits-results.md'}, {self.work / 'limits-results.json'}", flush=True)
        return 130 if interrupted else 0

    def finish(self) -> None:
        """After the nodes stopped: the ledgers, the logs; the run's Redis keys and database go."""
        for dep in self.deployments.values():
            if dep.config.passthrough or not dep.nodes:
                continue
            errors = sum(count_log_errors(svc.log) for svc in dep.nodes)
            if errors:
                dep.checks.append(f"{errors} error line(s) or traceback(s) in the log(s)")
            if not dep.config.postgres:
                try:
                    self.check_ledger(dep, dep.answered)
                except Exception as exc:
                    dep.checks.append(f"ledger not read: {type(exc).__name__}: {exc}")
        postgres = [d for d in self.deployments.values() if d.config.postgres and d.nodes]
        if postgres:  # one database for both: the answers of both against its rows
            try:
                self.check_ledger(postgres[0], sum(d.answered for d in postgres))
            except Exception as exc:
                postgres[0].checks.append(f"ledger not read: {type(exc).__name__}: {exc}")
        try:
            deleted = delete_redis_keys(f"{self.prefix}-*")
            print(f"deleted the run's {deleted} Redis keys ({self.prefix}-*)", flush=True)
        except Exception as exc:
            print(f"the run's Redis keys ({self.prefix}-*) not deleted: {exc}", flush=True)
        self.cleanup.close()

    # -- the profile -----------------------------------------------------------------------------------------------

    def profile(self, name: str) -> int:
        """py-spy on the configuration's (first) gateway under json 2 KB c=32, after the same load without it."""
        dep = self.deployments.get(name)
        if dep is None or dep.config.passthrough:
            raise SystemExit(f"--profile {name}: not a gateway configuration of this run (--configs)")
        if not self.args.py_spy.exists():
            raise SystemExit(f"{self.args.py_spy} is missing: `bash tests/bench/run.sh --limits --profile {name}`")
        load, seconds = Load("json", 32), self.args.profile_seconds
        body = self.bodies[("json", BODY)]
        node = dep.nodes[0]
        self.wrk_all(dep, body, load, 2)
        pids = node.pids()
        cpu0 = cpu_seconds(pids)
        plain = self.wrk_all(dep, body, load, seconds)
        ok = sum(r.requests - r.non2xx for r in plain)
        us = (cpu_seconds(pids) - cpu0) * 1e6 / max(ok, 1)
        rps = sum((r.requests - r.non2xx) / r.duration_s for r in plain if r.duration_s)
        print(f"[{name}] without the profiler: {rps:,.0f} req/s, {us:.0f} µs CPU per request", flush=True)
        out = self.work / "profile"
        out.mkdir(parents=True, exist_ok=True)
        collapsed = out / f"limits-{name}-json-2KB-c32.collapsed"
        argv = [str(self.args.py_spy), "record", "--pid", str(node.pid), "--rate", "500", "--function"]
        argv += ["--nonblocking", "--duration", str(seconds + 3), "--format", "raw", "--output", str(collapsed)]
        spy = subprocess.Popen(pinned(argv, self.load_core), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            time.sleep(1.0)
            under = self.wrk_all(dep, body, load, seconds)
            said, _ = spy.communicate(timeout=seconds + 60)
        finally:
            if spy.poll() is None:
                spy.kill()
                spy.wait(5)
        if spy.returncode != 0 or not collapsed.exists():
            print(f"py-spy failed ({spy.returncode}): {said.decode(errors='replace')[-800:]}", flush=True)
            return 1
        refused = sum(r.non2xx for r in under)
        stacks = read([collapsed])
        text = (
            f"# Profile: {dep.config.label}, json 2KB c=32, py-spy --rate 500 --function --nonblocking\n\n"
            f"Without the profiler: {rps:,.0f} req/s, {us:.0f} µs CPU per request; non-2xx under it: {refused}.\n\n"
            + limits_share(stacks, us)
            + "\n"
            + report(stacks, 40, us)
        )
        (out / f"limits-{name}-json-2KB-c32.txt").write_text(text)
        print(text, flush=True)
        return 0

    # -- the results -------------------------------------------------------------------------------------------------

    def results(
        self, meta: dict[str, str], rt: dict[str, Any] | None, elapsed: float, interrupted: str
    ) -> tuple[str, dict[str, Any]]:
        header = "\n".join(f"- {k}: {v}" for k, v in meta.items())
        if interrupted:
            header += f"\n- INTERRUPTED ({interrupted}): partial results"
        parts = [f"# Rate limits on the request path (issue 15)\n\n{header}\n- run time: {elapsed:.0f} s\n"]
        for load in self.loads:
            parts.append(f"## {load.label}\n\n{self.table(load)}")
        if rt:
            by = ", ".join(f"{name} {n:.2f}" for name, n in rt["by_command"].items())
            inside = ", ".join(f"{name} {n:.2f}" for name, n in rt["in_scripts"].items())
            parts.append(
                f"## Redis round trips\n\n{rt['per_request']:.2f} Redis round trips per request (limits on, Redis; "
                f"{rt['requests']} sequential requests, {rt['ok']} answered 200, under MONITOR): {by}; the scripts "
                f"ran {rt['in_scripts_per_request']:.2f} commands inside Redis per request: {inside}.\n"
            )
        checks = []
        for dep in self.deployments.values():
            verdict = "FAILED: " + "; ".join(dep.checks) if dep.checks else "all passed"
            checks.append(f"- {dep.config.label}: {verdict}" + (f" ({'; '.join(dep.notes)})" if dep.notes else ""))
        bad = sum(s.non2xx + s.socket_errors for s in self.samples)
        failed = [f"{s.config} {s.load}: {s.error}" for s in self.samples if s.error and not s.skipped]
        checks.append(f"- non-2xx answers and socket errors over the run: {bad}; failed cells: {len(failed)}")
        checks += [f"  - {text}" for text in failed]
        parts.append("## Checks\n\n" + "\n".join(checks) + "\n")
        raw = {
            "meta": meta,
            "samples": [dataclasses.asdict(s) for s in self.samples],
            "round_trips": rt,
            "checks": {name: {"failed": d.checks, "notes": d.notes} for name, d in self.deployments.items()},
        }
        return "\n".join(parts), raw

    def table(self, load: Load) -> str:
        head = (
            "| configuration | req/s | ÷ off | gateway CPU µs/req | vs off µs (%) | p50 ms | p99 ms | p50 vs off ms "
            "| non-2xx | Redis server µs/req | PostgreSQL µs/req |\n"
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
        )
        rows = []
        for config in self.configs:
            mine = self._samples(config.name, load)
            if not mine:
                rows.append(f"| {config.label} | " + " | ".join(["-"] * 10) + " |")
                continue
            off = {s.round: s for s in self._samples("off", load)}
            rps = _median([s.rps for s in mine])
            cpu = _median([s.gateway_us for s in mine])
            rps_ratio = _median([s.rps / off[s.round].rps for s in mine if s.round in off and off[s.round].rps])
            cpu_delta = _median(
                [s.gateway_us - off[s.round].gateway_us for s in mine if s.round in off and _both(s, off[s.round])]
            )
            cpu_share = _median(
                [
                    s.gateway_us / off[s.round].gateway_us - 1
                    for s in mine
                    if s.round in off and _both(s, off[s.round]) and off[s.round].gateway_us
                ]
            )
            p50_delta = _median(
                [
                    s.p50_ms - off[s.round].p50_ms
                    for s in mine
                    if s.round in off and s.p50_ms is not None and off[s.round].p50_ms is not None
                ]
            )
            non2xx = sum(s.non2xx + s.socket_errors for s in mine)
            name = config.label + (" (total)" if config.nodes > 1 else "")
            versus = "" if cpu_delta is None or config.name == "off" else f"{cpu_delta:+.0f} ({cpu_share * 100:+.0f}%)"
            rows.append(
                f"| {name} | {_n(rps)} | {_x(rps_ratio)} | {_n(cpu)} | {versus or '-'} | "
                f"{_f(_median([s.p50_ms for s in mine]))} | {_f(_median([s.p99_ms for s in mine]))} | "
                f"{'-' if config.name == 'off' or p50_delta is None else f'{p50_delta:+.2f}'} | {non2xx} | "
                f"{_n(_median([s.redis_us for s in mine]))} | {_n(_median([s.postgres_us for s in mine]))} |"
            )
        return head + "\n".join(rows) + "\n"

    def _samples(self, config: str, load: Load) -> list[Sample]:
        return [s for s in self.samples if s.config == config and s.load == load.label and not s.error and s.ok]


def _both(a: Sample, b: Sample) -> bool:
    return a.gateway_us is not None and b.gateway_us is not None


def _median(values: list[Any]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _n(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _f(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _sample_line(s: Sample) -> str:
    what = f"[{s.config}] round {s.round + 1} {s.load:16}"
    if s.error:
        return f"{what} skipped: {s.error}"
    nodes = f" ({' + '.join(f'{r:,.0f}' for r in s.per_node_rps)})" if len(s.per_node_rps) > 1 else ""
    warn = f"  non-2xx {s.non2xx}" if s.non2xx else ""
    warn += f"  socket errors {s.socket_errors}" if s.socket_errors else ""
    extra = "".join(
        f"  {label} {value:.0f} µs"
        for label, value in (("redis", s.redis_us), ("pg", s.postgres_us))
        if value is not None and (label == "pg" or s.config not in (PASSTHROUGH,))
    )
    return (
        f"{what} {s.rps:8,.0f} req/s{nodes}  p50 {s.p50_ms or 0:6.2f} ms  p99 {s.p99_ms or 0:6.2f} ms  "
        f"gateway {s.gateway_us or 0:5.0f} µs/req{extra}{warn}"
    )


# Where a sample is, for the limits' share of a profile: innermost first.
LIMIT_PARTS = (
    ("redis-py (client: commands, connection, parsing)", ("redis/",)),
    ("gateway/limits/ (stores, GCRA, provider queue, headers)", ("gateway/limits/",)),
    ("gateway/pipeline/limits.py (RequestLimits)", ("gateway/pipeline/limits.py",)),
)


def limits_share(stacks: list[tuple[list[str], int, str]], us_per_req: float) -> str:
    """The samples under the limits' code (cumulative: any frame of it on the stack), by the innermost such part,
    and the share of the whole in µs per request."""
    total = sum(n for _, n, _ in stacks)
    if not total:
        return "no samples\n"
    parts: Counter[str] = Counter()
    for frames, n, _ in stacks:
        for frame in reversed(frames):
            part = next((name for name, marks in LIMIT_PARTS if any(m in frame for m in marks)), None)
            if part is not None:
                parts[part] += n
                break
    lines = ["### The limits' share (innermost limits frame on the stack; cumulative)\n", "| part | % | µs/req |"]
    lines.append("|---|---:|---:|")
    for name, _ in LIMIT_PARTS:
        lines.append(f"| {name} | {parts[name] / total * 100:.1f} | {parts[name] / total * us_per_req:.0f} |")
    whole = sum(parts.values())
    lines.append(f"| **all of it** | {whole / total * 100:.1f} | {whole / total * us_per_req:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.gateway_src is not None and not (args.gateway_src / "gateway" / "__init__.py").is_file():
        print(f"--gateway-src {args.gateway_src}: no gateway/__init__.py there", file=sys.stderr)
        return 2
    if shutil.which("wrk") is None:
        print("wrk is not installed (tests/bench/run.sh installs it)", file=sys.stderr)
        return 2
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    bench = LimitsBench(args)
    try:
        return bench.run()
    except (KeyboardInterrupt, Interrupted) as exc:
        print(f"\ninterrupted ({exc or 'Ctrl-C'}); all processes stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
