"""The results table (Markdown) and the PASS/FAIL summary against the issue's targets."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from load import WrkResult

UPSTREAM = "upstream direct"
GATEWAY = "model-gateway"
LITELLM = "litellm-proxy"
RATIO_TARGET = 20.0
ADDED_P50_TARGET_MS = 0.5


@dataclass
class Cell:
    target: str
    stream: bool
    body: str
    conc: int
    result: WrkResult | None = None
    cpu_us_per_req: float | None = None
    skipped: str | None = None


@dataclass
class TargetInfo:
    name: str
    ready_s: float | None = None
    idle_rss_mb: float | None = None
    peak_rss_mb: float | None = None
    hwm_rss_mb: float | None = None
    processes: int = 0
    log_errors: int = 0
    checks: list[str] = field(default_factory=list)  # problems found by the correctness checks
    error: str | None = None


def _f(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _rps(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def find(cells: list[Cell], target: str, stream: bool, body: str, conc: int) -> Cell | None:
    for c in cells:
        if (c.target, c.stream, c.body, c.conc) == (target, stream, body, conc):
            return c
    return None


def ok_rps(cell: Cell | None) -> float | None:
    """Successful (2xx) requests per second; None if the cell did not run."""
    if cell is None or cell.result is None or cell.result.error:
        return None
    r = cell.result
    return (r.requests - r.non2xx) / r.duration_s if r.duration_s else 0.0


def added_p50(cells: list[Cell], cell: Cell) -> float | None:
    base = find(cells, UPSTREAM, cell.stream, cell.body, cell.conc)
    if cell.target == UPSTREAM or base is None or base.result is None or cell.result is None:
        return None
    if base.result.p50_ms is None or cell.result.p50_ms is None:
        return None
    return cell.result.p50_ms - base.result.p50_ms


def table(cells: list[Cell], targets: list[str], bodies: list[str], concs: list[int]) -> str:
    head = (
        "| mode | body | conc | target | req/s | p50 ms | p99 ms | added p50 ms | CPU µs/req | non-2xx | socket errors | requests |\n"
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    rows = []
    for stream in (False, True):
        for body in bodies:
            for conc in concs:
                for target in targets:
                    cell = find(cells, target, stream, body, conc)
                    if cell is None:
                        continue
                    mode = "stream" if stream else "json"
                    lead = f"| {mode} | {body} | {conc} | {target} |"
                    if cell.skipped:
                        rows.append(f"{lead} skipped: {cell.skipped} | | | | | | | |")
                        continue
                    r = cell.result
                    if r is None or r.error:
                        rows.append(f"{lead} error: {(r.error if r else 'not run')[:80]} | | | | | | | |")
                        continue
                    flag = " ⚠" if r.non2xx or r.socket_error_count else ""
                    errs = ", ".join(f"{k} {v}" for k, v in r.socket_errors.items()) or "0"
                    extra = added_p50(cells, cell)
                    rows.append(
                        f"{lead} {_rps(ok_rps(cell))}{flag} | {_f(r.p50_ms)} | {_f(r.p99_ms)} | "
                        f"{'-' if extra is None else f'{extra:+.2f}'} | {_f(cell.cpu_us_per_req, 0)} | "
                        f"{r.non2xx} | {errs} | {r.requests} |"
                    )
    return head + "\n".join(rows) + "\n"


def target_table(infos: list[TargetInfo]) -> str:
    out = (
        "| target | time to ready s | idle RSS MB | peak RSS MB (sampled) | peak RSS MB (VmHWM) | processes | errors in log | correctness checks |\n"
        "|---|---:|---:|---:|---:|---:|---:|---|\n"
    )
    for t in infos:
        checks = "FAILED: " + "; ".join(t.checks)[:300] if t.checks else "all passed"
        if t.error:
            checks = f"ERROR: {t.error[:300]}"
        out += (
            f"| {t.name} | {_f(t.ready_s)} | {_f(t.idle_rss_mb, 0)} | {_f(t.peak_rss_mb, 0)} | "
            f"{_f(t.hwm_rss_mb, 0)} | {t.processes} | {t.log_errors} | {checks} |\n"
        )
    return out


def summary(cells: list[Cell], infos: dict[str, TargetInfo]) -> tuple[str, dict[str, Any]]:
    lines = []
    verdicts: dict[str, Any] = {}

    def clean(cell: Cell | None) -> bool:
        return bool(cell and cell.result and not cell.result.error and not cell.result.non2xx)

    for stream in (False, True):
        mode = "streaming" if stream else "non-streaming"
        gw = find(cells, GATEWAY, stream, "2KB", 32)
        ll = find(cells, LITELLM, stream, "2KB", 32)
        g, l = ok_rps(gw), ok_rps(ll)
        key = f"ratio_{'stream' if stream else 'json'}_2KB_c32"
        if g is None or l is None or not l:
            lines.append(f"- {mode} 2 KB c=32 req/s, model-gateway / litellm-proxy: n/a (a cell is missing) -> FAIL")
            verdicts[key] = {"value": None, "pass": False}
            continue
        ratio = g / l
        ok = ratio >= RATIO_TARGET and clean(gw) and clean(ll)
        note = "" if clean(gw) and clean(ll) else " (non-2xx or errors seen: not a valid pass)"
        lines.append(
            f"- {mode} 2 KB c=32 req/s, model-gateway / litellm-proxy: {_rps(g)} / {_rps(l)} = "
            f"{ratio:.1f}x (target >= {RATIO_TARGET:.0f}x){note} -> {'PASS' if ok else 'FAIL'}"
        )
        verdicts[key] = {"value": round(ratio, 2), "pass": ok}
    for stream in (False, True):
        mode = "streaming" if stream else "non-streaming"
        gw = find(cells, GATEWAY, stream, "2KB", 1)
        extra = added_p50(cells, gw) if gw else None
        key = f"added_p50_{'stream' if stream else 'json'}_2KB_c1"
        if extra is None:
            lines.append(f"- model-gateway added p50, {mode} 2 KB c=1: n/a -> FAIL")
            verdicts[key] = {"value": None, "pass": False}
            continue
        ok = extra < ADDED_P50_TARGET_MS and clean(gw)
        lines.append(
            f"- model-gateway added p50, {mode} 2 KB c=1: {extra:.3f} ms (target < {ADDED_P50_TARGET_MS} ms)"
            f" -> {'PASS' if ok else 'FAIL'}"
        )
        verdicts[key] = {"value": round(extra, 4), "pass": ok}
    gw_info = infos.get(GATEWAY)
    if gw_info and gw_info.checks:
        lines.append("- model-gateway correctness checks FAILED: " + "; ".join(gw_info.checks)[:300])
    return "\n".join(lines) + "\n", verdicts
