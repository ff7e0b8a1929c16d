"""The batch store (gateway/store/batch_sql.py) through its interface (gateway/store/batches.py), on a real database.

Every test runs on SQLite in tmp_path and on PostgreSQL (a fresh database for this module, a schema of its own per
test, so that `lease` sees only the test's batches), the latter marked slow as the other PostgreSQL tests are. A
missing PostgreSQL server fails those tests, it never skips them.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import pytest

from gateway.store import open_store
from gateway.store.base import Conflict, HoldRequest, LedgerRow, Scope, ScopeUsage, Settlement, SpendFilter, Store
from gateway.store.batches import BATCH_STATUSES, BatchLine, BatchRecord, FileRecord, LineResult, ProviderJob
from gateway.store.schema import MIGRATIONS
from tests.store.test_sql import ledger_row, migrate_up_to, raw_connection
from tests.support.postgres import fresh_database

T = TypeVar("T")
PERIOD = 1_700_000_000
FAR = 4_000_000_000  # a hold expiry that never comes in these tests
TEAM = Scope("team:eng", PERIOD, 10_000)
KEY = Scope("key:k1", PERIOD, None)


@pytest.fixture(scope="module")
def postgres_database() -> Iterator[str]:
    with fresh_database("gateway_batches_test") as url:
        yield url


@contextlib.contextmanager
def schema_of(database_url: str) -> Iterator[str]:
    """A URL whose connections use a fresh schema of the database at `database_url`, dropped afterwards."""
    import psycopg

    schema = f"batches_{secrets.token_hex(6)}"
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
        try:
            yield f"{database_url}?options=-csearch_path%3D{schema}"
        finally:
            admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'gateway.db'}"
    else:
        with schema_of(request.getfixturevalue("postgres_database")) as url:
            yield url


def using(url: str, body: Callable[[Store], Awaitable[T]]) -> T:
    """Open a store at `url`, run `body` on it, close it (also when `body` fails)."""

    async def main() -> T:
        store = open_store(url)
        await store.open()
        try:
            return await asyncio.wait_for(body(store), 60)
        finally:
            await store.close()

    return asyncio.run(main())


def using_two(url: str, body: Callable[[Store, Store], Awaitable[T]]) -> T:
    """`using`, with two stores on the same database (as two gateway processes have)."""

    async def main() -> T:
        first, second = open_store(url), open_store(url)
        await first.open()
        await second.open()
        try:
            return await asyncio.wait_for(body(first, second), 60)
        finally:
            await first.close()
            await second.close()

    return asyncio.run(main())


# -- builders ------------------------------------------------------------------------------------


def file_of(file_id: str, created_at: int = 1_000, team: str = "eng", **fields: Any) -> FileRecord:
    values: dict[str, Any] = {
        "id": file_id,
        "team": team,
        "key_id": "k1",
        "purpose": "batch",
        "filename": f"{file_id}.jsonl",
        "bytes": 10,
        "created_at": created_at,
        "location": "db",
        "sha256": "0" * 64,
        "lines": 2,
    }
    values.update(fields)
    return FileRecord(**values)


def batch_of(batch_id: str, created_at: int = 1_000, team: str = "eng", **fields: Any) -> BatchRecord:
    values: dict[str, Any] = {
        "id": batch_id,
        "team": team,
        "key_id": "k1",
        "key_prefix": "sk-gw-k1",
        "input_file_id": "file-in",
        "endpoint": "/v1/chat/completions",
        "completion_window": "24h",
        "status": "validating",
        "created_at": created_at,
        "expires_at": created_at + 86_400,
        "scopes": [TEAM, KEY],
    }
    values.update(fields)
    return BatchRecord(**values)


def lines_of(batch_id: str, count: int, reserved: int = 0, **fields: Any) -> list[BatchLine]:
    return [
        BatchLine(
            batch_id,
            index,
            f"req-{index}",
            fields.get("mode", "batch"),
            fields.get("state", "pending"),
            f'{{"model": "m", "messages": [{{"role": "user", "content": "line {index}"}}]}}',
            model="mistral-small",
            provider="mistral",
            region="eu",
            route_reason="cheapest",
            reserved_nanos=reserved,
        )
        for index in range(count)
    ]


def hold_for(hold_id: str, amount: int, scopes: list[Scope] | None = None, instance: str | None = None) -> HoldRequest:
    return HoldRequest(hold_id, scopes if scopes is not None else [TEAM, KEY], amount, FAR, instance=instance)


def row_of(row_id: str, cost: int, batch_id: str | None = None, custom_id: str | None = None) -> LedgerRow:
    return ledger_row(row_id, cost, batch_id=batch_id, custom_id=custom_id, prompt_tokens=11, completion_tokens=7)


def answered(row: LedgerRow | None, status: int = 200, list_cost: int = 0) -> LineResult:
    return LineResult("done", status, '{"id": "chatcmpl-1"}', row, list_cost)


async def usages(store: Store, *scopes: Scope) -> list[ScopeUsage]:
    return [await store.usage(s.name, s.period_start) for s in scopes]


# -- migration -----------------------------------------------------------------------------------


# A ledger row as the release before migration 5 wrote it (every column up to `endpoint`).
V4_LEDGER_COLUMNS = (
    "id, ts, team, key_id, key_prefix, requested_model, model, provider, region, prompt_tokens, completion_tokens,"
    " cached_tokens, cost_nanos, estimated, status, latency_ms, ttft_ms, route_reason, stream, content, endpoint"
)
V4_ROW = ("old-1", 1_700_000_000.5, "eng", "k1", "sk-gw-k1", "auto", "mistral-small", "mistral", "eu")
V4_ROW += (10, 5, 2, 700, False, 200, 12.5, 3.25, "preferred", True, None, "messages")


def test_a_database_of_schema_4_gains_the_batch_tables_and_the_ledgers_batch_columns(database_url: str) -> None:
    with raw_connection(database_url) as (db, ph):
        migrate_up_to(db, ph, 4)
        db.execute(f"INSERT INTO ledger ({V4_LEDGER_COLUMNS}) VALUES ({', '.join([ph] * 21)})", V4_ROW)
        db.execute(
            f"INSERT INTO teams (name, period, policy, created_at, rpm) VALUES ({ph}, {ph}, {ph}, {ph}, {ph})",
            ("eng", "monthly", "default", 1, 60),
        )

    async def main(store: Store) -> dict[str, Any]:
        before = await store.ledger_rows(SpendFilter())
        await store.record(Settlement(row_of("new-1", 40, "batch_1", "req-0"), []))
        await store.batches.create_file(file_of("file-1"), [b"{}\n"])
        return {
            "before": before,
            "team": await store.get_team("eng"),
            "by_batch": {r.group: r.cost_nanos for r in await store.spend(SpendFilter(), "batch")},
            "file": await store.batches.file_parts("file-1"),
        }

    out = using(database_url, main)
    # The old row, every field as it was written, belongs to no batch.
    assert out["before"] == [LedgerRow(*V4_ROW)]
    assert (out["before"][0].batch_id, out["before"][0].custom_id) == (None, None)
    assert out["team"] is not None and out["team"].rates.rpm == 60
    assert out["by_batch"] == {None: 700, "batch_1": 40}
    assert out["file"] == [b"{}\n"]
    with raw_connection(database_url) as (db, _):
        versions = [row[0] for row in db.execute("SELECT version FROM schema_version ORDER BY version").fetchall()]
    assert versions == [version for version, _ in MIGRATIONS] and versions[:5] == [1, 2, 3, 4, 5]
    # Opened again: nothing is migrated twice (a second CREATE TABLE would fail) and the rows are all there.
    assert len(using(database_url, lambda store: store.ledger_rows(SpendFilter()))) == 2


# -- files ---------------------------------------------------------------------------------------


def test_a_files_parts_come_back_byte_for_byte_and_in_order(database_url: str) -> None:
    every_byte = bytes(range(256))
    parts = [b'{"custom_id": "a"}\n', every_byte, b"", b"\x00\x00\xff not utf-8 \xc3\x28", b"12.5", every_byte * 300]

    async def main(store: Store) -> dict[str, Any]:
        await store.batches.create_file(file_of("file-a"), parts)
        await store.batches.create_file(file_of("file-disk", location="disk"), [])
        with pytest.raises(Conflict):
            await store.batches.create_file(file_of("file-a"), [b"other"])
        return {
            "record": await store.batches.get_file("file-a"),
            "parts": await store.batches.file_parts("file-a"),
            "disk": await store.batches.file_parts("file-disk"),
            "missing": await store.batches.get_file("file-nope"),
        }

    out = using(database_url, main)
    assert out["record"] == file_of("file-a")
    assert out["parts"] == parts  # the conflicting second upload changed nothing
    assert out["disk"] == [] and out["missing"] is None


def test_delete_file_removes_its_row_and_parts_only(database_url: str) -> None:
    async def main(store: Store) -> dict[str, Any]:
        await store.batches.create_file(file_of("file-a"), [b"a1", b"a2"])
        await store.batches.create_file(file_of("file-b"), [b"b1"])
        first = await store.batches.delete_file("file-a")
        second = await store.batches.delete_file("file-a")
        return {
            "deleted": (first, second),
            "a": (await store.batches.get_file("file-a"), await store.batches.file_parts("file-a")),
            "b": (await store.batches.get_file("file-b"), await store.batches.file_parts("file-b")),
        }

    out = using(database_url, main)
    assert out["deleted"] == (True, False)
    assert out["a"] == (None, [])
    assert out["b"] == (file_of("file-b"), [b"b1"])


def test_list_files_pages_newest_first_with_a_cursor(database_url: str) -> None:
    # Two files share a creation second: the id breaks the tie, so no page repeats or skips one.
    files = [
        file_of("file-1", 100),
        file_of("file-2", 200),
        file_of("file-3", 200),
        file_of("file-4", 300, purpose="fine-tune"),
        file_of("file-5", 400),
        file_of("file-6", 500, team="ops"),
    ]

    async def main(store: Store) -> dict[str, Any]:
        for record in reversed(files):
            await store.batches.create_file(record, [])
        out: dict[str, Any] = {"pages": []}
        after = None
        while True:
            page, more = await store.batches.list_files("eng", None, after, 2)
            out["pages"].append(([f.id for f in page], more))
            if not more:
                break
            after = page[-1].id
        out["batch_only"] = await store.batches.list_files("eng", "batch", None, 10)
        out["everyone"] = await store.batches.list_files(None, None, None, 10)
        out["oldest_first"] = await store.batches.list_files("eng", None, "file-2", 2, newest_first=False)
        out["gone_cursor"] = await store.batches.list_files("eng", None, "file-nope", 10)
        out["exact"] = await store.batches.list_files("ops", None, None, 1)
        return out

    out = using(database_url, main)
    assert out["pages"] == [(["file-5", "file-4"], True), (["file-3", "file-2"], True), (["file-1"], False)]
    assert [f.id for f in out["batch_only"][0]] == ["file-5", "file-3", "file-2", "file-1"]
    assert [f.id for f in out["everyone"][0]] == ["file-6", "file-5", "file-4", "file-3", "file-2", "file-1"]
    assert ([f.id for f in out["oldest_first"][0]], out["oldest_first"][1]) == (["file-3", "file-4"], True)
    assert out["gone_cursor"] == ([], False)
    assert ([f.id for f in out["exact"][0]], out["exact"][1]) == (["file-6"], False)


# -- creating batches ------------------------------------------------------------------------------


def test_create_batch_without_a_hold_stores_the_batch_and_every_line(database_url: str) -> None:
    batch = batch_of(
        "batch_1",
        metadata={"project": "nightly", "note": "ünïcode"},
        errors=[{"code": "invalid_json", "line": 3, "message": "bad"}],
        plan={"mistral-small": {"lines": 2, "cost_nanos": 123}},
        total=3,
        failed=1,
        scopes=[Scope("team:eng", PERIOD, None), Scope("key:k1", PERIOD, 5_000)],
    )
    lines = [*lines_of("batch_1", 2), BatchLine("batch_1", 2, "bad", "invalid", "failed", None, response='{"e": 1}')]

    async def main(store: Store) -> dict[str, Any]:
        result = await store.batches.create_batch(batch, lines, None)
        with pytest.raises(Conflict):
            await store.batches.create_batch(batch_of("batch_1"), [], None)
        return {
            "result": result,
            "batch": await store.batches.get_batch("batch_1"),
            "lines": await store.batches.lines("batch_1"),
            "usage": await usages(store, TEAM),
            "missing": await store.batches.get_batch("batch_nope"),
        }

    out = using(database_url, main)
    assert out["result"].ok and out["result"].granted_nanos == 0
    assert out["batch"] == batch and out["batch"].hold_id is None
    assert out["lines"] == lines
    assert out["usage"] == [ScopeUsage()] and out["missing"] is None


def test_create_batch_takes_its_hold_for_no_process(database_url: str) -> None:
    batch = batch_of("batch_1", total=4)

    async def main(store: Store) -> dict[str, Any]:
        result = await store.batches.create_batch(
            batch, lines_of("batch_1", 4, reserved=1_000), hold_for("hold-b1", 4_000, instance="inst-1")
        )
        return {
            "result": result,
            "stored": await store.batches.get_batch("batch_1"),
            "usage": await usages(store, TEAM, KEY),
        }

    out = using(database_url, main)
    assert out["result"].ok and out["result"].granted_nanos == 4_000
    assert (batch.hold_id, batch.reserved_nanos) == ("hold-b1", 4_000)  # the caller's record says what was taken
    assert out["stored"] == batch
    assert out["usage"] == [ScopeUsage(0, 4_000), ScopeUsage(0, 4_000)]
    with raw_connection(database_url) as (db, _):
        holds = db.execute("SELECT id, amount_nanos, instance FROM holds").fetchall()
    assert [tuple(h) for h in holds] == [("hold-b1", 4_000, None)]  # no process's: no process's end releases it


def test_a_refused_hold_writes_nothing(database_url: str) -> None:
    async def main(store: Store) -> dict[str, Any]:
        await store.record(Settlement(row_of("spent", 7_000), [TEAM]))
        refused = await store.batches.create_batch(
            batch_of("batch_1"), lines_of("batch_1", 3, reserved=1_500), hold_for("hold-b1", 4_500)
        )
        # A batch whose id is taken fails as a whole: its hold is not kept either.
        await store.batches.create_batch(batch_of("batch_2"), [], None)
        with pytest.raises(Conflict):
            await store.batches.create_batch(batch_of("batch_2"), lines_of("batch_2", 1), hold_for("hold-b2", 100))
        return {
            "refused": refused,
            "batch": await store.batches.get_batch("batch_1"),
            "lines": await store.batches.lines("batch_1"),
            "usage": await usages(store, TEAM, KEY),
            "lines_2": await store.batches.lines("batch_2"),
        }

    out = using(database_url, main)
    assert not out["refused"].ok and out["refused"].refused_by == TEAM
    assert (out["refused"].spent_nanos, out["refused"].reserved_nanos) == (7_000, 0)
    assert out["batch"] is None and out["lines"] == [] and out["lines_2"] == []
    assert out["usage"] == [ScopeUsage(7_000, 0), ScopeUsage()]
    with raw_connection(database_url) as (db, _):
        assert db.execute("SELECT COUNT(*) FROM holds").fetchone()[0] == 0
        # Not even the key's (empty) usage row: the refused transaction was rolled back as a whole.
        assert db.execute("SELECT COUNT(*) FROM budget_usage WHERE scope = 'key:k1'").fetchone()[0] == 0


def test_many_lines_with_awkward_bodies_are_stored_exactly(database_url: str) -> None:
    # The bulk insert (COPY on PostgreSQL) must carry tabs, newlines, backslashes, quotes, NULLs and non-ASCII text.
    awkward = ['{"a": "tab\\there"}', "line\nbreak", "back\\slash \\N", "quote ' and \"", "ünï 🎉", "\\.", ""]
    lines = [
        replace(line, body=awkward[line.index % len(awkward)] if line.index % 11 else None, model=None)
        for line in lines_of("batch_1", 5_000, reserved=2)
    ]

    async def main(store: Store) -> dict[str, Any]:
        result = await store.batches.create_batch(batch_of("batch_1", total=5_000), lines, hold_for("h", 10_000))
        read: list[BatchLine] = []
        while page := await store.batches.lines("batch_1", after_index=read[-1].index if read else -1, limit=1_500):
            read += page
        return {"result": result, "read": read, "counts": await store.batches.line_counts("batch_1")}

    out = using(database_url, main)
    assert out["result"].ok
    assert out["read"] == lines
    assert out["counts"] == {("batch", "pending"): 5_000}


# -- settling lines --------------------------------------------------------------------------------


def test_settle_line_charges_gives_back_its_share_and_counts_once(database_url: str) -> None:
    batch = batch_of("batch_1", total=3)

    async def main(store: Store) -> dict[str, Any]:
        await store.batches.create_batch(batch, lines_of("batch_1", 3, reserved=1_000), hold_for("hold-b1", 3_000))
        out: dict[str, Any] = {}
        row = row_of("req_b1_0", 400, "batch_1", "req-0")
        out["first"] = await store.batches.settle_line(batch, 0, answered(row, list_cost=800))
        out["after_first"] = await usages(store, TEAM, KEY)
        # Settled again (a node that crashed before it knew the first commit): recognised, nothing moves.
        out["again"] = await store.batches.settle_line(batch, 0, answered(row_of("req_b1_0bis", 400, "batch_1")))
        out["after_again"] = await usages(store, TEAM, KEY)
        # An error answer (done, but not 200) is charged what it cost and counts as failed.
        out["error"] = await store.batches.settle_line(batch, 1, answered(row_of("req_b1_1", 0, "batch_1"), 400))
        # A line that ended without an answer: nothing charged, its share given back.
        out["expired"] = await store.batches.settle_line(batch, 2, LineResult("expired", None, None))
        out["after_all"] = await usages(store, TEAM, KEY)
        out["stored"] = await store.batches.get_batch("batch_1")
        out["lines"] = await store.batches.lines("batch_1")
        out["ledger"] = await store.ledger_rows(SpendFilter(batch="batch_1"))
        await store.batches.release_hold(batch)
        await store.batches.release_hold(batch)  # twice: the second finds nothing left
        out["released"] = await usages(store, TEAM, KEY)
        with pytest.raises(KeyError):
            await store.batches.settle_line(batch, 99, answered(None))
        return out

    out = using(database_url, main)
    assert (out["first"], out["again"], out["error"], out["expired"]) == (True, False, True, True)
    assert out["after_first"] == [ScopeUsage(400, 2_000), ScopeUsage(400, 2_000)]
    assert out["after_again"] == out["after_first"]
    assert out["after_all"] == [ScopeUsage(400, 0), ScopeUsage(400, 0)]
    assert out["released"] == out["after_all"]
    # The counts moved once per line, in the database and in the record the caller holds alike.
    assert (out["stored"].completed, out["stored"].failed) == (1, 2) == (batch.completed, batch.failed)
    first, error, expired = out["lines"]
    assert (first.state, first.status_code, first.response) == ("done", 200, '{"id": "chatcmpl-1"}')
    assert (first.prompt_tokens, first.completion_tokens, first.cached_tokens) == (11, 7, 2)
    assert (first.cost_nanos, first.list_cost_nanos) == (400, 800)
    assert (error.state, error.status_code) == ("done", 400)
    assert (expired.state, expired.status_code, expired.response, expired.cost_nanos) == ("expired", None, None, 0)
    assert sorted((r.id, r.batch_id, r.custom_id) for r in out["ledger"]) == [
        ("req_b1_0", "batch_1", "req-0"),
        ("req_b1_1", "batch_1", None),
    ]
    with raw_connection(database_url) as (db, _):
        assert db.execute("SELECT COUNT(*) FROM holds").fetchone()[0] == 0


def test_settling_after_the_hold_is_gone_charges_and_gives_back_nothing(database_url: str) -> None:
    batch = batch_of("batch_1", total=2)

    async def main(store: Store) -> list[Any]:
        await store.batches.create_batch(batch, lines_of("batch_1", 2, reserved=1_000), hold_for("hold-b1", 2_000))
        settled = await store.batches.settle_line(batch, 0, answered(row_of("r0", 300, "batch_1")))
        await store.batches.release_hold(batch)  # the batch ended (cancelled, say) with a line still out
        late = await store.batches.settle_line(batch, 1, answered(row_of("r1", 500, "batch_1")))
        return [settled, late, *await usages(store, TEAM, KEY)]

    # The late line is charged (the provider billed it); the reservation does not go below zero.
    assert using(database_url, main) == [True, True, ScopeUsage(800, 0), ScopeUsage(800, 0)]


def test_a_line_settled_by_two_nodes_at_once_counts_once(database_url: str) -> None:
    batch = batch_of("batch_1", total=20)

    async def main(one: Store, two: Store) -> dict[str, Any]:
        await one.batches.create_batch(batch, lines_of("batch_1", 20, reserved=100), hold_for("hold-b1", 2_000))
        wins = []
        for index in range(20):
            copies = (replace(batch), replace(batch))
            results = await asyncio.gather(
                one.batches.settle_line(copies[0], index, answered(row_of(f"a{index}", 10, "batch_1"))),
                two.batches.settle_line(copies[1], index, answered(row_of(f"b{index}", 10, "batch_1"))),
            )
            wins.append(results)
        return {
            "wins": wins,
            "usage": await usages(one, TEAM),
            "stored": await one.batches.get_batch("batch_1"),
            "ledger": len(await one.ledger_rows(SpendFilter(batch="batch_1"))),
        }

    out = using_two(database_url, main)
    assert all(sorted(pair) == [False, True] for pair in out["wins"]), out["wins"]
    assert out["usage"] == [ScopeUsage(200, 0)]
    assert (out["stored"].completed, out["stored"].failed, out["ledger"]) == (20, 0, 20)


# -- lines and jobs -----------------------------------------------------------------------------------


def test_lines_page_by_index_and_state_and_assign_moves_only_open_lines(database_url: str) -> None:
    batch = batch_of("batch_1", total=6)
    lines = [*lines_of("batch_1", 5), BatchLine("batch_1", 5, "bad", "invalid", "failed", None)]

    async def main(store: Store) -> dict[str, Any]:
        await store.batches.create_batch(batch, lines, None)
        await store.batches.settle_line(batch, 4, LineResult("cancelled", None, None))
        await store.batches.assign_lines("batch_1", [0, 1, 4, 5], "bjob_1", "submitted")
        await store.batches.assign_lines("batch_1", [2], None, "submitted")
        await store.batches.assign_lines("batch_1", [], "bjob_2", "submitted")
        return {
            "all": [(ln.index, ln.state, ln.job_id) for ln in await store.batches.lines("batch_1")],
            "page": [ln.index for ln in await store.batches.lines("batch_1", after_index=1, limit=2)],
            "submitted": [ln.index for ln in await store.batches.lines("batch_1", ["submitted"])],
            "open": [ln.index for ln in await store.batches.lines("batch_1", ["pending", "submitted"], 0)],
            "none": await store.batches.lines("batch_1", []),
            "counts": await store.batches.line_counts("batch_1"),
            "other": await store.batches.line_counts("batch_nope"),
        }

    out = using(database_url, main)
    assert out["all"] == [
        (0, "submitted", "bjob_1"),
        (1, "submitted", "bjob_1"),
        (2, "submitted", None),
        (3, "pending", None),
        (4, "cancelled", None),  # ended: assigning it changes nothing
        (5, "failed", None),
    ]
    assert out["page"] == [2, 3]
    assert out["submitted"] == [0, 1, 2]
    assert out["open"] == [1, 2, 3]
    assert out["none"] == []
    assert out["counts"] == {
        ("batch", "submitted"): 3,
        ("batch", "pending"): 1,
        ("batch", "cancelled"): 1,
        ("invalid", "failed"): 1,
    }
    assert out["other"] == {}


def test_save_job_inserts_then_updates(database_url: str) -> None:
    job = ProviderJob("bjob_1", "batch_1", "mistral", "mistral-small", "submitting", 10, 100, 100)
    other = ProviderJob("bjob_2", "batch_1", "moonshot", "kimi-k2", "queued", 5, 101, 101, upstream_id="up-2")

    async def main(store: Store) -> list[ProviderJob]:
        await store.batches.save_job(job)
        await store.batches.save_job(other)
        await store.batches.save_job(replace(job, state="running", updated_at=150, upstream_file_id="f-up"))
        await store.batches.save_job(replace(job, state="failed", updated_at=160, upstream_file_id="f-up", error="x"))
        await store.batches.save_job(ProviderJob("bjob_3", "batch_2", "mistral", "m", "queued", 1, 1, 1))
        return await store.batches.jobs("batch_1")

    assert using(database_url, main) == [
        replace(job, state="failed", updated_at=160, upstream_file_id="f-up", error="x"),
        other,
    ]


# -- the batch's life ------------------------------------------------------------------------------------


def test_update_batch_with_an_expected_status_is_a_compare_and_set(database_url: str) -> None:
    async def main(store: Store) -> dict[str, Any]:
        batch = batch_of("batch_1")
        await store.batches.create_batch(batch, [], None)
        running = replace(batch, status="in_progress", in_progress_at=1_100, plan={"m": 1}, total=5)
        out = {"moved": await store.batches.update_batch(running, expect_status="validating")}
        late = replace(batch, status="failed", failed_at=1_200, errors=[{"code": "x"}])
        out["stale"] = await store.batches.update_batch(late, expect_status="validating")
        out["after_stale"] = await store.batches.get_batch("batch_1")
        done = replace(running, status="completed", completed_at=1_300, completed=5)
        out["unconditional"] = await store.batches.update_batch(done)
        out["done"] = await store.batches.get_batch("batch_1")
        out["missing"] = await store.batches.update_batch(batch_of("batch_nope"))
        return out

    out = using(database_url, main)
    assert (out["moved"], out["stale"], out["unconditional"], out["missing"]) == (True, False, True, False)
    assert out["after_stale"] == replace(
        batch_of("batch_1"), status="in_progress", in_progress_at=1_100, plan={"m": 1}, total=5
    )
    assert out["done"] == replace(
        batch_of("batch_1"),
        status="completed",
        in_progress_at=1_100,
        completed_at=1_300,
        plan={"m": 1},
        total=5,
        completed=5,
    )


def test_request_cancel_moves_only_running_batches_to_cancelling(database_url: str) -> None:
    statuses = ("validating", "in_progress", "finalizing", "cancelling", "completed", "failed", "expired", "cancelled")
    assert set(statuses) == set(BATCH_STATUSES)

    async def main(store: Store) -> dict[str, Any]:
        for status in statuses:
            await store.batches.create_batch(batch_of(f"batch_{status}", status=status, cancelling_at=None), [], None)
        await store.batches.update_batch(replace(batch_of("batch_cancelling", status="cancelling"), cancelling_at=50))
        out = {status: await store.batches.request_cancel(f"batch_{status}", 2_000) for status in statuses}
        out["again"] = await store.batches.request_cancel("batch_in_progress", 3_000)
        out["missing"] = await store.batches.request_cancel("batch_nope", 2_000)
        return out

    out = using(database_url, main)
    for status in ("validating", "in_progress", "finalizing"):
        assert (out[status].status, out[status].cancelling_at) == ("cancelling", 2_000), status
    assert (out["cancelling"].status, out["cancelling"].cancelling_at) == ("cancelling", 50)
    for status in ("completed", "failed", "expired", "cancelled"):
        assert (out[status].status, out[status].cancelling_at) == (status, None), status
    assert out["again"].cancelling_at == 2_000  # asked twice: the first request's time stays
    assert out["missing"] is None


def test_list_batches_pages_newest_first_with_a_cursor(database_url: str) -> None:
    async def main(store: Store) -> dict[str, Any]:
        for batch_id, created, team in [("b1", 10, "eng"), ("b2", 20, "eng"), ("b3", 20, "eng"), ("b4", 30, "ops")]:
            await store.batches.create_batch(batch_of(batch_id, created, team), [], None)
        first, more = await store.batches.list_batches("eng", None, 2)
        rest, more_after = await store.batches.list_batches("eng", first[-1].id, 2)
        everyone, _ = await store.batches.list_batches(None, None, 10)
        return {
            "first": ([b.id for b in first], more),
            "rest": ([b.id for b in rest], more_after),
            "everyone": [b.id for b in everyone],
            "gone": await store.batches.list_batches("eng", "b-nope", 10),
        }

    out = using(database_url, main)
    assert out["first"] == (["b3", "b2"], True)
    assert out["rest"] == (["b1"], False)
    assert out["everyone"] == ["b4", "b3", "b2", "b1"]
    assert out["gone"] == ([], False)


# -- leases ----------------------------------------------------------------------------------------


def test_lease_takes_free_and_expired_active_batches_oldest_first(database_url: str) -> None:
    async def main(store: Store) -> dict[str, Any]:
        for index, status in enumerate(("validating", "in_progress", "completed", "finalizing", "cancelling")):
            await store.batches.create_batch(batch_of(f"b{index}", 100 + index, status=status), [], None)
        leases = store.batches
        out: dict[str, Any] = {}
        out["a"] = [(b.id, b.lease_owner, b.lease_until) for b in await leases.lease("node-a", 1_000, 1_060, 2)]
        out["b"] = [b.id for b in await leases.lease("node-b", 1_000, 1_060, 10)]
        out["b_again"] = [b.id for b in await leases.lease("node-b", 1_010, 1_070, 10)]  # renewed: its own
        out["c_nothing"] = await leases.lease("node-c", 1_050, 1_100, 10)
        # Past node-a's lease (node-a stopped renewing): node-c takes its batches over; node-b's still hold.
        out["c_takeover"] = [b.id for b in await leases.lease("node-c", 1_061, 1_200, 10)]
        await leases.release_lease("b3", "node-a")  # not node-a's any more: nothing happens
        await leases.release_lease("b3", "node-b")
        out["b3"] = await leases.get_batch("b3")
        out["a_after_release"] = [b.id for b in await leases.lease("node-a", 1_065, 1_100, 10)]
        return out

    out = using(database_url, main)
    assert out["a"] == [("b0", "node-a", 1_060), ("b1", "node-a", 1_060)]
    assert out["b"] == ["b3", "b4"]  # b2 is completed: never leased
    assert out["b_again"] == ["b3", "b4"]
    assert out["c_nothing"] == []
    assert out["c_takeover"] == ["b0", "b1"]
    assert (out["b3"].lease_owner, out["b3"].lease_until) == (None, 0)
    assert out["a_after_release"] == ["b3"]


def test_renew_extends_only_the_owners_leases(database_url: str) -> None:
    async def main(store: Store) -> dict[str, Any]:
        for index in range(3):
            await store.batches.create_batch(batch_of(f"b{index}", 100 + index, status="in_progress"), [], None)
        leases = store.batches
        await leases.lease("node-a", 1_000, 1_060, 2)  # b0, b1
        await leases.lease("node-b", 1_000, 1_060, 10)  # b2
        await leases.release_lease("b1", "node-a")  # b1 ended
        out: dict[str, Any] = {
            "renewed": await leases.renew_leases(["b0", "b1", "b2", "b-none", "b0"], "node-a", 1_500)
        }
        out["none"] = await leases.renew_leases([], "node-a", 1_500)
        out["until"] = {b: (await leases.get_batch(b)).lease_until for b in ("b0", "b1", "b2")}  # type: ignore[union-attr]
        out["c_at_1100"] = [b.id for b in await leases.lease("node-c", 1_100, 1_200, 10)]
        return out

    out = using(database_url, main)
    assert out["renewed"] == {"b0"} and out["none"] == set()
    assert out["until"] == {"b0": 1_500, "b1": 0, "b2": 1_060}
    assert out["c_at_1100"] == ["b1", "b2"]  # b0 renewed past 1,100: still node-a's


def test_two_nodes_leasing_at_once_never_share_a_batch(database_url: str) -> None:
    count, rounds = 8, 25

    async def main(one: Store, two: Store) -> list[tuple[set[str], set[str], dict[str, str]]]:
        for index in range(count):
            await one.batches.create_batch(batch_of(f"b{index}", 100 + index, status="in_progress"), [], None)
        outcomes = []
        for round_ in range(rounds):
            # Every round starts past the previous round's leases: every batch is free to take again.
            now = 10_000 + round_ * 100
            a, b = await asyncio.gather(
                one.batches.lease("node-a", now, now + 50, 5), two.batches.lease("node-b", now, now + 50, 5)
            )
            stored = {b.id: b.lease_owner for b in (await one.batches.list_batches(None, None, count))[0]}
            outcomes.append(({x.id for x in a}, {x.id for x in b}, stored))
        return outcomes

    for got_a, got_b, stored in using_two(database_url, main):
        assert not got_a & got_b, (got_a, got_b)
        assert got_a | got_b == set(stored)  # between them, every batch (5 + 3 in some split)
        assert all(stored[batch_id] == "node-a" for batch_id in got_a)
        assert all(stored[batch_id] == "node-b" for batch_id in got_b)


# -- spend by batch ---------------------------------------------------------------------------------


def test_spend_groups_and_filters_by_batch(database_url: str) -> None:
    async def main(store: Store) -> dict[str, Any]:
        for batch_id in ("batch_a", "batch_b"):
            batch = batch_of(batch_id, total=2)
            await store.batches.create_batch(batch, lines_of(batch_id, 2), None)
            for index, cost in enumerate((100, 20) if batch_id == "batch_a" else (3, 0)):
                row = row_of(f"{batch_id}-{index}", cost, batch_id, f"req-{index}")
                await store.batches.settle_line(batch, index, answered(row))
        await store.record(Settlement(row_of("interactive", 5_000), [TEAM]))
        return {
            "grouped": {
                r.group: (r.requests, r.cost_nanos, r.prompt_tokens) for r in await store.spend(SpendFilter(), "batch")
            },
            "one": [(r.requests, r.cost_nanos) for r in await store.spend(SpendFilter(batch="batch_a"), None)],
            "one_by_team": [(r.group, r.cost_nanos) for r in await store.spend(SpendFilter(batch="batch_b"), "team")],
            "rows": [r.id for r in await store.ledger_rows(SpendFilter(batch="batch_a"))],
        }

    out = using(database_url, main)
    assert out["grouped"] == {None: (1, 5_000, 11), "batch_a": (2, 120, 22), "batch_b": (2, 3, 22)}
    assert out["one"] == [(2, 120)]
    assert out["one_by_team"] == [("eng", 3)]
    assert sorted(out["rows"]) == ["batch_a-0", "batch_a-1"]
