"""SqlStore (gateway/store/sql.py) through the Store interface (gateway/store/base.py), on a real database.

Every test runs on SQLite in tmp_path; the same tests run on PostgreSQL (127.0.0.1:5432, trust auth, database
`test`, a schema of their own that is dropped afterwards), marked slow. A missing PostgreSQL server fails
those tests, it never skips them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import sqlite3
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import pytest

from gateway.errors import StorageUnavailable
from gateway.store import open_store
from gateway.store.base import (
    GROUPS,
    Conflict,
    HoldRequest,
    HoldResult,
    Instance,
    KeyRecord,
    LedgerRow,
    Rates,
    Scope,
    ScopeUsage,
    Settlement,
    SpendFilter,
    Store,
    Team,
    key_scope,
    team_scope,
)
from gateway.store.schema import LATEST, MIGRATIONS

POSTGRES_TEST_DB = os.environ.get("GATEWAY_TEST_POSTGRES_DB", "postgresql://postgres@127.0.0.1:5432/test")
PERIOD = 1_700_000_000  # a period start (Unix seconds)
NEXT_PERIOD = PERIOD + 86_400
FAR = 4_000_000_000  # an expiry that never comes in these tests

T = TypeVar("T")


@contextlib.contextmanager
def postgres_schema() -> Iterator[str]:
    """A URL whose connections use a fresh schema of the `test` database; the schema is dropped afterwards."""
    import psycopg

    try:
        admin = psycopg.connect(POSTGRES_TEST_DB, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is required at {POSTGRES_TEST_DB} (trust auth) and is unreachable: {exc}")
    schema = f"gateway_store_test_{secrets.token_hex(6)}"
    admin.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{POSTGRES_TEST_DB}?options=-csearch_path%3D{schema}"
    finally:
        admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        admin.close()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'gateway.db'}"
    else:
        with postgres_schema() as url:
            yield url


def using(url: str, body: Callable[[Store], Awaitable[T]]) -> T:
    """Open a store at `url`, run `body` on it, close it (also when `body` fails)."""

    async def main() -> T:
        store = open_store(url)
        await store.open()
        try:
            return await asyncio.wait_for(body(store), 10)
        finally:
            await store.close()

    return asyncio.run(main())


# -- builders ------------------------------------------------------------------------------------


def team_scope_of(name: str, budget: int | None, period: int = PERIOD) -> Scope:
    return Scope(team_scope(name), period, budget)


def key_scope_of(key_id: str, budget: int | None, period: int = PERIOD) -> Scope:
    return Scope(key_scope(key_id), period, budget)


def hold_of(
    hold_id: str,
    scopes: list[Scope],
    amount: int,
    minimum: int | None = None,
    expires_at: int = FAR,
    instance: str | None = None,
) -> HoldRequest:
    return HoldRequest(hold_id, scopes, amount, expires_at, minimum_nanos=minimum, instance=instance)


def ledger_row(row_id: str, cost: int, **fields: Any) -> LedgerRow:
    values: dict[str, Any] = {
        "id": row_id,
        "ts": 1_704_067_200.25,  # 2024-01-01T00:00:00.25Z
        "team": "eng",
        "key_id": "k1",
        "key_prefix": "sk-gw-k1",
        "requested_model": "auto",
        "model": "mistral-small",
        "provider": "mistral",
        "region": "eu",
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "cached_tokens": 2,
        "cost_nanos": cost,
        "estimated": False,
        "status": 200,
        "latency_ms": 12.5,
        "ttft_ms": 3.25,
        "route_reason": "cheapest",
        "stream": True,
        "content": None,
        "endpoint": "chat",
    }
    values.update(fields)
    return LedgerRow(**values)


async def usages(store: Store, *scopes: Scope) -> list[ScopeUsage]:
    return [await store.usage(s.name, s.period_start) for s in scopes]


# -- lifecycle -------------------------------------------------------------------------------------


def test_open_migrates_once_and_data_survives_a_reopen(database_url: str) -> None:
    async def first(store: Store) -> bool:
        await store.create_team(Team("eng", 5_000, created_at=1))
        return await store.ping()

    async def second(store: Store) -> Team | None:
        return await store.get_team("eng")

    assert using(database_url, first) is True
    # A second open runs no migration twice (a re-run CREATE TABLE would fail) and sees the same data.
    assert using(database_url, second) == Team("eng", 5_000, created_at=1)


@contextlib.contextmanager
def raw_connection(url: str) -> Iterator[tuple[Any, str]]:
    """The database at `url` through its driver alone (autocommit), and the driver's placeholder."""
    if url.startswith("sqlite:///"):
        db: Any = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        placeholder = "?"
    else:
        import psycopg

        db, placeholder = psycopg.connect(url, autocommit=True), "%s"
    try:
        yield db, placeholder
    finally:
        db.close()


