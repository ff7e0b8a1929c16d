"""Profile model-gateway under the benchmark's load with py-spy, and print where its CPU goes, as text.

Started by `bash tests/bench/run.sh --profile [options]` (which installs py-spy into .bench/tools-venv);
run with the project's Python. It starts the upstream stub (upstream.py) and one gateway exactly as the
benchmark does (driver.make_gateway: `gateway serve`, master key, live, fresh SQLite ledger; the gateway on
core 0, everything else on core 1), then for each load (default: 2 KB non-streaming and 2 KB streaming at
c=32):

1. a warm-up, then the load without the profiler: req/s and the gateway's CPU µs per request (the figure
   the shares are multiplied by);
2. the load again with `py-spy record --rate R --function --nonblocking --format raw` attached to the
   gateway (py-spy on core 1):
   collapsed stacks in .bench/profile/<load>.collapsed, aggregated by tests/bench/stacks.py into
   .bench/profile/<load>.txt and printed (CPU by group, by our module, top frames by self and by
   cumulative time);
3. unless --no-svg, the load once more under `py-spy record --format flamegraph`: .bench/profile/<load>.svg.

--nonblocking (the default) reads the gateway's memory without pausing it: its CPU per request under the
profiler stays within a few % of the figure without, and idle threads are recognised as idle. In blocking
mode (--blocking, or --native, which needs it) py-spy stops the gateway for every sample, which on a busy
core 1 cut req/s by 8x here, and it took threads waiting for work (the store's thread pools) for busy ones.

py-spy attaches with ptrace (we run as root). If it cannot (ptrace blocked, e.g. by a container's seccomp
profile or kernel.yama.ptrace_scope), it says so and the gateway is run under cProfile instead (in-process:
it slows every Python call, so the shares lean towards code that makes many small calls); --cprofile
forces that.
"""

from __future__ import annotations

import argparse
import json
import os
import pstats
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from driver import MASTER_KEY, base_env, make_gateway, pinned, render_template  # noqa: E402
from load import BODY_SIZES, DOOR_PATHS, DOORS, MODE_BODIES, MODES, check_answer, run_wrk, write_bodies  # noqa: E402
from procs import Service, cpu_seconds, free_port, http_get  # noqa: E402
from stacks import read, report  # noqa: E402

ROOT = HERE.parent.parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="profile model-gateway under load (use tests/bench/run.sh --profile)")
    p.add_argument("--modes", default="json,stream", help=f"comma list of {', '.join(MODES)}")
    p.add_argument("--body", default="2KB", choices=tuple(BODY_SIZES))
    p.add_argument(
        "--door", default="chat", choices=DOORS, help="the front door the load goes to (the same request in its format)"
    )
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--duration", type=int, default=10, help="seconds of load per pass")
    p.add_argument("--rate", type=int, default=500, help="py-spy samples per second")
    p.add_argument("--top", type=int, default=30, help="frames in the self and cumulative tables")
    p.add_argument(
        "--native",
        action="store_true",
        help="py-spy --native: C frames (uvloop, httptools, orjson) too; implies --blocking",
    )
    p.add_argument(
        "--blocking",
        action="store_true",
        help="pause the gateway for each sample (default: py-spy --nonblocking, far less overhead)",
    )
    p.add_argument("--no-svg", action="store_true", help="skip the flamegraph pass")
    p.add_argument("--cprofile", action="store_true", help="use cProfile in-process instead of py-spy")
    p.add_argument("--no-pin", action="store_true")
    p.add_argument("--py-spy", type=Path, default=ROOT / ".bench" / "tools-venv" / "bin" / "py-spy")
    p.add_argument("--gateway-bin", type=Path, default=ROOT / ".venv" / "bin" / "gateway")
    p.add_argument("--gateway-src", type=Path, default=None, help="run the gateway from this source tree")
    p.add_argument("--work", type=Path, default=ROOT / ".bench")
    return p.parse_args(argv)


