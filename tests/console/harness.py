"""The console in-process (the real app over real SQLite, providers answered by `MockAdapter`), and what its tests
do with it: log in, read a page's CSRF token, post a form, record ledger rows."""

from __future__ import annotations

import asyncio
import html
import re
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from gateway.budget.periods import period_window
from gateway.catalog import load_catalog
from gateway.http.app import create_app
from gateway.providers.mock import MockAdapter
from gateway.settings import Settings
from gateway.state import Gateway
from gateway.store.base import LedgerRow, Scope, Settlement, Team, team_scope
from tests.support.inprocess import ENV, MASTER, reply
from tests.support.store import ledger_row

Console = Callable[[Gateway, httpx.AsyncClient], Awaitable[None]]
CSRF = re.compile(r'name="csrf_token" value="([^"]*)"')


def run_console(tmp_path: Path, scenario: Console, master_key: str | None = MASTER, **settings: Any) -> None:
    """`scenario(gateway, client)` against an in-process gateway (its providers answered by `MockAdapter`s)."""

    def adapter(provider: Any) -> MockAdapter:
        return MockAdapter(provider, lambda call: reply())

    config = Settings(
        database_url=f"sqlite:///{tmp_path / 'gateway.db'}",
        data_dir=tmp_path,
        master_key=master_key,
        request_log=False,
        **settings,
    )
    gateway = Gateway(config, load_catalog(None, ENV), adapters=adapter)

    async def main() -> None:
        await gateway.start()
        try:
            transport = httpx.ASGITransport(app=create_app(gateway))
            async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
                await scenario(gateway, client)
        finally:
            await gateway.close()

    asyncio.run(main())


def csrf_of(page: str) -> str:
    found = CSRF.search(page)
    assert found is not None, "no csrf_token field on the page"
    return html.unescape(found.group(1))


async def login(client: httpx.AsyncClient, master_key: str = MASTER) -> str:
    """Log in through the form; returns the session's CSRF token."""
    form = await client.get("/ui/login")
    assert form.status_code == 200
    answer = await client.post(
        "/ui/login", data={"master_key": master_key, "csrf_token": csrf_of(form.text), "next": "/ui"}
    )
    assert answer.status_code == 303, answer.text
    overview = await client.get("/ui")
    assert overview.status_code == 200
    return csrf_of(overview.text)


async def post(client: httpx.AsyncClient, path: str, token: str, **fields: Any) -> httpx.Response:
    return await client.post(path, data={"csrf_token": token, **fields})


async def record(gateway: Gateway, *rows: LedgerRow, team: Team | None = None) -> None:
    """Settle rows as the gateway would (charged to `team`'s budget in its current period, when given)."""
    scopes = []
    if team is not None:
        start, _ = period_window(team.period, "UTC", datetime.now(UTC))
        scopes = [Scope(team_scope(team.name), start, team.budget_nanos)]
    for row in rows:
        await gateway.store.record(Settlement(row, scopes))


def row(team: str, cost_nanos: int = 1_000_000, **fields: Any) -> LedgerRow:
    """A ledger row (tests.support.store.ledger_row) with any field overridden."""
    base = ledger_row(team, cost_nanos, ts=fields.pop("ts", time.time()))
    for name, value in fields.items():
        setattr(base, name, value)
    return base
