"""Benchmark driver: upstream direct vs model-gateway (+budget) vs a bare passthrough vs LiteLLM Proxy.

Started by tests/bench/run.sh (which installs wrk and LiteLLM first); run with
the project's Python. For each target: spawn it, time it until ready, check
that it answers correctly, drive it with wrk over the matrix (json/stream x
2KB/200KB/4MB x c=1/c=32, plus stream100 x 2KB; model-gateway+budget: json/stream
x 2KB only), sample the RSS of its process tree, stop it. The passthrough
(passthrough.py: Starlette + uvicorn + aiohttp, forwarding only) runs the
gateway's loads right after it. Then print the Markdown tables (all cells; the
gateway, the passthrough and LiteLLM side by side with issue 13's ratios), also
written to .bench/results.md (raw numbers: .bench/results.json), and the
PASS/FAIL summary against the issues' targets.

All traffic goes to 127.0.0.1; every wait and every load run is bounded in
time; every process started here is stopped in a `finally` (its whole process
group), also on Ctrl-C and SIGTERM.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import signal
import string
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from load import BODY_SIZES, DOOR_PATHS, DOORS, MODE_BODIES, MODES, check_answer, run_wrk, write_bodies  # noqa: E402
from procs import RssSampler, Service, cpu_seconds, free_port, http_get, hwm_kb, rss_kb  # noqa: E402
from report import (  # noqa: E402
    GATEWAY,
    GATEWAY_BUDGET,
    LITELLM,
    PASSTHROUGH,
    TARGETS,
    UPSTREAM,
    Cell,
    TargetInfo,
    doors_table,
    side_by_side,
    summary,
    table,
    target_table,
)

ROOT = HERE.parent.parent
MASTER_KEY = "sk-bench-master-key"
UPSTREAM_KEY = "sk-bench-upstream"
# model-gateway+budget: a team with a budget (never reached) and a key of that team, created
# with the gateway's CLI on the database before the gateway starts.
BUDGET_TEAM = "bench"
BUDGET_USD = "1000000"
# What model-gateway+budget runs (within --bodies/--modes): enough to show the ledger's cost.
BUDGET_BODIES = ("2KB",)
BUDGET_MODES = ("json", "stream")
# The targets that serve the translating doors (--doors); the others (and upstream direct) speak chat only.
DOOR_TARGETS = (GATEWAY, GATEWAY_BUDGET)


class Interrupted(Exception):
    pass


_INTERRUPTED: list[int] = []


def _on_signal(signum: int, frame: object) -> None:
    if _INTERRUPTED:  # already stopping: let the clean-up finish
        return
    _INTERRUPTED.append(signum)
    raise Interrupted(f"signal {signum}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="model-gateway benchmark driver (use tests/bench/run.sh)")
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 1 s per cell, no warm-up, LiteLLM 4MB and stream100 c>1 skipped",
    )
    p.add_argument("--duration", type=int, default=None, help="seconds per cell (default 5; 1 with --quick)")
    p.add_argument(
        "--targets",
        default=",".join(TARGETS[1:]),
        help=f"comma list of {', '.join(TARGETS[1:])} (upstream direct, the baseline, always runs); "
        f"{GATEWAY_BUDGET} runs only the 2KB json and stream cells; {PASSTHROUGH} (Starlette + uvicorn + aiohttp, "
        "forwarding only) runs the same cells as model-gateway",
    )
    p.add_argument("--bodies", default=",".join(BODY_SIZES), help=f"comma list of {', '.join(BODY_SIZES)}")
    p.add_argument("--concurrency", default="1,32", help="comma list of connection counts")
    p.add_argument(
        "--modes",
        default=",".join(MODES),
        help="comma list of json, stream, stream100 (100 small SSE chunks, one upstream write each; 2KB only, "
        f"not for {GATEWAY_BUDGET})",
    )
    p.add_argument(
        "--doors",
        default="chat",
        help=f"comma list of {', '.join(DOORS)} (default chat): the front doors {' and '.join(DOOR_TARGETS)} run "
        "every cell through, the same request in each door's format, one door after the other per cell; the other "
        "targets and upstream direct run chat only",
    )
    p.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    p.add_argument("--litellm-venv", type=Path, default=ROOT / ".bench" / "litellm-venv")
    p.add_argument("--gateway-bin", type=Path, default=ROOT / ".venv" / "bin" / "gateway")
    p.add_argument(
        "--gateway-src",
        type=Path,
        default=None,
        help="run the gateway (and its CLI) from this source tree, first on PYTHONPATH, instead of the installed "
        "one: e.g. a `git archive` export of a commit, or a scratch copy with a change to measure",
    )
    p.add_argument("--work", type=Path, default=ROOT / ".bench", help="folder for generated files and logs")
    p.add_argument("--wrk-timeout", type=int, default=30, help="seconds before wrk counts a request as timed out")
    return p.parse_args(argv)


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _choose(value: str, known: tuple[str, ...], what: str) -> list[str]:
    """The comma list `value`, in the order of `known`; an unknown name is an error, not silently dropped."""
    chosen = _csv(value)
    unknown = [v for v in chosen if v not in known]
    if unknown:
        raise SystemExit(f"driver.py: unknown {what} {', '.join(unknown)} (choose from {', '.join(known)})")
    return [k for k in known if k in chosen]


def render_template(src: Path, dst: Path, **values: object) -> Path:
    text = string.Template(src.read_text()).substitute({k: str(v) for k, v in values.items()})
    dst.write_text(text)
    return dst


def _version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=ROOT)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return "unknown"


def base_env(work: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env["PYTHONUNBUFFERED"] = "1"
    env["HOME"] = str(work / "home")  # nothing under test writes into the real home
    (work / "home").mkdir(parents=True, exist_ok=True)
    return env


def count_log_errors(path: Path) -> int:
    """Tracebacks and ERROR lines a target logged (a target that fails quietly must not look fine)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return 0
    return sum(1 for line in text.splitlines() if line.startswith("Traceback") or "ERROR" in line)


