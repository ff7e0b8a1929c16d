"""Which limit store a gateway process uses, from its settings.

- `redis_url` set: Redis, shared by every node (and every worker of each);
- else several `--workers`: a SQLite file in the data directory, shared by the workers of this node;
- else one worker: memory.
Never a per-worker or per-node copy that would silently multiply the limits. Redis and SQLite are wrapped in a
`GuardedLimitStore` with the `redis_failure` behaviour (fail_open / fail_closed) and `redis_retry_seconds`.

The factory only builds the store; `await store.open()` once at start (every kind has it: a no-op in memory;
SQLite creates its file; Redis loads and checks its scripts) and `await store.close()` at shutdown.
"""

from __future__ import annotations

from collections.abc import Callable

from gateway.limits.base import LimitStore
from gateway.limits.guarded import GuardedLimitStore
from gateway.limits.memory import MemoryLimitStore
from gateway.limits.redis_store import RedisLimitStore
from gateway.limits.sqlite_store import SqliteLimitStore
from gateway.settings import Settings

# The workers of one node take turns on the file's write lock for well under a millisecond each; waiting longer
# than this means something is wrong with the file, and is an outage like Redis's.
SQLITE_BUSY_SECONDS = 2.0
LIMITS_FILE = "limits.db"


def open_limit_store(
    settings: Settings,
    on_unavailable: Callable[[str], None] | None = None,
    on_state: Callable[[bool], None] | None = None,
) -> LimitStore:
    """The store for these settings (not yet opened: `await store.open()`). `on_unavailable(outcome)` is called
    with "fail_open" or "fail_closed" for each request answered without the store (Redis or SQLite); `on_state(up)`
    when it becomes reachable or unreachable."""
    inner: LimitStore
    if settings.redis_url is not None:
        inner = RedisLimitStore(
            settings.redis_url.get_secret_value(), settings.redis_prefix, settings.redis_timeout_seconds
        )
    elif settings.workers > 1:
        inner = SqliteLimitStore(settings.data_dir / LIMITS_FILE, SQLITE_BUSY_SECONDS)
    else:
        return MemoryLimitStore()
    return GuardedLimitStore(
        inner, settings.redis_failure, settings.redis_retry_seconds, on_unavailable, on_state=on_state
    )
