"""Limit stores for the tests: the machine's Redis under a key prefix of each test's own (tests/support/redis_keys.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import redis_keys


@pytest.fixture()
def redis_prefix() -> Iterator[str]:
    with redis_keys.redis_prefix("test-limits") as prefix:
        yield prefix
