"""Provider adapters: one module per provider kind, behind `base.Adapter`."""

from __future__ import annotations

from gateway.catalog import Provider
from gateway.providers.base import Adapter, Reply, StreamOutcome, StreamReply
from gateway.types import Usage


def build_adapter(provider: Provider, max_sse_event_bytes: int | None = None) -> Adapter:
    """The adapter for a provider's kind. litellm's is imported only when configured.

    `max_sse_event_bytes` (Settings.max_sse_event_bytes) bounds one event of an HTTP provider's stream."""
    adapter: Adapter
    if provider.kind == "mistral":
        from gateway.providers.mistral import MistralAdapter

        adapter = MistralAdapter(provider)
    elif provider.kind == "moonshot":
        from gateway.providers.moonshot import MoonshotAdapter

        adapter = MoonshotAdapter(provider)
    elif provider.kind == "openai-compatible":
        from gateway.providers.openai_compatible import OpenAICompatibleAdapter

        adapter = OpenAICompatibleAdapter(provider)
    else:
        from gateway.providers.litellm_adapter import LitellmAdapter

        return LitellmAdapter(provider)
    if max_sse_event_bytes is not None:
        adapter.max_event_bytes = max_sse_event_bytes
    return adapter


__all__ = ["Adapter", "Reply", "StreamOutcome", "StreamReply", "Usage", "build_adapter"]
