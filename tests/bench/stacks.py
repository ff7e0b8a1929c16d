"""Read py-spy's raw (collapsed) stacks as text: top frames by self and by cumulative time, CPU by group.

    .venv/bin/python tests/bench/stacks.py .bench/profile/json-2KB-c32.collapsed [--top 30] [--us-per-req 700]
        [--threads .bench/profile/json-2KB-c32.threads.json]

A collapsed file has one line per distinct stack, `root;...;leaf COUNT`, each frame `function (file:line)`
(py-spy record --format raw; with --function the line is the function's first). A frame's **self** share is
the samples where it is the leaf; its **cumulative** share the samples where it is anywhere on the stack
(counted once per stack, recursion included). Without --native, time in a C extension (orjson, httptools,
uvloop's C parts) is the self time of the Python frame that called it; with --native the C frames show.

**Groups** put each sample's leaf frame in one bucket by its file (GROUPS, first match wins), so the
buckets add up to 100%; **our module** puts each sample under the innermost frame in the gateway's own
package (`gateway/...`, not the launcher in gateway/cli/), which is the module whose work it is, library
calls included. With `py-spy record --threads` each stack starts with `thread (TID)`: it is taken off and
counted per thread (named from a JSON file {tid: name}, e.g. from `py-spy dump`).

Samples whose leaf is a thread waiting for work (IDLE_LEAVES: a thread pool's worker in its queue's get,
a thread joining or waiting on a condition) are left out and counted apart: py-spy does not always see
such a thread as idle.

With --us-per-req (the CPU per request measured without the profiler), each share is also shown in µs
per request.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
_THREAD = re.compile(r"^thread \((?P<tid>\w+)\)(?:: (?P<name>.*))?$")  # py-spy --threads, with a name if known
Stack = tuple[list[str], int, str]  # frames (root first), samples, "tid:name" ("" if not recorded)

# (group, file prefixes or fragments): a sample's leaf frame file is matched in this order.
GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("uvicorn/httptools (HTTP server)", ("uvicorn/", "httptools", "gateway/http/servers.py", "h11/")),
    ("starlette routing/middleware/responses (+anyio)", ("starlette/", "anyio/", "sniffio/")),
    ("our auth", ("gateway/auth/",)),
    ("parsing/orjson/json", ("orjson", "json/", "gateway/http/body.py", "gateway/pipeline/validation.py")),
    ("routing/decision/policy", ("gateway/routing/", "gateway/policy/", "gateway/pipeline/", "gateway/catalog.py")),
    (
        "budget/accounting/store",
        ("gateway/budget/", "gateway/store/", "gateway/pricing.py", "gateway/money.py", "sqlite3", "sqlalchemy/"),
    ),
    ("metrics/prometheus", ("prometheus_client/", "gateway/metrics/", "gateway/http/metrics.py")),
    ("record/logging", ("gateway/http/record.py", "logging/")),
    ("tokens (counting)", ("gateway/tokens/",)),
    ("providers (adapter: body rebuild, reply fix, SSE relay)", ("gateway/providers/",)),
    ("gateway HTTP layer (handlers, responses)", ("gateway/http/",)),
    ("other gateway code", ("gateway/",)),
    ("aiohttp client (+yarl, multidict)", ("aiohttp/", "yarl/", "multidict/", "propcache/", "aiohappyeyeballs/")),
    ("asyncio/uvloop (event loop)", ("asyncio/", "uvloop", "selectors.py", "libuv", "contextvars")),
    (
        "thread hand-off (concurrent.futures, threading: the store's threads)",
        ("concurrent/futures/", "threading.py", "_weakrefset.py", "queue.py"),
    ),
    ("dataclass __init__ and other generated code", ("<string>",)),
    ("pydantic", ("pydantic",)),
    ("C library/kernel (native frames)", ("libc.so", "libpthread", "ld-linux", "[kernel]")),
    ("python interpreter (native frames)", ("libpython", "python3")),
)


# (function, file) of leaf frames that wait rather than work.
IDLE_LEAVES = frozenset(
    {
        ("_worker", "concurrent/futures/thread.py"),
        ("Condition.wait", "threading.py"),
        ("Thread._wait_for_tstate_lock", "threading.py"),
        ("Event.wait", "threading.py"),
    }
)


def parse_frame(frame: str) -> tuple[str, str]:
    """(function, file) of one collapsed frame; a frame without a file is its own function."""
    m = _FRAME.match(frame)
    if not m:
        return frame, ""
    return m.group("func"), m.group("file")


def is_idle(stack: list[str]) -> bool:
    return parse_frame(stack[-1]) in IDLE_LEAVES


def read(paths: Iterable[Path]) -> list[Stack]:
    """Every stack of the collapsed files, with its sample count and thread (idle ones included)."""
    stacks: list[Stack] = []
    for path in paths:
        for line in path.read_text(errors="replace").splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack or not count.isdigit():
                continue
            frames = stack.split(";")
            m = _THREAD.match(frames[0])
            tid = ""
            if m:
                tid = f"{m.group('tid')}:{m.group('name') or ''}"
                frames = frames[1:]
            if frames:
                stacks.append((frames, int(count), tid))
    return stacks


def group_of(frame: str) -> str:
    _, file = parse_frame(frame)
    where = file or frame
    for name, patterns in GROUPS:
        if any(p in where for p in patterns):
            return name
    return "other"


def _ours(stack: list[str]) -> str:
    for frame in reversed(stack):
        _, file = parse_frame(frame)
        if file.startswith("gateway/") and not file.startswith("gateway/cli/"):
            return file
    return "(no gateway frame: server, event loop, libraries)"


def aggregate(stacks: list[Stack], names: dict[str, str] | None = None) -> dict[str, Counter[str]]:
    own, cumulative, groups, ours, threads = Counter(), Counter(), Counter(), Counter(), Counter()
    for stack, n, tid in stacks:
        own[stack[-1]] += n
        for frame in set(stack):
            cumulative[frame] += n
        groups[group_of(stack[-1])] += n
        ours[_ours(stack)] += n
        if tid:
            number, _, name = tid.partition(":")
            threads[f"{name or (names or {}).get(number, '?')} ({number})"] += n
    return {"self": own, "cumulative": cumulative, "groups": groups, "ours": ours, "threads": threads}


def _table(title: str, counts: Counter[str], total: int, top: int | None, us_per_req: float | None) -> str:
    us_head = " | µs/req" if us_per_req else ""
    out = [
        f"### {title}\n",
        f"| % | samples{us_head} | frame |",
        "|---:|---:|" + ("---:|" if us_per_req else "") + "---|",
    ]
    for frame, n in counts.most_common(top):
        share = n / total
        us = f" | {share * us_per_req:.0f}" if us_per_req else ""
        out.append(f"| {share * 100:.1f} | {n}{us} | `{frame}` |")
    return "\n".join(out) + "\n"


def report(
    stacks: list[Stack], top: int = 30, us_per_req: float | None = None, names: dict[str, str] | None = None
) -> str:
    idle = sum(n for stack, n, _ in stacks if is_idle(stack))
    stacks = [s for s in stacks if not is_idle(s[0])]
    total = sum(n for _, n, _ in stacks)
    if not total:
        return "no samples (was the process busy? py-spy leaves idle samples out)\n"
    agg = aggregate(stacks, names)
    parts = [f"{total} samples ({idle} more of threads waiting for work left out)\n"]
    if agg["threads"]:
        parts.append(_table("CPU by thread", agg["threads"], total, None, us_per_req))
    parts += [
        _table("CPU by group (leaf frame's file)", agg["groups"], total, None, us_per_req),
        _table(
            "CPU by our module (innermost gateway/ frame, library calls included)", agg["ours"], total, 25, us_per_req
        ),
        _table(f"Top {top} frames by self time", agg["self"], total, top, us_per_req),
        _table(f"Top {top} frames by cumulative time", agg["cumulative"], total, top, us_per_req),
    ]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="aggregate py-spy raw (collapsed) stacks")
    p.add_argument("files", nargs="+", type=Path)
    p.add_argument("--top", type=int, default=30)
    p.add_argument("--us-per-req", type=float, default=None, help="CPU µs per request: shares in µs too")
    p.add_argument("--threads", type=Path, default=None, help="JSON {thread id: name} for the thread table")
    args = p.parse_args(argv)
    names = json.loads(args.threads.read_text()) if args.threads else None
    print(report(read(args.files), args.top, args.us_per_req, names))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
