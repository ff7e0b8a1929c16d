"""Moonshot (Kimi): fixed sampling on K2.5/K2.6, usage inside the final choice.

Kimi K2.5/K2.6 refuse any temperature, top_p, n or penalty other than their
fixed values (Aider sends `temperature: 0`), so for models marked
`fixed_sampling` those fields are dropped and the provider's fixed values apply.
Usage arrives inside the final choice and, when `stream_options` is sent, again
in a trailing chunk; it is recorded once (assigned, never added).
"""

from __future__ import annotations

from gateway.config import ModelConfig
from gateway.providers.base import Json, StreamOutcome
from gateway.providers.openai_compatible import ChunkAction, OpenAICompatibleAdapter, usage_from

FIXED_SAMPLING_FIELDS = ("temperature", "top_p", "n", "presence_penalty", "frequency_penalty")


class MoonshotAdapter(OpenAICompatibleAdapter):
    def prepare_chat(self, body: Json, model: ModelConfig, stream: bool) -> Json:
        body["model"] = model.upstream_model
        if "max_completion_tokens" in body:
            body.setdefault("max_tokens", body["max_completion_tokens"])
            del body["max_completion_tokens"]
        # Usage comes inside the final choice without it; the relay makes the client's usage chunk.
        body.pop("stream_options", None)
        if model.fixed_sampling:
            for key in FIXED_SAMPLING_FIELDS:
                body.pop(key, None)
        return body

    def fix_reply(self, reply: Json) -> bool:
        changed = False
        for choice in reply.get("choices") or ():
            if isinstance(choice, dict) and "usage" in choice:
                if "usage" not in reply:
                    reply["usage"] = choice["usage"]
                del choice["usage"]
                changed = True
        return changed

    def fix_chunk(self, chunk: Json, outcome: StreamOutcome) -> ChunkAction:
        choices = chunk.get("choices")
        if "usage" in chunk:
            usage = usage_from(chunk["usage"])
            if usage is not None:
                outcome.usage = usage
            if not choices:
                return ChunkAction.DROP  # trailing usage chunk: already counted from the final choice
            del chunk["usage"]
            action = ChunkAction.CHANGED
        else:
            action = ChunkAction.KEEP
        for choice in choices or ():
            if not isinstance(choice, dict):
                continue
            if "usage" in choice:
                usage = usage_from(choice.pop("usage"))
                if usage is not None:
                    outcome.usage = usage
                action = ChunkAction.CHANGED
            if choice.get("finish_reason"):
                outcome.finish_reason = choice["finish_reason"]
        return action
