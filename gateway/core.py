"""The `Gateway`: everything one running gateway holds, built once and passed in."""

from __future__ import annotations

import logging

from gateway.auth import MasterKeyAuth
from gateway.config import Catalog, ModelConfig, Settings
from gateway.errors import GatewayError
from gateway.providers import Adapter, build_adapter

log = logging.getLogger("gateway")


class Gateway:
    def __init__(self, settings: Settings, catalog: Catalog) -> None:
        self.settings = settings
        self.catalog = catalog
        self.auth = MasterKeyAuth(settings.master_key)
        self.adapters: dict[str, Adapter] = {name: build_adapter(p) for name, p in catalog.providers.items()}
        self.started = False

    async def start(self) -> None:
        for name, adapter in self.adapters.items():
            provider = self.catalog.providers[name]
            if provider.api_key is None and provider.kind != "litellm":
                log.warning("provider %s has no API key (%s): its models will answer 503", name, provider.kind)
            await adapter.start()
        self.started = True

    async def close(self) -> None:
        for adapter in self.adapters.values():
            await adapter.close()
        self.started = False

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
