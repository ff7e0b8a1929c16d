"""Set up teams and keys straight in a gateway's database, for tests of the request path."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC
from decimal import Decimal
from typing import Any

from gateway.auth.keys import generate_key, hash_key, new_key_id, visible_prefix
from gateway.money import usd_to_nanos
from gateway.store import open_store
from gateway.store.base import KeyRecord, LedgerRow, ScopeUsage, SpendFilter, Team, key_scope, team_scope


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


async def _with_store(url: str, fn: Any) -> Any:
    store = open_store(url)
    await store.open()
    try:
        return await fn(store)
    finally:
        await store.close()


def make_team(url: str, name: str, budget_usd: str | None = None, **fields: Any) -> Team:
    team = Team(
        name,
        usd_to_nanos(Decimal(budget_usd)) if budget_usd is not None else None,
        created_at=int(time.time()),
        **fields,
    )
    run(_with_store(url, lambda s: s.create_team(team)))
    return team


def make_key(url: str, team: str, budget_usd: str | None = None, **fields: Any) -> tuple[str, KeyRecord]:
    key = generate_key()
    record = KeyRecord(
        new_key_id(),
        team,
        "test",
        visible_prefix(key),
        hash_key(key),
        usd_to_nanos(Decimal(budget_usd)) if budget_usd is not None else None,
        created_at=int(time.time()),
        **fields,
    )
    run(_with_store(url, lambda s: s.create_key(record)))
    return key, record


def ledger(url: str, **filters: Any) -> list[LedgerRow]:
    return run(_with_store(url, lambda s: s.ledger_rows(SpendFilter(**filters), limit=100_000)))


def team_usage(url: str, team: Team) -> ScopeUsage:
    from datetime import datetime

    from gateway.budget.periods import period_window

    start, _ = period_window(team.period, "UTC", datetime.now(UTC))
    return run(_with_store(url, lambda s: s.usage(team_scope(team.name), start)))


def key_usage(url: str, key: KeyRecord, period: str = "monthly") -> ScopeUsage:
    from datetime import datetime

    from gateway.budget.periods import period_window

    start, _ = period_window(period, "UTC", datetime.now(UTC))
    return run(_with_store(url, lambda s: s.usage(key_scope(key.id), start)))
