"""`Metrics`: the gateway's Prometheus metrics, one instance per gateway (no module-level registry).

With `gateway serve --workers N` the CLI sets `PROMETHEUS_MULTIPROC_DIR` before the workers start; each
worker then writes its values to files there (prometheus-client's multiprocess mode) and a scrape of any
worker sums counters and histograms over all of them and combines gauges as `families.py` says. Budget
gauges are read from the database at scrape time, so N workers never multiply them.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

from gateway.metrics.families import BY_NAME, MULTIPROC_ENV, STORAGE_STAGES, UPSTREAM_ERROR_KINDS, Family
from gateway.metrics.labels import NONE, Bounds
from gateway.money import usd_float

if TYPE_CHECKING:
    from gateway.catalog import Catalog
    from gateway.types import Usage


class Children:
    """A metric's children by label values, each looked up in prometheus_client once: its `labels()` checks and
    converts the values and takes a lock on every call, several times per request (the profile's
    `MetricWrapperBase.labels`). The values are bounded (`labels.Bounds`), so the cache is too."""

    __slots__ = ("children", "metric")

    def __init__(self, metric: Any) -> None:
        self.metric = metric
        self.children: dict[tuple[str, ...], Any] = {}

    def __call__(self, *values: str) -> Any:
        child = self.children.get(values)
        if child is None:
            child = self.children[values] = self.metric.labels(*values)
        return child


def multiprocess_dir() -> str | None:
    """The directory of prometheus-client's multiprocess mode, if this process runs in it."""
    return os.environ.get(MULTIPROC_ENV) or None


