"""The SQLite limits file when it cannot be used: held locked past the busy timeout (another process stuck in a
transaction), or impossible to create; either is `LimitsUnavailable`, returned, never a hang or a raw error."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from gateway.limits.base import Limit, LimitsUnavailable, Want
from gateway.limits.sqlite_store import SqliteLimitStore

RPM = Limit("key:k", "rpm", 10)


def test_a_file_locked_past_the_busy_timeout_is_unavailable_then_usable_again(tmp_path: Path) -> None:
    path = tmp_path / "limits.db"

    async def main() -> None:
        store = SqliteLimitStore(path, busy_timeout_seconds=0.05)
        await store.open()
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another worker holds the write lock and does not let go
        try:
            with pytest.raises(LimitsUnavailable) as unavailable:
                await store.acquire([Want(RPM, 1)], "a", 30)
            assert "limits.db" in unavailable.value.detail and "locked" in unavailable.value.detail
            assert (await store.peek([RPM]))[0].remaining == 10  # readers are not blocked (WAL)
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert (await store.acquire([Want(RPM, 1)], "a", 30)).ok
        await store.close()

    asyncio.run(main())


def test_a_file_that_cannot_be_created_is_unavailable(tmp_path: Path) -> None:
    (tmp_path / "not-a-folder").write_text("")

    async def main() -> None:
        store = SqliteLimitStore(tmp_path / "not-a-folder" / "limits.db")
        with pytest.raises(LimitsUnavailable):
            await store.open()
        with pytest.raises(LimitsUnavailable):
            await store.acquire([Want(RPM, 1)], "a", 30)
        assert not await store.ping()
        await store.close()

    asyncio.run(main())
