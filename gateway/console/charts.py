"""Charts as server-rendered SVG: the geometry is computed here, `templates/charts.html` draws it (autoescaped, no
script, styles from the static stylesheet by class).

Readable without colour: each series has its own fill pattern (solid, hatched, dotted, ...) as well as its own
colour, the legend shows the patterns, and every bar or column carries its value as text (and a `<title>` with the
exact figure); the pages show the same figures in a table next to each chart.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from gateway.console.formats import money

PATTERNS = 6  # series beyond this share the patterns again (the legend and the value labels still tell them apart)
MAX_SERIES = 6  # more than this: the smallest are summed as "other"
OTHER = "other"


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    series: int
    title: str  # the exact figure, shown on hover and read by screen readers


@dataclass(frozen=True, slots=True)
class Label:
    x: float
    y: float
    text: str
    anchor: str = "start"  # SVG text-anchor
    kind: str = "value"  # CSS class: value, axis, name
    upright: bool = False  # written bottom to top (a column's total where columns are narrow)


@dataclass(frozen=True, slots=True)
class Line:
    x1: float
    y1: float
    x2: float
    y2: float
    kind: str = "axis"  # CSS class: axis, limit


@dataclass(frozen=True, slots=True)
class Key:
    """A legend entry: the series' pattern in a swatch at (x, y), its name after it."""

    x: float
    y: float
    series: int
    name: str


@dataclass(frozen=True, slots=True)
class Chart:
    id: str  # unique on its page: the patterns' ids derive from it
    title: str
    width: int
    height: int
    bars: list[Bar] = field(default_factory=list)
    labels: list[Label] = field(default_factory=list)
    lines: list[Line] = field(default_factory=list)
    legend: list[Key] = field(default_factory=list)

    @property
    def patterns(self) -> range:
        return range(PATTERNS)

    @property
    def empty(self) -> bool:
        return not self.bars


def compact_money(nanos: int) -> str:
    """A short money label for a column: `$12.30`, `$1.2k`, `$3.4M`."""
    usd = nanos / 1e9
    if abs(usd) >= 1e6:
        return f"${usd / 1e6:.1f}M"
    if abs(usd) >= 1e4:
        return f"${usd / 1e3:.1f}k"
    return money(nanos)


def _short(text: str, limit: int = 26) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def legend(names: Sequence[str], width: int) -> tuple[list[Key], int]:
    """Legend entries laid out in rows within `width`, and the height they take."""
    keys: list[Key] = []
    x, y = 10.0, 4.0
    for series, name in enumerate(names):
        text = _short(name, 30)
        size = 28 + 7 * len(text) + 18
        if x > 10 and x + size > width:
            x, y = 10.0, y + 20
        keys.append(Key(x, y, series, text))
        x += size
    return keys, (int(y) + 22 if keys else 0)


def hbars(
    chart_id: str,
    title: str,
    rows: Sequence[tuple[str, Sequence[float | int | None]]],
    series: Sequence[str],
    value_text: Callable[[float], str] = lambda v: f"{v:,.0f}",
    limit: float | None = None,
    limit_text: str = "",
) -> Chart:
    """Grouped horizontal bars: one group per row (its name on the left), one bar per series with its value as text
    at its end. `limit` draws a dashed vertical line (a budget) with `limit_text`."""
    label_width, area, right = 190, 380, 170
    bar_height, gap = 14, 10
    group = bar_height * len(series) + gap
    width = label_width + area + right
    keys, legend_height = legend(series, width) if len(series) > 1 else ([], 0)
    height = legend_height + max(1, len(rows)) * group + 24
    values = [v for _, vs in rows for v in vs if v is not None]
    top = max([*values, limit or 0, 0])
    scale = area / top if top > 0 else 0.0
    chart = Chart(chart_id, title, width, height, legend=keys)
    y = float(legend_height)
    for name, row_values in rows:
        chart.labels.append(Label(label_width - 8, y + group / 2, _short(name), "end", "name"))
        for index, value in enumerate(row_values):
            by = y + index * bar_height
            if value is None:
                chart.labels.append(Label(label_width + 4, by + bar_height - 3, f"{series[index]}: n/a", kind="value"))
                continue
            length = max(value * scale, 1.0 if value > 0 else 0.0)
            text = value_text(value)
            chart.bars.append(Bar(label_width, by, length, bar_height - 2, index, f"{name}, {series[index]}: {text}"))
            chart.labels.append(Label(label_width + length + 4, by + bar_height - 3, text))
        y += group
    chart.lines.append(Line(label_width, legend_height, label_width, y, "axis"))
    if limit is not None and limit > 0:
        x = label_width + limit * scale
        chart.lines.append(Line(x, legend_height, x, y, "limit"))
        chart.labels.append(Label(x, y + 14, limit_text, "middle", "axis"))
    return chart


