"""Storage: teams, keys, budget usage and the ledger, in SQLite or PostgreSQL."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from gateway.store.base import Store
from gateway.store.sql import Dialect, SqlStore


def default_database_url(data_dir: Path) -> str:
    return f"sqlite:///{data_dir / 'gateway.db'}"


def _sqlite(path: str) -> Dialect:
    def connect() -> Any:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: a commit is in the OS once COMMIT returns, so it survives the
        # process being killed (SIGKILL); only a power loss can take the last commits.
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA busy_timeout=30000")
        # Checkpoints (the only fsync in WAL mode) run on the store's maintenance thread instead of
        # inside whichever commit crosses the threshold, so they never stall a request's commit.
        db.execute("PRAGMA wal_autocheckpoint=0")
        return db

    return Dialect(
        name="sqlite",
        connect=connect,
        placeholder="?",
        begin_write="BEGIN IMMEDIATE",
        for_update="",
        day_expr="strftime('%Y-%m-%d', ts, 'unixepoch')",
        migration_lock=None,
        integrity_errors=(sqlite3.IntegrityError,),
        maintenance="PRAGMA wal_checkpoint(PASSIVE)",
    )


def _postgres(url: str) -> Dialect:
    import psycopg

    def connect() -> Any:
        return psycopg.connect(url, autocommit=True)

    return Dialect(
        name="postgresql",
        connect=connect,
        placeholder="%s",
        begin_write="BEGIN",
        for_update=" FOR UPDATE",
        day_expr="to_char(to_timestamp(ts) AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
        migration_lock="SELECT pg_advisory_xact_lock(7243001)",
        integrity_errors=(psycopg.errors.IntegrityError,),
        maintenance=None,
    )


def open_store(url: str) -> Store:
    """A store for `sqlite:///PATH` or `postgresql://...` (not yet connected: call `open`)."""
    if url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///")  # sqlite:///rel.db is relative, sqlite:////abs.db absolute
        return SqlStore(_sqlite(path), f"sqlite {path}")
    if url.startswith(("postgresql://", "postgres://")):
        return SqlStore(_postgres(url), "postgresql " + url.split("@")[-1])
    raise ValueError(f"unsupported database URL {url.split(':')[0]!r}: use sqlite:///PATH or postgresql://...")


__all__ = ["Store", "default_database_url", "open_store"]
