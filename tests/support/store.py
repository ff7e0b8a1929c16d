"""Teams, keys and ledger rows straight in a gateway's database (a store of its own, opened on the same URL), for
tests of the request path and of the admin API."""

from __future__ import annotations

import asyncio
import secrets
import time
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from gateway.auth.keys import generate_key, hash_key, new_key_id, visible_prefix
from gateway.budget.periods import period_window
from gateway.money import usd_to_nanos
from gateway.store import open_store
from gateway.store.base import (
    KeyRecord,
    LedgerRow,
    Scope,
    ScopeUsage,
    Settlement,
    SpendFilter,
    Team,
    key_scope,
    team_scope,
)


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


async def with_store(url: str, fn: Any) -> Any:
    """`await fn(store)` on a store of its own, opened on `url` and closed afterwards."""
    store = open_store(url)
    await store.open()
    try:
        return await fn(store)
    finally:
        await store.close()


def on_store(url: str, fn: Any) -> Any:
    """`with_store`, run to its end."""
    return run(with_store(url, fn))


def make_team(url: str, name: str, budget_usd: str | None = None, **fields: Any) -> Team:
    team = Team(
        name,
        usd_to_nanos(Decimal(budget_usd)) if budget_usd is not None else None,
        created_at=int(time.time()),
        **fields,
    )
    on_store(url, lambda s: s.create_team(team))
    return team


def make_key(
    url: str, team: str, budget_usd: str | None = None, name: str = "test", **fields: Any
) -> tuple[str, KeyRecord]:
    key = generate_key()
    record = KeyRecord(
        new_key_id(),
        team,
        name,
        visible_prefix(key),
        hash_key(key),
        usd_to_nanos(Decimal(budget_usd)) if budget_usd is not None else None,
        created_at=int(time.time()),
        **fields,
    )
    on_store(url, lambda s: s.create_key(record))
    return key, record


def ledger(url: str, **filters: Any) -> list[LedgerRow]:
    return on_store(url, lambda s: s.ledger_rows(SpendFilter(**filters), limit=100_000))


def ledger_at_least(url: str, count: int, seconds: float = 10.0) -> list[LedgerRow]:
    """The ledger, oldest first, once it holds `count` rows (settlement may trail the response: a stream's row is
    written as the stream ends); after `seconds`, what it holds then (the caller's assertions name what is missing)."""
    deadline = time.monotonic() + seconds
    while len(rows := ledger(url)) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return sorted(rows, key=lambda r: r.ts)


def team_usage(url: str, team: Team) -> ScopeUsage:
    start, _ = period_window(team.period, "UTC", datetime.now(UTC))
    return on_store(url, lambda s: s.usage(team_scope(team.name), start))


def key_usage(url: str, key: KeyRecord, period: str = "monthly") -> ScopeUsage:
    start, _ = period_window(period, "UTC", datetime.now(UTC))
    return on_store(url, lambda s: s.usage(key_scope(key.id), start))


def ledger_row(
    team: str,
    cost_nanos: int,
    *,
    ts: float | None = None,
    key: KeyRecord | None = None,
    model: str = "kimi-k2.6",
    provider: str = "moonshot",
    prompt: int = 10,
    completion: int = 5,
    cached: int = 0,
    endpoint: str = "chat",
) -> LedgerRow:
    """A settled 200 row as the gateway would write it."""
    return LedgerRow(
        id="req_" + secrets.token_hex(12),
        ts=ts if ts is not None else time.time(),
        team=team,
        key_id=key.id if key else None,
        key_prefix=key.prefix if key else None,
        requested_model=model,
        model=model,
        provider=provider,
        region="cn" if provider == "moonshot" else "eu",
        prompt_tokens=prompt,
        completion_tokens=completion,
        cached_tokens=cached,
        cost_nanos=cost_nanos,
        estimated=False,
        status=200,
        latency_ms=12.5,
        ttft_ms=None,
        route_reason="requested",
        stream=False,
        endpoint=endpoint,
    )


def record(url: str, rows: list[LedgerRow], scopes: list[Scope] | None = None) -> None:
    """Settle `rows` (charged to `scopes`) as the gateway would."""

    async def work(store: Any) -> None:
        for row in rows:
            await store.record(Settlement(row, scopes or []))

    on_store(url, work)
