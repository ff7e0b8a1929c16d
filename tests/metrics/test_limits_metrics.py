"""The rate-limit and provider-queue metrics (gateway/metrics: families, labels, recorder): `gateway_rate_limited_total`,
the provider queue's depth, wait and capacity used, and the limit store's errors and state. Bounded labels, the
recorder's methods in-process, the same values on a real gateway's /metrics, and the multiprocess modes over
several worker processes."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from gateway.catalog import load_catalog
from gateway.limits.base import KINDS
from gateway.metrics import Metrics
from gateway.metrics.families import BY_NAME, LIMIT_KINDS, LIMIT_SCOPES, MULTIPROC_ENV, QUEUE_WAIT_BUCKETS
from gateway.metrics.labels import Bounds
from tests.support import ROOT
from tests.support.gateways import GatewayFactory
from tests.support.metrics import Samples, scrape, total

ENV = {"MISTRAL_API_KEY": "mistral-key", "MOONSHOT_API_KEY": "moonshot-key"}
PROVIDERS = ("mistral", "moonshot")  # the default catalog's
NEW_FAMILIES = (
    "gateway_rate_limited_total",
    "gateway_provider_queue_depth",
    "gateway_provider_queue_wait_seconds",
    "gateway_provider_capacity_used_ratio",
    "gateway_limits_store_errors_total",
    "gateway_limits_store_up",
)
# Every value each label of the new families may take: configuration (providers) or a fixed set, else `other`.
ALLOWED = {
    "scope": {*LIMIT_SCOPES, "other"},
    "limit": {*LIMIT_KINDS, "other"},
    "provider": {*PROVIDERS, "other"},
    "outcome": {"fail_open", "fail_closed", "other"},
    "le": {*(repr(float(b)) for b in QUEUE_WAIT_BUCKETS), "+Inf"},
}


@pytest.fixture()
def metrics(monkeypatch: pytest.MonkeyPatch) -> Metrics:
    monkeypatch.delenv(MULTIPROC_ENV, raising=False)  # values in the instance's own registry
    return Metrics(load_catalog(None, ENV), "test")


def samples(registry: CollectorRegistry) -> Samples:
    out: Samples = {}
    for family in registry.collect():
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def label_values(m: Samples, prefix: str) -> dict[str, set[str]]:
    """Each label of the series whose name starts with `prefix`, and the values it takes."""
    values: dict[str, set[str]] = {}
    for name, labels in m:
        if name.startswith(prefix):
            for label, value in labels:
                values.setdefault(label, set()).add(value)
    return values


def assert_bounded(m: Samples) -> None:
    for family in NEW_FAMILIES:
        for label, values in label_values(m, family).items():
            assert values <= ALLOWED[label], (family, label, values - ALLOWED[label])


# -- the families -------------------------------------------------------------------------------------


def test_the_limit_kinds_are_the_limit_layers() -> None:
    # The metrics sit below gateway.limits (a layer above them, so not imported there): the two lists are kept
    # equal here.
    assert LIMIT_KINDS == KINDS


def test_the_families_have_the_labels_and_multiprocess_modes_asked_for() -> None:
    assert BY_NAME["gateway_rate_limited_total"].labels == ("scope", "limit")
    assert BY_NAME["gateway_provider_queue_depth"].labels == ("provider",)
    assert BY_NAME["gateway_provider_queue_wait_seconds"].labels == ("provider",)
    assert BY_NAME["gateway_provider_capacity_used_ratio"].labels == ("provider", "limit")
    assert BY_NAME["gateway_limits_store_errors_total"].labels == ("outcome",)
    assert BY_NAME["gateway_limits_store_up"].labels == ()
    # Waiting requests add up over workers; the store is down if any worker finds it down; the capacity used is
    # the shared state as the latest worker saw it.
    assert BY_NAME["gateway_provider_queue_depth"].combine == "livesum"
    assert BY_NAME["gateway_limits_store_up"].combine == "livemin"
    assert BY_NAME["gateway_provider_capacity_used_ratio"].combine == "livemostrecent"
    buckets = BY_NAME["gateway_provider_queue_wait_seconds"].buckets
    assert buckets[0] == 0.001 and buckets[-1] == 60.0 and list(buckets) == sorted(buckets)


def test_only_known_scopes_limits_and_outcomes_pass_the_bounds() -> None:
    for scope in LIMIT_SCOPES:
        assert Bounds.scope(scope) == scope
    # A limit's whole scope (gateway.limits.base.Limit.scope) names its kind before the first colon.
    assert Bounds.scope("team:web") == "team"
    assert Bounds.scope("key:k-123") == "key"
    assert Bounds.scope("team-model:web:kimi-k2.6") == "team_model"
    assert Bounds.scope("deployment:moonshot:kimi-k2.6") == "deployment"
    for unknown in ("org", "TEAM", "", "team ", ":team", "tenant:web"):
        assert Bounds.scope(unknown) == "other", unknown
    for kind in ("rpm", "tpm", "concurrency"):
        assert Bounds.limit(kind) == kind
    for unknown in ("rph", "RPM", "", "parallel"):
        assert Bounds.limit(unknown) == "other", unknown
    assert Bounds.store_outcome("fail_open") == "fail_open"
    assert Bounds.store_outcome("fail_closed") == "fail_closed"
    assert Bounds.store_outcome("fail-open") == "other"


# -- the recorder, in-process -------------------------------------------------------------------------


def test_a_new_gateway_shows_every_series_at_rest(metrics: Metrics) -> None:
    m = samples(metrics.registry)
    for scope in LIMIT_SCOPES:
        for kind in LIMIT_KINDS:
            assert ("gateway_rate_limited_total", (("limit", kind), ("scope", scope))) in m, (scope, kind)
    assert total(m, "gateway_rate_limited_total") == 0
    for provider in PROVIDERS:
        assert m[("gateway_provider_queue_depth", (("provider", provider),))] == 0
        assert m[("gateway_provider_queue_wait_seconds_count", (("provider", provider),))] == 0
        for kind in LIMIT_KINDS:
            assert m[("gateway_provider_capacity_used_ratio", (("limit", kind), ("provider", provider)))] == 0
    assert m[("gateway_limits_store_errors_total", (("outcome", "fail_open"),))] == 0
    assert m[("gateway_limits_store_errors_total", (("outcome", "fail_closed"),))] == 0
    assert m[("gateway_limits_store_up", ())] == 1
    assert_bounded(m)


def test_rate_limited_counts_by_scope_and_limit_and_the_rest_is_other(metrics: Metrics) -> None:
    metrics.rate_limited("team", "rpm")
    metrics.rate_limited("team:web", "rpm")
    metrics.rate_limited("key", "concurrency")
    metrics.rate_limited("team-model:web:kimi-k2.6", "tpm")
    metrics.rate_limited("provider", "concurrency")
    metrics.rate_limited("deployment:moonshot:kimi-k2.6", "rpm")
    metrics.rate_limited("a-scope-nobody-configured", "rpm")
    metrics.rate_limited("team", "requests-per-fortnight")

    m = samples(metrics.registry)
    assert total(m, "gateway_rate_limited_total", scope="team", limit="rpm") == 2
    assert total(m, "gateway_rate_limited_total", scope="key", limit="concurrency") == 1
    assert total(m, "gateway_rate_limited_total", scope="team_model", limit="tpm") == 1
    assert total(m, "gateway_rate_limited_total", scope="provider", limit="concurrency") == 1
    assert total(m, "gateway_rate_limited_total", scope="deployment", limit="rpm") == 1
    assert total(m, "gateway_rate_limited_total", scope="other", limit="rpm") == 1
    assert total(m, "gateway_rate_limited_total", scope="team", limit="other") == 1
    assert total(m, "gateway_rate_limited_total") == 8
    assert_bounded(m)


def test_queue_depth_wait_and_capacity_per_provider(metrics: Metrics) -> None:
    metrics.queue_depth("moonshot", 4)
    metrics.queue_depth("mistral", 1)
    metrics.queue_depth("mistral", 0)  # the queue drained
    metrics.queue_depth("no-such-provider", 7)
    metrics.queue_depth("moonshot", -1)  # never below 0
    metrics.queue_depth("moonshot", 3)
    for seconds in (0.0, 0.0, 0.0004, 0.3, 12.0, 75.0):
        metrics.queue_waited("moonshot", seconds)
    metrics.queue_waited("mistral", -0.5)  # a clock step back: counted as no wait
    metrics.capacity_used("moonshot", "concurrency", 0.5)
    metrics.capacity_used("moonshot", "concurrency", 1.0)
    metrics.capacity_used("moonshot", "tpm", 1.3)  # settled above the limit: full
    metrics.capacity_used("moonshot", "rpm", -0.2)
    metrics.capacity_used("mistral", "rpm", 0.25)
    metrics.capacity_used("mistral", "rpm", math.nan)  # ignored: keeps 0.25
    metrics.capacity_used("mistral", "rph", 0.9)

    m = samples(metrics.registry)
    assert total(m, "gateway_provider_queue_depth", provider="moonshot") == 3
    assert total(m, "gateway_provider_queue_depth", provider="mistral") == 0
    assert total(m, "gateway_provider_queue_depth", provider="other") == 7
    assert total(m, "gateway_provider_queue_wait_seconds_count", provider="moonshot") == 6
    assert total(m, "gateway_provider_queue_wait_seconds_sum", provider="moonshot") == pytest.approx(87.3004)
    # 0 and 0.4 ms in the first bucket (1 ms); 75 s only in +Inf.
    assert total(m, "gateway_provider_queue_wait_seconds_bucket", provider="moonshot", le="0.001") == 3
    assert total(m, "gateway_provider_queue_wait_seconds_bucket", provider="moonshot", le="60.0") == 5
    assert total(m, "gateway_provider_queue_wait_seconds_bucket", provider="moonshot", le="+Inf") == 6
    assert total(m, "gateway_provider_queue_wait_seconds_sum", provider="mistral") == 0
    assert total(m, "gateway_provider_queue_wait_seconds_count", provider="mistral") == 1
    ratio = "gateway_provider_capacity_used_ratio"
    assert total(m, ratio, provider="moonshot", limit="concurrency") == 1.0
    assert total(m, ratio, provider="moonshot", limit="tpm") == 1.0
    assert total(m, ratio, provider="moonshot", limit="rpm") == 0.0
    assert total(m, ratio, provider="mistral", limit="rpm") == 0.25
    assert total(m, ratio, provider="mistral", limit="other") == 0.9
    assert_bounded(m)


def test_the_limit_store_going_down_and_coming_back(metrics: Metrics) -> None:
    metrics.limits_store_unavailable("fail_open")
    m = samples(metrics.registry)
    assert total(m, "gateway_limits_store_errors_total", outcome="fail_open") == 1
    assert total(m, "gateway_limits_store_up") == 0  # an error is the store down until it answers again
    metrics.limits_store_unavailable("fail_closed")
    metrics.limits_store_unavailable("fail_closed")
    metrics.limits_store_unavailable("shrug")
    metrics.limits_store_up(True)
    m = samples(metrics.registry)
    assert total(m, "gateway_limits_store_errors_total", outcome="fail_closed") == 2
    assert total(m, "gateway_limits_store_errors_total", outcome="other") == 1
    assert total(m, "gateway_limits_store_up") == 1
    metrics.limits_store_up(False)
    assert total(samples(metrics.registry), "gateway_limits_store_up") == 0
    assert_bounded(samples(metrics.registry))


def test_a_catalog_reload_keeps_the_capacity_the_last_acquire_saw(metrics: Metrics) -> None:
    metrics.capacity_used("moonshot", "rpm", 0.8)
    metrics.queue_depth("moonshot", 2)
    metrics.set_catalog(load_catalog(None, ENV))
    m = samples(metrics.registry)
    assert total(m, "gateway_provider_capacity_used_ratio", provider="moonshot", limit="rpm") == 0.8
    assert total(m, "gateway_provider_queue_depth", provider="moonshot") == 2


def test_the_exposition_has_the_new_families_with_help_and_type(metrics: Metrics) -> None:
    metrics.rate_limited("key", "tpm")
    text = generate_latest(metrics.registry).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name in NEW_FAMILIES:
        family = BY_NAME[name]
        exposed = name.removesuffix("_total") if family.kind == "counter" else name
        assert families[exposed].type == family.kind, name
        assert families[exposed].documentation == family.help, name


def test_the_dashboard_has_a_row_for_them() -> None:
    """deploy/grafana/dashboard.json: the row "Rate limits and provider queues" holds a panel on each new family
    (tests/e2e/test_deploy.py checks every query's metrics, labels and PromQL)."""
    panels = json.loads((ROOT / "deploy" / "grafana" / "dashboard.json").read_text())["panels"]
    (row,) = [i for i, p in enumerate(panels) if p["type"] == "row" and p["title"] == "Rate limits and provider queues"]
    following = [i for i, p in enumerate(panels) if p["type"] == "row" and i > row]
    in_row = panels[row + 1 : following[0] if following else len(panels)]
    exprs = " ".join(t["expr"] for p in in_row for t in p["targets"])
    for name in NEW_FAMILIES:
        assert name in exprs, name
    assert "histogram_quantile(0.95, sum by (provider, le) (rate(gateway_provider_queue_wait_seconds_bucket" in exprs


# -- a real gateway, and several workers ---------------------------------------------------------------


@pytest.mark.slow
def test_a_gateways_metrics_show_the_families_with_bounded_labels(start_gateway: GatewayFactory) -> None:
    server = start_gateway()
    recorder: Metrics = server.app.state.gateway.metrics
    recorder.rate_limited("team:web", "rpm")
    recorder.rate_limited("../../etc/passwd", "'; DROP TABLE")
    recorder.queue_depth("moonshot", 2)
    recorder.queue_waited("moonshot", 0.05)
    recorder.queue_waited("a provider a client named", 3.0)
    recorder.capacity_used("moonshot", "concurrency", 0.75)
    recorder.limits_store_unavailable("fail_closed")

    m = scrape(server.url)
    assert total(m, "gateway_rate_limited_total", scope="team", limit="rpm") == 1
    assert total(m, "gateway_rate_limited_total", scope="other", limit="other") == 1
    assert total(m, "gateway_provider_queue_depth", provider="moonshot") == 2
    assert total(m, "gateway_provider_queue_wait_seconds_count", provider="moonshot") == 1
    assert total(m, "gateway_provider_queue_wait_seconds_count", provider="other") == 1
    assert total(m, "gateway_provider_capacity_used_ratio", provider="moonshot", limit="concurrency") == 0.75
    assert total(m, "gateway_limits_store_errors_total", outcome="fail_closed") == 1
    assert total(m, "gateway_limits_store_up") == 0
    assert_bounded(m)


WORKER = """
import sys
from gateway.catalog import load_catalog
from gateway.metrics import Metrics

metrics = Metrics(load_catalog(None, {"MISTRAL_API_KEY": "k", "MOONSHOT_API_KEY": "k"}), "test")
role = sys.argv[1]
if role == "a":
    metrics.queue_depth("moonshot", 2)
    metrics.capacity_used("moonshot", "rpm", 0.9)
    metrics.rate_limited("team", "rpm")
else:
    metrics.queue_depth("moonshot", 3)
    metrics.capacity_used("moonshot", "rpm", 0.2)
    metrics.rate_limited("team", "rpm")
    metrics.limits_store_unavailable("fail_open")
    if role == "b-leaves":
        metrics.close()
"""


def _worker(directory: Path, role: str) -> None:
    env = {"PATH": os.environ.get("PATH", ""), MULTIPROC_ENV: str(directory)}
    result = subprocess.run(
        [sys.executable, "-c", WORKER, role], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


def _collect(directory: Path) -> Samples:
    registry = CollectorRegistry()
    MultiProcessCollector(registry, str(directory))
    return samples(registry)


@pytest.mark.slow
def test_several_workers_combine_as_the_families_say(tmp_path: Path) -> None:
    """Two worker processes in prometheus-client's multiprocess mode (as `gateway serve --workers 2`): waiting
    requests add up, the capacity used is the latest view, the store is down if one worker finds it down; when a
    worker leaves, its live gauges go with it and the counters stay."""
    both, one_left = tmp_path / "both", tmp_path / "one-left"
    for directory, second in ((both, "b"), (one_left, "b-leaves")):
        directory.mkdir()
        _worker(directory, "a")
        _worker(directory, second)  # later: its capacity view is the most recent

    m = _collect(both)
    assert total(m, "gateway_provider_queue_depth", provider="moonshot") == 5
    assert total(m, "gateway_provider_capacity_used_ratio", provider="moonshot", limit="rpm") == 0.2
    assert total(m, "gateway_limits_store_up") == 0
    assert total(m, "gateway_rate_limited_total", scope="team", limit="rpm") == 2
    assert total(m, "gateway_limits_store_errors_total", outcome="fail_open") == 1
    assert_bounded(m)

    m = _collect(one_left)
    assert total(m, "gateway_provider_queue_depth", provider="moonshot") == 2
    assert total(m, "gateway_provider_capacity_used_ratio", provider="moonshot", limit="rpm") == 0.9
    assert total(m, "gateway_limits_store_up") == 1
    assert total(m, "gateway_rate_limited_total", scope="team", limit="rpm") == 2
    assert total(m, "gateway_limits_store_errors_total", outcome="fail_open") == 1