class Metrics:
    """Every metric of `families.py`, with methods named after the events that move them."""

    def __init__(self, catalog: Catalog, version: str) -> None:
        disable_created_metrics()  # `_created` series double the count and no dashboard reads them
        self.multiprocess = multiprocess_dir()
        # Multiprocess values live in files, not in a registry: register nowhere, collect from the files.
        self.registry = CollectorRegistry(auto_describe=False)
        self.bounds = Bounds(catalog)
        register = None if self.multiprocess else self.registry

        def make(name: str) -> Any:
            family: Family = BY_NAME[name]
            base = name.removesuffix("_total") if family.kind == "counter" else name
            if family.kind == "counter":
                return Counter(base, family.help, family.labels, registry=register)
            if family.kind == "histogram":
                return Histogram(base, family.help, family.labels, registry=register, buckets=family.buckets)
            mode = family.combine or "livesum"
            if mode == "scrape":
                raise ValueError(f"{name} is computed when scraped, from the database: not a worker's gauge")
            return Gauge(base, family.help, family.labels, registry=register, multiprocess_mode=mode)

        self.requests = make("gateway_requests_total")
        self.duration = make("gateway_request_duration_seconds")
        self.ttft = make("gateway_time_to_first_token_seconds")
        self.upstream = make("gateway_upstream_duration_seconds")
        self.overhead = make("gateway_overhead_seconds")
        self.tokens = make("gateway_tokens_total")
        self.spend = make("gateway_spend_usd_total")
        self.decisions = make("gateway_route_decisions_total")
        self.fallbacks = make("gateway_fallbacks_total")
        self.upstream_errors = make("gateway_upstream_errors_total")
        self.inflight = make("gateway_inflight_requests")
        self.circuits = make("gateway_circuit_state")
        self.estimate_error = make("gateway_token_estimate_error_ratio")
        self.soft_limits = make("gateway_budget_soft_limit_crossed_total")
        self.reloads = make("gateway_config_reloads_total")
        self.storage_errors = make("gateway_storage_errors_total")
        self.journal_pending = make("gateway_ledger_journal_pending")
        for stage in STORAGE_STAGES:
            self.storage_errors.labels(stage)  # at 0, so an alert on increase() has a series
        self.journal_pending.set(0)
        self.build_info = make("gateway_build_info")
        self.build_info.labels(version).set(1)
        for result in ("success", "failure"):
            self.reloads.labels(result)  # present at 0, so alert expressions have a series to read
        # The children the request path moves, cached (see `Children`).
        self._requests, self._duration, self._ttft = (
            Children(self.requests),
            Children(self.duration),
            Children(self.ttft),
        )
        self._upstream, self._overhead, self._tokens = (
            Children(self.upstream),
            Children(self.overhead),
            Children(self.tokens),
        )
        self._spend, self._decisions, self._fallbacks = (
            Children(self.spend),
            Children(self.decisions),
            Children(self.fallbacks),
        )
        self._upstream_errors, self._inflight = Children(self.upstream_errors), Children(self.inflight)
        self._estimate_error = Children(self.estimate_error)
        self.set_catalog(catalog)

    def set_catalog(self, catalog: Catalog) -> None:
        """New bounds after a catalog reload; every deployment's circuit is shown (closed) from the start."""
        self.bounds = Bounds(catalog)
        for model in catalog.models.values():
            self.circuits.labels(catalog.provider_of(model).name, model.name)
        for provider in catalog.providers:
            self.inflight.labels(provider)
            for kind in UPSTREAM_ERROR_KINDS:  # at 0: rate() and increase() see the first error
                self.upstream_errors.labels(provider, kind)

    def budgeted_team(self, team: str) -> None:
        """A team with a budget exists (seen at scrape time): its soft-limit counter starts at 0."""
        self.soft_limits.labels(self.bounds.team(team))

    def close(self) -> None:
        """This process is leaving: its live gauges (in-flight, circuits) stop counting in multiprocess mode."""
        if self.multiprocess:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(os.getpid(), self.multiprocess)

    # -- events on the request path ---------------------------------------------------------------

    def request_finished(
        self,
        *,
        model: str | None,
        provider: str | None,
        team: str | None,
        status: int,
        stream: bool,
        seconds: float,
        ttft: float | None,
        waited: float | None,
        reason: str | None,
        endpoint: str | None,
    ) -> None:
        """One inference request ended (answered, refused or failed). `waited`: seconds spent on provider
        calls and backoff (None: no provider was called, so no overhead is observed). `endpoint`: its front
        door (None: refused before the door read it)."""
        b = self.bounds
        model_label, provider_label, door = b.model(model), b.provider(provider), b.endpoint(endpoint)
        streamed = "true" if stream else "false"
        self._requests(model_label, provider_label, b.team(team), b.status(status), door).inc()
        self._duration(model_label, provider_label, streamed, door).observe(seconds)
        if ttft is not None:
            self._ttft(model_label, provider_label, door).observe(ttft)
        if waited is not None:
            self._overhead(streamed, door).observe(max(seconds - waited, 0.0))
        if reason is not None:
            self._decisions(model_label if provider is not None else NONE, b.reason(reason)).inc()

    def upstream_started(self, provider: str) -> None:
        self._inflight(self.bounds.provider(provider)).inc()

    def upstream_ended(self, provider: str, seconds: float) -> None:
        label = self.bounds.provider(provider)
        self._inflight(label).dec()
        self._upstream(label).observe(seconds)

    def upstream_error(self, provider: str, kind: str) -> None:
        self._upstream_errors(self.bounds.provider(provider), kind).inc()

    def fallback(self, from_model: str, to_model: str, reason: str) -> None:
        b = self.bounds
        self._fallbacks(b.model(from_model), b.model(to_model), b.reason(reason)).inc()

    def settled(
        self, model: str, provider: str, team: str, usage: Usage | None, cost_nanos: int, *, endpoint: str
    ) -> None:
        """What the ledger row says (so the counters add up to the ledger, endpoint by endpoint too)."""
        b = self.bounds
        labels = (b.model(model), b.provider(provider), b.team(team))
        door = b.endpoint(endpoint)
        if usage is not None:
            for kind, value in (
                ("prompt", usage.prompt_tokens),
                ("completion", usage.completion_tokens),
                ("cached", usage.cached_tokens),
            ):
                if value:
                    self._tokens(*labels, kind, door).inc(value)
        if cost_nanos:
            self._spend(*labels, door).inc(usd_float(cost_nanos))

    def estimate_ratio(self, model: str, estimated: int, reported: int) -> None:
        if estimated > 0 and reported > 0:
            self._estimate_error(self.bounds.model(model)).observe(estimated / reported)

    # -- events elsewhere ---------------------------------------------------------------------------

    def soft_limit_crossed(self, team: str) -> None:
        self.soft_limits.labels(self.bounds.team(team)).inc()

    def config_reloaded(self, ok: bool) -> None:
        self.reloads.labels("success" if ok else "failure").inc()

    def storage_event(self, event: str, pending: int) -> None:
        """The database was unreachable (`request`, `journaled`, `lost`) or journaled rows were written
        (`replayed`); `pending`: rows still in this process's journal."""
        if event in STORAGE_STAGES:
            self.storage_errors.labels(event).inc()
        self.journal_pending.set(pending)

    def circuit_changed(self, deployment: str, state: int) -> None:
        provider, _, model = deployment.partition("/")
        self.circuits.labels(self.bounds.provider(provider), self.bounds.model(model)).set(state)
