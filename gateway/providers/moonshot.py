"""Moonshot (Kimi): fixed sampling on K2.5/K2.6, usage inside the final choice.

Kimi K2.5/K2.6 refuse any temperature, top_p, n or penalty other than their
fixed values (Aider sends `temperature: 0`), so for models marked
`fixed_sampling` those fields are dropped and the provider's fixed values apply.
Usage arrives inside the final choice and, when `stream_options` is sent, again
in a trailing chunk; it is recorded once (assigned, never added).

Requests are rebuilt from Moonshot's documented chat parameters (fields.py says why).
"""

from __future__ import annotations

from gateway.config import ModelConfig
from gateway.providers.base import Adapter, Json, Reply, StreamOutcome
from gateway.providers.fields import HINT_FIELDS, Messages, Shape, rebuild, roles
from gateway.providers.openai_compatible import ChunkAction, OpenAICompatibleAdapter, usage_from

FIXED_SAMPLING_FIELDS = ("temperature", "top_p", "n", "presence_penalty", "frequency_penalty")

# Moonshot's chat parameters: ../shared/reference/providers.md, Moonshot section (sampling table: temperature,
# top_p, n, penalties; `thinking`; `tools`/`tool_choice`; `max_tokens`/`max_completion_tokens`;
# `response_format`; streaming and `stream_options`), and the chat API reference it is gathered from
# (platform.moonshot.cn/docs/api/chat: `stop`).
CHAT_FIELDS = frozenset(
    {
        "model", "messages", "temperature", "top_p", "n", "presence_penalty", "frequency_penalty", "max_tokens",
        "response_format", "stop", "stream", "tools", "tool_choice", "thinking",
    }
)  # fmt: skip
# Usage comes inside the final choice without `stream_options`; the relay makes the client's usage chunk.
# `seed`, `parallel_tool_calls`, `prompt_cache_key` (Kimi caches prefixes by itself) and `safety_identifier`
# are OpenAI best-effort hints Moonshot does not document: dropped, not forwarded. So is OpenAI's
# `reasoning_effort`, which Moonshot's own Kimi CLI sends: Kimi's reasoning control is `thinking` (on by default
# for K2.6), and the OpenAI name is not one of its documented parameters.
_DROPPED = HINT_FIELDS | {
    "stream_options", "seed", "parallel_tool_calls", "prompt_cache_key", "safety_identifier", "reasoning_effort",
}  # fmt: skip
# Message keys (same sources): `name`; assistant `tool_calls`, `reasoning_content` (replayed in thinking mode),
# `partial` (partial mode); tool `tool_call_id`. The developer role is refused by Moonshot: sent as system.
MESSAGES = Messages(
    roles(
        system=("content", "name"), user=("content", "name"),
        assistant=("content", "name", "tool_calls", "reasoning_content", "partial"),
        tool=("content", "tool_call_id", "name"),
    ),
    {"developer": "system"},
)  # fmt: skip
# Legacy functions are not supported by Moonshot: translated into tools.
CHAT = Shape(CHAT_FIELDS, {"max_completion_tokens": "max_tokens"}, _DROPPED, MESSAGES, translate_functions=True)


class MoonshotAdapter(OpenAICompatibleAdapter):
    def prepare_chat(self, body: Json, model: ModelConfig, stream: bool) -> Json:
        out = rebuild(body, CHAT, model)
        if model.fixed_sampling:
            for key in FIXED_SAMPLING_FIELDS:
                out.pop(key, None)
        return out

    async def embeddings(self, body: Json, model: ModelConfig) -> Reply:
        # Moonshot documents no embeddings endpoint (providers.md, "Other endpoints").
        return await Adapter.embeddings(self, body, model)

    def fix_reply(self, reply: Json) -> bool:
        changed = False
        for choice in reply.get("choices") or ():
            if isinstance(choice, dict) and "usage" in choice:
                if "usage" not in reply:
                    reply["usage"] = choice["usage"]
                del choice["usage"]
                changed = True
        return super().fix_reply(reply) or changed  # no logprobs or refusal

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
