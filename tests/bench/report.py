"""The results tables (Markdown) and the PASS/FAIL summary against the issues' targets."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from load import DOORS, MODES, WrkResult

UPSTREAM = "upstream direct"
GATEWAY = "model-gateway"
GATEWAY_BUDGET = "model-gateway+budget"  # the same gateway, requests with a team key that has a budget
LITELLM = "litellm-proxy"
# A bare Starlette + uvicorn + aiohttp forwarder (passthrough.py): the floor the gateway's own cost is measured against.
PASSTHROUGH = "passthrough"
# In run and table order; the passthrough runs right after the gateway, so that the two are measured close in time.
TARGETS = (UPSTREAM, GATEWAY, PASSTHROUGH, GATEWAY_BUDGET, LITELLM)
# Earlier targets: req/s against LiteLLM at c=32, and an absolute added p50 at c=1.
RATIO_TARGET = 20.0
ADDED_P50_TARGET_MS = 0.5
# Issue 13, item 5 (2 KB bodies): CPU per request against the passthrough's at c=32 (non-streaming), req/s
# against LiteLLM's at c=32 (non-streaming and streaming), added p50 at c=1 against the passthrough's.
CPU_VS_PASSTHROUGH_MAX = 2.0
RPS_VS_LITELLM_MIN = {"json": 30.0, "stream": 50.0}
ADDED_P50_VS_PASSTHROUGH_MAX = 1.5


@dataclass
class Cell:
    target: str
    mode: str  # json, stream or stream100 (see load.MODES)
    body: str
    conc: int
    result: WrkResult | None = None
    cpu_us_per_req: float | None = None
    skipped: str | None = None
    door: str = "chat"  # the front door the requests went to (see load.DOORS)


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
    notes: list[str] = field(default_factory=list)  # e.g. what the ledger holds after the run
    answered: int = 0  # 2xx answers, warm-ups and checks included
    error: str | None = None


def _f(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _rps(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def find(cells: list[Cell], target: str, mode: str, body: str, conc: int, door: str = "chat") -> Cell | None:
    for c in cells:
        if (c.target, c.mode, c.body, c.conc, c.door) == (target, mode, body, conc, door):
            return c
    return None


def ok_rps(cell: Cell | None) -> float | None:
    """Successful (2xx) requests per second; None if the cell did not run."""
    if cell is None or cell.result is None or cell.result.error:
        return None
    r = cell.result
    return (r.requests - r.non2xx) / r.duration_s if r.duration_s else 0.0


def added_p50(cells: list[Cell], cell: Cell) -> float | None:
    base = find(cells, UPSTREAM, cell.mode, cell.body, cell.conc)
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
    for mode in MODES:
        for body in bodies:
            for conc in concs:
                for target, door in ((t, d) for t in targets for d in DOORS):
                    cell = find(cells, target, mode, body, conc, door)
                    if cell is None:
                        continue
                    lead = f"| {mode} | {body} | {conc} | {target}{'' if door == 'chat' else f' /{door}'} |"
                    if cell.skipped:
                        rows.append(f"{lead} skipped: {cell.skipped} | | | | | | | |")
                        continue
                    r = cell.result
                    if r is None or r.error:
                        rows.append(f"{lead} error: {(r.error if r else 'not run')[:80]} | | | | | | | |")
                        continue
                    flag = " ⚠" if r.non2xx or r.socket_error_count or not r.requests else ""
                    errs = ", ".join(f"{k} {v}" for k, v in r.socket_errors.items()) or "0"
                    extra = added_p50(cells, cell)
                    rows.append(
                        f"{lead} {_rps(ok_rps(cell))}{flag} | {_f(r.p50_ms)} | {_f(r.p99_ms)} | "
                        f"{'-' if extra is None else f'{extra:+.2f}'} | {_f(cell.cpu_us_per_req, 0)} | "
                        f"{r.non2xx} | {errs} | {r.requests} |"
                    )
    return head + "\n".join(rows) + "\n"


def clean(cell: Cell | None) -> bool:
    """The cell ran and every answer was a 2xx (a target that fails fast must not pass)."""
    return bool(cell and cell.result and not cell.result.error and not cell.result.non2xx)


@dataclass(frozen=True)
class Goal:
    """One of issue 13's ratios with its target: `kind` is "cpu" (CPU µs/req, model-gateway / passthrough),
    "rps" (2xx req/s, model-gateway / litellm-proxy) or "added" (added p50, model-gateway / passthrough)."""

    key: str
    kind: str
    mode: str
    body: str
    conc: int
    op: str  # "<=" or ">="
    limit: float

    def met(self, value: float) -> bool:
        return value <= self.limit if self.op == "<=" else value >= self.limit

    @property
    def text(self) -> str:
        return f"{'≤' if self.op == '<=' else '≥'} {self.limit:g}x"


GOALS = (
    Goal("cpu_vs_passthrough_json_2KB_c32", "cpu", "json", "2KB", 32, "<=", CPU_VS_PASSTHROUGH_MAX),
    Goal("rps_vs_litellm_json_2KB_c32", "rps", "json", "2KB", 32, ">=", RPS_VS_LITELLM_MIN["json"]),
    Goal("rps_vs_litellm_stream_2KB_c32", "rps", "stream", "2KB", 32, ">=", RPS_VS_LITELLM_MIN["stream"]),
    Goal("added_p50_vs_passthrough_json_2KB_c1", "added", "json", "2KB", 1, "<=", ADDED_P50_VS_PASSTHROUGH_MAX),
)
RATIO_OF = {  # kind -> (what is divided, the target model-gateway's figure is divided by)
    "cpu": ("CPU µs/req", PASSTHROUGH),
    "rps": ("req/s", LITELLM),
    "added": ("added p50", PASSTHROUGH),
}


def figure(cells: list[Cell], kind: str, cell: Cell | None) -> float | None:
    """A cell's req/s, CPU µs/req or added p50 (ms)."""
    if cell is None or cell.result is None or cell.result.error:
        return None
    if kind == "rps":
        return ok_rps(cell)
    if kind == "cpu":
        return cell.cpu_us_per_req
    return added_p50(cells, cell)


