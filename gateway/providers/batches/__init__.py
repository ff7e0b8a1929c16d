"""Provider batch APIs (issue 16): one module per provider behind `base.BatchApi`."""

from __future__ import annotations

from gateway.catalog import Provider
from gateway.providers.base import Adapter
from gateway.providers.batches.base import BatchApi


def build_batch_api(provider: Provider, adapter: Adapter) -> BatchApi | None:
    """The batch API of a provider's kind, sending bodies through `adapter` (the provider's own, so that a line is
    sent and answered as the same request on the interactive path); None for kinds without one
    (openai-compatible servers, litellm: their lines run on the interactive path)."""
    if provider.kind not in ("mistral", "moonshot"):
        return None
    from gateway.providers.openai_compatible import OpenAICompatibleAdapter

    if not isinstance(adapter, OpenAICompatibleAdapter):
        raise TypeError(
            f"provider {provider.name!r} ({provider.kind}) needs its HTTP adapter, not {type(adapter).__name__}"
        )
    if provider.kind == "mistral":
        from gateway.providers.batches.mistral import MistralBatchApi

        return MistralBatchApi(provider, adapter)
    from gateway.providers.batches.moonshot import MoonshotBatchApi

    return MoonshotBatchApi(provider, adapter)


__all__ = ["BatchApi", "build_batch_api"]