def gateway_pythonpath(env: dict[str, str], src: Path | None) -> None:
    """With --gateway-src, the gateway's package is imported from `src` (before the editable install)."""
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(src.resolve()), env.get("PYTHONPATH", "")) if p)


def gateway_version(src: Path | None) -> str:
    if src is None:
        return _version(["git", "describe", "--always", "--dirty"])
    return f"source tree {src.resolve()}"


def pinned(argv: list[str], core: str | None) -> list[str]:
    return ["taskset", "-c", core, *argv] if core is not None else argv


def make_gateway(
    name: str,
    base: dict[str, str],
    data_dir: Path,
    gateway_bin: Path,
    gateway_src: Path | None,
    config: Path,
    log: Path,
    core: str | None,
) -> tuple[Service, int, Callable[[], bool], dict[str, str]]:
    """model-gateway (`gateway serve`, master key, live against the upstream in `config`) with its own fresh
    ledger: SQLite in `data_dir`, emptied first. Its service, port, readiness probe and environment (the CLI
    run with that environment works on the same database)."""
    port = free_port()
    shutil.rmtree(data_dir, ignore_errors=True)
    env = dict(base)
    env.pop("GATEWAY_CONFIG", None)
    env.update(
        BENCH_UPSTREAM_KEY=UPSTREAM_KEY,
        GATEWAY_MASTER_KEY=MASTER_KEY,
        GATEWAY_LOG_LEVEL="warning",
        GATEWAY_DATA_DIR=str(data_dir),
        GATEWAY_DATABASE_URL=f"sqlite:///{data_dir / 'gateway.db'}",  # the CLI and the server: one file
    )
    gateway_pythonpath(env, gateway_src)
    svc = Service(
        name, pinned([str(gateway_bin), "serve", "--config", str(config), "--port", str(port)], core), env, log
    )

    def probe() -> bool:
        status, raw = http_get(f"http://127.0.0.1:{port}/readyz")
        if status != 200:
            return False
        mode = json.loads(raw).get("mode")
        if mode != "live":
            raise RuntimeError(f"{name} is in {mode!r} mode, not live: the benchmark would not be valid")
        return True

    return svc, port, probe, env


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work: Path = args.work.resolve()
        self.logs = self.work / "logs"
        self.quick = args.quick
        self.duration = args.duration or (1 if args.quick else 5)
        self.warmup = 0 if args.quick else 1
        self.pin = not args.no_pin and (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None
        self.proxy_core = "0" if self.pin else None
        self.load_core = "1" if self.pin else None
        self.bodies = _choose(args.bodies, tuple(BODY_SIZES), "body")
        self.concs = [int(c) for c in _csv(args.concurrency)]
        self.modes = _choose(args.modes, MODES, "mode")
        self.targets = _choose(args.targets, TARGETS[1:], "target")
        self.doors = _choose(args.doors, DOORS, "door")
        self.cells: list[Cell] = []
        self.infos: dict[str, TargetInfo] = {}
        self.services: list[Service] = []
        self.env = base_env(self.work)

    # -- one target --------------------------------------------------------------------
    def cell_duration(self, body: str) -> int:
        # Big bodies through a slow proxy take seconds each: give them longer so some finish.
        return self.duration * 2 if body == "4MB" and not self.quick else self.duration

    def matrix(self, name: str) -> list[tuple[str, str]]:
        """The (mode, body) pairs `name` runs, each at every --concurrency."""
        pairs = [(mode, body) for mode in self.modes for body in self.bodies if body in MODE_BODIES[mode]]
        if name == GATEWAY_BUDGET:
            return [(mode, body) for mode, body in pairs if mode in BUDGET_MODES and body in BUDGET_BODIES]
        if name == UPSTREAM and self.targets:  # the baseline: the cells of the targets that run
            wanted = {pair for target in self.targets for pair in self.matrix(target)}
            return [pair for pair in pairs if pair in wanted]
        return pairs

    def doors_of(self, name: str) -> list[str]:
        return self.doors if name in DOOR_TARGETS else ["chat"]

    def run_target(
        self,
        name: str,
        svc: Service,
        port: int,
        probe,
        spawn: bool = True,
        key: str = MASTER_KEY,
        prepare: Callable[[], str] | None = None,
        ledger: Callable[[TargetInfo], None] | None = None,
    ) -> None:
        """`prepare` runs before the spawn and returns the API key to use; `ledger` checks the
        target's database after it stopped."""
        info = TargetInfo(name=name)
        self.infos[name] = info
        bodies = self.body_files
        pairs = self.matrix(name)
        doors = self.doors_of(name)
        if not pairs:
            info.error = "no cells for this target within --modes/--bodies"
            print(f"[{name}] skipped: {info.error}", flush=True)
            return
        try:
            if prepare is not None:
                key = prepare()
            if spawn:
                svc.spawn()
                self.services.append(svc)
                info.ready_s = svc.wait_ready(probe)
                time.sleep(0.5)  # let start-up work settle before the idle reading
            else:
                info.ready_s = svc.ready_s
            info.idle_rss_mb = rss_kb(svc.pids()) / 1024
            sampler = RssSampler(svc.pid).start()
            svc.sampler = sampler
            print(
                f"[{name}] ready in {info.ready_s:.2f} s, idle RSS {info.idle_rss_mb:.0f} MB; checking answers",
                flush=True,
            )
            for mode, body in pairs:
                for door in doors:
                    problem = check_answer(port, bodies[door][(mode, body)].read_bytes(), mode, key, door=door)
                    where = f"{mode} {body}" + ("" if door == "chat" else f" /{door}")
                    if problem:
                        info.checks.append(f"{where}: {problem}")
                        print(f"[{name}]   check {where}: {problem}", flush=True)
                    else:
                        info.answered += 1
            for mode, body in pairs:
                for conc in self.concs:
                    for door in doors:  # the doors back to back: their cells are measured close in time
                        self.run_cell(name, svc, port, mode, body, conc, key, door)
            for mode in dict.fromkeys(m for m, _ in pairs):  # still right after the load?
                body = next(b for m, b in pairs if m == mode)
                for door in doors:
                    problem = check_answer(port, bodies[door][(mode, body)].read_bytes(), mode, key, door=door)
                    if problem:
                        info.checks.append(f"after load, {mode} {body} /{door}: {problem}")
                    else:
                        info.answered += 1
        except Interrupted:
            raise
        except Exception as exc:  # one broken target must not lose the others' numbers
            info.error = f"{type(exc).__name__}: {exc}"
            print(f"[{name}] ERROR {info.error}", flush=True)
        finally:
            if svc.popen is not None:
                pids = svc.pids() if svc.alive() else []
                info.processes = len(pids)
                info.hwm_rss_mb = hwm_kb(pids) / 1024 if pids else None
                if svc.sampler is not None:
                    svc.sampler.stop()
                    info.peak_rss_mb = svc.sampler.peak_kb / 1024
                    svc.sampler = None
            if spawn:
                svc.stop()
            info.log_errors = count_log_errors(svc.log)
            if info.log_errors:
                print(f"[{name}] {info.log_errors} error(s)/traceback(s) in {svc.log}", flush=True)
        if ledger is not None and svc.popen is not None and not info.error:
            try:
                ledger(info)
            except Exception as exc:
                info.checks.append(f"ledger check failed: {type(exc).__name__}: {exc}")

    def gateway_cli(self, env: dict[str, str], *argv: str) -> str:
        """Run the gateway's admin CLI in direct-database mode (GATEWAY_DATABASE_URL in `env`); its stdout."""
        out = subprocess.run(
            [str(self.args.gateway_bin), *argv], env=env, capture_output=True, text=True, timeout=60, cwd=self.work
        )
        if out.returncode != 0:
            raise RuntimeError(f"gateway {' '.join(argv[:2])} exited {out.returncode}: {out.stderr.strip()[-300:]}")
        return out.stdout

    def settle(self, svc: Service, window: float = 0.2, busy: float = 0.1, limit: float = 15.0) -> float:
        """Wait until the target and the upstream are idle (under `busy` of a core over `window` s).

        When wrk stops, requests it abandoned are still being read or relayed (a 4 MB
        body at c=32 keeps the processes busy for ~100 ms); a cell started before that
        work is done would carry a stall that wrk's latency correction multiplies.
        """
        pids = svc.pids() + (self.upstream.pids() if self.upstream is not svc and self.upstream.alive() else [])
        start = time.perf_counter()
        before = cpu_seconds(pids)
        while time.perf_counter() - start < limit:
            time.sleep(window)
            now = cpu_seconds(pids)
            if now - before <= busy * window:
                break
            before = now
        return time.perf_counter() - start

    def run_cell(
        self, name: str, svc: Service, port: int, mode: str, body: str, conc: int, key: str, door: str = "chat"
    ) -> None:
        cell = Cell(name, mode, body, conc, door=door)
        self.cells.append(cell)
        label = f"[{name}] {mode:9} {body:>5} c={conc:<3}" + ("" if door == "chat" else f" /{door}")
        # LiteLLM finishes no such request within a 1 s cell (about 2 s each at c=32 for stream100).
        if self.quick and name == LITELLM and (body == "4MB" or mode == "stream100") and conc > 1:
            cell.skipped = "--quick"
            print(f"{label} skipped (--quick)", flush=True)
            return
        if not svc.alive():
            cell.skipped = "target not running"
            print(f"{label} skipped: target not running", flush=True)
            return
        body_file = self.body_files[door][(mode, body)]
        path = DOOR_PATHS[door]
        threads = 1
        info = self.infos[name]
        try:
            self.settle(svc)
            if self.warmup and body != "4MB":
                warm = run_wrk(
                    port, body_file, conc, self.warmup, key, self.load_core, self.args.wrk_timeout, threads, path
                )
                info.answered += warm.requests - warm.non2xx
                self.settle(svc)
            duration = self.cell_duration(body)
            pids = svc.pids()
            cpu0 = cpu_seconds(pids)
            result = run_wrk(port, body_file, conc, duration, key, self.load_core, self.args.wrk_timeout, threads, path)
        except Interrupted:
            cell.skipped = "interrupted"
            raise
        cpu1 = cpu_seconds(pids)
        info.answered += result.requests - result.non2xx
        cell.result = result
        if result.requests:
            cell.cpu_us_per_req = (cpu1 - cpu0) * 1e6 / result.requests
        if result.error:
            print(f"{label} {result.error}", flush=True)
            return
        warn = f"  non-2xx {result.non2xx}" if result.non2xx else ""
        if result.socket_errors:
            warn += f"  socket errors {result.socket_errors}"
        p50 = "-" if result.p50_ms is None else f"{result.p50_ms:.2f}"
        p99 = "-" if result.p99_ms is None else f"{result.p99_ms:.2f}"
        print(f"{label} {result.rps:10.1f} req/s  p50 {p50:>8} ms  p99 {p99:>8} ms{warn}", flush=True)

    # -- the whole run -----------------------------------------------------------------
    def run(self) -> int:
        self.work.mkdir(parents=True, exist_ok=True)
        if self.pin:
            os.sched_setaffinity(0, {1})  # the driver itself stays off the proxy's core
        self.body_files = {door: write_bodies(self.work / "bodies", door) for door in DOORS}
        py = sys.executable
        started = time.time()

        up_port = free_port()
        upstream = Service(
            UPSTREAM,
            pinned([py, str(HERE / "upstream.py"), "--port", str(up_port)], self.load_core),
            self.env,
            self.logs / "upstream.log",
        )
        up_probe = lambda: http_get(f"http://127.0.0.1:{up_port}/v1/models")[0] == 200  # noqa: E731

        gw_config = render_template(HERE / "gateway.yaml", self.work / "gateway.yaml", UPSTREAM_PORT=up_port)

        def gateway_service(name: str, data: str, log: str) -> tuple[Service, int, Callable[[], bool], dict[str, str]]:
            return make_gateway(
                name,
                self.env,
                self.work / data,
                self.args.gateway_bin,
                self.args.gateway_src,
                gw_config,
                self.logs / log,
                self.proxy_core,
            )

        gateway, gw_port, gw_probe, gw_env = gateway_service(GATEWAY, "gateway-data", "gateway.log")
        budget_gw, bg_port, bg_probe, bg_env = gateway_service(
            GATEWAY_BUDGET, "gateway-budget-data", "gateway-budget.log"
        )

        def budget_prepare() -> str:
            """Before the gateway starts: a team with a budget and a key of that team, in its database."""
            self.gateway_cli(bg_env, "teams", "create", BUDGET_TEAM, "--budget", BUDGET_USD, "--period", "monthly")
            created = json.loads(
                self.gateway_cli(bg_env, "keys", "create", "--team", BUDGET_TEAM, "--name", "bench", "--format", "json")
            )
            key = created["key"]
            if not key.startswith("gw-"):
                raise RuntimeError(f"unexpected key from 'gateway keys create': {key[:6]!r}...")
            print(
                f"[{GATEWAY_BUDGET}] team {BUDGET_TEAM!r} (budget ${BUDGET_USD} monthly), key {created['prefix']}...",
                flush=True,
            )
            return key

        def ledger_check(env: dict[str, str], team: str | None) -> Callable[[TargetInfo], None]:
            def check(info: TargetInfo) -> None:
                """After the gateway stopped: one ledger row per answered request; no budget hold left over."""
                extra = ["--team", team] if team else []
                spend = json.loads(self.gateway_cli(env, "spend", "--format", "json", *extra))["total"]
                note = f"ledger: {spend['requests']} requests for {info.answered} 2xx answers, ${spend['cost_usd']:.4f}"
                if spend["requests"] < info.answered:
                    info.checks.append(f"{note}: fewer ledger rows than answers")
                if team:
                    shown = json.loads(self.gateway_cli(env, "teams", "show", team, "--format", "json"))
                    note += f"; team spent ${shown['spent_usd']:.4f}, reserved ${shown['reserved_usd']:.4f}"
                    if shown["reserved_nanos"]:
                        info.checks.append(f"budget holds left over after the load: {shown['reserved_nanos']} nanos")
                    if shown["spent_nanos"] <= 0 and info.answered:
                        info.checks.append("the team's budget was not charged")
                info.notes.append(note)
                print(f"[{info.name}] {note}", flush=True)

            return check

        pt_port = free_port()
        passthrough = Service(
            PASSTHROUGH,
            pinned(
                [
                    py,
                    str(HERE / "passthrough.py"),
                    "--port",
                    str(pt_port),
                    "--upstream",
                    f"http://127.0.0.1:{up_port}/v1",
                ],
                self.proxy_core,
            ),
            self.env,
            self.logs / "passthrough.log",
        )
        pt_probe = lambda: http_get(f"http://127.0.0.1:{pt_port}/readyz")[0] == 200  # noqa: E731

        ll_port = free_port()
        ll_config = render_template(
            HERE / "litellm.yaml", self.work / "litellm.yaml", UPSTREAM_PORT=up_port, MASTER_KEY=MASTER_KEY
        )
        ll_env = dict(self.env)
        ll_env.update(LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_LOG="ERROR", LITELLM_MODE="PRODUCTION")
        for key in ("DATABASE_URL", "REDIS_HOST", "REDIS_URL", "LITELLM_MASTER_KEY"):
            ll_env.pop(key, None)
        litellm_bin = self.args.litellm_venv / "bin" / "litellm"
        litellm = Service(
            LITELLM,
            pinned(
                [
                    str(litellm_bin),
                    "--config",
                    str(ll_config),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(ll_port),
                    "--num_workers",
                    "1",
                ],
                self.proxy_core,
            ),
            ll_env,
            self.logs / "litellm.log",
        )

        def ll_probe() -> bool:
            status, raw = http_get(
                f"http://127.0.0.1:{ll_port}/v1/models", headers={"Authorization": f"Bearer {MASTER_KEY}"}
            )
            return status == 200 and b"bench-model" in raw

        meta = {
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "machine": f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}, Linux {platform.release()}",
            "pinning": (
                "model-gateway(+budget) / passthrough / litellm-proxy on core 0; wrk, upstream and this driver on "
                "core 1 (taskset)"
                if self.pin
                else "none (fewer than 2 cores, taskset missing, or --no-pin)"
            ),
            "model-gateway": gateway_version(self.args.gateway_src),
            "litellm": _version(
                [
                    str(self.args.litellm_venv / "bin" / "python"),
                    "-c",
                    "import importlib.metadata as m; print(m.version('litellm'))",
                ]
            ),
            "wrk": _version(["wrk", "-v"]).split(" [")[0],
            "python": platform.python_version(),
            "doors": ", ".join(self.doors) + f" ({' and '.join(DOOR_TARGETS)}; the other targets: chat)",
            "per cell": f"{self.duration} s (4MB: {self.cell_duration('4MB')} s), warm-up {self.warmup} s, "
            f"wrk -t1, timeout {self.args.wrk_timeout} s",
        }
        print("model-gateway benchmark\n" + "\n".join(f"  {k}: {v}" for k, v in meta.items()), flush=True)

        self.upstream = upstream
        interrupted = ""
        try:
            upstream.spawn()
            self.services.append(upstream)
            upstream.wait_ready(up_probe, timeout=30)
            self.run_target(UPSTREAM, upstream, up_port, up_probe, spawn=False)
            if GATEWAY in self.targets:
                self.run_target(GATEWAY, gateway, gw_port, gw_probe, ledger=ledger_check(gw_env, None))
            if PASSTHROUGH in self.targets:
                self.run_target(PASSTHROUGH, passthrough, pt_port, pt_probe)
            if GATEWAY_BUDGET in self.targets:
                self.run_target(
                    GATEWAY_BUDGET,
                    budget_gw,
                    bg_port,
                    bg_probe,
                    prepare=budget_prepare,
                    ledger=ledger_check(bg_env, BUDGET_TEAM),
                )
            if LITELLM in self.targets:
                if litellm_bin.exists():
                    self.run_target(LITELLM, litellm, ll_port, ll_probe)
                else:
                    self.infos[LITELLM] = TargetInfo(LITELLM, error=f"{litellm_bin} missing: run tests/bench/run.sh")
        except Interrupted as exc:
            interrupted = str(exc)
        finally:
            for svc in reversed(self.services):
                svc.stop()
        if interrupted:
            print(f"\ninterrupted ({interrupted}); all processes stopped; partial results follow", flush=True)
            meta["INTERRUPTED"] = f"{interrupted}: partial results"

        targets = [t for t in TARGETS if t in self.infos]
        cells_md = table(self.cells, targets, self.bodies, self.concs)
        sides_md = side_by_side(self.cells, self.bodies, self.concs)
        infos_md = target_table([self.infos[t] for t in targets])
        doors_md = doors_table(self.cells, self.bodies, self.concs, self.doors) if self.doors != ["chat"] else ""
        summary_md, verdicts = summary(self.cells, self.infos)
        elapsed = time.time() - started
        header = "\n".join(f"- {k}: {v}" for k, v in meta.items())
        doc = (
            f"# model-gateway benchmark\n\n{header}\n- run time: {elapsed:.0f} s\n\n"
            f"## Requests (req/s counts 2xx answers only; added p50 = target p50 - upstream direct p50, same cell)\n\n"
            f"{cells_md}\n## model-gateway (gw), passthrough (pt) and litellm-proxy (ll) side by side\n\n"
            f"The passthrough is Starlette + uvicorn + aiohttp forwarding the bytes (tests/bench/passthrough.py). "
            f"Ratios: gateway / LiteLLM req/s, gateway / passthrough CPU µs per request and added p50; in bold "
            f"where issue 13 sets a target. ⚠: a cell with non-2xx answers or errors.\n\n"
            f"{sides_md}\n{doors_md}## Processes\n\n{infos_md}\n## Targets\n\n{summary_md}"
        )
        print("\n" + doc, flush=True)
        (self.work / "results.md").write_text(doc)
        raw = {
            "meta": meta,
            "cells": [dataclasses.asdict(c) for c in self.cells],
            "targets": {k: dataclasses.asdict(v) for k, v in self.infos.items()},
            "verdicts": verdicts,
        }
        (self.work / "results.json").write_text(json.dumps(raw, indent=1))
        print(f"written: {self.work / 'results.md'}, {self.work / 'results.json'}; logs in {self.logs}", flush=True)
        return 130 if interrupted else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.gateway_src is not None and not (args.gateway_src / "gateway" / "__init__.py").is_file():
        print(f"--gateway-src {args.gateway_src}: no gateway/__init__.py there", file=sys.stderr)
        return 2
    if shutil.which("wrk") is None:
        print("wrk is not installed (tests/bench/run.sh installs it)", file=sys.stderr)
        return 2
    # SIGINT too: a shell that started us in the background may have set it to "ignore".
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    try:
        return Bench(args).run()
    except (KeyboardInterrupt, Interrupted) as exc:
        print(f"\ninterrupted ({exc or 'Ctrl-C'}); all processes stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
