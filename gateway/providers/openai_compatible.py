"""The OpenAI-compatible HTTP adapter: the fast path every HTTP provider shares.

One pooled aiohttp session per provider (keep-alive, created once the loop
runs). The request body was parsed once by the HTTP layer; here it is rebuilt
from the kind's whitelist (fields.py) and serialised once. Subclasses
(mistral.py, moonshot.py) override the small hooks: `prepare_*`, `fix_reply`,
`fix_chunk`. The URL, the key and the headers are configuration only.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import aiohttp
import orjson
from yarl import URL

from gateway import __version__
from gateway.catalog import ModelConfig
from gateway.errors import GatewayError, invalid_request
from gateway.providers.base import (
    Adapter,
    ChunkAction,
    ChunkReshaper,
    Reply,
    StreamOutcome,
    StreamReply,
    rate_limit_headers,
    reshaped,
    usage_from,
)
from gateway.providers.fields import (
    CHAT_REQUEST,
    COMPLETION_REQUEST,
    EMBEDDING_REQUEST,
    HINT_FIELDS,
    Messages,
    Shape,
    rebuild,
    roles,
)
from gateway.providers.replies import conform_reply
from gateway.providers.sse import DEFAULT_MAX_EVENT_BYTES, relay_events
from gateway.providers.upstream_errors import connect_error, map_status_error, timeout_error
from gateway.types import Json, Usage

__all__ = ["HINT_FIELDS", "OpenAICompatibleAdapter", "usage_from"]

# OpenAI's documented request parameters (fields.py, from ../shared/reference/openai-openapi-subset.yaml).
# An OpenAI-compatible server (vLLM, OpenRouter, ...) is sent these and nothing else.
OPENAI_CHAT_FIELDS = CHAT_REQUEST.fields
OPENAI_COMPLETION_FIELDS = COMPLETION_REQUEST.fields
OPENAI_EMBEDDING_FIELDS = EMBEDDING_REQUEST.fields
OPENAI_MESSAGES = Messages(
    roles(
        system=("content", "name"),
        developer=("content", "name"),
        user=("content", "name"),
        assistant=("content", "name", "refusal", "audio", "tool_calls", "function_call"),
        tool=("content", "tool_call_id"),
        function=("content", "name"),
    )
)
OPENAI_CHAT = Shape(OPENAI_CHAT_FIELDS, messages=OPENAI_MESSAGES)
OPENAI_COMPLETION = Shape(OPENAI_COMPLETION_FIELDS, openai=COMPLETION_REQUEST)
OPENAI_EMBEDDINGS = Shape(OPENAI_EMBEDDING_FIELDS, openai=EMBEDDING_REQUEST)


class OpenAICompatibleAdapter(Adapter):
    chat_path = "/chat/completions"
    fim_path: str | None = None
    embeddings_path = "/embeddings"
    max_event_bytes = DEFAULT_MAX_EVENT_BYTES  # one SSE event at most (Settings.max_sse_event_bytes)

    def __init__(self, provider: Any) -> None:
        super().__init__(provider)
        self._session: aiohttp.ClientSession | None = None
        self._urls: dict[str, URL] = {}
        # A provider whose account has declared limits: its answers' rate-limit headers are read (the provider
        # queues hold off when they say nothing is left); others skip the work.
        self._limited = getattr(provider, "limits", None) is not None
        # The catalog's `extra_fields` (openai-compatible servers' own parameters) join OpenAI's.
        extra = frozenset(getattr(provider, "extra_fields", ()) or ())
        self._chat, self._completion, self._embeddings = (
            replace(shape, allowed=shape.allowed | extra) if extra else shape
            for shape in (OPENAI_CHAT, OPENAI_COMPLETION, OPENAI_EMBEDDINGS)
        )

    # -- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        if self._session is not None:
            return
        t = self.provider.timeouts
        headers = {"User-Agent": f"model-gateway/{__version__}", "Content-Type": "application/json"}
        if self.provider.api_key is not None:
            headers["Authorization"] = f"Bearer {self.provider.api_key.get_secret_value()}"
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=self.provider.max_connections, keepalive_timeout=60, ttl_dns_cache=300
            ),
            timeout=aiohttp.ClientTimeout(total=t.total, sock_connect=t.connect, sock_read=t.first_byte),
            headers=headers,
            skip_auto_headers=("User-Agent",),
            raise_for_status=False,
            cookie_jar=aiohttp.DummyCookieJar(),  # providers' cookies are of no use and cost per request
        )
        self._urls = {
            path: URL(self.provider.base_url + path)
            for path in (self.chat_path, self.fim_path, self.embeddings_path)
            if path
        }

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- hooks (overridden per provider) ------------------------------------------------
    def prepare_chat(self, body: Json, model: ModelConfig, stream: bool) -> Json:
        out = rebuild(body, self._chat, model)
        if stream:
            # Usage is always needed for billing; the client only sees it if it asked.
            out["stream_options"] = {"include_usage": True}
        return out

    def prepare_fim(self, body: Json, model: ModelConfig, stream: bool) -> Json:
        return rebuild(body, self._completion, model)

    def prepare_embeddings(self, body: Json, model: ModelConfig) -> Json:
        return rebuild(body, self._embeddings, model)

    def fix_reply(self, reply: Json) -> bool:
        """Make a complete answer OpenAI-shaped in place; return True if anything changed (then it is re-encoded).
        Subclasses fix their provider's quirks first, then call this for what OpenAI's schema requires."""
        return conform_reply(reply)

    def fix_chunk(self, chunk: Json, outcome: StreamOutcome) -> ChunkAction:
        """Capture usage and the finish reason, and adapt one stream chunk in place (`fix_choice` for each
        choice). Usage leaves the chunk: the pipeline sends its own usage chunk at the end, if asked."""
        action = ChunkAction.KEEP
        if "usage" in chunk:
            usage = usage_from(chunk.pop("usage"))
            if usage is not None:
                outcome.usage = usage
            if not chunk.get("choices"):
                return ChunkAction.DROP
            action = ChunkAction.CHANGED
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            if choice.get("finish_reason"):
                outcome.finish_reason = choice["finish_reason"]
            if self.fix_choice(choice, outcome):
                action = ChunkAction.CHANGED
        return action

    def fix_choice(self, choice: Json, outcome: StreamOutcome) -> bool:
        """A provider's quirk in one streamed choice, fixed in place; whether it changed."""
        return False

    # -- batch lines (gateway/providers/batches) ---------------------------------------------
    def batch_body(self, endpoint: str, body: Json, model: ModelConfig) -> Json:
        """One batch line's body as the interactive path sends the same request (the `prepare_*` hooks), with
        `model` the upstream id. A line is answered whole, so `stream` and `stream_options` are left out."""
        if endpoint == "/v1/chat/completions":
            out = self.prepare_chat(body, model, False)
        elif endpoint == "/v1/embeddings":
            out = self.prepare_embeddings(body, model)
        else:
            raise invalid_request(f"batch endpoint {endpoint!r} is not supported", param="endpoint")
        out.pop("stream", None)
        out.pop("stream_options", None)
        return out

    def batch_answer(self, body: Json) -> tuple[Json, Usage | None]:
        """One batch line's answer (a 200 body from the provider's result file) as the interactive path returns
        the same answer: the provider's reply fixes applied and usage normalised, in place."""
        _, usage = self._conform(body)
        return body, usage

    # -- the calls -----------------------------------------------------------------------
    async def chat(
        self, body: Json, model: ModelConfig, *, stream: bool, include_usage: bool, reshape: ChunkReshaper | None = None
    ) -> Reply | StreamReply:
        payload = self.prepare_chat(body, model, stream)
        return await self._call(self.chat_path, payload, stream, include_usage, reshape)

    async def fim(
        self, body: Json, model: ModelConfig, *, stream: bool, include_usage: bool, reshape: ChunkReshaper | None = None
    ) -> Reply | StreamReply:
        if self.fim_path is None:
            return await super().fim(body, model, stream=stream, include_usage=include_usage, reshape=reshape)
        payload = self.prepare_fim(body, model, stream)
        return await self._call(self.fim_path, payload, stream, include_usage, reshape)

    async def embeddings(self, body: Json, model: ModelConfig) -> Reply:
        payload = self.prepare_embeddings(body, model)
        reply = await self._call(self.embeddings_path, payload, False, False, None)
        assert isinstance(reply, Reply)
        return reply

    async def _call(
        self, path: str, payload: Json, stream: bool, include_usage: bool, reshape: ChunkReshaper | None
    ) -> Reply | StreamReply:
        if self._session is None:
            await self.start()
        assert self._session is not None
        url = self._urls.get(path) or URL(self.provider.base_url + path)
        data = orjson.dumps(payload)
        headers = {"Accept": "text/event-stream"} if stream else None
        try:
            response = await self._session.post(url, data=data, headers=headers)
        except TimeoutError as exc:
            raise timeout_error(self.name, "connect or first byte") from exc
        except aiohttp.ClientError as exc:
            raise connect_error(self.name, exc) from exc
        try:
            if response.status != 200:
                body = await response.read()
                error = map_status_error(self.name, response.status, body, response.headers)
                error.upstream_limits = rate_limit_headers(response.headers)
                raise error
            if not stream:
                body = await response.read()
                reply = self._complete(body, reshape)
                if self._limited:
                    reply.upstream_limits = rate_limit_headers(response.headers)
                return reply
        except TimeoutError as exc:
            raise timeout_error(self.name, "reading the answer") from exc
        except aiohttp.ClientError as exc:
            raise GatewayError(
                502, f"{self.name} closed the connection before answering", "upstream_error", "upstream_stream_cut"
            ) from exc
        finally:
            if not stream or response.status != 200:
                response.release()
        if not response.content_type.startswith("text/event-stream"):
            response.close()
            raise GatewayError(502, f"{self.name} did not answer with a stream", "upstream_error", "upstream_malformed")
        outcome = StreamOutcome()
        events = relay_events(response, self.name, self.fix_chunk, outcome, reshape, self.max_event_bytes)
        limits = rate_limit_headers(response.headers) if self._limited else {}
        return StreamReply(events=events, outcome=outcome, upstream_limits=limits)

    def _conform(self, reply: Json) -> tuple[bool, Usage | None]:
        """A complete answer made OpenAI-shaped in place (`fix_reply`) and its usage normalised: whether anything
        changed, and the usage. The interactive path (`_complete`) and batch results (`batch_answer`) share it."""
        changed = self.fix_reply(reply)
        usage = usage_from(reply.get("usage"))
        if usage is not None and reply["usage"] != (normal := usage.as_openai()):
            reply["usage"] = normal
            changed = True
        return changed, usage

    def _complete(self, body: bytes, reshape: ChunkReshaper | None) -> Reply:
        try:
            reply = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise GatewayError(
                502, f"{self.name} sent a malformed answer", "upstream_error", "upstream_malformed"
            ) from exc
        if not isinstance(reply, dict):
            raise GatewayError(502, f"{self.name} sent a malformed answer", "upstream_error", "upstream_malformed")
        changed, usage = self._conform(reply)
        if reshape is not None:
            reply = reshaped(reply, reshape)
            changed = True
        return Reply(body=orjson.dumps(reply) if changed else body, usage=usage)
