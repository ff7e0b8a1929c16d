"""`Metrics`: the gateway's Prometheus metrics, one instance per gateway (no module-level registry).

With `gateway serve --workers N` the CLI sets `PROMETHEUS_MULTIPROC_DIR` before the workers start; each
worker then writes its values to files there (prometheus-client's multiprocess mode) and a scrape of any
worker sums counters and histograms over all of them and combines gauges as `families.py` says. Budget
gauges are read from the database at scrape time, so N workers never multiply them.
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

from gateway.metrics.families import (
    BATCH_OUTCOMES,
    BATCH_STATUSES,
    BY_NAME,
    LIMIT_KINDS,
    LIMIT_SCOPES,
    MULTIPROC_ENV,
    STORAGE_STAGES,
    STORE_OUTCOMES,
    UPSTREAM_ERROR_KINDS,
    Family,
)
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
        self.rate_limited_total = make("gateway_rate_limited_total")
        self.queue = make("gateway_provider_queue_depth")
        self.queue_wait = make("gateway_provider_queue_wait_seconds")
        self.capacity = make("gateway_provider_capacity_used_ratio")
        self.store_errors = make("gateway_limits_store_errors_total")
        self.store_up = make("gateway_limits_store_up")
        for scope in LIMIT_SCOPES:  # at 0: an alert on rate() sees the first refusal
            for kind in LIMIT_KINDS:
                self.rate_limited_total.labels(scope, kind)
        for outcome in STORE_OUTCOMES:
            self.store_errors.labels(outcome)
        # Up until a call to the store fails: the in-memory and SQLite stores always answer, and the limits layer
        # reports Redis's state as it changes.
        self.store_up.set(1)
        self.batch_lines = make("gateway_batch_lines_total")
        self.batches = make("gateway_batches_total")
        self.batch_saved = make("gateway_batch_saved_usd_total")
        for state in BATCH_STATUSES:  # at 0: every family has series from the start (a dashboard or alert reads them)
            self.batches.labels(state)
        self.batch_lines.labels(NONE, "invalid", "failed")
        for model in catalog.models.values():
            if model.price.batch_discount:
                self.batch_saved.labels(model.name, model.provider)
            for outcome in BATCH_OUTCOMES:
                self.batch_lines.labels(model.provider, "batch", outcome)
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
        self._rate_limited, self._queue, self._queue_wait = (
            Children(self.rate_limited_total),
            Children(self.queue),
            Children(self.queue_wait),
        )
        self._capacity = Children(self.capacity)
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
            # Every provider's queue is shown from the start (empty, nothing waited, nothing of a limit used).
            self.queue.labels(provider)
            self.queue_wait.labels(provider)
            for limit in LIMIT_KINDS:
                # Set, not only created: a "mostrecent" gauge shows no value that was never written. Only once,
                # so a reload does not wipe what the last acquire saw.
                if (provider, limit) not in self._capacity.children:
                    self._capacity(provider, limit).set(0)

    def budgeted_team(self, team: str) -> None:
        """A team with a budget exists (seen at scrape time): its soft-limit counter starts at 0."""
        self.soft_limits.labels(self.bounds.team(team))

    def close(self) -> None:
        """This process is leaving: its live gauges (in-flight, circuits, queues, the limit store) stop counting in
        multiprocess mode."""
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

    # -- rate limits and provider queues (gateway.limits) -------------------------------------------

    def rate_limited(self, scope: str, limit: str) -> None:
        """A request refused by a caller's limit (`scope` `team`, `key`, `team_model`), or one that waited for a
        provider's (`provider`, `deployment`) capacity past the queue's bound. `scope` may be a limit's whole
        scope (`team:web`); `limit`: `rpm`, `tpm`, `concurrency`. Anything else is counted as `other`."""
        b = self.bounds
        self._rate_limited(b.scope(scope), b.limit(limit)).inc()

    def queue_depth(self, provider: str, depth: int) -> None:
        """Requests of this process now waiting for `provider`'s capacity (all its deployments' queues)."""
        self._queue(self.bounds.provider(provider)).set(max(depth, 0))

    def queue_waited(self, provider: str, seconds: float) -> None:
        """A request to `provider` got its capacity (or gave up) after `seconds`: called for every request to a
        provider with declared limits, 0 for those that did not wait, so the histogram's count is all of them and
        its quantiles say how long a request waits, not only how long the unlucky ones do."""
        self._queue_wait(self.bounds.provider(provider)).observe(max(seconds, 0.0))

    def capacity_used(self, provider: str, limit: str, ratio: float) -> None:
        """The share of `provider`'s `limit` (`rpm`, `tpm`, `concurrency`) in use, as the last acquire (or release)
        saw it; held to 0..1 (a settlement above the limit is full, not more)."""
        if math.isfinite(ratio):
            b = self.bounds
            self._capacity(b.provider(provider), b.limit(limit)).set(min(max(ratio, 0.0), 1.0))

    def batch_line(
        self, provider: str | None, mode: str, outcome: str, saved_nanos: int = 0, model: str | None = None
    ) -> None:
        """A batch line ended (how it ran, how it ended) and, answered on a batch API, what it saved."""
        b = self.bounds
        self.batch_lines.labels(b.provider(provider), b.batch(mode), b.batch(outcome)).inc()
        if saved_nanos > 0:
            self.batch_saved.labels(b.model(model), b.provider(provider)).inc(usd_float(saved_nanos))

    def batch_status(self, state: str) -> None:
        """A batch was created, or ended in this state."""
        self.batches.labels(self.bounds.batch(state)).inc()

    def limits_store_unavailable(self, outcome: str) -> None:
        """A request met an unreachable limit store and was let through (`fail_open`) or refused
        (`fail_closed`); the store counts as down until `limits_store_up(True)`."""
        self.store_errors.labels(self.bounds.store_outcome(outcome)).inc()
        self.store_up.set(0)

    def limits_store_up(self, up: bool) -> None:
        """Whether the limit store answers (after a call to it, or a probe)."""
        self.store_up.set(1 if up else 0)
