"""Ledger rows for the replay tests, as the gateway writes them: a catalog model's provider, region and exact cost,
and (unless `inputs=None`) the decision inputs its settlement records."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from gateway.catalog import Catalog, load_catalog
from gateway.pricing import cost_nanos
from gateway.replay.inputs import encode_inputs
from gateway.store import open_store
from gateway.store.base import LedgerRow, Settlement, Store
from gateway.tokens import Count
from gateway.types import Usage

ENV = {"MISTRAL_API_KEY": "mistral-key", "MOONSHOT_API_KEY": "moonshot-key"}
DAY = 86_400.0
T0 = 1_790_000_000.0  # 2026-09-21, a moment inside the windows the tests replay
T = TypeVar("T")
_ids = itertools.count(1)


def catalog() -> Catalog:
    return load_catalog(None, ENV)


def inputs(
    cat: Catalog,
    tokens: int,
    capabilities: tuple[str, ...] = ("chat",),
    max_tokens: int | None = 256,
    n: int = 1,
    residency: list[str] | None = None,
) -> str:
    """Decision inputs as a settlement records them (every catalog model counted `tokens`)."""
    counts = {name: Count(tokens, False, "estimate", 0) for name in cat.models}
    expected = 0 if "embeddings" in capabilities else (max_tokens or 1024)
    return encode_inputs(counts, tokens, capabilities, max_tokens, n, residency, expected)


def row(
    cat: Catalog,
    model: str,
    *,
    team: str = "web",
    requested: str = "auto",
    prompt: int = 1_000,
    completion: int = 200,
    cached: int = 0,
    ts: float = T0,
    status: int = 200,
    endpoint: str = "chat",
    key: tuple[str, str] | None = None,
    decision: str | None | bool = True,
    batch_id: str | None = None,
    route_reason: str = "preferred",
) -> LedgerRow:
    """A settled row served by `model` (its provider and region from the catalog, its exact cost); `decision` True:
    recorded inputs for `prompt` tokens of chat, a string: those inputs, None: none (a row from before migration 6)."""
    config = cat.models[model]
    provider = cat.provider_of(config)
    usage = Usage(prompt_tokens=prompt, completion_tokens=completion, cached_tokens=cached)
    number = next(_ids)
    return LedgerRow(
        id=f"req_{number:06d}",
        ts=ts + number * 1e-3,
        team=team,
        key_id=key[0] if key else None,
        key_prefix=key[1] if key else None,
        requested_model=requested,
        model=model,
        provider=provider.name,
        region=provider.region,
        prompt_tokens=prompt,
        completion_tokens=completion,
        cached_tokens=cached,
        cost_nanos=cost_nanos(config, usage),
        estimated=False,
        status=status,
        latency_ms=100.0,
        ttft_ms=None,
        route_reason=route_reason,
        stream=False,
        endpoint=endpoint,
        batch_id=batch_id,
        custom_id="line-1" if batch_id else None,
        decision=inputs(cat, prompt) if decision is True else (decision or None),
    )


def on_store(url: str, body: Callable[[Store], Awaitable[T]]) -> T:
    async def main() -> T:
        store = open_store(url)
        await store.open()
        try:
            return await body(store)
        finally:
            await store.close()

    return asyncio.run(main())


def write(url: str, rows: list[LedgerRow], setup: Callable[[Store], Awaitable[Any]] | None = None) -> None:
    """Record `rows` (after `setup`, which creates teams and keys)."""

    async def body(store: Store) -> None:
        if setup is not None:
            await setup(store)
        for one in rows:
            await store.record(Settlement(one, []))

    on_store(url, body)
