"""A provider answered by a function, in-process: the seam for testing the pipeline without a network, as
httpx's `MockTransport` is for a client.

    def handler(call: MockCall) -> MockAnswer:
        if call.stream:
            return [{"choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": "stop"}]},
                    {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1}}]
        return {"choices": [...], "usage": {...}}

    gateway = Gateway(settings, catalog, adapters=lambda provider: MockAdapter(provider, handler))

A handler returns a reply body (non-streaming), the chunks of a stream (a list, or an async iterator of chunks
to control timing), or raises a GatewayError as a provider adapter would (`upstream_status` set for a provider's
own HTTP status). Replies and chunks are sent as given (a chunk's usage is taken out, as every adapter does: the
pipeline sends the usage chunk), so a test states exactly what the provider said.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import orjson

from gateway.catalog import ModelConfig, Provider
from gateway.providers.base import (
    Adapter,
    ChunkReshaper,
    Reply,
    StreamOutcome,
    StreamReply,
    reshaped,
    usage_from,
)
from gateway.providers.sse import encoded, took
from gateway.types import Json


@dataclass(frozen=True, slots=True)
class MockCall:
    """One call the pipeline made: which operation, the body the adapter was given, the model, stream or not."""

    operation: str  # "chat", "fim" or "embeddings"
    body: Json
    model: ModelConfig
    stream: bool
    include_usage: bool


MockAnswer = Json | list[Json] | AsyncIterator[Json]
MockHandler = Callable[[MockCall], MockAnswer | Awaitable[MockAnswer]]


class MockAdapter(Adapter):
    """Answers every call with `handler`; records the calls in `calls`."""

    def __init__(self, provider: Provider, handler: MockHandler) -> None:
        super().__init__(provider)
        self.handler = handler
        self.calls: list[MockCall] = []

    async def chat(
        self, body: Json, model: ModelConfig, *, stream: bool, include_usage: bool, reshape: ChunkReshaper | None = None
    ) -> Reply | StreamReply:
        return await self._answer(MockCall("chat", body, model, stream, include_usage), reshape)

    async def fim(
        self, body: Json, model: ModelConfig, *, stream: bool, include_usage: bool, reshape: ChunkReshaper | None = None
    ) -> Reply | StreamReply:
        return await self._answer(MockCall("fim", body, model, stream, include_usage), reshape)

    async def embeddings(self, body: Json, model: ModelConfig) -> Reply:
        reply = await self._answer(MockCall("embeddings", body, model, False, False), None)
        assert isinstance(reply, Reply)
        return reply

    async def _answer(self, call: MockCall, reshape: ChunkReshaper | None) -> Reply | StreamReply:
        self.calls.append(call)
        answer = self.handler(call)
        if inspect.isawaitable(answer):
            answer = await answer
        if not call.stream:
            assert isinstance(answer, dict), "a non-streaming call is answered with a reply body (a dict)"
            usage = usage_from(answer.get("usage"))
            return Reply(orjson.dumps(reshaped(answer, reshape)), usage)
        assert not isinstance(answer, dict), "a streaming call is answered with chunks"
        outcome = StreamOutcome()
        return StreamReply(self._events(answer, outcome, reshape), outcome)

    @staticmethod
    async def _events(
        chunks: list[Json] | AsyncIterator[Json], outcome: StreamOutcome, reshape: ChunkReshaper | None
    ) -> AsyncIterator[bytes]:
        async def each() -> AsyncIterator[Json]:
            if isinstance(chunks, list):
                for chunk in chunks:
                    yield chunk
            else:
                async for chunk in chunks:
                    yield chunk

        async for chunk in each():
            if took(chunk, outcome):
                yield encoded(chunk, reshape)
        outcome.completed = True
