"""The SQLite limits file when it cannot be used: held locked past the busy timeout (another process stuck in a
transaction), or impossible to create; either is `LimitsUnavailable`, returned, never a hang or a raw error."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.limits.base import Limit, LimitStore, LimitsUnavailable, Want
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


def test_opening_a_file_another_process_holds_locked_is_tried_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Workers starting together switch a new file to WAL at the same instant and SQLite refuses one at once
    ("database is locked", without its busy timeout): the opening is tried again; another error is not."""

    from gateway.limits import sqlite_store

    store = sqlite_store.SqliteLimitStore(tmp_path / "limits.db")
    real, calls = store._open, []

    def locked_twice() -> sqlite3.Connection:
        calls.append(1)
        if len(calls) <= 2:
            raise sqlite3.OperationalError("database is locked")
        return real()

    monkeypatch.setattr(store, "_open", locked_twice)
    open_and_close(store)
    assert len(calls) == 3

    broken = sqlite_store.SqliteLimitStore(tmp_path / "other.db")
    monkeypatch.setattr(broken, "_open", refusing("disk I/O error"))
    with pytest.raises(LimitsUnavailable, match="disk I/O error"):
        open_and_close(broken)

    stuck = sqlite_store.SqliteLimitStore(tmp_path / "stuck.db", busy_timeout_seconds=0.05)
    monkeypatch.setattr(sqlite_store, "OPEN_RETRY_SECONDS", 0.05)
    monkeypatch.setattr(stuck, "_open", refusing("database is locked"))
    with pytest.raises(LimitsUnavailable, match="locked"):
        open_and_close(stuck)


def open_and_close(store: LimitStore) -> None:
    async def main() -> None:
        try:
            await store.open()
        finally:
            await store.close()

    asyncio.run(main())


def refusing(message: str) -> Callable[[], sqlite3.Connection]:
    """An `_open` that SQLite refuses with `message`."""

    def open_() -> sqlite3.Connection:
        raise sqlite3.OperationalError(message)

    return open_
