"""The machine's Redis (127.0.0.1:6379) for the tests: each test under a key prefix of its own, deleted afterwards by
that prefix (never a flush: the Redis is shared with everything else on the machine)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import redis

REDIS_URL = "redis://127.0.0.1:6379/0"
REDIS_PORT = 6379


def delete_prefix(prefix: str) -> None:
    """Delete every key under `prefix:`."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@contextmanager
def redis_prefix(name: str = "test-limits") -> Iterator[str]:
    """A fresh prefix, its keys deleted at the end."""
    prefix = f"{name}-{uuid.uuid4().hex}"
    try:
        yield prefix
    finally:
        delete_prefix(prefix)
