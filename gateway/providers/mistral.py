"""Mistral (La Plateforme): strict validation, 9-character tool ids, usage on the last chunk.

Mistral refuses any field it does not know (422 extra_forbidden), so requests
are rebuilt from a whitelist: OpenAI names with a Mistral twin are translated,
hints are dropped, and anything else is refused by the gateway with a 400 that
names the parameter, before the provider is called.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from gateway.config import ModelConfig
from gateway.providers.base import Json, StreamOutcome
from gateway.providers.fields import (
    COMPLETION_REQUEST, EMBEDDING_REQUEST, HINT_FIELDS, Messages, Shape, rebuild, roles,
)
from gateway.providers.openai_compatible import ChunkAction, OpenAICompatibleAdapter, usage_from

# Mistral's documented fields (../shared/reference/providers.md, Mistral section; mistral-common's request models).
CHAT_FIELDS = frozenset(
    {
        "model", "messages", "temperature", "top_p", "max_tokens", "stream", "stop", "random_seed",
        "response_format", "tools", "tool_choice", "presence_penalty", "frequency_penalty", "n",
        "parallel_tool_calls", "prediction", "prompt_mode", "reasoning_effort", "safe_prompt",
        "guardrails", "prompt_cache_key",
    }
)  # fmt: skip
FIM_FIELDS = frozenset(
    {"model", "prompt", "suffix", "temperature", "top_p", "max_tokens", "min_tokens", "stream", "stop", "random_seed"}
)
EMBEDDING_FIELDS = frozenset({"model", "input", "output_dimension", "output_dtype", "encoding_format"})
MESSAGE_FIELDS = roles(
    system=("content",), user=("content",), assistant=("content", "tool_calls", "prefix"),
    tool=("content", "tool_call_id", "name"),
)  # fmt: skip
# OpenAI names with a Mistral twin; `stream_options` is refused by Mistral (usage comes on the last chunk anyway).
_RENAMES = {"seed": "random_seed", "max_completion_tokens": "max_tokens"}
_DROPPED = HINT_FIELDS | {"stream_options"}
CHAT = Shape(CHAT_FIELDS, _RENAMES, _DROPPED, Messages(MESSAGE_FIELDS, {"developer": "system"}), translate_functions=True)
FIM = Shape(FIM_FIELDS, _RENAMES, _DROPPED, openai=COMPLETION_REQUEST)
EMBEDDINGS = Shape(EMBEDDING_FIELDS, {"dimensions": "output_dimension"}, HINT_FIELDS, openai=EMBEDDING_REQUEST)
TOOL_ID = re.compile(r"^[A-Za-z0-9]{9}$")
_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def mistral_tool_id(original: str) -> str:
    """A valid 9-character id for any client id; stateless, so a conversation maps the same way every turn."""
    if TOOL_ID.match(original):
        return original
    number = int.from_bytes(hashlib.blake2b(original.encode(), digest_size=8).digest(), "big")
    chars = []
    for _ in range(9):
        number, rest = divmod(number, 62)
        chars.append(_ALPHABET[rest])
    return "".join(chars)


def _tool_ids(messages: list[Json]) -> list[Json]:
    """Mistral's 9-character tool-call ids, and the `content` key it requires beside tool calls."""
    for message in messages:
        calls = message.get("tool_calls")
        if isinstance(calls, list):
            message["tool_calls"] = [
                {**call, "id": mistral_tool_id(str(call.get("id", "")))} if isinstance(call, dict) else call
                for call in calls
            ]
            message.setdefault("content", "")
        if "tool_call_id" in message:
            message["tool_call_id"] = mistral_tool_id(str(message["tool_call_id"]))
    return messages


def _text_of(content: list[Any]) -> tuple[str, str]:
    """Split Mistral's array content into (text, thinking)."""
    text, thinking = [], []
    for part in content:
        if not isinstance(part, dict):
            continue
        if part.get("type") == "text":
            text.append(str(part.get("text", "")))
        elif part.get("type") == "thinking":
            inner = part.get("thinking")
            if isinstance(inner, list):
                thinking.extend(str(p.get("text", "")) for p in inner if isinstance(p, dict))
            elif isinstance(inner, str):
                thinking.append(inner)
    return "".join(text), "".join(thinking)


def _flatten_content(holder: Json) -> bool:
    content = holder.get("content")
    if not isinstance(content, list):
        return False
    text, thinking = _text_of(content)
    holder["content"] = text
    if thinking:
        holder["reasoning_content"] = thinking
    return True


class MistralAdapter(OpenAICompatibleAdapter):
    fim_path = "/fim/completions"

    def prepare_chat(self, body: Json, model: ModelConfig, stream: bool) -> Json:
        out = rebuild(body, CHAT, model)
        out["messages"] = _tool_ids(out["messages"])
        return out

    def prepare_fim(self, body: Json, model: ModelConfig, stream: bool) -> Json:
        return rebuild(body, FIM, model)

    def prepare_embeddings(self, body: Json, model: ModelConfig) -> Json:
        return rebuild(body, EMBEDDINGS, model)

    def fix_reply(self, reply: Json) -> bool:
        changed = False
        for choice in reply.get("choices") or ():
            message = choice.get("message") if isinstance(choice, dict) else None
            if isinstance(message, dict):
                changed |= _flatten_content(message)
        return super().fix_reply(reply) or changed  # `tool_calls: null`, no logprobs/refusal, model_length

    def fix_chunk(self, chunk: Json, outcome: StreamOutcome) -> ChunkAction:
        action = ChunkAction.KEEP
        if "usage" in chunk:
            # Mistral puts usage on the last content chunk; OpenAI clients expect it in a
            # separate, final chunk (sent by the relay when asked for).
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
                if choice["finish_reason"] == "model_length":
                    choice["finish_reason"] = "length"
                    action = ChunkAction.CHANGED
            delta = choice.get("delta")
            if isinstance(delta, dict) and _flatten_content(delta):
                action = ChunkAction.CHANGED
        return action