# The ledger's columns as migration 1 made them (before migration 3 added `endpoint`), and a row as the previous
# release wrote it.
V2_LEDGER_COLUMNS = (
    "id, ts, team, key_id, key_prefix, requested_model, model, provider, region, prompt_tokens, completion_tokens,"
    " cached_tokens, cost_nanos, estimated, status, latency_ms, ttft_ms, route_reason, stream, content"
)
V2_ROW = ("old-1", 1_700_000_000.5, "eng", "k1", "sk-gw-k1", "auto", "mistral-small", "mistral", "eu")
V2_ROW += (10, 5, 2, 700, False, 200, 12.5, 3.25, "preferred", True, None)


def migrate_up_to(db: Any, placeholder: str, last: int) -> None:
    """Apply migrations 1 to `last` on a raw connection, recorded as the store records them."""
    db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    for version, statements in MIGRATIONS:
        if version > last:
            break
        for statement in statements:
            db.execute(statement)
        db.execute(f"INSERT INTO schema_version (version) VALUES ({placeholder})", (version,))


def make_previous_schema(url: str) -> None:
    """A database as the release before migration 3 left it: migrations 1 and 2 applied (recorded as the store
    records them), holding a team and a ledger row."""
    with raw_connection(url) as (db, ph):
        migrate_up_to(db, ph, 2)
        db.execute(
            f"INSERT INTO teams (name, period, policy, created_at) VALUES ({ph}, {ph}, {ph}, {ph})",
            ("eng", "monthly", "default", 1),
        )
        db.execute(f"INSERT INTO ledger ({V2_LEDGER_COLUMNS}) VALUES ({', '.join([ph] * 20)})", V2_ROW)


def test_a_database_of_the_previous_schema_gains_the_endpoint_column_and_keeps_its_rows(database_url: str) -> None:
    make_previous_schema(database_url)

    async def main(store: Store) -> dict[str, Any]:
        before = await store.ledger_rows(SpendFilter())
        await store.record(Settlement(ledger_row("new-1", 40, ts=1_700_000_100.0, endpoint="fim"), []))
        return {
            "before": before,
            "team": await store.get_team("eng"),
            "rows": [(r.id, r.endpoint) for r in await store.ledger_rows(SpendFilter())],
            "by_endpoint": [(r.group, r.requests, r.cost_nanos) for r in await store.spend(SpendFilter(), "endpoint")],
        }

    out = using(database_url, main)
    # The old row, every field as it was written, reads as a chat completion (the only door it could have been,
    # bar the legacy ones, and the column's default).
    assert out["before"] == [LedgerRow(*V2_ROW, endpoint="chat")]
    assert out["team"] == Team("eng", created_at=1)
    assert out["rows"] == [("old-1", "chat"), ("new-1", "fim")]
    assert out["by_endpoint"] == [("chat", 1, 700), ("fim", 1, 40)]
    with raw_connection(database_url) as (db, _):
        versions = [row[0] for row in db.execute("SELECT version FROM schema_version ORDER BY version").fetchall()]
    assert versions == [version for version, _ in MIGRATIONS] and LATEST >= 3
    # Opened again: nothing is migrated twice (a second ADD COLUMN would fail) and the rows are all there.
    assert len(using(database_url, lambda store: store.ledger_rows(SpendFilter()))) == 2


# A team and a key as the release before migration 4 (rate limits) wrote them: every column of migration 1.
V3_TEAM = ("eng", 5_000, "weekly", 80, '["eu"]', '["mistral-small"]', "eu-only", 1)
V3_KEY = ("k1", "eng", "ci", "sk-gw-aaaa", "hash-1", 500, '["mistral-small"]', 1_800_000_000, 10, None)


