"""Limits in a SQLite file: several `--workers` on one node without Redis share them (a per-worker copy in memory
would silently multiply every limit by the worker count).

Each operation is one `BEGIN IMMEDIATE` transaction (SQLite's write lock: the processes take turns) that reads
the limits' cells, runs `gcra` on them and writes them back, on one thread of the store's own so that the event
loop never waits on the file. WAL mode, so that `peek` reads while another process writes. A lock held past the
busy timeout, or a file that cannot be opened or written, is `LimitsUnavailable`.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import orjson

from gateway.limits import gcra
from gateway.limits.base import Grant, Limit, LimitStore, LimitsUnavailable, State, Want

T = TypeVar("T")
SCHEMA = """
CREATE TABLE IF NOT EXISTS limit_cells (
    key TEXT PRIMARY KEY,
    tat_sec REAL NOT NULL,         -- the TAT is tat_sec + tat_off (gcra.Cell)
    tat_off REAL NOT NULL,
    leases TEXT NOT NULL,          -- JSON {holder: expires_at}
    blocked_until REAL NOT NULL,
    idle_at REAL NOT NULL          -- from then on the cell is the same as none (gcra.Cell.idle_at)
) WITHOUT ROWID
"""
# Every this many writes (per process) cells idle for longer than gcra.IDLE_GRACE_SECONDS are deleted.
SWEEP_EVERY = 1000


OPEN_RETRY_SECONDS = 10.0  # how long opening the file is tried again while another process holds it locked


class SqliteLimitStore(LimitStore):
    kind = "sqlite"

    def __init__(self, path: Path, busy_timeout_seconds: float = 2.0) -> None:
        self.path = path
        self.busy_timeout_seconds = busy_timeout_seconds
        self._db: sqlite3.Connection | None = None  # used only on the executor's thread
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="limits-sqlite")
        self._writes = 0

    async def open(self) -> None:
        """Create the file and its table now (else the first call does), so that a bad path fails at start."""
        await self._run(self._connection)

    async def acquire(
        self, wants: Sequence[Want], holder: str, lease_seconds: float, now: float | None = None
    ) -> Grant:
        gcra.check_wants(wants, holder, lease_seconds)

        def run(cells: dict[str, gcra.Cell], at: float) -> tuple[Grant, dict[str, gcra.Cell]]:
            return gcra.acquire(cells, wants, holder, lease_seconds, at)

        return await self._run(self._write, [w.limit.key for w in wants], run, now)

    async def settle(self, limit: Limit, delta: int, now: float | None = None) -> None:
        def run(cells: dict[str, gcra.Cell], at: float) -> tuple[None, dict[str, gcra.Cell]]:
            return None, {limit.key: gcra.settle(cells.get(limit.key, gcra.Cell()), limit, delta, at)}

        await self._run(self._write, [limit.key], run, now)

    async def release(self, limits: Sequence[Limit], holder: str) -> None:
        def run(cells: dict[str, gcra.Cell], at: float) -> tuple[None, dict[str, gcra.Cell]]:
            return None, {key: gcra.release(cell, holder) for key, cell in cells.items()}

        await self._run(self._write, [limit.key for limit in limits], run, None)

    async def peek(self, limits: Sequence[Limit], now: float | None = None) -> tuple[State, ...]:
        def read() -> tuple[State, ...]:
            at = time.time() if now is None else now
            cells = self._load(self._connection(), [limit.key for limit in limits])
            return tuple(gcra.state(cells.get(limit.key, gcra.Cell()), limit, at) for limit in limits)

        return await self._run(read)

    async def block(self, limit: Limit, seconds: float, now: float | None = None) -> None:
        if seconds < 0:
            raise ValueError(f"a block lasts >= 0 seconds, not {seconds}")

        def run(cells: dict[str, gcra.Cell], at: float) -> tuple[None, dict[str, gcra.Cell]]:
            return None, {limit.key: gcra.block(cells.get(limit.key, gcra.Cell()), limit, seconds, at)}

        await self._run(self._write, [limit.key], run, now)

    async def ping(self) -> bool:
        try:
            await self._run(lambda: self._connection().execute("SELECT 1").fetchone())
        except LimitsUnavailable:
            return False
        return True

    async def close(self) -> None:
        def shut() -> None:
            if self._db is not None:
                self._db.close()
                self._db = None

        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, shut)
        finally:
            self._executor.shutdown(wait=False)

    # On the store's thread.

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        except (sqlite3.Error, OSError) as exc:  # locked past the busy timeout, a file or folder not writable
            raise LimitsUnavailable(f"limits file {self.path}: {type(exc).__name__}: {exc}") from exc

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Workers starting together open a new file at the same instant: switching it to WAL takes a lock that
            # SQLite refuses at once ("database is locked"), without waiting out the busy timeout. So the opening is
            # tried again for a while (a backoff on this store's own thread), then the error stands.
            deadline = time.monotonic() + max(self.busy_timeout_seconds, OPEN_RETRY_SECONDS)
            pause = 0.005
            while True:
                try:
                    self._db = self._open()
                    break
                except sqlite3.OperationalError as exc:
                    if "locked" not in str(exc) or time.monotonic() + pause > deadline:
                        raise
                time.sleep(pause)  # (retry backoff, not synchronisation)
                pause = min(pause * 2, 0.2)
        return self._db

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, timeout=self.busy_timeout_seconds)
        try:
            db.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_seconds * 1000)}")
            db.execute("PRAGMA journal_mode=WAL")
            # The state is minutes long at most: losing the last commits to a power cut only forgets some
            # use, so no fsync per transaction.
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(SCHEMA)
        except BaseException:
            db.close()
            raise
        return db

    def _write(
        self,
        keys: Sequence[str],
        run: Callable[[dict[str, gcra.Cell], float], tuple[T, dict[str, gcra.Cell]]],
        now: float | None,
    ) -> T:
        db = self._connection()
        db.execute("BEGIN IMMEDIATE")
        try:
            at = time.time() if now is None else now  # read under the lock: the processes' times then only grow
            cells = self._load(db, keys)
            result, changed = run(cells, at)
            rows = [_row(key, cell) for key, cell in changed.items() if cells.get(key, gcra.Cell()) != cell]
            db.executemany(
                "INSERT INTO limit_cells (key, tat_sec, tat_off, leases, blocked_until, idle_at) VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (key) DO UPDATE SET tat_sec = excluded.tat_sec, tat_off = excluded.tat_off,"
                " leases = excluded.leases,"
                " blocked_until = excluded.blocked_until, idle_at = excluded.idle_at",
                rows,
            )
            self._writes += 1
            if self._writes % SWEEP_EVERY == 0:
                db.execute("DELETE FROM limit_cells WHERE idle_at < ?", (at - gcra.IDLE_GRACE_SECONDS,))
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return result

    @staticmethod
    def _load(db: sqlite3.Connection, keys: Iterable[str]) -> dict[str, gcra.Cell]:
        wanted = sorted(set(keys))
        if not wanted:
            return {}
        marks = ", ".join("?" * len(wanted))
        rows = db.execute(
            f"SELECT key, tat_sec, tat_off, leases, blocked_until FROM limit_cells WHERE key IN ({marks})", wanted
        )
        return {key: gcra.Cell(sec, off, orjson.loads(leases), blocked) for key, sec, off, leases, blocked in rows}


def _row(key: str, cell: gcra.Cell) -> tuple[str, float, float, str, float, float]:
    leases = orjson.dumps(dict(cell.leases)).decode()
    return key, cell.tat_sec, cell.tat_off, leases, cell.blocked_until, cell.idle_at()