def ratio(cells: list[Cell], kind: str, mode: str, body: str, conc: int) -> tuple[float | None, bool]:
    """model-gateway's figure over the other target's (see RATIO_OF), and whether both cells are clean.

    None when a cell is missing or the divisor is not positive (an added p50 within noise of zero)."""
    other = RATIO_OF[kind][1]
    gw, ot = find(cells, GATEWAY, mode, body, conc), find(cells, other, mode, body, conc)
    a, b = figure(cells, kind, gw), figure(cells, kind, ot)
    if a is None or b is None or b <= 0:
        return None, False
    return a / b, clean(gw) and clean(ot)


SIDE_BY_SIDE = (GATEWAY, PASSTHROUGH, LITELLM)


def _figures(cells: list[Cell], kind: str, row: dict[str, Cell | None], fmt: Callable[[float], str]) -> str:
    """One figure for each of SIDE_BY_SIDE, "a / b / c" (⚠ after a cell with non-2xx answers or errors)."""
    out = []
    for target in SIDE_BY_SIDE:
        value = figure(cells, kind, row[target])
        out.append("-" if value is None else fmt(value) + ("" if clean(row[target]) else "⚠"))
    return " / ".join(out)


def _quotient(cells: list[Cell], kind: str, mode: str, body: str, conc: int) -> str:
    """model-gateway's figure over the other's; where issue 13 sets a target for it: the target and the verdict."""
    value, ok = ratio(cells, kind, mode, body, conc)
    goal = next((g for g in GOALS if (g.kind, g.mode, g.body, g.conc) == (kind, mode, body, conc)), None)
    if value is None:
        return "n/a" + (f" (target {goal.text}: not met)" if goal else "")
    text = f"{value:.2f}x" + ("" if ok else " ⚠")
    if goal:
        verdict = "met" if goal.met(value) and ok else "**not met**"
        text = f"**{text}** (target {goal.text}: {verdict})"
    return text


