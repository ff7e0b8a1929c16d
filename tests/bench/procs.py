"""Processes under test: spawn in their own process group, wait until ready,
sample memory and CPU of the whole process tree from /proc, stop for sure."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/children") as f:
                    out.extend(int(x) for x in f.read().split())
            except OSError:
                pass
    except OSError:
        pass
    return out


def tree(pid: int) -> list[int]:
    """`pid` and all its descendants (bounded walk)."""
    seen, todo = [], [pid]
    while todo and len(seen) < 1000:
        p = todo.pop()
        if p in seen:
            continue
        seen.append(p)
        todo.extend(_children(p))
    return seen


def _status(pid: int, keys: tuple[str, ...]) -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                name, _, value = line.partition(":")
                if name in keys:
                    out[name] = int(value.split()[0])
    except (OSError, ValueError, IndexError):
        pass
    return out


def rss_kb(pids: Sequence[int]) -> int:
    return sum(_status(p, ("VmRSS",)).get("VmRSS", 0) for p in pids)


def hwm_kb(pids: Sequence[int]) -> int:
    """Sum of each process's kernel-recorded peak RSS (VmHWM)."""
    return sum(_status(p, ("VmHWM",)).get("VmHWM", 0) for p in pids)


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU time of the processes (children that already exited are not counted)."""
    ticks = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, IndexError, ValueError):
            pass
    return ticks / CLK_TCK


class RssSampler:
    """Samples the summed RSS of a process tree on a background thread."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid = pid
        self.interval = interval
        self.peak_kb = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"rss:{pid}", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def sample(self) -> int:
        kb = rss_kb(tree(self.pid))
        self.peak_kb = max(self.peak_kb, kb)
        self.samples += 1
        return kb

    def start(self) -> RssSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sample()


def http_get(url: str, headers: dict[str, str] | None = None, timeout: float = 2.0) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@dataclass
class Service:
    """A process under test, started in its own session (process group)."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    popen: subprocess.Popen | None = None
    spawned_at: float = 0.0
    ready_s: float | None = None
    idle_rss_kb: int = 0
    sampler: RssSampler | None = None
    notes: list[str] = field(default_factory=list)

    def spawn(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "wb") as out:  # the child has its own copy of the descriptor
            self.spawned_at = time.perf_counter()
            self.popen = subprocess.Popen(
                self.argv,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_ready(self, probe: Callable[[], bool], timeout: float = 120.0) -> float:
        """Poll `probe` every 10 ms until it is true; return seconds since spawn."""
        assert self.popen is not None
        deadline = self.spawned_at + timeout
        while time.perf_counter() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.popen.returncode} before it was ready; see {self.log}"
                )
            try:
                if probe():
                    self.ready_s = time.perf_counter() - self.spawned_at
                    return self.ready_s
            except (OSError, urllib.error.URLError, ValueError):
                pass
            time.sleep(0.01)
        raise RuntimeError(f"{self.name} was not ready within {timeout:.0f} s; see {self.log}")

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def pids(self) -> list[int]:
        return tree(self.pid)

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self, grace: float = 10.0) -> None:
        if self.sampler is not None:
            self.sampler.stop()
        if self.popen is None:
            return
        if self.popen.poll() is None:
            _signal_group(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        # Whatever is left of the group (workers, helpers) goes too.
        _signal_group(self.popen.pid, signal.SIGKILL)
        try:
            self.popen.wait(5)
        except subprocess.TimeoutExpired:
            pass


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
