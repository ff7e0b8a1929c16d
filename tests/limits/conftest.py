"""Limit stores for the tests: the machine's Redis (127.0.0.1:6379) under a key prefix of each test's own, deleted
afterwards by that prefix (never a flush: the Redis is shared)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis

REDIS_URL = "redis://127.0.0.1:6379/0"


def delete_prefix(prefix: str) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture()
def redis_prefix() -> Iterator[str]:
    prefix = f"test-limits-{uuid.uuid4().hex}"
    yield prefix
    delete_prefix(prefix)
