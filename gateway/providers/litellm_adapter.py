"""Providers that are not OpenAI-compatible, reached through litellm.

litellm is imported on first use only (it takes seconds to import), and with
LITELLM_LOCAL_MODEL_COST_MAP=True so that importing it makes no network call.
The upstream URL and key come from configuration, never from the request.
"""

from __future__ import annotations

import os
import time
from typing import Any, AsyncIterator

import orjson

from gateway.config import ModelConfig
from gateway.errors import GatewayError
from gateway.providers.base import Adapter, ChunkReshaper, Json, Reply, StreamOutcome, StreamReply
from gateway.providers.openai_compatible import usage_from
from gateway.relay import count_text, error_event, finish, sse


def import_litellm() -> Any:
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    import litellm

    return litellm


class LitellmAdapter(Adapter):
    def _call_args(self, body: Json, model: ModelConfig, stream: bool) -> Json:
        args = {k: v for k, v in body.items() if k not in ("model", "stream", "stream_options", "api_base", "api_key")}
        args.update(
            model=f"{self.provider.litellm_provider}/{model.upstream_model}",
            stream=stream,
            api_key=self.provider.api_key.get_secret_value() if self.provider.api_key else None,
            timeout=self.provider.timeouts.total,
            max_retries=0,  # retries and fallbacks are the gateway's decision, not litellm's
        )
        if self.provider.base_url:
            args["api_base"] = self.provider.base_url
        if stream:
            args["stream_options"] = {"include_usage": True}
        return args

    async def chat(
        self, body: Json, model: ModelConfig, *, stream: bool, include_usage: bool, reshape: ChunkReshaper | None = None
    ) -> Reply | StreamReply:
        litellm = import_litellm()
        try:
            result = await litellm.acompletion(**self._call_args(body, model, stream))
        except Exception as exc:  # litellm raises its own hierarchy; map by status code
            raise _map_litellm_error(self.name, exc) from exc
        if not stream:
            reply = result.model_dump(exclude_none=True)
            usage = usage_from(reply.get("usage"))
            if usage is not None:
                reply["usage"] = usage.as_openai()
            if reshape is not None:
                reply = reshape(reply)
            return Reply(body=orjson.dumps(reply), usage=usage)
        outcome = StreamOutcome()
        return StreamReply(events=self._relay(result, outcome, include_usage, reshape), outcome=outcome)

    async def _relay(
        self, stream: Any, outcome: StreamOutcome, include_usage: bool, reshape: ChunkReshaper | None
    ) -> AsyncIterator[bytes]:
        meta: Json = {}
        try:
            async for item in stream:
                chunk = item.model_dump(exclude_none=True)
                meta = meta or {k: chunk.get(k) for k in ("id", "created", "model")}
                if "usage" in chunk:
                    outcome.usage = usage_from(chunk.pop("usage")) or outcome.usage
                choices = chunk.get("choices") or []
                if not choices:
                    continue
                for choice in choices:
                    if choice.get("finish_reason"):
                        outcome.finish_reason = choice["finish_reason"]
                if outcome.first_chunk_at is None:
                    outcome.first_chunk_at = time.monotonic()
                outcome.chunks += 1
                count_text(chunk, outcome)
                yield sse(reshape(chunk) if reshape else chunk)
        except Exception as exc:
            outcome.error = "stream_cut"
            yield error_event(f"{self.name} failed mid-stream: {type(exc).__name__}", "upstream_stream_cut")
            return
        outcome.completed = True
        async for event in finish(meta, outcome, include_usage, reshape):
            yield event


def _map_litellm_error(provider: str, exc: Exception) -> GatewayError:
    from gateway.providers.upstream_errors import map_status_error

    status = getattr(exc, "status_code", None)
    message = str(getattr(exc, "message", exc))
    if isinstance(status, int) and status >= 400:
        return map_status_error(provider, status, orjson.dumps({"message": message}), {})
    return GatewayError(502, f"{provider} failed: {type(exc).__name__}", "upstream_error", "upstream_error")