def top_series(totals: Mapping[str, int], keep: int = MAX_SERIES) -> list[str]:
    """The series to draw, largest first; the others are summed into `other`."""
    ranked = sorted(totals, key=lambda name: (-totals[name], name))
    if len(ranked) <= keep:
        return ranked
    return [*ranked[: keep - 1], OTHER]


def columns(
    chart_id: str,
    title: str,
    days: Sequence[str],
    cells: Mapping[tuple[str, str], int],
) -> Chart:
    """Stacked columns of money, one per day (`days`, oldest first), stacked by series (`cells[(day, series)]` in
    nano-dollars); each day's total is written above its column, the axis says the scale."""
    totals: dict[str, int] = {}
    for (_, name), nanos in cells.items():
        totals[name] = totals.get(name, 0) + nanos
    names = top_series(totals)
    kept = set(names)
    stacks: dict[str, list[int]] = {d: [0] * len(names) for d in days}
    for (d, name), nanos in cells.items():
        if d in stacks:
            slot = names.index(name) if name in kept else names.index(OTHER)
            stacks[d][slot] += nanos
    left, area_width, area_height = 96, 640, 180  # (room on the left for an exact amount: `$0.0004176`)
    slot_width = area_width / len(days) if days else area_width
    upright = slot_width < 34  # a total written across a narrow column would overlap its neighbours'
    top_margin = 50 if upright else 20
    keys, legend_height = legend(names, left + area_width + 20)
    height = legend_height + top_margin + area_height + 40
    chart = Chart(chart_id, title, left + area_width + 20, height, legend=keys)
    peak = max([sum(stack) for stack in stacks.values()] + [0])
    if not days or peak <= 0:
        return chart
    base = legend_height + top_margin + area_height
    scale = area_height / peak
    width = max(2.0, slot_width * 0.7)
    every = max(1, round(len(days) / 10))  # about ten date labels on the axis
    for index, d in enumerate(days):
        x = left + index * slot_width + (slot_width - width) / 2
        y = float(base)
        for series, nanos in enumerate(stacks[d]):
            if nanos <= 0:
                continue
            h = max(nanos * scale, 1.0)
            y -= h
            chart.bars.append(Bar(x, y, width, h, series, f"{d}, {names[series]}: {money(nanos)}"))
        total = sum(stacks[d])
        if total > 0:
            text = compact_money(total)
            if upright:
                chart.labels.append(Label(x + width / 2 + 3, y - 4, text, "start", "value small", upright=True))
            else:
                chart.labels.append(Label(x + width / 2, y - 4, text, "middle", "value small"))
        if index % every == 0:
            chart.labels.append(Label(x + width / 2, base + 16, d[5:], "middle", "axis"))
    chart.lines.append(Line(left, base, left + area_width, base, "axis"))
    chart.lines.append(Line(left, base - area_height, left, base, "axis"))
    chart.labels.append(Label(left - 6, base - area_height + 4, compact_money(peak), "end", "axis"))
    chart.labels.append(Label(left - 6, base, "$0", "end", "axis"))
    return chart