def side_by_side(cells: list[Cell], bodies: list[str], concs: list[int]) -> str:
    """Per load: model-gateway, passthrough and litellm-proxy side by side, and issue 13's ratios (the rows a
    target applies to say the target and whether it is met)."""
    short = "gw / pt / ll"
    head = (
        f"| mode | body | conc | req/s {short} | gw ÷ ll req/s | CPU µs/req {short} | gw ÷ pt CPU | "
        f"added p50 ms {short} | gw ÷ pt added p50 |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    rows = []
    for mode in MODES:
        for body in bodies:
            for conc in concs:
                row = {t: find(cells, t, mode, body, conc) for t in SIDE_BY_SIDE}
                if all(c is None for c in row.values()):
                    continue
                rows.append(
                    f"| {mode} | {body} | {conc} | {_figures(cells, 'rps', row, _rps)} | "
                    f"{_quotient(cells, 'rps', mode, body, conc)} | "
                    f"{_figures(cells, 'cpu', row, lambda v: f'{v:.0f}')} | {_quotient(cells, 'cpu', mode, body, conc)} | "
                    f"{_figures(cells, 'added', row, lambda v: f'{v:+.2f}')} | "
                    f"{_quotient(cells, 'added', mode, body, conc)} |"
                )
    return head + "\n".join(rows) + "\n"


def issue13_summary(cells: list[Cell]) -> tuple[list[str], dict[str, Any]]:
    """Issue 13's four targets, PASS/FAIL: ratios of figures measured in this run."""
    lines, verdicts = [], {}
    names = {"json": "non-streaming", "stream": "streaming"}
    for goal in GOALS:
        what, other = RATIO_OF[goal.kind]
        gw = figure(cells, goal.kind, find(cells, GATEWAY, goal.mode, goal.body, goal.conc))
        ot = figure(cells, goal.kind, find(cells, other, goal.mode, goal.body, goal.conc))
        value, ok_cells = ratio(cells, goal.kind, goal.mode, goal.body, goal.conc)
        label = f"{what}, {GATEWAY} / {other}, {names[goal.mode]} {goal.body[:-2]} KB c={goal.conc}"
        if value is None:
            lines.append(f"- {label}: n/a (a cell is missing, or the divisor is not positive) -> FAIL")
            verdicts[goal.key] = {"value": None, "target": goal.text, "pass": False}
            continue
        ok = goal.met(value) and ok_cells
        unit = {"cpu": " µs", "rps": "", "added": " ms"}[goal.kind]
        fmt = {"cpu": "{:.0f}".format, "rps": _rps, "added": "{:.3f}".format}[goal.kind]
        note = "" if ok_cells else " (non-2xx or errors seen: not a valid pass)"
        lines.append(
            f"- {label}: {fmt(gw)}{unit} / {fmt(ot)}{unit} = {value:.2f}x "
            f"(target {goal.text}){note} -> {'PASS' if ok else 'FAIL'}"
        )
        verdicts[goal.key] = {"value": round(value, 3), "target": goal.text, "pass": ok}
    return lines, verdicts


def target_table(infos: list[TargetInfo]) -> str:
    out = (
        "| target | time to ready s | idle RSS MB | peak RSS MB (sampled) | peak RSS MB (VmHWM) | processes | errors in log | correctness checks |\n"
        "|---|---:|---:|---:|---:|---:|---:|---|\n"
    )
    for t in infos:
        checks = "FAILED: " + "; ".join(t.checks)[:300] if t.checks else "all passed"
        if t.notes:
            checks += "; " + "; ".join(t.notes)
        if t.error:
            checks = f"ERROR: {t.error[:300]}"
        out += (
            f"| {t.name} | {_f(t.ready_s)} | {_f(t.idle_rss_mb, 0)} | {_f(t.peak_rss_mb, 0)} | "
            f"{_f(t.hwm_rss_mb, 0)} | {t.processes} | {t.log_errors} | {checks} |\n"
        )
    return out


def summary(cells: list[Cell], infos: dict[str, TargetInfo]) -> tuple[str, dict[str, Any]]:
    lines = ["Issue 13 (against the passthrough and LiteLLM, same run):", ""]
    issue13, verdicts = issue13_summary(cells)
    lines += [*issue13, "", "Earlier targets:", ""]
    for cell_mode in ("json", "stream"):
        mode = "streaming" if cell_mode == "stream" else "non-streaming"
        gw = find(cells, GATEWAY, cell_mode, "2KB", 32)
        ll = find(cells, LITELLM, cell_mode, "2KB", 32)
        g, lite = ok_rps(gw), ok_rps(ll)
        key = f"ratio_{cell_mode}_2KB_c32"
        if g is None or lite is None or not lite:
            lines.append(f"- {mode} 2 KB c=32 req/s, model-gateway / litellm-proxy: n/a (a cell is missing) -> FAIL")
            verdicts[key] = {"value": None, "pass": False}
            continue
        times = g / lite
        ok = times >= RATIO_TARGET and clean(gw) and clean(ll)
        note = "" if clean(gw) and clean(ll) else " (non-2xx or errors seen: not a valid pass)"
        lines.append(
            f"- {mode} 2 KB c=32 req/s, model-gateway / litellm-proxy: {_rps(g)} / {_rps(lite)} = "
            f"{times:.1f}x (target >= {RATIO_TARGET:.0f}x){note} -> {'PASS' if ok else 'FAIL'}"
        )
        verdicts[key] = {"value": round(times, 2), "pass": ok}
    for cell_mode in ("json", "stream"):
        mode = "streaming" if cell_mode == "stream" else "non-streaming"
        gw = find(cells, GATEWAY, cell_mode, "2KB", 1)
        extra = added_p50(cells, gw) if gw else None
        key = f"added_p50_{cell_mode}_2KB_c1"
        if extra is None:
            lines.append(f"- model-gateway added p50, {mode} 2 KB c=1: n/a -> FAIL")
            verdicts[key] = {"value": None, "pass": False}
            continue
        ok = extra < ADDED_P50_TARGET_MS and clean(gw)
        note = "" if clean(gw) else " (non-2xx or errors seen: not a valid pass)"
        lines.append(
            f"- model-gateway added p50, {mode} 2 KB c=1: {extra:.3f} ms (target < {ADDED_P50_TARGET_MS} ms){note}"
            f" -> {'PASS' if ok else 'FAIL'}"
        )
        verdicts[key] = {"value": round(extra, 4), "pass": ok}
    if GATEWAY_BUDGET in infos:
        line, verdicts["ledger_cost_json_2KB"] = ledger_cost(cells)
        lines.append(line)
    for name in (GATEWAY, GATEWAY_BUDGET, PASSTHROUGH):
        info = infos.get(name)
        if info and info.checks:
            lines.append(f"- {name} correctness checks FAILED: " + "; ".join(info.checks)[:300])
    return "\n".join(lines) + "\n", verdicts


def ledger_cost(cells: list[Cell]) -> tuple[str, dict[str, Any]]:
    """What a team key with a budget costs next to the master key: the key and team look-ups, a
    budget hold before the upstream call and its settlement after (two group-committed
    transactions instead of one ledger commit).

    Informational (no target): req/s at c=32 and added p50 at c=1, non-streaming 2 KB.
    """
    head = "- ledger cost, non-streaming 2 KB, model-gateway (master key) vs model-gateway+budget (team key):"
    out: dict[str, Any] = {}
    parts = []
    plain, budget = find(cells, GATEWAY, "json", "2KB", 32), find(cells, GATEWAY_BUDGET, "json", "2KB", 32)
    g, b = ok_rps(plain), ok_rps(budget)
    if g is None or b is None or not g:
        parts.append("req/s at c=32 n/a (a cell is missing)")
    else:
        change = (b - g) / g * 100
        parts.append(f"req/s at c=32 {_rps(g)} vs {_rps(b)} ({change:+.1f}%)")
        out.update(rps_c32=round(g, 1), budget_rps_c32=round(b, 1), rps_change_pct=round(change, 2))
    plain, budget = find(cells, GATEWAY, "json", "2KB", 1), find(cells, GATEWAY_BUDGET, "json", "2KB", 1)
    pg = added_p50(cells, plain) if plain else None
    pb = added_p50(cells, budget) if budget else None
    if pg is None or pb is None:
        parts.append("added p50 at c=1 n/a (a cell is missing)")
    else:
        parts.append(f"added p50 at c=1 {pg:.3f} ms vs {pb:.3f} ms ({pb - pg:+.3f} ms)")
        out.update(added_p50_c1_ms=round(pg, 4), budget_added_p50_c1_ms=round(pb, 4))
    clean = all(
        c is not None
        and c.result is not None
        and not c.result.error
        and not c.result.non2xx
        and not c.result.socket_error_count
        for c in (find(cells, t, "json", "2KB", n) for t in (GATEWAY, GATEWAY_BUDGET) for n in (1, 32))
    )
    note = "" if clean else " (non-2xx or errors seen, or a cell missing: read with care)"
    return f"{head} {'; '.join(parts)}{note}", out


def _p50(cell: Cell | None) -> float | None:
    return None if cell is None or cell.result is None or cell.result.error else cell.result.p50_ms


def doors_table(cells: list[Cell], bodies: list[str], concs: list[int], doors: list[str]) -> str:
    """Issue 14: per gateway target and load, each front door's req/s, p50 and CPU µs/req, and each translating
    door's CPU per request over the chat door's (ratio, and the difference: the door's own work, which should stay
    flat as bodies grow)."""
    others = [d for d in doors if d != "chat"]
    head = (
        f"| target | mode | body | conc | req/s {' / '.join(doors)} | p50 ms {' / '.join(doors)} | "
        f"CPU µs/req {' / '.join(doors)} | "
        + " | ".join(f"{d} ÷ chat CPU (extra µs)" for d in others)
        + " |\n|---|---|---|---:|---:|---:|---:|"
        + "---:|" * len(others)
        + "\n"
    )
    rows = []
    for target in (GATEWAY, GATEWAY_BUDGET):
        for mode in MODES:
            for body in bodies:
                for conc in concs:
                    row = {d: find(cells, target, mode, body, conc, d) for d in doors}
                    if all(c is None for c in row.values()):
                        continue

                    def each(kind: str, fmt: Callable[[float], str], row: dict[str, Cell | None] = row) -> str:
                        out = []
                        for door in doors:
                            cell = row[door]
                            value = _p50(cell) if kind == "p50" else figure(cells, kind, cell)
                            out.append("-" if value is None else fmt(value) + ("" if clean(cell) else "⚠"))
                        return " / ".join(out)

                    ratios = []
                    chat = figure(cells, "cpu", row.get("chat"))
                    for door in others:
                        mine = figure(cells, "cpu", row[door])
                        if chat is None or mine is None or chat <= 0:
                            ratios.append("n/a")
                        else:
                            ratios.append(f"{mine / chat:.2f}x ({mine - chat:+.0f})")
                    rows.append(
                        f"| {target} | {mode} | {body} | {conc} | {each('rps', _rps)} | "
                        f"{each('p50', lambda v: f'{v:.2f}')} | {each('cpu', lambda v: f'{v:.0f}')} | "
                        + " | ".join(ratios)
                        + " |"
                    )
    if not rows:
        return ""
    return (
        "## Front doors (issue 14): the same requests through chat, Messages and Responses\n\n"
        "The translating doors turn the request into the chat request and render the answer (a stream event by "
        "event). ÷ chat: the door's CPU µs per request over the chat door's in the same load (in brackets, the "
        "difference in µs: the door's own work).\n\n" + head + "\n".join(rows) + "\n\n"
    )
