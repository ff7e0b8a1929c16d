"""The `Gateway`: everything one running gateway holds, built once and passed in."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Coroutine

from gateway.auth import Authenticator
from gateway.config import Catalog, ModelConfig, Settings
from gateway.errors import GatewayError
from gateway.providers import Adapter, build_adapter
from gateway.spend.accounting import Accounting
from gateway.store import Store, open_store

log = logging.getLogger("gateway")


class Gateway:
    def __init__(self, settings: Settings, catalog: Catalog, store: Store | None = None) -> None:
        self.settings = settings
        self.catalog = catalog
        self.store = store if store is not None else open_store(settings.resolved_database_url())
        self.auth = Authenticator(settings.master_key, self.store)
        self.accounting = Accounting(self.store, settings)
        self.adapters: dict[str, Adapter] = {name: build_adapter(p) for name, p in catalog.providers.items()}
        self.started = False
        self._background: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        await self.store.open()
        await self.accounting.start(list(self.catalog.models))
        for name, adapter in self.adapters.items():
            provider = self.catalog.providers[name]
            if provider.api_key is None and provider.kind != "litellm":
                log.warning("provider %s has no API key (%s): its models will answer 503", name, provider.kind)
            await adapter.start()
        self.started = True

    async def close(self) -> None:
        self.started = False
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        await self.accounting.close()
        for adapter in self.adapters.values():
            await adapter.close()
        await self.store.close()

    def in_background(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        """Run work that must finish even if the request that started it is cancelled."""
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def adapter_for(self, model: ModelConfig) -> Adapter:
        provider = self.catalog.provider_of(model)
        if provider.api_key is None and provider.kind in ("mistral", "moonshot"):
            raise GatewayError(
                503,
                f"provider {provider.name!r} has no API key configured; model {model.name!r} is unavailable",
                "upstream_error",
                "provider_not_configured",
            )
        return self.adapters[provider.name]
