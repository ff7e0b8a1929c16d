"""Fresh PostgreSQL databases for tests. PostgreSQL must be running (`.ci/run` starts it, `bash scripts/services`);
a missing server fails the tests that need it with a clear message, it never skips them."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

POSTGRES_ADMIN_URL = os.environ.get("GATEWAY_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


@contextmanager
def fresh_database(prefix: str = "gateway_test") -> Iterator[str]:
    """A new, uniquely named database (its URL), dropped afterwards."""
    import psycopg

    try:
        admin = psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL is not reachable at {POSTGRES_ADMIN_URL} (start it with `bash scripts/services`, or set "
            f"GATEWAY_TEST_POSTGRES): {exc}"
        )
    name = f"{prefix}_{secrets.token_hex(6)}"
    try:
        admin.execute(f'CREATE DATABASE "{name}"')
        yield POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        # FORCE: a gateway that is still shutting down must not keep the database alive.
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
