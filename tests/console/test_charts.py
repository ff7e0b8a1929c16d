"""Charts readable without colour: a pattern per series, a legend, every value written out; money as money."""

from __future__ import annotations

from gateway.console import charts
from gateway.console.formats import count, money, percent, usd


def test_money_is_money_and_exact_under_a_cent() -> None:
    assert money(0) == "$0.00"
    assert money(1_234_567_890_123) == "$1,234.57"
    assert money(10_000_000) == "$0.01"
    assert money(40_500) == "$0.0000405"
    assert money(74_999_582_400) == "$74.9995824"  # a budget's remainder after a small spend keeps it
    assert money(-5_000) == "-$0.000005"
    assert money(None) == "\u2013" and money(None, "no limit") == "no limit"
    assert usd("0.001250000") == "$0.00125" and usd("12.5") == "$12.50"
    assert count(1234567) == "1,234,567" and percent(0.256) == "25.6%"


def test_grouped_bars_write_each_value_and_tell_series_apart_by_pattern() -> None:
    chart = charts.hbars(
        "c", "t", [("alpha", [3, 1]), ("beta", [0, 2])], ["before", "after"], limit=4, limit_text="budget"
    )
    assert [(k.series, k.name) for k in chart.legend] == [(0, "before"), (1, "after")]
    assert sorted({bar.series for bar in chart.bars}) == [0, 1]
    values = [label.text for label in chart.labels if label.kind == "value"]
    assert values == ["3", "1", "0", "2"]
    assert [bar.title for bar in chart.bars] == [
        "alpha, before: 3",
        "alpha, after: 1",
        "beta, before: 0",
        "beta, after: 2",
    ]
    widths = {bar.title: bar.width for bar in chart.bars}
    assert widths["alpha, before: 3"] == 3 * widths["alpha, after: 1"]
    assert [line.kind for line in chart.lines] == ["axis", "limit"]
    assert any(label.text == "budget" for label in chart.labels)


def test_stacked_columns_total_each_day_and_sum_small_series_as_other() -> None:
    days = ["2026-12-01", "2026-12-02"]
    cells = {("2026-12-01", f"m{i}"): (i + 1) * 1_000_000_000 for i in range(8)}
    cells[("2026-12-02", "m7")] = 500_000_000
    chart = charts.columns("c", "t", days, cells)
    names = [k.name for k in chart.legend]
    assert len(names) == charts.MAX_SERIES and names[-1] == charts.OTHER and names[0] == "m7"
    totals = [label.text for label in chart.labels if "value" in label.kind]
    assert totals == ["$36.00", "$0.50"]
    assert len({bar.series for bar in chart.bars}) == charts.MAX_SERIES
    assert any(bar.title == "2026-12-01, other: $6.00" for bar in chart.bars)  # m0 + m1 + m2


def test_an_empty_chart_has_no_bars() -> None:
    assert charts.columns("c", "t", ["2026-12-01"], {}).empty
    assert charts.hbars("c", "t", [], ["a"]).empty