def test_a_database_of_schema_3_gains_the_rate_limit_columns_and_keeps_its_teams_and_keys(database_url: str) -> None:
    with raw_connection(database_url) as (db, ph):
        migrate_up_to(db, ph, 3)
        db.execute(f"INSERT INTO teams VALUES ({', '.join([ph] * 8)})", V3_TEAM)
        db.execute(f"INSERT INTO api_keys VALUES ({', '.join([ph] * 10)})", V3_KEY)

    old_team = Team("eng", 5_000, "weekly", 80, ["eu"], ["mistral-small"], "eu-only", 1)
    old_key = KeyRecord("k1", "eng", "ci", "sk-gw-aaaa", "hash-1", 500, ["mistral-small"], 1_800_000_000, 10)
    limited = replace(old_team, rates=Rates(60, None, 2), model_rates={"mistral-small": Rates(tpm=9_000)})

    async def main(store: Store) -> dict[str, Any]:
        out: dict[str, Any] = {"team": await store.get_team("eng"), "by_hash": await store.key_and_team("hash-1")}
        await store.update_team(limited)
        await store.create_key(KeyRecord("k2", "eng", "new", "sk-gw-bbbb", "hash-2", rates=Rates(tpm=1_000)))
        out["updated"] = await store.key_and_team("hash-2")
        return out

    out = using(database_url, main)
    # The old rows, every field as written, have no limits (NULL columns).
    assert out["team"] == old_team and out["team"].rates == Rates() and out["team"].model_rates == {}
    assert out["by_hash"] == (old_key, old_team)
    assert out["updated"] == (
        KeyRecord("k2", "eng", "new", "sk-gw-bbbb", "hash-2", rates=Rates(tpm=1_000)),
        limited,
    )
    with raw_connection(database_url) as (db, _):
        versions = [row[0] for row in db.execute("SELECT version FROM schema_version ORDER BY version").fetchall()]
        stored = db.execute("SELECT rpm, tpm, max_concurrent, model_limits FROM teams").fetchall()
    assert versions == [version for version, _ in MIGRATIONS] and versions[:4] == [1, 2, 3, 4]
    # Only the limits that are set are stored, in the JSON the column documents.
    assert [tuple(row) for row in stored] == [(60, None, 2, '{"mistral-small":{"tpm":9000}}')]
    # Opened again: nothing is migrated twice (a second ADD COLUMN would fail).
    assert using(database_url, lambda store: store.get_team("eng")) == limited


def unusable_sqlite_url(tmp_path: Path) -> str:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    return f"sqlite:///{blocker / 'gateway.db'}"  # its directory cannot be made


def test_an_unusable_sqlite_path_is_storage_unavailable(tmp_path: Path) -> None:
    async def main() -> None:
        store = open_store(unusable_sqlite_url(tmp_path))
        try:
            with pytest.raises(StorageUnavailable):
                await store.open()
            # Every call fails with StorageUnavailable (at once within the reconnect backoff); none hangs.
            with pytest.raises(StorageUnavailable):
                await store.hold(hold_of("h", [team_scope_of("eng", 100)], 10))
            assert await store.ping() is False
        finally:
            await store.close()

    asyncio.run(main())


def test_close_of_a_store_whose_database_is_unusable_does_not_raise(tmp_path: Path) -> None:
    async def main() -> None:
        store = open_store(unusable_sqlite_url(tmp_path))
        with pytest.raises(StorageUnavailable):
            await store.open()
        await store.close()

    asyncio.run(main())


def test_open_store_refuses_other_schemes() -> None:
    with pytest.raises(ValueError, match="unsupported database URL 'mysql'"):
        open_store("mysql://root@localhost/gateway")


# -- teams and keys ------------------------------------------------------------------------------


def test_teams_crud(database_url: str) -> None:
    full = Team("b-team", 7_000, "weekly", 80, ["eu"], ["mistral-small", "kimi-k2"], "eu-only", 1_700_000_001)
    bare = Team("a-team", created_at=1_700_000_002)
    empty_lists = Team("c-team", regions=[], models=[], created_at=3)  # [] (nothing allowed) is not None (anything)

    async def main(store: Store) -> dict[str, Any]:
        for team in (full, bare, empty_lists):
            await store.create_team(team)
        with pytest.raises(Conflict):
            await store.create_team(Team("a-team"))
        out: dict[str, Any] = {"got": await store.get_team("b-team"), "missing": await store.get_team("nobody")}
        out["listed"] = await store.list_teams()
        await store.update_team(replace(full, budget_nanos=None, period="daily", soft_limit_pct=None, regions=None))
        out["updated"] = await store.get_team("b-team")
        out["deleted"] = await store.delete_team("a-team")
        out["deleted_again"] = await store.delete_team("a-team")
        out["after"] = [t.name for t in await store.list_teams()]
        return out

    out = using(database_url, main)
    assert out["got"] == full
    assert out["missing"] is None
    assert out["listed"] == [bare, full, empty_lists]  # by name
    assert out["updated"] == Team(
        "b-team", None, "daily", None, None, ["mistral-small", "kimi-k2"], "eu-only", 1_700_000_001
    )
    assert (out["deleted"], out["deleted_again"]) == (True, False)
    assert out["after"] == ["b-team", "c-team"]


