"""The one interface every provider adapter implements, and the values it returns.

The rest of the gateway sees OpenAI-shaped requests and answers only; everything
one provider needs (field translation, id mapping, sampling fixes, usage
extraction, error mapping) lives in that provider's own module.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.catalog import ModelConfig, Provider
from gateway.types import Json, Usage

# What a request wants from a provider.
CHAT = "chat"
FIM = "fim"
EMBEDDINGS = "embeddings"

# A front door's rendering of the canonical (OpenAI chat) answer, applied where the adapter has it parsed anyway:
# a complete answer or a stream chunk in another shape (legacy text completions: a dict), or, for a stream only, the
# SSE bytes of the door's own events (the Messages and Responses doors' renderers: the relay hands them each chunk
# it parsed, so no event is parsed twice).
ChunkReshaper = Callable[[Json], Json | bytes]


class ChunkAction(enum.Enum):
    """What an adapter's `fix_chunk` did to a stream chunk."""

    KEEP = 0  # forward the provider's bytes unchanged
    CHANGED = 1  # re-encode the (modified) chunk
    DROP = 2  # do not forward


def reshaped(reply: Json, reshape: ChunkReshaper | None) -> Json:
    """A complete answer through the door's reshaper (a door that renders bytes does so for stream chunks only:
    its complete answers are rendered by the door itself)."""
    if reshape is None:
        return reply
    shaped = reshape(reply)
    if isinstance(shaped, bytes):
        raise TypeError("a reshaper that renders bytes is for stream chunks only")
    return shaped


def usage_from(raw: Any) -> Usage | None:
    """Normalise every usage shape providers send (see providers.md)."""
    if not isinstance(raw, dict):
        return None
    details = raw.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    if cached is None:
        cached = raw.get("cached_tokens", raw.get("num_cached_tokens"))
    completion_details = raw.get("completion_tokens_details")
    reasoning = completion_details.get("reasoning_tokens") if isinstance(completion_details, dict) else None
    return Usage(
        prompt_tokens=int(raw.get("prompt_tokens") or 0),
        completion_tokens=int(raw.get("completion_tokens") or 0),
        cached_tokens=int(cached or 0),
        reasoning_tokens=int(reasoning or 0),
    )


@dataclass(slots=True)
class StreamOutcome:
    """Filled in while a stream is relayed; read once it ends (or is cut)."""

    usage: Usage | None = None
    finish_reason: str | None = None
    chunks: int = 0
    malformed_chunks: int = 0
    error: str | None = None  # "stream_cut", "malformed", "timeout", "upstream_error", "client_gone"
    completed: bool = False
    first_chunk_at: float | None = None
    completion_chars: int = 0  # text relayed, for an estimate when the provider never reports usage
    transcript: list[str] | None = None  # the relayed text, kept only when the ledger stores content
    meta: Json = field(default_factory=dict)  # the stream's id, created and model (for the usage chunk)


@dataclass(slots=True)
class Reply:
    """A complete (non-streaming) answer, already in OpenAI's shape."""

    body: bytes
    usage: Usage | None
    headers: dict[str, str] = field(default_factory=dict)
    upstream_limits: dict[str, str] = field(default_factory=dict)  # `rate_limit_headers` of the provider's answer


@dataclass(slots=True)
class StreamReply:
    """A streaming answer: SSE bytes for the client, and what was learnt on the way."""

    events: AsyncIterator[bytes]
    outcome: StreamOutcome
    headers: dict[str, str] = field(default_factory=dict)
    upstream_limits: dict[str, str] = field(default_factory=dict)


def rate_limit_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """What a provider's answer says of its account's capacity (`x-ratelimit-*`, `retry-after`), lower-cased: read
    by the provider queues (gateway/limits/feedback.py), never passed to the client."""
    return {
        name.lower(): value
        for name, value in headers.items()
        if name[:12].lower() == "x-ratelimit-" or name.lower() == "retry-after"
    }


class Adapter(ABC):
    """A provider behind the gateway. One instance per configured provider."""

    def __init__(self, provider: Provider) -> None:
        self.provider = provider

    @property
    def name(self) -> str:
        return self.provider.name

    async def start(self) -> None:  # noqa: B027 (an optional hook: most adapters open nothing here)
        """Open connection pools; called once the event loop runs."""

    async def close(self) -> None:  # noqa: B027 (an optional hook)
        """Close connection pools."""

    @abstractmethod
    async def chat(
        self, body: Json, model: ModelConfig, *, stream: bool, include_usage: bool, reshape: ChunkReshaper | None = None
    ) -> Reply | StreamReply:
        """Send an OpenAI chat request (already parsed, owned by the adapter) to the provider."""

    async def fim(
        self, body: Json, model: ModelConfig, *, stream: bool, include_usage: bool, reshape: ChunkReshaper | None = None
    ) -> Reply | StreamReply:
        from gateway.errors import invalid_request

        raise invalid_request(f"provider {self.name!r} has no fill-in-the-middle endpoint", param="suffix")

    async def embeddings(self, body: Json, model: ModelConfig) -> Reply:
        from gateway.errors import invalid_request

        raise invalid_request(f"provider {self.name!r} has no embeddings endpoint", param="model")
