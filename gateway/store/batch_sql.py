"""BatchStore (gateway/store/batches.py) over SQLite and PostgreSQL, on the threads and connections of a SqlStore.

Every write is one transaction on the store's writer thread, every read a query on its reader thread, so batches
share the request path's connections and its way of serialising writers (SQLite: `BEGIN IMMEDIATE`; PostgreSQL:
row locks). The budget side (holds, charges) is the SqlStore's own code (`_hold`, `_release`, `_insert_ledger`)
and takes budget rows in its lock order (a hold before the usage rows, usage rows sorted by scope), so a batch's
settlements and the request path never deadlock each other.

gateway/store/sql.py imports this module (SqlStore makes its `batches`), so the SqlStore is described here by what
it offers (`SqlHost`) rather than imported.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import fields, replace
from typing import Any, Protocol, TypeVar

import orjson

from gateway.store.base import Conflict, HoldRequest, HoldResult, LedgerRow, Scope
from gateway.store.batches import (
    BATCH_ACTIVE,
    BatchLine,
    BatchRecord,
    BatchStore,
    FileRecord,
    LineResult,
    ProviderJob,
)

T = TypeVar("T")

# States a line can still leave (settle_line, assign_lines); every other state is an end.
OPEN_LINE_STATES = ("pending", "submitted")
# Statuses a cancel request applies to (OpenAI: a batch is cancelled while validating or running; one already
# cancelling, or finished, is left as it is).
CANCELLABLE = ("validating", "in_progress", "finalizing")
JSON_COLUMNS = frozenset({"metadata", "errors", "plan"})


class DialectLike(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def for_update(self) -> str: ...

    @property
    def integrity_errors(self) -> tuple[type[BaseException], ...]: ...


class SqlHost(Protocol):
    """What SqlBatchStore uses of the SqlStore whose threads it shares (gateway/store/sql.py)."""

    @property
    def dialect(self) -> DialectLike: ...

    def _sql(self, text: str) -> str: ...

    def _read(self, sql: str, params: Sequence[Any] = ()) -> Awaitable[list[Sequence[Any]]]: ...

    def _transact(self, work: Callable[[Any], T]) -> Awaitable[T]: ...

    def _hold(self, cur: Any, request: HoldRequest) -> HoldResult: ...

    def _release(self, cur: Any, hold_id: str) -> None: ...

    def _insert_ledger(self, cur: Any, row: LedgerRow) -> None: ...


# Columns in the order of each dataclass's fields (a line's `index` is the column `idx`: INDEX is a keyword).
FILE_FIELDS = tuple(f.name for f in fields(FileRecord))
BATCH_FIELDS = tuple(f.name for f in fields(BatchRecord))
LINE_FIELDS = tuple(f.name for f in fields(BatchLine))
JOB_FIELDS = tuple(f.name for f in fields(ProviderJob))
FILE_COLUMNS = ", ".join(FILE_FIELDS)
BATCH_COLUMNS = ", ".join(BATCH_FIELDS)
LINE_COLUMNS = ", ".join("idx" if name == "index" else name for name in LINE_FIELDS)
JOB_COLUMNS = ", ".join(JOB_FIELDS)


def _marks(count: int) -> str:
    return ", ".join("?" * count)


def _json(value: object) -> str | None:
    return orjson.dumps(value).decode() if value is not None else None


def _scopes_json(scopes: Sequence[Scope]) -> str:
    """The `scopes` column: [[name, period_start, budget_nanos or null], ...]."""
    return orjson.dumps([[s.name, s.period_start, s.budget_nanos] for s in scopes]).decode()


def _batch_values(batch: BatchRecord) -> tuple[Any, ...]:
    values: list[Any] = []
    for name in BATCH_FIELDS:
        value = getattr(batch, name)
        if name in JSON_COLUMNS:
            value = _json(value)
        elif name == "scopes":
            value = _scopes_json(value)
        values.append(value)
    return tuple(values)


def _batch(row: Sequence[Any]) -> BatchRecord:
    values: dict[str, Any] = {}
    for name, value in zip(BATCH_FIELDS, row, strict=True):
        if name in JSON_COLUMNS:
            value = orjson.loads(value) if value is not None else None
        elif name == "scopes":
            value = [Scope(scope, int(start), budget) for scope, start, budget in orjson.loads(value)]
        values[name] = value
    return BatchRecord(**values)


def _line_values(line: BatchLine) -> tuple[Any, ...]:
    return tuple(getattr(line, name) for name in LINE_FIELDS)


def _line(row: Sequence[Any]) -> BatchLine:
    return BatchLine(*row)


def _file(row: Sequence[Any]) -> FileRecord:
    return FileRecord(*row)


def _job(row: Sequence[Any]) -> ProviderJob:
    return ProviderJob(*row)


class _Refused(Exception):
    """The batch's hold was refused: the transaction rolls back (nothing written) and the refusal is returned."""

    def __init__(self, result: HoldResult) -> None:
        super().__init__("hold refused")
        self.result = result