def test_rate_limits_of_teams_and_keys_round_trip(database_url: str) -> None:
    every_limit = Rates(600, 2_000_000, 16)
    team = Team(
        "eng",
        rates=every_limit,
        model_rates={"kimi-k2": Rates(rpm=3), "mistral-small": Rates(tpm=500_000, max_concurrent=1)},
        created_at=1,
    )
    big = Rates(rpm=9_000_000_000_000_000_000)  # a BIGINT's range, near its top
    key = KeyRecord("k1", "eng", "ci", "sk-gw-aaaa", "hash-1", rates=Rates(rpm=30, max_concurrent=4), created_at=2)

    async def main(store: Store) -> dict[str, Any]:
        await store.create_team(team)
        await store.create_team(Team("big", rates=big))
        await store.create_key(key)
        out: dict[str, Any] = {
            "got": await store.get_team("eng"),
            "listed": await store.list_teams(),
            "key": await store.get_key("k1"),
            "keys": await store.list_keys("eng"),
            "by_hash": await store.key_and_team("hash-1"),
        }
        # Clearing: no rates, no model rates (an entry without any limit is not kept either).
        await store.update_team(replace(team, rates=Rates(tpm=5), model_rates={"kimi-k2": Rates()}))
        out["cleared"] = await store.get_team("eng")
        return out

    out = using(database_url, main)
    assert out["got"] == team
    assert out["listed"] == [Team("big", rates=big), team]
    assert out["key"] == key and out["keys"] == [key]
    assert out["by_hash"] == (key, team)
    assert out["cleared"] == replace(team, rates=Rates(tpm=5), model_rates={})


def test_keys_crud_and_the_one_read_of_the_request_path(database_url: str) -> None:
    eng = Team("eng", 1_000, created_at=1)
    first = KeyRecord("k1", "eng", "ci", "sk-gw-aaaa", "hash-1", 500, ["mistral-small"], 1_800_000_000, 10)
    second = KeyRecord("k2", "eng", "laptop", "sk-gw-bbbb", "hash-2", created_at=20)
    other = KeyRecord("k0", "ops", "", "sk-gw-cccc", "hash-3", created_at=30)  # its team does not exist

    async def main(store: Store) -> dict[str, Any]:
        await store.create_team(eng)
        for key in (second, first, other):
            await store.create_key(key)
        with pytest.raises(Conflict):  # the hash is unique
            await store.create_key(replace(first, id="k9"))
        out: dict[str, Any] = {
            "by_hash": await store.key_and_team("hash-1"),
            "orphan": await store.key_and_team("hash-3"),
            "unknown": await store.key_and_team("no-such-hash"),
            "get": await store.get_key("k2"),
            "all": [k.id for k in await store.list_keys()],
            "eng": [k.id for k in await store.list_keys("eng")],
        }
        out["revoked"] = await store.revoke_key("k1", 1_700_000_500)
        out["revoked_again"] = await store.revoke_key("k1", 1_700_000_999)
        out["revoke_unknown"] = await store.revoke_key("nope", 1)
        out["after_revoke"] = await store.get_key("k1")
        await store.delete_team("eng")  # a deleted team's keys stop working at once
        out["after_delete"] = (await store.key_and_team("hash-2"), [k.id for k in await store.list_keys()])
        return out

    out = using(database_url, main)
    assert out["by_hash"] == (first, eng)
    assert out["orphan"] == (other, None)
    assert out["unknown"] is None
    assert out["get"] == second
    assert out["all"] == ["k1", "k2", "k0"]  # by creation time
    assert out["eng"] == ["k1", "k2"]
    assert (out["revoked"], out["revoked_again"], out["revoke_unknown"]) == (True, False, False)
    assert out["after_revoke"].revoked_at == 1_700_000_500  # the first revocation's time is kept
    assert out["after_delete"] == (None, ["k0"])


# -- holds -------------------------------------------------------------------------------------------


