"""The ledger's reads for the console and replay (issue 17, gateway/store/sql.py): pages with filters, search, order
and cursors, one row, daily spend, latency figures; and migration 6 (`ledger.decision`). On SQLite, and on
PostgreSQL (slow), like tests/store/test_sql.py."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from gateway.store.base import LedgerFilter, LedgerRow, Settlement, SpendFilter, Store, percentile
from gateway.store.schema import MIGRATIONS
from tests.store.test_sql import database_url, ledger_row, migrate_up_to, raw_connection, using

__all__ = ["database_url"]  # (the fixture, from test_sql: SQLite, and PostgreSQL marked slow)

DAY1 = 1_704_067_200.0  # 2024-01-01T00:00:00Z
DAY2 = DAY1 + 86_400
ROWS = [
    ledger_row("a", 100, ts=DAY1 + 10, team="web", model="kimi-k2.6", provider="moonshot", region="cn",
               route_reason="preferred", latency_ms=100.0, ttft_ms=10.0, key_id="k1", key_prefix="gw-aaaa"),
    ledger_row("b", 300, ts=DAY1 + 20, team="web", model="mistral-medium-3.5", provider="mistral",
               route_reason="context>262144", latency_ms=200.0, ttft_ms=None, key_id="k2", key_prefix="gw-bbbb"),
    ledger_row("c", 50, ts=DAY2 + 10, team="ops", model="codestral", provider="mistral", endpoint="fim",
               route_reason="pinned", status=502, latency_ms=300.0, ttft_ms=30.0, content='{"request": "secret"}'),
    ledger_row("d", 700, ts=DAY2 + 20, team="web", model="kimi-k2.6", provider="moonshot", region="cn",
               route_reason="fallback:upstream-503", status=429, latency_ms=400.0, ttft_ms=40.0,
               decision='{"counts": {}}'),
    ledger_row("e", 20, ts=DAY2 + 30, team="web_2", model="mistral-embed", provider="mistral",
               endpoint="embeddings", route_reason="pinned", latency_ms=500.0, ttft_ms=None),
    ledger_row("f", 10, ts=DAY2 + 40, team="web", model="kimi-k2.6", provider="moonshot", region="cn",
               batch_id="batch_1", custom_id="line-1", route_reason="batch", latency_ms=3_600_000.0),
    ledger_row("g", 5, ts=DAY2 + 40, team="ops", model="kimi-k2.6", provider="moonshot", region="cn",
               route_reason="preferred", latency_ms=600.0, ttft_ms=60.0),
]  # fmt: skip


def recorded(url: str, work: Any) -> Any:
    async def body(store: Store) -> Any:
        for row in reversed(ROWS):  # out of order: reads order themselves
            await store.record(Settlement(row, []))
        return await work(store)

    return using(url, body)


async def ids(store: Store, filters: LedgerFilter, order: str = "newest", **page: Any) -> tuple[list[str], Any]:
    found = await store.ledger_page(filters, order, **page)
    return [r.id for r in found.rows], found.total


def test_pages_are_newest_first_with_the_total_and_every_filter(database_url: str) -> None:
    async def work(store: Store) -> dict[str, Any]:
        f = LedgerFilter
        return {
            "all": await ids(store, f()),
            "team": await ids(store, f(team="web")),
            "key id": await ids(store, f(key="k2")),
            "key prefix": await ids(store, f(key="gw-aa")),
            "model": await ids(store, f(model="kimi-k2.6")),
            "provider region": await ids(store, f(provider="mistral", region="eu")),
            "reason": await ids(store, f(route_reason="pinned")),
            "status": await ids(store, f(status=429)),
            "errors": await ids(store, f(errors=True)),
            "ok": await ids(store, f(errors=False, team="ops")),
            "endpoint": await ids(store, f(endpoint="fim")),
            "batch": await ids(store, f(batch="batch_1")),
            "in a batch": await ids(store, f(in_batch=True)),
            "no batch": await ids(store, f(in_batch=False, team="web")),
            "window": await ids(store, f(since=DAY1 + 20, until=DAY2 + 20)),
            "none": await ids(store, f(team="nobody")),
        }

    out = recorded(database_url, work)
    assert out["all"] == (["g", "f", "e", "d", "c", "b", "a"], 7)  # ties in time: the larger id first
    assert out["team"] == (["f", "d", "b", "a"], 4)
    assert out["key id"] == (["b"], 1)
    assert out["key prefix"] == (["a"], 1)  # the start of a visible prefix (the others' is sk-gw-k1)
    assert out["model"] == (["g", "f", "d", "a"], 4)
    assert out["provider region"] == (["e", "c", "b"], 3)
    assert out["reason"] == (["e", "c"], 2)
    assert out["status"] == (["d"], 1)
    assert out["errors"] == (["d", "c"], 2)
    assert out["ok"] == (["g"], 1)
    assert out["endpoint"] == (["c"], 1)
    assert out["batch"] == (["f"], 1)
    assert out["in a batch"] == (["f"], 1)
    assert out["no batch"] == (["d", "b", "a"], 3)
    assert out["window"] == (["c", "b"], 2)  # since inclusive (b), until exclusive (d)
    assert out["none"] == ([], 0)


def test_search_is_a_case_insensitive_substring_of_model_provider_reason_or_team(database_url: str) -> None:
    async def work(store: Store) -> dict[str, Any]:
        search = lambda text, **more: ids(store, LedgerFilter(search=text, **more))  # noqa: E731
        return {
            "model": await search("CODE"),
            "provider": await search("moonsh"),
            "reason": await search("upstream-503"),
            "team": await search("ops"),
            "wildcards literal": await search("web_"),
            "percent": await search("%"),
            "with a filter": await search("kimi", team="web"),
        }

    out = recorded(database_url, work)
    assert out["model"] == (["c"], 1)
    assert out["provider"] == (["g", "f", "d", "a"], 4)
    assert out["reason"] == (["d"], 1)
    assert out["team"] == (["g", "c"], 2)
    assert out["wildcards literal"] == (["e"], 1)  # `_` is not LIKE's any-character here
    assert out["percent"] == ([], 0)
    assert out["with a filter"] == (["f", "d", "a"], 3)


def test_orders_offsets_and_cursors(database_url: str) -> None:
    async def work(store: Store) -> dict[str, Any]:
        f = LedgerFilter()
        first = await store.ledger_page(f, limit=3)
        # A row added after the first page was read does not move the cursor's next page.
        await store.record(Settlement(ledger_row("z", 1, ts=DAY2 + 99), []))
        return {
            "first": ([r.id for r in first.rows], first.total),
            "next": await ids(store, f, after=first.rows[-1].id, limit=3),
            "oldest": await ids(store, f, "oldest", limit=3),
            "oldest next": await ids(store, f, "oldest", after="b", limit=3),
            "offset": await ids(store, f, offset=2, limit=2),
            "cost": await ids(store, f, "cost", limit=3),
            "latency": await ids(store, f, "latency", limit=2),
            "uncounted": await ids(store, f, limit=1, count=False),
            "unknown cursor": await ids(store, f, after="nope"),
        }

    out = recorded(database_url, work)
    assert out["first"] == (["g", "f", "e"], 7)
    assert out["next"] == (["d", "c", "b"], 8)  # the total counts the new row; the cursor's page does not move
    assert out["oldest"] == (["a", "b", "c"], 8)
    assert out["oldest next"] == (["c", "d", "e"], 8)
    assert out["offset"] == (["f", "e"], 8)
    assert out["cost"] == (["d", "b", "a"], 8)
    assert out["latency"] == (["f", "g"], 8)
    assert out["uncounted"] == (["z"], None)
    assert out["unknown cursor"] == ([], 8)


def test_bad_page_arguments_are_refused(database_url: str) -> None:
    async def work(store: Store) -> list[str]:
        problems = []
        for order, page in (("cheapest", {}), ("cost", {"after": "a"}), ("newest", {"limit": -1})):
            with pytest.raises(ValueError) as caught:
                await store.ledger_page(LedgerFilter(), order, **page)
            problems.append(str(caught.value))
        return problems

    problems = using(database_url, work)
    assert "order must be one of newest, oldest, cost, latency" in problems[0]
    assert "after pages only in newest or oldest order" in problems[1]
    assert "must not be negative" in problems[2]


def test_a_page_leaves_content_out_and_a_row_read_has_it_all(database_url: str) -> None:
    async def work(store: Store) -> dict[str, Any]:
        page = await store.ledger_page(LedgerFilter(team="ops"))
        return {"page": page.rows, "one": await store.ledger_row("c"), "d": await store.ledger_row("d"),
                "missing": await store.ledger_row("nope")}  # fmt: skip

    out = recorded(database_url, work)
    by_id = {r.id: r for r in out["page"]}
    assert by_id["c"] == replace(ROWS[2], content=None)
    assert out["one"] == ROWS[2] and out["one"].content == '{"request": "secret"}'
    assert out["d"] == ROWS[3] and out["d"].decision == '{"counts": {}}'
    assert out["missing"] is None


def test_daily_spend_by_model_and_provider(database_url: str) -> None:
    async def work(store: Store) -> dict[str, Any]:
        return {
            "model": await store.daily_spend(None, DAY1),
            "provider web": await store.daily_spend("web", DAY1, "provider"),
            "window": await store.daily_spend(None, DAY2, "provider", until=DAY2 + 35),
        }

    out = recorded(database_url, work)
    assert out["model"] == [
        ("2024-01-01", "kimi-k2.6", 100, 1),
        ("2024-01-01", "mistral-medium-3.5", 300, 1),
        ("2024-01-02", "codestral", 50, 1),
        ("2024-01-02", "kimi-k2.6", 715, 3),
        ("2024-01-02", "mistral-embed", 20, 1),
    ]
    assert out["provider web"] == [("2024-01-01", "mistral", 300, 1), ("2024-01-01", "moonshot", 100, 1),
                                   ("2024-01-02", "moonshot", 710, 2)]  # fmt: skip
    assert out["window"] == [("2024-01-02", "mistral", 70, 2), ("2024-01-02", "moonshot", 700, 1)]
    assert out["model"][0].day == "2024-01-01" and out["model"][0].cost_nanos == 100
    with pytest.raises(ValueError, match="group_by"):
        using(database_url, lambda store: store.daily_spend(None, DAY1, "team"))


def test_latency_stats_leave_batch_lines_out(database_url: str) -> None:
    async def work(store: Store) -> dict[str, Any]:
        return {
            "all": await store.latency_stats(DAY1),
            "sampled": await store.latency_stats(DAY1, sample=2),
            "web": await store.latency_stats(DAY1, team="web"),
            "empty": await store.latency_stats(DAY2 + 1_000),
        }

    out = recorded(database_url, work)
    everything = out["all"]
    # Six interactive rows (the batch line's hour is not a latency); c (502) and d (429) failed.
    assert (everything.requests, everything.errors, everything.sampled) == (6, 2, 6)
    assert (everything.latency_p50_ms, everything.latency_p95_ms) == (300.0, 600.0)
    assert (everything.ttft_p50_ms, everything.ttft_p95_ms) == (30.0, 60.0)
    sampled = out["sampled"]  # the two most recent: g and e
    assert (sampled.requests, sampled.sampled, sampled.latency_p50_ms, sampled.ttft_p95_ms) == (6, 2, 500.0, 60.0)
    assert (out["web"].requests, out["web"].errors, out["web"].latency_p95_ms) == (3, 1, 400.0)
    empty = out["empty"]
    assert (empty.requests, empty.errors, empty.latency_p50_ms, empty.ttft_p50_ms, empty.sampled) == (
        0,
        0,
        None,
        None,
        0,
    )


def test_percentile_is_nearest_rank() -> None:
    assert percentile([], 50) is None
    assert percentile([7.0], 95) == 7.0
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 50), percentile(values, 95), percentile(values, 100)) == (50.0, 95.0, 100.0)
    assert percentile([3.0, 1.0, 2.0, 4.0], 50) == 2.0  # unsorted in, the 2nd of 4


# The ledger's columns as migration 5 left them, and a row as that release wrote it.
V5_LEDGER_COLUMNS = (
    "id, ts, team, key_id, key_prefix, requested_model, model, provider, region, prompt_tokens, completion_tokens,"
    " cached_tokens, cost_nanos, estimated, status, latency_ms, ttft_ms, route_reason, stream, content, endpoint,"
    " batch_id, custom_id"
)
V5_ROW = ("old-1", 1_700_000_000.5, "eng", "k1", "gw-k1", "auto", "kimi-k2.6", "moonshot", "cn")
V5_ROW += (10, 5, 2, 700, False, 200, 12.5, 3.25, "preferred", True, None, "messages", None, None)


def test_a_database_of_schema_5_gains_the_decision_column_and_keeps_its_rows(database_url: str) -> None:
    with raw_connection(database_url) as (db, ph):
        migrate_up_to(db, ph, 5)
        db.execute(f"INSERT INTO ledger ({V5_LEDGER_COLUMNS}) VALUES ({', '.join([ph] * 23)})", V5_ROW)

    new = ledger_row("new-1", 40, ts=1_700_000_100.0, decision='{"counts": {"kimi-k2.6": 12}}')

    async def work(store: Store) -> list[LedgerRow]:
        await store.record(Settlement(new, []))
        return await store.ledger_rows(SpendFilter())

    rows = using(database_url, work)
    # The old row, every field as written, has no recorded inputs; the new one keeps what it was given.
    assert rows == [LedgerRow(*V5_ROW), new] and rows[0].decision is None
    with raw_connection(database_url) as (db, _):
        versions = [row[0] for row in db.execute("SELECT version FROM schema_version ORDER BY version").fetchall()]
    assert versions == [version for version, _ in MIGRATIONS] and versions[:6] == [1, 2, 3, 4, 5, 6]
    assert len(using(database_url, lambda store: store.ledger_rows(SpendFilter()))) == 2  # opened again
