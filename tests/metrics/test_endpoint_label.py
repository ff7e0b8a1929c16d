"""The `endpoint` label (gateway/metrics: families, labels, recorder): the front door of each request on the
per-request metrics, bounded to the doors the pipeline knows. In-process: a `Metrics` and its registry."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from gateway.catalog import load_catalog
from gateway.metrics import Metrics
from gateway.metrics.families import BY_NAME, ENDPOINT_VALUES, MULTIPROC_ENV
from gateway.metrics.labels import Bounds
from gateway.pipeline.request import ENDPOINTS
from gateway.types import Usage
from tests.support.metrics import Samples, total

ENV = {"MISTRAL_API_KEY": "mistral-key", "MOONSHOT_API_KEY": "moonshot-key"}
# The per-request families: those that carry the request's model, provider or team (and `overhead`, the gateway's
# own time, which the door's translation is part of).
PER_REQUEST = (
    "gateway_requests_total",
    "gateway_request_duration_seconds",
    "gateway_time_to_first_token_seconds",
    "gateway_overhead_seconds",
    "gateway_tokens_total",
    "gateway_spend_usd_total",
)


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


def finish(metrics: Metrics, endpoint: str | None, **given: object) -> None:
    fields: dict[str, object] = {
        "model": "mistral-medium-3.5",
        "provider": "mistral",
        "team": "web",
        "status": 200,
        "stream": True,
        "seconds": 0.5,
        "ttft": 0.1,
        "waited": 0.4,
        "reason": "preferred",
        "endpoint": endpoint,
    }
    fields.update(given)
    metrics.request_finished(**fields)


def test_the_label_values_are_the_pipelines_doors() -> None:
    # The metrics cannot import the pipeline (a layer above them): the two lists are kept equal here.
    assert ENDPOINT_VALUES == ENDPOINTS


@pytest.mark.parametrize("name", PER_REQUEST)
def test_every_per_request_family_has_the_endpoint_label(name: str) -> None:
    assert "endpoint" in BY_NAME[name].labels


def test_only_known_doors_pass_the_bounds() -> None:
    for door in ENDPOINTS:
        assert Bounds.endpoint(door) == door
    for unknown in ("batch", "/v1/chat/completions", "CHAT", "", "chat "):
        assert Bounds.endpoint(unknown) == "other"
    assert Bounds.endpoint(None) == "none"  # refused before the door read the request


def test_request_finished_counts_by_door_and_an_unknown_door_is_other(metrics: Metrics) -> None:
    finish(metrics, "chat")
    finish(metrics, "messages", stream=False, ttft=None)
    finish(metrics, "messages", status=429, stream=False, ttft=None, waited=None, provider=None, reason=None)
    finish(metrics, "a-door-nobody-configured", stream=False, ttft=None)
    finish(metrics, None, status=401, model=None, provider=None, ttft=None, waited=None, reason=None)

    m = samples(metrics.registry)
    assert total(m, "gateway_requests_total", endpoint="chat", status="200") == 1
    assert total(m, "gateway_requests_total", endpoint="messages") == 2
    assert total(m, "gateway_requests_total", endpoint="messages", status="429", provider="none") == 1
    assert total(m, "gateway_requests_total", endpoint="other", model="mistral-medium-3.5") == 1
    assert total(m, "gateway_requests_total", endpoint="none", status="401") == 1
    assert total(m, "gateway_request_duration_seconds_count", endpoint="messages", stream="false") == 2
    assert total(m, "gateway_time_to_first_token_seconds_count", endpoint="chat") == 1
    assert total(m, "gateway_time_to_first_token_seconds_count", endpoint="messages") == 0
    assert total(m, "gateway_overhead_seconds_count", endpoint="chat", stream="true") == 1
    assert total(m, "gateway_overhead_seconds_count", endpoint="messages") == 1  # the 429 called no provider
    assert total(m, "gateway_overhead_seconds_sum", endpoint="chat") == pytest.approx(0.1)
    # Every value of the label is a door, `other` or `none`: the caller's string never becomes a series.
    doors = {dict(labels).get("endpoint") for (_, labels) in m} - {None}
    assert doors == {"chat", "messages", "other", "none"}


def test_settled_tokens_and_spend_carry_the_door(metrics: Metrics) -> None:
    usage = Usage(prompt_tokens=100, completion_tokens=20, cached_tokens=40)
    metrics.settled("kimi-k2.6", "moonshot", "web", usage, 2_500_000, endpoint="responses")
    metrics.settled("kimi-k2.6", "moonshot", "web", usage, 500_000, endpoint="../../etc")

    m = samples(metrics.registry)
    assert total(m, "gateway_tokens_total", endpoint="responses", type="prompt") == 100
    assert total(m, "gateway_tokens_total", endpoint="responses", type="cached") == 40
    assert total(m, "gateway_spend_usd_total", endpoint="responses", team="web") == pytest.approx(0.0025)
    assert total(m, "gateway_spend_usd_total", endpoint="other") == pytest.approx(0.0005)
    assert total(m, "gateway_tokens_total", endpoint="../../etc") == 0