def test_a_hold_that_fits_reserves_in_every_scope(database_url: str) -> None:
    team, key = team_scope_of("eng", 1_000), key_scope_of("k1", 600)
    unlimited = key_scope_of("k2", None)

    async def main(store: Store) -> tuple[HoldResult, HoldResult, list[ScopeUsage]]:
        first = await store.hold(hold_of("h1", [team, key], 400))
        second = await store.hold(hold_of("h2", [team, unlimited], 300))
        return first, second, await usages(store, team, key, unlimited)

    first, second, (team_use, key_use, unlimited_use) = using(database_url, main)
    assert first == HoldResult(True, None, 0, 400, 400)
    assert second == HoldResult(True, None, 0, 700, 300)  # spent and reserved of the first scope, with this hold
    assert team_use == ScopeUsage(0, 700)
    assert key_use == ScopeUsage(0, 400)
    assert unlimited_use == ScopeUsage(0, 300)


def test_a_refused_hold_names_the_scope_without_room_and_reserves_nothing(database_url: str) -> None:
    team, key = team_scope_of("eng", 1_000), key_scope_of("k1", 300)

    async def main(store: Store) -> tuple[HoldResult, HoldResult, list[ScopeUsage]]:
        await store.record(Settlement(ledger_row("r1", 100), [team, key]))
        await store.hold(hold_of("h1", [team, key], 150))
        refused = await store.hold(hold_of("h2", [team, key], 60))  # the team has room, the key only 50
        too_big = await store.hold(hold_of("h3", [team, key_scope_of("k2", None)], 751))  # the team has 750
        return refused, too_big, await usages(store, team, key)

    refused, too_big, (team_use, key_use) = using(database_url, main)
    assert refused == HoldResult(False, key, 100, 150, 0)  # the key's figures, not the team's
    assert too_big == HoldResult(False, team, 100, 150, 0)
    assert team_use == ScopeUsage(100, 150)
    assert key_use == ScopeUsage(100, 150)


def test_minimum_nanos_shrinks_a_hold_to_what_the_tightest_scope_has_left(database_url: str) -> None:
    team, key = team_scope_of("eng", 1_000), key_scope_of("k1", 400)

    async def main(store: Store) -> tuple[list[HoldResult], list[ScopeUsage]]:
        await store.record(Settlement(ledger_row("r1", 200), [team, key]))  # key: 200 left, team: 800
        shrunk = await store.hold(hold_of("h1", [team, key], 1_000, minimum=50))
        refused = await store.hold(hold_of("h2", [team, key], 1_000, minimum=1))  # nothing left in the key
        whole = await store.hold(hold_of("h3", [team], 300, minimum=100))  # fits: not shrunk
        # A minimum above the amount is the amount (all or nothing): 300 left in the team, 400 asked.
        capped = await store.hold(hold_of("h4", [team], 400, minimum=900))
        exact = await store.hold(hold_of("h5", [team], 900, minimum=300))  # exactly the 300 left
        return [shrunk, refused, whole, capped, exact], await usages(store, team, key)

    results, (team_use, key_use) = using(database_url, main)
    shrunk, refused, whole, capped, exact = results
    assert (shrunk.ok, shrunk.granted_nanos, shrunk.reserved_nanos) == (True, 200, 200)
    assert (refused.ok, refused.refused_by) == (False, key)
    assert (whole.ok, whole.granted_nanos) == (True, 300)
    assert (capped.ok, capped.refused_by) == (False, team)
    assert (exact.ok, exact.granted_nanos) == (True, 300)
    assert key_use == ScopeUsage(200, 200)
    assert team_use == ScopeUsage(200, 200 + 300 + 300)


def test_release_gives_the_granted_amount_back_once(database_url: str) -> None:
    team, key = team_scope_of("eng", 1_000), key_scope_of("k1", 100)

    async def main(store: Store) -> list[list[ScopeUsage]]:
        held = hold_of("h1", [team, key], 500, minimum=10)  # shrunk to the key's 100
        await store.hold(held)
        other = hold_of("h2", [team], 200)
        await store.hold(other)
        seen = [await usages(store, team, key)]
        await store.release(held)
        seen.append(await usages(store, team, key))
        await store.release(held)  # twice: no effect
        await store.release(hold_of("never-held", [team], 999))
        seen.append(await usages(store, team, key))
        return seen

    before, after, again = using(database_url, main)
    assert before == [ScopeUsage(0, 300), ScopeUsage(0, 100)]
    assert after == [ScopeUsage(0, 200), ScopeUsage(0, 0)]  # what was granted (100), not what was asked (500)
    assert again == after


