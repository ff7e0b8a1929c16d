"""Provider adapters: one module per provider kind, behind `base.Adapter`."""

from __future__ import annotations

from gateway.config import Provider
from gateway.providers.base import Adapter, Reply, StreamOutcome, StreamReply, Usage


def build_adapter(provider: Provider) -> Adapter:
    """The adapter for a provider's kind. litellm's is imported only when configured."""
    if provider.kind == "mistral":
        from gateway.providers.mistral import MistralAdapter

        return MistralAdapter(provider)
    if provider.kind == "moonshot":
        from gateway.providers.moonshot import MoonshotAdapter

        return MoonshotAdapter(provider)
    if provider.kind == "openai-compatible":
        from gateway.providers.openai_compatible import OpenAICompatibleAdapter

        return OpenAICompatibleAdapter(provider)
    from gateway.providers.litellm_adapter import LitellmAdapter

    return LitellmAdapter(provider)


__all__ = ["Adapter", "Reply", "StreamOutcome", "StreamReply", "Usage", "build_adapter"]