class Profiler:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work: Path = args.work.resolve()
        self.out = self.work / "profile"
        self.logs = self.work / "logs"
        self.env = base_env(self.work)
        self.pin = not args.no_pin and (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None
        self.proxy_core = "0" if self.pin else None
        self.load_core = "1" if self.pin else None
        self.modes = [m for m in MODES if m in {x.strip() for x in args.modes.split(",")}]
        unknown = {x.strip() for x in args.modes.split(",")} - set(MODES)
        if unknown:
            raise SystemExit(f"profile_gateway.py: unknown mode(s) {', '.join(sorted(unknown))}")
        for mode in self.modes:
            if args.body not in MODE_BODIES[mode]:
                raise SystemExit(f"profile_gateway.py: mode {mode} has no {args.body} body")
        self.services: list[Service] = []
        self.path = DOOR_PATHS[args.door]

    def run_load(self, gateway: Service, port: int, body: Path, seconds: int) -> tuple[float, float, int]:
        """(2xx req/s, the gateway's CPU µs per 2xx answer, 2xx answers) of one wrk run."""
        pids = gateway.pids()
        cpu0 = cpu_seconds(pids)
        result = run_wrk(port, body, self.args.concurrency, seconds, MASTER_KEY, self.load_core, path=self.path)
        cpu1 = cpu_seconds(pids)
        if result.error:
            raise RuntimeError(result.error)
        if result.non2xx or result.socket_error_count:
            print(f"  warning: {result.non2xx} non-2xx, socket errors {result.socket_errors}", flush=True)
        ok = result.requests - result.non2xx
        us = (cpu1 - cpu0) * 1e6 / ok if ok else float("nan")
        return ok / result.duration_s if result.duration_s else 0.0, us, ok

    def spy(self, gateway: Service, port: int, body: Path, fmt: str, output: Path) -> tuple[int, str]:
        """Run the load once with py-spy attached; py-spy's exit code and its output."""
        a = self.args
        argv = [str(a.py_spy), "record", "--pid", str(gateway.pid), "--rate", str(a.rate), "--function", "--threads"]
        argv += ["--duration", str(a.duration + 3), "--format", fmt, "--output", str(output)]
        if a.native:
            argv.append("--native")
        if not (a.blocking or a.native):
            argv.append("--nonblocking")
        spy = subprocess.Popen(
            pinned(argv, self.load_core), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            time.sleep(1.0)  # attached before the load starts; idle samples are left out anyway
            if spy.poll() is not None:
                return spy.returncode, spy.communicate()[0].decode(errors="replace")
            rps, us, n = self.run_load(gateway, port, body, a.duration)
            print(f"  under py-spy ({fmt}): {rps:,.0f} req/s, {us:.0f} µs CPU/req (profiler included)", flush=True)
            out, _ = spy.communicate(timeout=a.duration + 60)
            return spy.returncode, out.decode(errors="replace")
        finally:
            if spy.poll() is None:
                spy.kill()
                spy.wait(5)

    def thread_names(self, gateway: Service) -> dict[str, str]:
        """{thread id: Python thread name} of the gateway, from one `py-spy dump` (the OS names say "gateway")."""
        try:
            out = subprocess.run(
                [str(self.args.py_spy), "dump", "--pid", str(gateway.pid)], capture_output=True, text=True, timeout=60
            ).stdout
        except (OSError, subprocess.SubprocessError):
            return {}
        return dict(re.findall(r'^Thread (\w+) \([^)]*\): "([^"]*)"', out, re.M))

    def start(self, name: str, log: str, wrap: list[str] | None = None) -> tuple[Service, int]:
        svc, port, probe, _ = make_gateway(
            name,
            self.env,
            self.work / "profile-data",
            self.args.gateway_bin,
            self.args.gateway_src,
            self.config,
            self.logs / log,
            self.proxy_core,
        )
        if wrap:  # run `gateway` under a Python-level wrapper (cProfile): python -m cProfile -o F <gateway> ...
            core_args = svc.argv[:3] if svc.argv[0] == "taskset" else []
            rest = svc.argv[len(core_args) :]
            svc.argv = [*core_args, *wrap, *rest]
        svc.spawn()
        self.services.append(svc)
        svc.wait_ready(probe)
        return svc, port

    def run(self) -> int:
        a = self.args
        self.out.mkdir(parents=True, exist_ok=True)
        if self.pin:
            os.sched_setaffinity(0, {1})
        bodies = write_bodies(self.work / "bodies", a.door)
        up_port = free_port()
        upstream = Service(
            "upstream",
            pinned([sys.executable, str(HERE / "upstream.py"), "--port", str(up_port)], self.load_core),
            self.env,
            self.logs / "profile-upstream.log",
        )
        self.config = render_template(HERE / "gateway.yaml", self.work / "gateway.yaml", UPSTREAM_PORT=up_port)
        use_cprofile = a.cprofile
        if not use_cprofile and not a.py_spy.exists():
            print(f"{a.py_spy} is missing (tests/bench/run.sh --profile installs it)", file=sys.stderr)
            return 2
        try:
            upstream.spawn()
            self.services.append(upstream)
            upstream.wait_ready(lambda: http_get(f"http://127.0.0.1:{up_port}/v1/models")[0] == 200, timeout=30)
            for mode in self.modes:
                label = f"{mode}-{a.body}-c{a.concurrency}" + ("" if a.door == "chat" else f"-{a.door}")
                body = bodies[(mode, a.body)]
                print(f"\n== {label} ==", flush=True)
                if use_cprofile:
                    self.cprofile_pass(label, mode, body)
                    continue
                gateway, port = self.start("model-gateway", "profile-gateway.log")
                try:
                    problem = check_answer(port, body.read_bytes(), mode, MASTER_KEY, door=self.args.door)
                    if problem:
                        raise RuntimeError(f"the gateway answers wrongly: {problem}")
                    run_wrk(port, body, a.concurrency, 2, MASTER_KEY, self.load_core, path=self.path)  # warm-up
                    rps, us, n = self.run_load(gateway, port, body, a.duration)
                    print(f"  without profiler: {rps:,.0f} req/s, {us:.0f} µs CPU/req ({n} requests)", flush=True)
                    collapsed = self.out / f"{label}.collapsed"
                    code, said = self.spy(gateway, port, body, "raw", collapsed)
                    if code != 0 or not collapsed.exists():
                        print(f"py-spy could not profile the gateway (exit {code}):\n{said.strip()[-800:]}", flush=True)
                        if any(w in said for w in ("ermission", "not permitted", "ptrace")):
                            print("ptrace looks blocked here: falling back to cProfile in-process", flush=True)
                        else:
                            print("falling back to cProfile in-process", flush=True)
                        use_cprofile = True
                        gateway.stop()
                        self.cprofile_pass(label, mode, body)
                        continue
                    names = self.thread_names(gateway)
                    (self.out / f"{label}.threads.json").write_text(json.dumps(names, indent=1))
                    text = report(read([collapsed]), a.top, us, names)
                    head = (
                        f"# Profile: model-gateway, {label}, py-spy --rate {a.rate} --function"
                        f"{' --native' if a.native else ''}{'' if a.blocking or a.native else ' --nonblocking'}\n\n"
                        f"Without the profiler: {rps:,.0f} req/s, {us:.0f} µs CPU per request (µs/req below = share"
                        f" x this).\n\n"
                    )
                    (self.out / f"{label}.txt").write_text(head + text)
                    print(head + text, flush=True)
                    if not a.no_svg:
                        svg = self.out / f"{label}.svg"
                        code, said = self.spy(gateway, port, body, "flamegraph", svg)
                        print(f"  flamegraph: {svg}" if code == 0 else f"  flamegraph failed: {said[-300:]}")
                finally:
                    gateway.stop()
        finally:
            for svc in reversed(self.services):
                svc.stop()
        print(f"\nwritten: {self.out}/ (*.collapsed: py-spy raw stacks; *.txt: the tables above; *.svg)")
        return 0

    def cprofile_pass(self, label: str, mode: str, body: Path) -> None:
        """The gateway under cProfile for one load; stats are written when it exits (SIGTERM: graceful)."""
        a = self.args
        stats = self.out / f"{label}.pstats"
        stats.unlink(missing_ok=True)
        wrap = [sys.executable, "-m", "cProfile", "-o", str(stats)]
        gateway, port = self.start("model-gateway", "profile-gateway.log", wrap=wrap)
        try:
            problem = check_answer(port, body.read_bytes(), mode, MASTER_KEY, door=self.args.door)
            if problem:
                raise RuntimeError(f"the gateway answers wrongly: {problem}")
            rps, us, n = self.run_load(gateway, port, body, a.duration)
            print(f"  under cProfile: {rps:,.0f} req/s, {us:.0f} µs CPU/req (profiler included)", flush=True)
        finally:
            gateway.stop()
        if not stats.exists():
            print(f"  no cProfile stats were written ({stats})", flush=True)
            return
        for key in ("tottime", "cumulative"):
            print(f"\n-- top {a.top} by {key} --", flush=True)
            pstats.Stats(str(stats)).sort_stats(key).print_stats(a.top)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.gateway_src is not None and not (args.gateway_src / "gateway" / "__init__.py").is_file():
        print(f"--gateway-src {args.gateway_src}: no gateway/__init__.py there", file=sys.stderr)
        return 2
    if shutil.which("wrk") is None:
        print("wrk is not installed (tests/bench/run.sh installs it)", file=sys.stderr)
        return 2
    profiler = Profiler(args)

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, stop)
    try:
        return profiler.run()
    except KeyboardInterrupt:
        for svc in reversed(profiler.services):
            svc.stop()
        print("\ninterrupted; all processes stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
