"""Providers that are not OpenAI-compatible, reached through litellm.

litellm is imported on first use only (it takes seconds to import), and with
LITELLM_LOCAL_MODEL_COST_MAP=True so that importing it makes no network call.
The upstream URL and key come from configuration, never from the request.

`litellm.acompletion(**kwargs)` reads far more than OpenAI's parameters from its
keyword arguments: `api_base`, `base_url`, `api_key`, `headers`, `extra_headers`,
`extra_body`, `fallbacks` (each with its own `api_base`, and the caller's key
sent along), `mock_response`, `deployment_id`, `metadata`, `litellm_*`,
`custom_llm_provider`, `model_list`, `timeout`, retries, clients, callbacks,
caching... So it is given only the OpenAI chat parameters it translates for its
providers (fields.py), and its failures are answered with a fixed message: its
exception text carries tracebacks, file paths and, in some versions, the request.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import orjson

from gateway.catalog import ModelConfig
from gateway.errors import GatewayError
from gateway.providers.base import Adapter, ChunkReshaper, Reply, StreamOutcome, StreamReply, reshaped
from gateway.providers.fields import Shape, rebuild
from gateway.providers.openai_compatible import OPENAI_MESSAGES, usage_from
from gateway.providers.replies import conform_chat_chunk, conform_reply
from gateway.providers.sse import encoded, error_event, took
from gateway.types import Json

# The OpenAI parameters in litellm.completion's signature (litellm 1.x, `inspect.signature`) that it translates
# for each provider, and nothing of its own: not timeout, deployment_id, extra_headers, base_url, api_version,
# api_key, model_list, thinking, shared_session, ... (`stream` and `stream_options` are set by the adapter).
CHAT_FIELDS = frozenset(
    {
        "model",
        "messages",
        "stream",
        "temperature",
        "top_p",
        "n",
        "stop",
        "max_completion_tokens",
        "max_tokens",
        "modalities",
        "prediction",
        "audio",
        "presence_penalty",
        "frequency_penalty",
        "logit_bias",
        "user",
        "reasoning_effort",
        "verbosity",
        "response_format",
        "seed",
        "tools",
        "tool_choice",
        "logprobs",
        "top_logprobs",
        "parallel_tool_calls",
        "web_search_options",
        "safety_identifier",
        "prompt_cache_key",
        "prompt_cache_retention",
    }
)
# OpenAI fields litellm would misread or that change the bill: `metadata` is litellm's own metadata (read by its
# callbacks and routers), `service_tier` buys a pricier tier, `store` asks OpenAI to keep the conversation.
_DROPPED = frozenset({"stream_options", "metadata", "service_tier", "store"})
# Legacy functions are translated for every provider litellm reaches, which mostly lack them.
# litellm refuses a parameter its provider lacks (`verbosity` outside OpenAI), even at OpenAI's default. These mean
# "nothing asked" at their default for every provider, so there they are dropped; temperature, top_p and
# reasoning_effort are not: other providers' defaults differ, and omitting them would change the request.
_NEUTRAL_AT_DEFAULT = frozenset(
    {"n", "logprobs", "presence_penalty", "frequency_penalty", "parallel_tool_calls", "verbosity"}
)
CHAT = Shape(
    CHAT_FIELDS,
    dropped=_DROPPED,
    messages=OPENAI_MESSAGES,
    translate_functions=True,
    defaults_dropped=_NEUTRAL_AT_DEFAULT,
)


def import_litellm() -> Any:
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    import litellm

    return litellm


class LitellmAdapter(Adapter):
    def _call_args(self, body: Json, model: ModelConfig, stream: bool) -> Json:
        args = rebuild(body, CHAT, model)
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
        args = self._call_args(body, model, stream)  # a refused field is the client's 400, not a provider failure
        litellm = import_litellm()
        try:
            result = await litellm.acompletion(**args)
        except GatewayError:
            raise
        except Exception as exc:  # litellm raises its own hierarchy; map by status code
            raise _map_litellm_error(self.name, exc) from exc
        if not stream:
            reply = result.model_dump(exclude_none=True)
            conform_reply(reply)  # exclude_none also took out the nulls OpenAI's schema requires
            usage = usage_from(reply.get("usage"))
            if usage is not None:
                reply["usage"] = usage.as_openai()
            reply = reshaped(reply, reshape)
            return Reply(body=orjson.dumps(reply), usage=usage)
        outcome = StreamOutcome()
        return StreamReply(events=self._relay(result, outcome, reshape), outcome=outcome)

    async def _relay(self, stream: Any, outcome: StreamOutcome, reshape: ChunkReshaper | None) -> AsyncIterator[bytes]:
        try:
            async for item in stream:
                chunk = item.model_dump(exclude_none=True)
                if not took(chunk, outcome):
                    continue
                conform_chat_chunk(chunk)  # `finish_reason: null` until the last chunk, as OpenAI streams it
                yield encoded(chunk, reshape)
        except Exception as exc:
            outcome.error = "stream_cut"
            yield error_event(f"{self.name} failed mid-stream: {type(exc).__name__}", "upstream_stream_cut")
            return
        outcome.completed = True  # the pipeline settles, then ends the stream


def _map_litellm_error(provider: str, exc: Exception) -> GatewayError:
    """A clean OpenAI-style error for any litellm exception: its status and the provider's name only.

    Never str(exc) or exc.message: litellm puts tracebacks, server file paths and request details in them.
    """
    from gateway.providers.upstream_errors import map_status_error, timeout_error

    status = getattr(exc, "status_code", None)
    if status == 408 or isinstance(exc, TimeoutError) or "Timeout" in type(exc).__name__:
        return timeout_error(provider, "litellm call")  # litellm.Timeout carries status 408
    if _never_connected(exc):  # litellm calls it an InternalServerError (500), but no provider answered
        from gateway.providers.upstream_errors import connect_error

        return connect_error(provider, exc)
    if isinstance(status, int) and not isinstance(status, bool) and 400 <= status <= 599:
        headers: dict[str, str] = {}
        retry_after = _retry_after(exc)
        if retry_after is not None:
            headers["Retry-After"] = retry_after
        error = map_status_error(
            provider, status, orjson.dumps({"message": "the provider refused the request"}), headers
        )
        error.message = f"{provider} returned {status}"
        return error
    return GatewayError(502, f"{provider} failed", "upstream_error", "upstream_error")


_CONNECT_ERRORS = frozenset({"APIConnectionError", "ConnectError", "ClientConnectorError", "ConnectTimeout"})


def _never_connected(exc: BaseException) -> bool:
    """Whether litellm's exception wraps a connection failure (its cause chain names one)."""
    seen: BaseException | None = exc
    for _ in range(12):
        if seen is None:
            return False
        if type(seen).__name__ in _CONNECT_ERRORS or isinstance(seen, ConnectionError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _retry_after(exc: Exception) -> str | None:
    """The provider's Retry-After, if litellm kept its response; only digits are passed on."""
    headers = getattr(getattr(exc, "response", None), "headers", None)
    try:
        value = headers.get("retry-after") if headers is not None else None
    except Exception:  # a response object of some other shape: no hint
        return None
    return value if isinstance(value, str) and value.strip().isdigit() else None
