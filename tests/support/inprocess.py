"""The gateway in-process: the real app, routing, budgets, attempts and settlement on real SQLite, in front of
`MockAdapter` providers (no socket, no subprocess). `run` starts one for a scenario; the rest are what a scenario
says to it (a provider's answer, a stream's chunks, a provider's error) and asks of it (a team's key, the ledger).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette

from gateway.admin import service
from gateway.catalog import load_catalog
from gateway.errors import GatewayError
from gateway.http.app import create_app
from gateway.providers.mock import MockAdapter, MockCall
from gateway.settings import Settings
from gateway.state import Gateway
from gateway.store.base import SpendFilter

MASTER = "sk-master-pipeline"
ENV = {"MISTRAL_API_KEY": "mistral-key", "MOONSHOT_API_KEY": "moonshot-key"}
HELLO = [{"role": "user", "content": "Hello there"}]


def reply(text: str = "Hi!", prompt: int = 12, completion: int = 3) -> dict[str, Any]:
    return {
        "id": "cmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "upstream",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
    }


def chunks(*texts: str, prompt: int = 12, completion: int = 3) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [
        {
            "id": "c1",
            "created": 1,
            "model": "m",
            "choices": [{"index": 0, "delta": {"content": t}, "finish_reason": None}],
        }
        for t in texts
    ]
    out[-1]["choices"][0]["finish_reason"] = "stop"
    out.append({"id": "c1", "choices": [], "usage": {"prompt_tokens": prompt, "completion_tokens": completion}})
    return out


def upstream_error(status: int) -> GatewayError:
    error = GatewayError(
        502 if status >= 500 else status, f"provider said {status}", "upstream_error", "upstream_error"
    )
    error.upstream_status = status
    return error


Handler = Callable[[MockCall], Any]
Scenario = Callable[[Gateway, httpx.AsyncClient, dict[str, list[MockCall]]], Awaitable[None]]


def run(
    tmp_path: Path,
    handlers: dict[str, Handler],
    scenario: Scenario,
    on_app: Callable[[Starlette], None] | None = None,
    **settings: Any,
) -> dict[str, list[MockCall]]:
    """Run `scenario` against an in-process gateway whose providers (by name) answer with `handlers` (the others
    with `reply()`); `on_app` sees the app before the first request (to listen to its request log, say)."""
    calls: dict[str, list[MockCall]] = {}

    def adapter(provider: Any) -> MockAdapter:
        mock = MockAdapter(provider, handlers.get(provider.name, lambda call: reply()))
        calls[provider.name] = mock.calls
        return mock

    defaults: dict[str, Any] = {
        "database_url": f"sqlite:///{tmp_path / 'gateway.db'}",
        "data_dir": tmp_path,
        "master_key": MASTER,
        "request_log": False,
    }
    config = Settings(**{**defaults, **settings})
    gateway = Gateway(config, load_catalog(None, ENV), adapters=adapter)

    async def main() -> None:
        await gateway.start()
        try:
            app = create_app(gateway)
            if on_app is not None:
                on_app(app)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
                await scenario(gateway, client, calls)
        finally:
            await gateway.close()

    asyncio.run(main())
    return calls


async def team_key(gateway: Gateway, name: str = "alpha", **team: Any) -> str:
    await service.create_team(gateway.store, {"name": name, **team}, "UTC", gateway.catalog)
    created = await service.create_key(gateway.store, {"team": name})
    return created["key"]


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


async def ledger(gateway: Gateway) -> list[Any]:
    return await gateway.store.ledger_rows(SpendFilter())


async def settled(gateway: Gateway, count: int = 1, seconds: float = 10.0) -> list[Any]:
    """The ledger once it holds `count` rows (polled with a bound: a background settlement writes it)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while len(rows := await ledger(gateway)) < count:
        assert loop.time() < deadline, f"{len(rows)} ledger rows after {seconds} s, expected {count}"
        await asyncio.sleep(0.01)
    return rows
