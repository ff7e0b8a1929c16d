"""`GET /metrics`: the text a Prometheus server scrapes.

Budget gauges are computed here, at scrape time, from the database (the same numbers the admission check
uses), for teams that have a budget: limit, spent and reserved in the current period, and what remains.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric

from gateway.errors import StorageUnavailable
from gateway.metrics.families import BY_NAME
from gateway.money import usd_float
from gateway.store.base import team_scope

if TYPE_CHECKING:
    from gateway.state import Gateway

__all__ = ["CONTENT_TYPE_LATEST", "render"]


class _Families:
    """A collector over ready-made families (what `generate_latest` reads)."""

    def __init__(self, *sources: Iterable[Metric]) -> None:
        self.sources = sources

    def collect(self) -> Iterator[Metric]:
        for source in self.sources:
            yield from source


async def budget_families(gateway: Gateway) -> list[Metric]:
    """gateway_budget_{limit,spent,reserved,remaining}_usd for every team with a budget."""
    names = (
        "gateway_budget_limit_usd",
        "gateway_budget_spent_usd",
        "gateway_budget_reserved_usd",
        "gateway_budget_remaining_usd",
    )
    families = {n: GaugeMetricFamily(n, BY_NAME[n].help, labels=["team"]) for n in names}
    now = datetime.now(UTC)
    try:
        for team in await gateway.store.list_teams():
            if team.budget_nanos is None:
                continue
            gateway.metrics.budgeted_team(team.name)
            start, _ = gateway.accounting.window(team.period, now)
            usage = await gateway.store.usage(team_scope(team.name), start)
            remaining = max(team.budget_nanos - usage.spent_nanos - usage.reserved_nanos, 0)
            for name, nanos in zip(
                names, (team.budget_nanos, usage.spent_nanos, usage.reserved_nanos, remaining), strict=True
            ):
                families[name].add_metric([team.name], usd_float(nanos))
    except StorageUnavailable:
        # The database is away: the scrape still answers (with the storage error counters that say so), the
        # budget gauges are absent rather than wrong.
        return []
    return list(families.values())


async def render(gateway: Gateway) -> bytes:
    """The Prometheus text exposition of this gateway (all workers, in multiprocess mode)."""
    metrics = gateway.metrics
    budgets = await budget_families(gateway)  # first: it may create series (soft-limit counters at 0)
    if metrics.multiprocess:
        from prometheus_client.multiprocess import MultiProcessCollector

        values: Iterable[Metric] = MultiProcessCollector(None, metrics.multiprocess).collect()
    else:
        values = metrics.registry.collect()
    return generate_latest(_Families(values, budgets))