def test_concurrent_holds_in_one_batch_see_each_others_reservations(database_url: str) -> None:
    team = team_scope_of("eng", 1_000)

    async def main(store: Store) -> tuple[list[HoldResult], ScopeUsage]:
        results = await asyncio.gather(*(store.hold(hold_of(f"h{i}", [team], 300)) for i in range(10)))
        return list(results), await store.usage(team.name, PERIOD)

    results, use = using(database_url, main)
    assert [r.ok for r in results] == [True] * 3 + [False] * 7  # in submission order
    assert all(r.refused_by == team for r in results[3:])
    assert use == ScopeUsage(0, 900)


def test_a_failing_operation_does_not_sink_its_batch(database_url: str) -> None:
    team = team_scope_of("eng", 10_000)

    async def main(store: Store) -> tuple[list[Any], ScopeUsage]:
        ops = [store.hold(hold_of("same-id", [team], 100)) for _ in range(2)]
        ops.append(store.hold(hold_of("other", [team], 50)))
        results = await asyncio.gather(*ops, return_exceptions=True)
        return list(results), await store.usage(team.name, PERIOD)

    (first, duplicate, other), use = using(database_url, main)
    assert first.ok and other.ok
    assert isinstance(duplicate, Conflict)
    assert use == ScopeUsage(0, 150)  # the duplicate's reservation was rolled back with it


# -- settlement --------------------------------------------------------------------------------------


def test_record_writes_the_row_charges_every_scope_and_releases_the_hold(database_url: str) -> None:
    team, key = team_scope_of("eng", 10_000), key_scope_of("k1", 5_000)
    row = ledger_row("r1", 1_234, content="prompt and answer")

    async def main(store: Store) -> dict[str, Any]:
        held = hold_of("h1", [team, key], 2_000)
        await store.hold(held)
        await store.hold(hold_of("h2", [team], 500))  # another request in flight
        returned = await store.record(Settlement(row, [team, key], held))
        return {
            "returned": returned,
            "usage": await usages(store, team, key),
            "rows": await store.ledger_rows(SpendFilter()),
        }

    out = using(database_url, main)
    # The first scope's figures (the team's, though "key:k1" sorts first in the lock order).
    assert out["returned"] == ScopeUsage(1_234, 500)
    assert out["usage"] == [ScopeUsage(1_234, 500), ScopeUsage(1_234, 0)]
    assert out["rows"] == [row]


def test_a_record_that_fails_changes_nothing(database_url: str) -> None:
    team = team_scope_of("eng", 10_000)

    async def main(store: Store) -> tuple[ScopeUsage, list[LedgerRow]]:
        await store.record(Settlement(ledger_row("r1", 100), [team]))
        held = hold_of("h1", [team], 1_000)
        await store.hold(held)
        with pytest.raises(Conflict):  # the ledger id is taken
            await store.record(Settlement(ledger_row("r1", 700, model="kimi-k2"), [team], held))
        return await store.usage(team.name, PERIOD), await store.ledger_rows(SpendFilter())

    use, rows = using(database_url, main)
    # One transaction: no second charge, and the hold was not released either.
    assert use == ScopeUsage(100, 1_000)
    assert [(r.id, r.model, r.cost_nanos) for r in rows] == [("r1", "mistral-small", 100)]


def test_record_without_a_hold_and_after_its_hold_expired(database_url: str) -> None:
    team = team_scope_of("eng", 10_000)

    async def main(store: Store) -> tuple[int, ScopeUsage]:
        await store.record(Settlement(ledger_row("r1", 40), [team]))
        held = hold_of("h1", [team], 1_000, expires_at=100)
        await store.hold(held)
        swept = await store.release_expired(now=101)
        await store.record(Settlement(ledger_row("r2", 60), [team], held))  # its hold is gone: released once only
        return swept, await store.usage(team.name, PERIOD)

    assert using(database_url, main) == (1, ScopeUsage(100, 0))


def test_release_expired_releases_only_holds_past_their_expiry(database_url: str) -> None:
    team = team_scope_of("eng", None)

    async def main(store: Store) -> list[Any]:
        for hold_id, amount, expires in (("old", 1, 100), ("older", 2, 50), ("boundary", 4, 200), ("later", 8, 300)):
            await store.hold(hold_of(hold_id, [team], amount, expires_at=expires))
        first = await store.release_expired(now=200)  # expires_at < now: "boundary" (200) stays
        use = await store.usage(team.name, PERIOD)
        second = await store.release_expired(now=200)
        return [first, use, second]

    assert using(database_url, main) == [2, ScopeUsage(0, 12), 0]


