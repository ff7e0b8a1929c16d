"""The providers' batch APIs in use: one client per provider of the catalog in use, rebuilt when a reload changes it."""

from __future__ import annotations

import logging

from gateway.catalog import Provider
from gateway.providers.batches import build_batch_api
from gateway.providers.batches.base import BatchApi
from gateway.providers.openai_compatible import OpenAICompatibleAdapter
from gateway.state import Gateway

log = logging.getLogger("gateway.batches")

# The shortest completion window each provider kind promises, in hours: Moonshot's batch guide gives completion
# windows from 12 hours to 7 days (platform.moonshot.ai, "Batch API"); Mistral's jobs take `timeout_hours`
# (docs.mistral.ai, Batch API: default 24, any whole number of hours). A batch with a shorter window runs its lines
# for that provider interactively.
MIN_WINDOW_HOURS = {"mistral": 1, "moonshot": 12}


class BatchApis:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self._apis: dict[str, tuple[Provider, BatchApi]] = {}

    def windows(self) -> dict[str, int]:
        """Providers of the catalog in use that have a batch API, with the shortest window each can promise."""
        adapters = self.gateway.adapters
        return {
            name: MIN_WINDOW_HOURS[provider.kind]
            for name, provider in self.gateway.catalog.providers.items()
            if provider.kind in MIN_WINDOW_HOURS
            and provider.api_key is not None
            and isinstance(adapters.get(name), OpenAICompatibleAdapter)  # (a test's in-process adapter has none)
        }

    async def for_provider(self, name: str) -> BatchApi | None:
        provider = self.gateway.catalog.providers.get(name)
        if provider is None:
            return None
        held = self._apis.get(name)
        if held is not None and held[0] == provider:
            return held[1]
        adapter = self.gateway.adapters.get(name)
        if adapter is None:
            return None
        try:
            api = build_batch_api(provider, adapter)
        except TypeError:  # an adapter that is not the provider's HTTP one (tests): no batch API
            api = None
        if api is None:
            return None
        await api.start()
        if held is not None:  # the catalog changed this provider: the old client goes
            await held[1].close()
        self._apis[name] = (provider, api)
        return api

    async def close(self) -> None:
        apis, self._apis = self._apis, {}
        for _, api in apis.values():
            try:
                await api.close()
            except Exception:  # closing: nothing more to do with it
                log.debug("closing a batch API client failed", exc_info=True)
