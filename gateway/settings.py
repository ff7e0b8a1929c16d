"""Process settings: `GATEWAY_*` environment variables and CLI overrides, read once at start and passed in."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Process settings from `GATEWAY_*` environment variables (and CLI overrides)."""

    model_config = SettingsConfigDict(env_prefix="GATEWAY_", extra="ignore")

    config: Path | None = None
    host: str = "127.0.0.1"
    port: int = Field(4000, ge=0, le=65535)
    workers: int = Field(1, ge=1, le=64)
    master_key: SecretStr | None = None
    max_body_bytes: int = Field(32 * 1024 * 1024, ge=1024)
    # The largest single server-sent event taken from a provider's stream (a token chunk is ~200 bytes); past
    # it the stream ends with an `upstream_event_too_large` error event (gateway/providers/sse.py).
    max_sse_event_bytes: int = Field(16 * 1024 * 1024, ge=64 * 1024)
    data_dir: Path = Path.home() / ".local" / "share" / "model-gateway"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    request_log: bool = True  # one JSON line per request on stdout (logger "gateway.requests")
    metrics_port: int | None = Field(None, ge=1, le=65535)  # serve /metrics on its own port too (else only on `port`)
    metrics_token: SecretStr | None = None  # if set, /metrics needs `Authorization: Bearer TOKEN`
    # Storage and budgets.
    database_url: str | None = None  # default: sqlite:///{data_dir}/gateway.db
    budget_timezone: str = "UTC"
    default_expected_output_tokens: int = Field(1024, ge=1)
    soft_limit_webhook_url: str | None = None
    # SQLite: the write-ahead log is checkpointed and emptied by the writer between batches past this size.
    sqlite_wal_limit_bytes: int = Field(64 * 1024 * 1024, ge=64 * 1024)
    # Ledger rows the database could not take are kept in a local journal (data_dir/journal/) up to this size.
    journal_max_bytes: int = Field(64 * 1024 * 1024, ge=4096)
    # Reservations belong to the process that took it. This node's name (default: the host name): on start-up
    # a process releases the holds of this node's processes that died; a process anywhere whose heartbeat
    # (every `heartbeat_seconds`) is older than `orphan_hold_seconds` has its holds released by the others.
    # At SIGTERM the gateway stops accepting, says not ready, and lets requests in flight finish for this long;
    # then each stream still open ends with an SSE error event (`gateway_shutting_down`) and its ledger row.
    shutdown_drain_seconds: float = Field(300.0, ge=0)
    node_name: str | None = None
    heartbeat_seconds: float = Field(5.0, gt=0)
    orphan_hold_seconds: float = Field(30.0, gt=0)
    ledger_content: bool = False  # store prompt and response text in the ledger (off: never)
    circuit_failures: int = Field(5, ge=1)  # consecutive upstream failures that open a deployment's circuit
    circuit_cooldown_seconds: float = Field(30.0, gt=0)  # then one probe request is let through
    # A provider that says its account is out of balance (Moonshot's exceeded_current_quota_error) has every
    # deployment's circuit held open this long, unless POST /admin/reload or a restart releases it first.
    quota_cooldown_seconds: float = Field(3600.0, gt=0)
    # Routing policies (policies/README.md). None: ./policies if it exists, else the repository's policies/.
    policies_dir: Path | None = None
    # How often the policy files and the catalog file are checked for edits (reloaded without a SIGHUP).
    reload_poll_seconds: float = Field(2.0, gt=0)
    # Connections (gateway.http.servers.GatewayHttpProtocol): how long an idle kept-alive connection stays open; how
    # long a client may take to send a request's head (from connecting, or from its first byte on a kept-alive
    # connection) and then its whole body. A client slower than that gets 408 and the connection is closed.
    keepalive_seconds: float = Field(15.0, gt=0)
    header_timeout_seconds: float = Field(10.0, gt=0)
    body_timeout_seconds: float = Field(60.0, gt=0)
    # Concurrent connections plus requests per worker beyond which requests are answered 503 (uvicorn's
    # limit_concurrency); None: no cap.
    max_connections: int | None = Field(None, ge=1)
    # The Responses door's recent responses, kept for `previous_response_id` (gateway/http/response_store.py): at
    # most this many, and this many bytes, per process, in memory (0: keep none, and refuse previous_response_id).
    responses_kept: int = Field(1000, ge=0)
    responses_kept_bytes: int = Field(64 * 1024 * 1024, ge=0)
    # Rate limits and provider queues (gateway/limits/). With a Redis URL every node shares them there (atomic
    # scripts); without one a single worker keeps them in memory and several workers share a SQLite file in
    # data_dir (never a silent per-worker copy). Each Redis call gives up after `redis_timeout_seconds`; when Redis
    # cannot be reached, `fail_open` lets requests through unlimited (budgets still hold: they are in the
    # database) and `fail_closed` refuses them with 503; either is logged, counted and shown by /readyz.
    redis_url: SecretStr | None = None
    redis_timeout_seconds: float = Field(0.25, gt=0, le=10)
    redis_failure: Literal["fail_open", "fail_closed"] = "fail_open"
    # After a failed Redis call, calls fail at once for this long instead of each waiting for the timeout.
    redis_retry_seconds: float = Field(1.0, gt=0)
    # Keys of this gateway's state in Redis start with this (several gateways, or tests, can share one Redis).
    redis_prefix: str = Field("gateway", pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    # A request waits at most this long in a provider's queue for capacity (`limits:` in the catalog) before the
    # deployment counts as unavailable for it (the next candidate of the decision, or 429 with Retry-After).
    provider_queue_wait_seconds: float = Field(10.0, ge=0)
    # Gateway keys are cached per process. With an invalidation channel (PostgreSQL LISTEN/NOTIFY) a cached key
    # lives this long; without one (SQLite, or the channel down) at most `key_cache_fallback_seconds`, so a
    # revoked key is refused everywhere within that.
    key_cache_seconds: float = Field(30.0, ge=0)
    key_cache_fallback_seconds: float = Field(1.0, ge=0)
    # Batches (gateway/batches/, `POST /v1/files` + `POST /v1/batches`). An uploaded file may be this large (OpenAI's
    # and Moonshot's limit); files up to `batch_file_inline_bytes` are kept in the database (every node reads them),
    # larger ones in data_dir/files (several nodes then need a shared data directory, or a larger inline limit).
    batch_file_max_bytes: int = Field(100 * 1024 * 1024, ge=1024)
    batch_file_inline_bytes: int = Field(4 * 1024 * 1024, ge=0)
    batch_max_lines: int = Field(50_000, ge=1)  # lines in one batch (OpenAI's limit)
    # Every this often a node takes the lease of the active batches nobody holds and moves them forward (submits,
    # polls the providers' jobs, settles lines); a lease lasts `batch_lease_seconds` and is renewed while held, so a
    # node that dies hands its batches to another within that.
    batch_poll_seconds: float = Field(10.0, gt=0)
    batch_lease_seconds: float = Field(60.0, gt=0)
    # Lines run through the interactive pipeline (no batch API, or a window shorter than the provider's): at most
    # this many at once per node (each also waits its turn in the provider's queue, `limits:` in the catalog).
    batch_interactive_concurrency: int = Field(4, ge=1, le=256)

    @field_validator("budget_timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo

        try:
            ZoneInfo(value)
        except Exception as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    def resolved_policies_dir(self) -> Path:
        if self.policies_dir is not None:
            return self.policies_dir
        here = Path("policies")
        if here.is_dir():
            return here
        return Path(__file__).resolve().parent.parent / "policies"

    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'gateway.db'}"