# -- instances and orphaned holds --------------------------------------------------------------------


def test_release_orphaned_frees_the_holds_of_dead_and_silent_instances(database_url: str) -> None:
    scope = team_scope_of("eng", None)
    now, stale = 10_000, 30
    me = Instance("me", "node-a", 1, 0, now)
    instances = {
        "dead": Instance("dead", "node-a", 2, 0, now),  # same node, pid gone
        "alive": Instance("alive", "node-a", 3, 0, now),  # same node, pid running
        "remote": Instance("remote", "node-b", 2, 0, now - stale),  # other node: pid not checked; just fresh
        "silent": Instance("silent", "node-c", 4, 0, now - stale - 1),  # other node, heartbeat too old
        "revived": Instance("revived", "node-d", 5, 0, 0),  # old heartbeat, refreshed below
    }
    amounts = {"me": 1, "dead": 2, "alive": 4, "remote": 8, "silent": 16, "revived": 32}
    asked: list[list[int]] = []

    async def main(store: Store) -> list[Any]:
        await store.register(me)
        for instance in instances.values():
            await store.register(instance)
        with pytest.raises(Conflict):
            await store.register(instances["dead"])
        await store.heartbeat("revived", now)
        for owner, amount in amounts.items():
            await store.hold(hold_of(f"h-{owner}", [scope], amount, instance=owner))
        await store.hold(hold_of("h-nobody", [scope], 64))  # a hold of no instance is never orphaned

        def alive(pid: int) -> bool:
            asked[-1].append(pid)
            return pid != 2

        asked.append([])
        released = await store.release_orphaned(me, now, stale, alive)
        use = await store.usage(scope.name, PERIOD)
        asked.append([])
        again = await store.release_orphaned(me, now, stale, alive)  # the gone instances were forgotten
        await store.unregister("alive")
        asked.append([])
        await store.release_orphaned(me, now, stale, alive)
        return [released, use, again]

    released, use, again = using(database_url, main)
    assert released == 2  # "dead" and "silent"
    assert use == ScopeUsage(0, 1 + 4 + 8 + 32 + 64)
    assert again == 0
    assert sorted(asked[0]) == [2, 3]  # only same-node instances' pids, never its own
    assert asked[1] == [3]  # "dead" is no longer registered
    assert asked[2] == []  # nor "alive", once unregistered


def test_an_instance_may_register_again_after_it_unregistered(database_url: str) -> None:
    instance = Instance("i1", "node-a", 7, 100, 100)

    async def main(store: Store) -> None:
        await store.register(instance)
        await store.unregister(instance.id)
        await store.register(instance)
        await store.unregister("never-registered")  # not an error

    using(database_url, main)


# -- usage and reports -------------------------------------------------------------------------------


def test_usage_is_per_scope_and_per_period(database_url: str) -> None:
    async def main(store: Store) -> list[ScopeUsage]:
        now, later = team_scope_of("eng", 1_000), team_scope_of("eng", 1_000, NEXT_PERIOD)
        await store.record(Settlement(ledger_row("r1", 900), [now, key_scope_of("k1", None)]))
        await store.hold(hold_of("h1", [now], 100))
        refused = await store.hold(hold_of("h2", [now], 1))
        assert not refused.ok  # this period's budget is used up ...
        assert (await store.hold(hold_of("h3", [later], 1_000))).ok  # ... the next period's is whole
        return [
            await store.usage(team_scope("eng"), PERIOD),
            await store.usage(team_scope("eng"), NEXT_PERIOD),
            await store.usage(key_scope("k1"), PERIOD),
            await store.usage(key_scope("k1"), NEXT_PERIOD),
            await store.usage(team_scope("ops"), PERIOD),
        ]

    assert using(database_url, main) == [
        ScopeUsage(900, 100),
        ScopeUsage(0, 1_000),
        ScopeUsage(900, 0),
        ScopeUsage(),
        ScopeUsage(),
    ]


