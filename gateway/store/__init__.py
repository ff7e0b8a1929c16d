"""Storage: teams, keys, budget usage and the ledger, in SQLite or PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import urllib.parse
from functools import partial
from pathlib import Path
from typing import Any

from gateway.store.base import Store
from gateway.store.sql import Dialect, SqlStore


def default_database_url(data_dir: Path) -> str:
    return f"sqlite:///{data_dir / 'gateway.db'}"


WAL_LIMIT_BYTES = 64 * 1024 * 1024


def _sqlite(path: str, wal_limit_bytes: int = WAL_LIMIT_BYTES) -> Dialect:
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
        # A file that cannot be opened or written, or stays locked past the busy timeout.
        lost=lambda exc: isinstance(exc, sqlite3.OperationalError),
        maintenance="PRAGMA wal_checkpoint(PASSIVE)",
        after_batch=partial(_bound_wal, path + "-wal", wal_limit_bytes),
    )


def _bound_wal(wal: str, limit: int, db: Any) -> None:
    """Keep the write-ahead log under `limit` bytes, on the writer thread between two batches.

    Passive checkpoints (the maintenance thread's) copy pages back but cannot restart the log while writers
    keep appending, so under steady load the file only grows. Between batches this process's writer is idle;
    a TRUNCATE checkpoint then waits for readers (busy timeout), copies the log back and empties it, which
    bounds the file at about `limit` plus one batch, whatever the load. A stat per batch costs microseconds."""
    try:
        size = os.stat(wal).st_size
    except OSError:
        return
    if size > limit:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()


def _postgres(url: str) -> Dialect:
    import psycopg
    from psycopg.types.string import StrDumperUnknown

    class NulFreeStr(StrDumperUnknown):
        """psycopg's own default for str (the unknown oid: the server types it from the query), with NUL as U+FFFD.

        PostgreSQL's text cannot hold NUL (psycopg raises DataError), and text from callers reaches the database:
        an id or name looked up (`GET /v1/files/a%00b`), a batch line's custom_id, a key's name, content in the
        ledger. Refused there, each was a 500, or a ledger row lost in a background write. Replaced, a lookup finds
        nothing (404) and a write keeps the rest of the text; SQLite stores NUL as it is."""

        def dump(self, obj: str) -> Any:
            return super().dump(obj.replace("\x00", "\ufffd") if "\x00" in obj else obj)

    def connect() -> Any:
        # A bounded connect, and TCP keepalives so that a database that vanished without closing the
        # connection (a dead host, a cut network) is noticed in seconds rather than never.
        connection = psycopg.connect(
            url,
            autocommit=True,
            connect_timeout=5,
            keepalives=1,
            keepalives_idle=5,
            keepalives_interval=2,
            keepalives_count=2,
        )
        connection.adapters.register_dumper(str, NulFreeStr)
        return connection

    def lost(exc: BaseException) -> bool:
        return isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError))

    return Dialect(
        name="postgresql",
        connect=connect,
        placeholder="%s",
        begin_write="BEGIN",
        for_update=" FOR UPDATE",
        day_expr="to_char(to_timestamp(ts) AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
        migration_lock="SELECT pg_advisory_xact_lock(7243001)",
        integrity_errors=(psycopg.errors.IntegrityError,),
        lost=lost,
        maintenance=None,
    )


def open_store(url: str, wal_limit_bytes: int = WAL_LIMIT_BYTES) -> Store:
    """A store for `sqlite:///PATH` or `postgresql://...` (not yet connected: call `open`)."""
    if url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///")  # sqlite:///rel.db is relative, sqlite:////abs.db absolute
        return SqlStore(_sqlite(path, wal_limit_bytes), f"sqlite {path}")
    if url.startswith(("postgresql://", "postgres://")):
        return SqlStore(_postgres(url), "postgresql " + url.split("@")[-1])
    raise ValueError(f"unsupported database URL {url.split(':')[0]!r}: use sqlite:///PATH or postgresql://...")


def redacted(url: str) -> str:
    """A database URL without its password (for logs and messages)."""
    parts = urllib.parse.urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    return url


def storage_problem(url: str) -> str | None:
    """None if the database at `url` can be opened and migrated now, else what is wrong, in one line (the URL
    without its password). For start-up: a gateway must not announce itself on a database it cannot use."""

    async def probe() -> None:
        store = open_store(url)
        try:
            await store.open()
        finally:
            try:
                await store.close()
            except Exception:  # closing what never opened: the open's error is the one to report
                pass

    try:
        asyncio.run(probe())
    except Exception as exc:
        cause = exc.__cause__ if exc.__cause__ is not None else exc
        reason = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
        return f"cannot use the database {redacted(url)}: {reason}"
    return None


__all__ = ["Store", "default_database_url", "open_store", "redacted", "storage_problem"]
