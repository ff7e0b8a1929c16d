"""What the console reads besides the admin service: the store's ledger reports, and the gateway's own overhead
from its metrics."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from prometheus_client import Histogram

from gateway.store import Store


@dataclass(frozen=True, slots=True)
class Overhead:
    """The gateway's own time per request (`gateway_overhead_seconds`: the request less its provider calls) on
    this process since it started, as quantiles interpolated within the histogram's buckets (None: no request)."""

    requests: int
    p50_ms: float | None
    p95_ms: float | None


def bucket_quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """The q-quantile of a cumulative histogram [(upper bound, count at or below it)], interpolated linearly within
    its bucket as Prometheus's histogram_quantile does; a quantile in the +Inf bucket is the last finite bound."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, cumulative in buckets:
        if cumulative >= rank:
            if bound == float("inf"):
                return lower_bound
            if cumulative == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (cumulative - lower_count)
        lower_bound, lower_count = bound, cumulative
    return lower_bound


def _merged_buckets(histogram: Histogram) -> list[tuple[float, float]]:
    """The cumulative buckets of every child of a labelled histogram, summed."""
    sums: dict[float, float] = {}
    for family in histogram.collect():
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                bound = float(sample.labels["le"])
                sums[bound] = sums.get(bound, 0.0) + sample.value
    return sorted(sums.items())


def overhead(histogram: Histogram) -> Overhead:
    buckets = _merged_buckets(histogram)
    seconds = [bucket_quantile(buckets, q) for q in (0.5, 0.95)]
    return Overhead(
        int(buckets[-1][1]) if buckets else 0,
        *(round(s * 1000, 2) if s is not None else None for s in seconds),
    )


async def daily_cells(store: Store, team: str, since: float, group_by: str) -> dict[tuple[str, str], int]:
    """{(YYYY-MM-DD, model or provider): nano-dollars} of one team since `since`, for `charts.columns`."""
    return _cells((row.day, row.group, row.cost_nanos) for row in await store.daily_spend(team, since, group_by))


def _cells(rows: Iterable[tuple[str, str, int]]) -> dict[tuple[str, str], int]:
    cells: dict[tuple[str, str], int] = {}
    for day, group, nanos in rows:
        cells[(day, group)] = cells.get((day, group), 0) + nanos
    return cells