DAY1, DAY2 = 1_704_067_200.0, 1_704_153_600.0  # 2024-01-01 and 2024-01-02, 00:00 UTC
ROWS = [
    ledger_row("a", 100, ts=DAY1 + 10, key_id="k1", key_prefix="sk-1", model="m1", provider="p1", completion_tokens=3),
    ledger_row(
        "b",
        200,
        ts=DAY1 + 20,
        team="eng",
        key_id="k2",
        key_prefix="sk-2",
        model="m2",
        provider="p1",
        endpoint="messages",
    ),
    ledger_row(
        "c",
        400,
        ts=DAY2 + 30,
        team="ops",
        key_id=None,
        key_prefix="master",
        model="m1",
        provider="p2",
        completion_tokens=7,
    ),
    ledger_row(
        "d",
        800,
        ts=DAY2 + 40,
        key_id="k1",
        key_prefix="sk-1",
        model="m1",
        provider="p2",
        completion_tokens=11,
        endpoint="responses",
    ),
    ledger_row("e", 1, ts=DAY2 + 50, team="eng", model="m1", status=502, completion_tokens=0),
    ledger_row("f", 2, ts=DAY2 + 60, team="eng", model="m1", estimated=True, completion_tokens=99),
]


def test_spend_grouped_and_filtered(database_url: str) -> None:
    async def main(store: Store) -> dict[str, Any]:
        for row in ROWS:
            await store.record(Settlement(row, []))
        out: dict[str, Any] = {}
        for group in GROUPS:
            out[group] = [(r.group, r.requests, r.cost_nanos) for r in await store.spend(SpendFilter(), group)]
        out["total"] = await store.spend(SpendFilter(), None)
        out["eng_m1"] = (await store.spend(SpendFilter(team="eng", model="m1"), None))[0].cost_nanos
        out["p2"] = (await store.spend(SpendFilter(provider="p2"), None))[0].cost_nanos
        # A key filter matches its id or its prefix.
        out["key_id"] = (await store.spend(SpendFilter(key="k1"), None))[0].cost_nanos
        out["key_prefix"] = (await store.spend(SpendFilter(key="master"), None))[0].cost_nanos
        # since is inclusive, until exclusive.
        out["window"] = (await store.spend(SpendFilter(since=DAY1 + 20, until=DAY2 + 40), None))[0].cost_nanos
        out["nothing"] = await store.spend(SpendFilter(team="nobody"), None)
        with pytest.raises(ValueError, match="group_by"):
            await store.spend(SpendFilter(), "region")
        return out

    out = using(database_url, main)
    assert out["team"] == [("eng", 5, 1_103), ("ops", 1, 400)]
    assert out["key"] == [("master", 1, 400), ("sk-1", 2, 900), ("sk-2", 1, 200), ("sk-gw-k1", 2, 3)]
    assert out["model"] == [("m1", 5, 1_303), ("m2", 1, 200)]
    assert out["provider"] == [("mistral", 2, 3), ("p1", 2, 300), ("p2", 2, 1_200)]
    assert out["endpoint"] == [("chat", 4, 503), ("messages", 1, 200), ("responses", 1, 800)]
    assert out["day"] == [("2024-01-01", 2, 300), ("2024-01-02", 4, 1_203)]
    (total,) = out["total"]
    assert (total.group, total.requests, total.cost_nanos) == (None, 6, 1_503)
    assert (total.prompt_tokens, total.completion_tokens, total.cached_tokens) == (60, 3 + 5 + 7 + 11 + 0 + 99, 12)
    assert out["eng_m1"] == 100 + 800 + 1 + 2
    assert out["p2"] == 1_200
    assert out["key_id"] == 100 + 800 + 1 + 2  # e and f carry key k1 too
    assert out["key_prefix"] == 400
    assert out["window"] == 200 + 400
    assert [(r.requests, r.cost_nanos, r.prompt_tokens) for r in out["nothing"]] == [(0, 0, 0)]


def test_ledger_rows(database_url: str) -> None:
    async def main(store: Store) -> dict[str, Any]:
        for row in reversed(ROWS):  # inserted out of order: reads order by time
            await store.record(Settlement(row, []))
        return {
            "all": [r.id for r in await store.ledger_rows(SpendFilter())],
            "limited": [r.id for r in await store.ledger_rows(SpendFilter(team="eng"), limit=2)],
            "since": [r.id for r in await store.ledger_rows(SpendFilter(since=DAY2))],
            "rows": await store.ledger_rows(SpendFilter(key="sk-2")),
        }

    out = using(database_url, main)
    assert out["all"] == ["a", "b", "c", "d", "e", "f"]
    assert out["limited"] == ["a", "b"]
    assert out["since"] == ["c", "d", "e", "f"]
    assert out["rows"] == [ROWS[1]]  # every field read back as written (booleans as booleans, the endpoint)
    assert out["rows"][0].endpoint == "messages"
