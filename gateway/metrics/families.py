"""Every metric the gateway exports: name, type, labels, unit and meaning. A product surface, documented in the
README: names and labels here change only with a changelog entry.

Labels take only values from configuration (`model`, `provider`, `team`, `region`) or the small fixed sets
below; anything else is counted as `other` (see `gateway.metrics.labels`), so the number of series is bounded
by the configuration, never by traffic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# prometheus-client's multiprocess modes of a gauge (`Gauge(multiprocess_mode=...)`).
GaugeMode = Literal[
    "all", "liveall", "min", "livemin", "max", "livemax", "sum", "livesum", "mostrecent", "livemostrecent"
]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus-client's multiprocess mode, read at its import
STATUS_VALUES = (
    "200",
    "400",
    "401",
    "403",
    "404",
    "408",
    "409",
    "413",
    "415",
    "422",
    "429",
    "499",
    "500",
    "502",
    "503",
    "504",
    "other",
)
STREAM_VALUES = ("true", "false")
# The front doors (`gateway.pipeline.request.ENDPOINTS`, the same set: tests/metrics/test_labels.py checks it; the
# metrics sit below the pipeline, so they cannot import it): `/v1/chat/completions`, `/v1/completions`,
# `/v1/fim/completions`, `/v1/embeddings`, `/v1/messages`, `/v1/responses`.
ENDPOINT_VALUES = ("chat", "completions", "fim", "embeddings", "messages", "responses")
TOKEN_TYPES = ("prompt", "completion", "cached")
UPSTREAM_ERROR_KINDS = (
    "connect",
    "timeout",
    "status_4xx",
    "status_429",
    "status_5xx",
    "stream_cut",
    "malformed",
    "quota_exhausted",
)
RELOAD_RESULTS = ("success", "failure")
STORAGE_STAGES = ("request", "journaled", "lost")
CIRCUIT_STATES = {"closed": 0, "half_open": 1, "open": 2}
# Rate limits (`gateway.limits`): whose limit refused a request (or, for a provider or deployment, made it wait past
# the bound), and which of its limits.
LIMIT_SCOPES = ("team", "key", "team_model", "provider", "deployment")
# Batches (`gateway.batches`): how a line ran, how it ended, and what a batch's status became.
BATCH_MODES = ("batch", "interactive", "invalid")
BATCH_OUTCOMES = ("answered", "failed", "expired", "cancelled")
BATCH_STATUSES = ("created", "completed", "expired", "cancelled", "failed")
LIMIT_KINDS = ("rpm", "tpm", "concurrency")
# What the gateway did when its limit store (Redis) could not be reached (`GATEWAY_REDIS_FAILURE`).
STORE_OUTCOMES = ("fail_open", "fail_closed")

# Seconds. Whole requests run from milliseconds (short answers) to minutes (long streamed answers).
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
TTFT_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
# The gateway's own time: tenths of a millisecond (small bodies) to tens of milliseconds (megabyte bodies).
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
# Waiting for a provider's capacity: most requests do not wait (0 falls in the first bucket), a slot freed by a call
# ending comes in milliseconds to seconds, a full minute's window in up to 60 s (no queue waits longer).
QUEUE_WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0)
# Estimated over reported prompt tokens: 1.0 is exact, above 1 the estimate was high.
RATIO_BUCKETS = (0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 1.0, 1.02, 1.05, 1.1, 1.2, 1.3, 1.5, 2.0)


@dataclass(frozen=True, slots=True)
class Family:
    name: str
    kind: str  # "counter", "gauge", "histogram"
    labels: tuple[str, ...]
    help: str
    unit: str = ""
    buckets: tuple[float, ...] = ()
    # How `gateway serve --workers N` combines a gauge over workers (prometheus-client multiprocess modes);
    # "scrape": computed when scraped, from shared state (the database), never per worker.
    combine: GaugeMode | Literal["scrape", ""] = ""


FAMILIES: tuple[Family, ...] = (
    Family(
        "gateway_requests_total",
        "counter",
        ("model", "provider", "team", "status", "endpoint"),
        "Requests to the inference endpoints, by routed model (or the requested one if refused), provider "
        "(`none` if none was called), team, HTTP status and front door (`endpoint`: `chat`, `completions`, "
        "`fim`, `embeddings`, `messages`, `responses`; `none` if refused before the door read the body).",
    ),
    Family(
        "gateway_request_duration_seconds",
        "histogram",
        ("model", "provider", "stream", "endpoint"),
        "Whole request time, from the first byte received to the last byte sent.",
        "seconds",
        DURATION_BUCKETS,
    ),
    Family(
        "gateway_time_to_first_token_seconds",
        "histogram",
        ("model", "provider", "endpoint"),
        "Streaming requests: from the request's arrival to the first content chunk sent to the client.",
        "seconds",
        TTFT_BUCKETS,
    ),
    Family(
        "gateway_upstream_duration_seconds",
        "histogram",
        ("provider",),
        "One provider call: from sending the request to the end of the answer (the last chunk of a stream).",
        "seconds",
        DURATION_BUCKETS,
    ),
    Family(
        "gateway_overhead_seconds",
        "histogram",
        ("stream", "endpoint"),
        "The gateway's own time per request that reached a provider: the whole request less the time spent "
        "waiting on providers (and the policy's backoff between retries); by front door, whose translation "
        "is part of it.",
        "seconds",
        OVERHEAD_BUCKETS,
    ),
    Family(
        "gateway_tokens_total",
        "counter",
        ("model", "provider", "team", "type", "endpoint"),
        "Tokens as settled in the ledger: `prompt` (cached ones included), `completion`, `cached`.",
        "tokens",
    ),
    Family(
        "gateway_spend_usd_total",
        "counter",
        ("model", "provider", "team", "endpoint"),
        "Cost as settled in the ledger.",
        "USD",
    ),
    Family(
        "gateway_budget_limit_usd",
        "gauge",
        ("team",),
        "The team's budget for the current period.",
        "USD",
        combine="scrape",
    ),
    Family(
        "gateway_budget_spent_usd",
        "gauge",
        ("team",),
        "Spent in the current period (settled).",
        "USD",
        combine="scrape",
    ),
    Family(
        "gateway_budget_reserved_usd",
        "gauge",
        ("team",),
        "Held by requests in flight (their worst-case cost), released or settled when they end.",
        "USD",
        combine="scrape",
    ),
    Family(
        "gateway_budget_remaining_usd",
        "gauge",
        ("team",),
        "Limit less spent and reserved (never below 0).",
        "USD",
        combine="scrape",
    ),
    Family(
        "gateway_route_decisions_total",
        "counter",
        ("model", "reason"),
        "Routing outcomes: the model that served and its route reason (`preferred`, `context>262144`, "
        "`residency:eu`, `budget-downgrade`, `fallback:upstream-503`...), or model `none` and the refusal's "
        "code (`no_route`, `model_not_allowed`, `context_length_exceeded`, `budget_exceeded`).",
    ),
    Family(
        "gateway_fallbacks_total",
        "counter",
        ("from_model", "to_model", "reason"),
        "Moves to another candidate after a provider failure before the first byte (or an open circuit).",
    ),
    Family(
        "gateway_upstream_errors_total",
        "counter",
        ("provider", "kind"),
        "Provider failures: `connect`, `timeout`, `status_4xx`, `status_429`, `status_5xx`, `stream_cut`, "
        "`malformed` (chunks that are not JSON), `quota_exhausted` (the provider account is out of balance).",
    ),
    Family(
        "gateway_inflight_requests",
        "gauge",
        ("provider",),
        "Provider calls in progress (streams until their end).",
        combine="livesum",
    ),
    Family(
        "gateway_circuit_state",
        "gauge",
        ("provider", "model"),
        "Each deployment's circuit breaker: 0 closed, 1 half-open (a probe is let through), 2 open.",
        combine="livemax",
    ),
    Family(
        "gateway_token_estimate_error_ratio",
        "histogram",
        ("model",),
        "The gateway's prompt count before the call over the prompt tokens the provider reported.",
        "ratio",
        RATIO_BUCKETS,
    ),
    Family(
        "gateway_budget_soft_limit_crossed_total",
        "counter",
        ("team",),
        "Settlements that crossed a team's soft limit (at most once per team and period).",
    ),
    Family(
        "gateway_config_reloads_total",
        "counter",
        ("result",),
        "Reloads of the policies and the catalog (SIGHUP, POST /admin/reload, file change): `success` or "
        "`failure` (the previous version stays in use).",
    ),
    Family(
        "gateway_storage_errors_total",
        "counter",
        ("stage",),
        "The database could not be reached: `request` (answered 503 `storage_unavailable` before any provider "
        "call), `journaled` (a ledger row kept in the local journal until the database is back), `lost` (a "
        "ledger row neither could take: the answer was withheld or its stream ended with an error).",
    ),
    Family(
        "gateway_ledger_journal_pending",
        "gauge",
        (),
        "Ledger rows in the local journal, not yet written to the database.",
        combine="livesum",
    ),
    Family(
        "gateway_rate_limited_total",
        "counter",
        ("scope", "limit"),
        "Requests refused with 429 `rate_limit_exceeded` by a caller's limit (`scope`: `team`, `key`, `team_model`), "
        "or that waited for a provider's capacity past the queue's bound (`provider`, `deployment`): moved to "
        "another deployment or refused. `limit`: `rpm`, `tpm` or `concurrency`.",
    ),
    Family(
        "gateway_provider_queue_depth",
        "gauge",
        ("provider",),
        "Requests waiting in this process for a provider's capacity (its deployments' queues together).",
        combine="livesum",
    ),
    Family(
        "gateway_provider_queue_wait_seconds",
        "histogram",
        ("provider",),
        "Time each request to a provider with declared limits waited for its capacity: 0 for those admitted at "
        "once, the whole wait for those that gave up at the bound.",
        "seconds",
        QUEUE_WAIT_BUCKETS,
    ),
    Family(
        "gateway_provider_capacity_used_ratio",
        "gauge",
        ("provider", "limit"),
        "Share of a provider's declared limit (`rpm`, `tpm`, `concurrency`) in use, 0 to 1, as the last request "
        "to take or give back capacity saw it (shared by every node through the limit store); 0 where the provider "
        "declares no such limit.",
        "ratio",
        # The state is shared (Redis, or the node's store): the freshest view of any worker is the right one.
        combine="livemostrecent",
    ),
    Family(
        "gateway_limits_store_errors_total",
        "counter",
        ("outcome",),
        "Requests for which the limit store (Redis) could not be reached: let through without the shared limits "
        "(`fail_open`) or refused with 503 (`fail_closed`), as `GATEWAY_REDIS_FAILURE` says.",
    ),
    Family(
        "gateway_limits_store_up",
        "gauge",
        (),
        "1 while the limit store answers, 0 after a call to it failed (until one succeeds again).",
        # One worker that cannot reach the store is enough to show it down.
        combine="livemin",
    ),
    Family(
        "gateway_batch_lines_total",
        "counter",
        ("provider", "mode", "outcome"),
        "Lines of batches that ended (`POST /v1/batches`): `mode` `batch` (on the provider's batch API, at batch "
        "prices), `interactive` (through the pipeline: no batch API, or a window too short for it) or `invalid` "
        "(refused when the batch was created: provider `none`); `outcome` `answered` (status 200), `failed`, "
        "`expired` or `cancelled`.",
    ),
    Family(
        "gateway_batches_total",
        "counter",
        ("state",),
        "Batches created (`state` `created`) and ended (`completed`, `expired`, `cancelled`, `failed`).",
    ),
    Family(
        "gateway_batch_saved_usd_total",
        "counter",
        ("model", "provider"),
        "What batch lines answered on a provider's batch API saved: the same usage at interactive prices, less what "
        "was charged at batch prices (the catalog's `batch_discount`).",
        "USD",
    ),
    Family("gateway_build_info", "gauge", ("version",), "Always 1; the running version in the label.", combine="max"),
)

BY_NAME = {f.name: f for f in FAMILIES}


def exported_names() -> set[str]:
    """Every series name a scrape can contain (histograms as `_bucket`, `_sum`, `_count`)."""
    names: set[str] = set()
    for family in FAMILIES:
        if family.kind == "histogram":
            names.update(family.name + suffix for suffix in ("_bucket", "_sum", "_count"))
        else:
            names.add(family.name)
    return names