class SqlBatchStore(BatchStore):
    def __init__(self, store: SqlHost) -> None:
        self._store = store

    def _sql(self, text: str) -> str:
        return self._store._sql(text)

    async def _transact(self, work: Callable[[Any], T]) -> T:
        try:
            return await self._store._transact(work)
        except self._store.dialect.integrity_errors as exc:
            raise Conflict(str(exc)) from exc

    def _page_after(self, table: str, after: str | None, newest_first: bool) -> tuple[str, list[Any]]:
        """The condition "after the row `after`" in the order (created_at, id), descending or ascending; an `after`
        that does not exist (deleted) matches nothing, as a row comparison with NULL is never true."""
        if after is None:
            return "", []
        direction = "<" if newest_first else ">"
        return f"(created_at, id) {direction} (SELECT created_at, id FROM {table} WHERE id = ?)", [after]

    # -- files ---------------------------------------------------------------------------------------------
    async def create_file(self, record: FileRecord, parts: Sequence[bytes]) -> None:
        insert_file = self._sql(f"INSERT INTO files ({FILE_COLUMNS}) VALUES ({_marks(len(FILE_FIELDS))})")
        insert_part = self._sql("INSERT INTO file_parts (file_id, seq, data) VALUES (?, ?, ?)")
        values = tuple(getattr(record, name) for name in FILE_FIELDS)

        def run(cur: Any) -> None:
            cur.execute(insert_file, values)
            if parts:
                cur.executemany(insert_part, [(record.id, seq, bytes(part)) for seq, part in enumerate(parts)])

        await self._transact(run)

    async def get_file(self, file_id: str) -> FileRecord | None:
        rows = await self._store._read(f"SELECT {FILE_COLUMNS} FROM files WHERE id = ?", (file_id,))
        return _file(rows[0]) if rows else None

    async def file_parts(self, file_id: str) -> list[bytes]:
        rows = await self._store._read("SELECT data FROM file_parts WHERE file_id = ? ORDER BY seq", (file_id,))
        return [bytes(row[0]) for row in rows]

    async def list_files(
        self, team: str | None, purpose: str | None, after: str | None, limit: int, newest_first: bool = True
    ) -> tuple[list[FileRecord], bool]:
        clauses: list[str] = []
        params: list[Any] = []
        for column, value in (("team", team), ("purpose", purpose)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        cursor, cursor_params = self._page_after("files", after, newest_first)
        if cursor:
            clauses.append(cursor)
            params += cursor_params
        where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
        order = "DESC" if newest_first else "ASC"
        rows = await self._store._read(
            f"SELECT {FILE_COLUMNS} FROM files{where} ORDER BY created_at {order}, id {order} LIMIT ?",
            [*params, limit + 1],
        )
        return [_file(r) for r in rows[:limit]], len(rows) > limit

    async def delete_file(self, file_id: str) -> bool:
        delete_parts = self._sql("DELETE FROM file_parts WHERE file_id = ?")
        delete_file = self._sql("DELETE FROM files WHERE id = ?")

        def run(cur: Any) -> bool:
            cur.execute(delete_parts, (file_id,))
            cur.execute(delete_file, (file_id,))
            return bool(cur.rowcount > 0)

        return await self._transact(run)

    # -- batches -------------------------------------------------------------------------------------------
    async def create_batch(
        self, batch: BatchRecord, lines: Sequence[BatchLine], hold: HoldRequest | None
    ) -> HoldResult:
        """As the interface says; on success `batch.hold_id` and `batch.reserved_nanos` are what was taken. A
        batch's hold belongs to no process (`instance` None: it outlives the one that created it) and is given
        back line by line (`settle_line`) and at the end (`release_hold`)."""
        if hold is not None:
            hold = replace(hold, instance=None)
        insert_batch = self._sql(f"INSERT INTO batches ({BATCH_COLUMNS}) VALUES ({_marks(len(BATCH_FIELDS))})")
        write_lines = self._line_writer()

        def run(cur: Any) -> tuple[HoldResult, BatchRecord]:
            result = HoldResult(True)
            stored = batch
            if hold is not None:
                result = self._store._hold(cur, hold)
                if not result.ok:
                    raise _Refused(result)
                stored = replace(batch, hold_id=hold.id, reserved_nanos=result.granted_nanos)
            cur.execute(insert_batch, _batch_values(stored))
            if lines:
                write_lines(cur, lines)
            return result, stored

        try:
            result, stored = await self._transact(run)
        except _Refused as refused:
            return refused.result
        batch.hold_id, batch.reserved_nanos = stored.hold_id, stored.reserved_nanos
        return result

    def _line_writer(self) -> Callable[[Any, Sequence[BatchLine]], None]:
        """How to insert many lines with a cursor: PostgreSQL's COPY, which took 0.8 s for 100,000 lines where
        executemany took 2.7 s on this machine (the writer thread, shared with the request path, is busy that long);
        SQLite's executemany (1.3 s for the same lines, with the batch's hold and record)."""
        if self._store.dialect.name == "postgresql":
            copy = f"COPY batch_lines ({LINE_COLUMNS}) FROM STDIN"

            def by_copy(cur: Any, lines: Sequence[BatchLine]) -> None:
                with cur.copy(copy) as stream:
                    for line in lines:
                        stream.write_row(_line_values(line))

            return by_copy
        insert = self._sql(f"INSERT INTO batch_lines ({LINE_COLUMNS}) VALUES ({_marks(len(LINE_FIELDS))})")

        def by_insert(cur: Any, lines: Sequence[BatchLine]) -> None:
            cur.executemany(insert, [_line_values(line) for line in lines])

        return by_insert

    async def get_batch(self, batch_id: str) -> BatchRecord | None:
        rows = await self._store._read(f"SELECT {BATCH_COLUMNS} FROM batches WHERE id = ?", (batch_id,))
        return _batch(rows[0]) if rows else None

    async def list_batches(self, team: str | None, after: str | None, limit: int) -> tuple[list[BatchRecord], bool]:
        clauses: list[str] = []
        params: list[Any] = []
        if team is not None:
            clauses.append("team = ?")
            params.append(team)
        cursor, cursor_params = self._page_after("batches", after, newest_first=True)
        if cursor:
            clauses.append(cursor)
            params += cursor_params
        where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
        rows = await self._store._read(
            f"SELECT {BATCH_COLUMNS} FROM batches{where} ORDER BY created_at DESC, id DESC LIMIT ?",
            [*params, limit + 1],
        )
        return [_batch(r) for r in rows[:limit]], len(rows) > limit

    async def update_batch(self, batch: BatchRecord, expect_status: str | None = None) -> bool:
        """As the interface says. The counts written are the record's: `settle_line` moves them in the database and
        in the record it is given alike, so the lease holder's record stays current."""
        mutable = (
            "status",
            "in_progress_at",
            "finalizing_at",
            "completed_at",
            "failed_at",
            "expired_at",
            "cancelling_at",
            "cancelled_at",
            "errors",
            "total",
            "completed",
            "failed",
            "plan",
        )
        values: list[Any] = [_json(getattr(batch, n)) if n in JSON_COLUMNS else getattr(batch, n) for n in mutable]
        sql = "UPDATE batches SET " + ", ".join(f"{n} = ?" for n in mutable) + " WHERE id = ?"
        values.append(batch.id)
        if expect_status is not None:
            sql += " AND status = ?"
            values.append(expect_status)
        text = self._sql(sql)

        def run(cur: Any) -> bool:
            cur.execute(text, values)
            return bool(cur.rowcount > 0)

        return await self._transact(run)

    async def request_cancel(self, batch_id: str, now: int) -> BatchRecord | None:
        cancel = self._sql(
            f"UPDATE batches SET status = 'cancelling', cancelling_at = ? WHERE id = ? AND status IN ({_marks(3)})"
        )
        read = self._sql(f"SELECT {BATCH_COLUMNS} FROM batches WHERE id = ?")

        def run(cur: Any) -> BatchRecord | None:
            cur.execute(cancel, (now, batch_id, *CANCELLABLE))
            cur.execute(read, (batch_id,))
            row = cur.fetchone()
            return _batch(row) if row is not None else None

        return await self._transact(run)

    async def lease(self, owner: str, now: int, until: int, limit: int) -> list[BatchRecord]:
        # One statement: the batches picked are updated in the same transaction. PostgreSQL locks the picked rows
        # and skips rows another node is leasing at this moment (SKIP LOCKED; a row it had to wait for is
        # re-checked against the WHERE as committed, so a lease just taken is never taken twice); SQLite runs the
        # whole transaction under its one write lock (BEGIN IMMEDIATE).
        skip_locked = " FOR UPDATE SKIP LOCKED" if self._store.dialect.name == "postgresql" else ""
        text = self._sql(
            "UPDATE batches SET lease_owner = ?, lease_until = ? WHERE id IN ("
            f"SELECT id FROM batches WHERE status IN ({_marks(len(BATCH_ACTIVE))})"
            " AND (lease_owner IS NULL OR lease_until < ? OR lease_owner = ?)"
            f" ORDER BY created_at, id LIMIT ?{skip_locked}) RETURNING {BATCH_COLUMNS}"
        )

        def run(cur: Any) -> list[BatchRecord]:
            cur.execute(text, (owner, until, *BATCH_ACTIVE, now, owner, limit))
            return [_batch(r) for r in cur.fetchall()]

        leased = await self._transact(run)
        return sorted(leased, key=lambda b: (b.created_at, b.id))  # RETURNING promises no order

    async def renew_leases(self, batch_ids: Sequence[str], owner: str, until: int) -> set[str]:
        if not batch_ids:
            return set()
        ids = list(dict.fromkeys(batch_ids))
        text = self._sql(
            f"UPDATE batches SET lease_until = ? WHERE lease_owner = ? AND id IN ({_marks(len(ids))}) RETURNING id"
        )

        def run(cur: Any) -> set[str]:
            cur.execute(text, (until, owner, *ids))
            return {row[0] for row in cur.fetchall()}

        return await self._transact(run)

    async def release_lease(self, batch_id: str, owner: str) -> None:
        text = self._sql("UPDATE batches SET lease_owner = NULL, lease_until = 0 WHERE id = ? AND lease_owner = ?")

        def run(cur: Any) -> None:
            cur.execute(text, (batch_id, owner))

        await self._transact(run)

    # -- lines ---------------------------------------------------------------------------------------------
    async def lines(
        self, batch_id: str, states: Sequence[str] | None = None, after_index: int = -1, limit: int = 1000
    ) -> list[BatchLine]:
        params: list[Any] = [batch_id, after_index]
        in_states = ""
        if states is not None:
            if not states:
                return []
            in_states = f" AND state IN ({_marks(len(states))})"
            params += list(states)
        rows = await self._store._read(
            f"SELECT {LINE_COLUMNS} FROM batch_lines WHERE batch_id = ? AND idx > ?{in_states} ORDER BY idx LIMIT ?",
            [*params, limit],
        )
        return [_line(r) for r in rows]

    async def line_counts(self, batch_id: str) -> dict[tuple[str, str], int]:
        rows = await self._store._read(
            "SELECT mode, state, COUNT(*) FROM batch_lines WHERE batch_id = ? GROUP BY mode, state", (batch_id,)
        )
        return {(mode, state): int(count) for mode, state, count in rows}

    async def totals(self, batch_id: str) -> dict[str, int]:
        used = await self._store._read(
            "SELECT COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0),"
            " COALESCE(SUM(cached_tokens), 0), COALESCE(SUM(cost_nanos), 0) FROM ledger WHERE batch_id = ?",
            (batch_id,),
        )
        # Lines answered on a batch API know their interactive price too; the others ran at it (difference 0).
        saved = await self._store._read(
            "SELECT COALESCE(SUM(list_cost_nanos - cost_nanos), 0) FROM batch_lines"
            " WHERE batch_id = ? AND mode = 'batch' AND state = 'done'",
            (batch_id,),
        )
        prompt, completion, cached, cost = (int(value) for value in used[0])
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "cached_tokens": cached,
            "cost_nanos": cost,
            "list_cost_nanos": cost + int(saved[0][0]),
        }

    async def assign_lines(self, batch_id: str, indexes: Sequence[int], job_id: str | None, state: str) -> None:
        """As the interface says, for the lines among `indexes` that have not ended (an ended line keeps its end)."""
        text = self._sql(
            f"UPDATE batch_lines SET job_id = ?, state = ? WHERE batch_id = ? AND idx = ? AND state IN ({_marks(2)})"
        )
        values = [(job_id, state, batch_id, index, *OPEN_LINE_STATES) for index in indexes]
        if not values:
            return

        def run(cur: Any) -> None:
            cur.executemany(text, values)

        await self._transact(run)

    async def settle_line(self, batch: BatchRecord, index: int, result: LineResult) -> bool:
        """As the interface says; a line that does not exist is a KeyError. On True, `batch.completed` or
        `batch.failed` has moved as the stored counts did (completed: done with status 200; failed: any other end).
        The batch's `id`, `hold_id` and `scopes` are used as given (none of them changes after `create_batch`)."""
        dialect = self._store.dialect
        read_line = self._sql(
            "SELECT state, reserved_nanos FROM batch_lines WHERE batch_id = ? AND idx = ?" + dialect.for_update
        )
        write_line = self._sql(
            "UPDATE batch_lines SET state = ?, status_code = ?, response = ?, prompt_tokens = ?,"
            " completion_tokens = ?, cached_tokens = ?, cost_nanos = ?, list_cost_nanos = ?"
            " WHERE batch_id = ? AND idx = ?"
        )
        read_hold = self._sql("SELECT scopes, amount_nanos FROM holds WHERE id = ?" + dialect.for_update)
        shrink_hold = self._sql("UPDATE holds SET amount_nanos = amount_nanos - ? WHERE id = ?")
        # One statement per scope charges the cost and gives back the line's share, whichever applies (0 for the
        # other); the reservation never goes below zero.
        usage = self._sql(
            "INSERT INTO budget_usage (scope, period_start, spent_nanos) VALUES (?, ?, ?)"
            " ON CONFLICT (scope, period_start) DO UPDATE SET spent_nanos = budget_usage.spent_nanos + ?,"
            " reserved_nanos = CASE WHEN budget_usage.reserved_nanos > ? THEN budget_usage.reserved_nanos - ?"
            " ELSE 0 END"
        )
        answered = result.state == "done" and result.status_code == 200
        completed, failed = (1, 0) if answered else (0, 1)
        count = self._sql("UPDATE batches SET completed = completed + ?, failed = failed + ? WHERE id = ?")
        row = result.row

        def run(cur: Any) -> bool:
            # Lock order: the line, the hold, the usage rows sorted by scope (as `_release` and `_usage_rows`
            # take them), the batch.
            cur.execute(read_line, (batch.id, index))
            found = cur.fetchone()
            if found is None:
                raise KeyError(f"batch {batch.id} has no line {index}")
            state, reserved = found
            if state not in OPEN_LINE_STATES:
                return False
            cur.execute(
                write_line,
                (
                    result.state,
                    result.status_code,
                    result.response,
                    row.prompt_tokens if row else 0,
                    row.completion_tokens if row else 0,
                    row.cached_tokens if row else 0,
                    row.cost_nanos if row else 0,
                    result.list_cost_nanos,
                    batch.id,
                    index,
                ),
            )
            give = 0
            held: set[tuple[str, int]] = set()
            if batch.hold_id is not None and reserved > 0:
                cur.execute(read_hold, (batch.hold_id,))
                hold = cur.fetchone()
                if hold is not None:  # None: released already (the batch ended, or the hold expired)
                    give = min(int(reserved), int(hold[1]))
                if give > 0:
                    held = {(name, int(start)) for name, start in orjson.loads(hold[0])}
                    cur.execute(shrink_hold, (give, batch.hold_id))
            charged: set[tuple[str, int]] = set()
            cost = 0
            if row is not None:
                self._store._insert_ledger(cur, row)
                cost = row.cost_nanos
                charged = {(s.name, s.period_start) for s in batch.scopes}
            for name, start in sorted(charged | held):
                spent = cost if (name, start) in charged else 0
                back = give if (name, start) in held else 0
                cur.execute(usage, (name, start, spent, spent, back, back))
            cur.execute(count, (completed, failed, batch.id))
            return True

        settled = await self._transact(run)
        if settled:
            batch.completed += completed
            batch.failed += failed
        return settled

    async def release_hold(self, batch: BatchRecord) -> None:
        hold_id = batch.hold_id
        if hold_id is None:
            return
        await self._transact(lambda cur: self._store._release(cur, hold_id))

    # -- provider jobs -------------------------------------------------------------------------------------
    async def save_job(self, job: ProviderJob) -> None:
        updates = ", ".join(f"{name} = excluded.{name}" for name in JOB_FIELDS if name != "id")
        text = self._sql(
            f"INSERT INTO batch_jobs ({JOB_COLUMNS}) VALUES ({_marks(len(JOB_FIELDS))})"
            f" ON CONFLICT (id) DO UPDATE SET {updates}"
        )
        values = tuple(getattr(job, name) for name in JOB_FIELDS)

        def run(cur: Any) -> None:
            cur.execute(text, values)

        await self._transact(run)

    async def jobs(self, batch_id: str) -> list[ProviderJob]:
        rows = await self._store._read(
            f"SELECT {JOB_COLUMNS} FROM batch_jobs WHERE batch_id = ? ORDER BY created_at, id", (batch_id,)
        )
        return [_job(r) for r in rows]
