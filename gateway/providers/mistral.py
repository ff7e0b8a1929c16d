"""Mistral (La Plateforme): strict validation, 9-character tool ids, usage on the last chunk.

Mistral refuses any field it does not know (422 extra_forbidden), so requests
are rebuilt from a whitelist: OpenAI names with a Mistral twin are translated,
hints are dropped, and anything else is refused by the gateway with a 400 that
names the parameter, before the provider is called.
"""

from __future__ import annotations

import base64
import hashlib
import re
import struct
from typing import Any

import orjson

from gateway.catalog import ModelConfig
from gateway.providers.base import ChunkReshaper, Reply, StreamOutcome, StreamReply
from gateway.providers.fields import (
    COMPLETION_REQUEST,
    EMBEDDING_REQUEST,
    HINT_FIELDS,
    Messages,
    Shape,
    rebuild,
    roles,
    unsupported,
)
from gateway.providers.openai_compatible import OpenAICompatibleAdapter
from gateway.types import Json

# Mistral's request fields (mistralai SDK 3.7.0 request models, ../shared/reference/providers.md, Mistral section;
# gateway/emulators/README.md for where they differ). `logprobs`/`top_logprobs` and `service_tier` are Mistral fields
# too, but are dropped as OpenAI hints: Mistral's logprobs answer lacks what OpenAI's schema requires, and OpenAI's
# service tiers (`default`, `flex`, `priority`) are not Mistral's (`auto`, `standard_only`).
CHAT_FIELDS = frozenset(
    {
        "model",
        "messages",
        "temperature",
        "top_p",
        "max_tokens",
        "stream",
        "stop",
        "random_seed",
        "response_format",
        "tools",
        "tool_choice",
        "presence_penalty",
        "frequency_penalty",
        "n",
        "parallel_tool_calls",
        "prediction",
        "prompt_mode",
        "reasoning_effort",
        "safe_prompt",
        "guardrails",
        "prompt_cache_key",
        "metadata",
        "top_k",
        "min_tokens",
        "repetition_penalty",
    }
)
FIM_FIELDS = frozenset(
    {
        "model",
        "prompt",
        "suffix",
        "temperature",
        "top_p",
        "max_tokens",
        "min_tokens",
        "stream",
        "stop",
        "random_seed",
        "metadata",
        "prompt_cache_key",
    }
)
EMBEDDING_FIELDS = frozenset({"model", "input", "output_dimension", "output_dtype", "metadata"})
# What rebuild() keeps of each role. Beyond Mistral's own keys (mistral-common's messages), the keys the
# conversation pass below turns into Mistral's forms and then removes: an assistant turn's `reasoning_content` /
# `reasoning` (a thinking chunk), Kimi's `partial` (`prefix`), a legacy `function_call` (a tool call); OpenAI's legacy
# `function` role becomes a `tool` message.
MESSAGE_FIELDS = roles(
    system=("content",),
    user=("content",),
    assistant=("content", "tool_calls", "prefix", "reasoning_content", "reasoning", "partial", "function_call"),
    tool=("content", "tool_call_id", "name"),
    function=("content", "name"),
)
# OpenAI names with a Mistral twin; `stream_options` is refused by Mistral (usage comes on the last chunk anyway).
# `encoding_format` is answered by the gateway itself (see _encode_base64).
_RENAMES = {"seed": "random_seed", "max_completion_tokens": "max_tokens"}
_DROPPED = HINT_FIELDS | {"stream_options"}
CHAT = Shape(
    CHAT_FIELDS, _RENAMES, _DROPPED, Messages(MESSAGE_FIELDS, {"developer": "system"}), translate_functions=True
)
FIM = Shape(FIM_FIELDS, _RENAMES, _DROPPED, openai=COMPLETION_REQUEST)
EMBEDDINGS = Shape(
    EMBEDDING_FIELDS, {"dimensions": "output_dimension"}, HINT_FIELDS | {"encoding_format"}, openai=EMBEDDING_REQUEST
)
TOOL_ID = re.compile(r"^[A-Za-z0-9]{9}$")
_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
# mistral-common's validator: function and tool-message names match this (MistralRequestValidator).
_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
# mistral-common Function: name, description, parameters (required), strict; Tool: type, function.
_FUNCTION_KEYS = ("name", "description", "parameters", "strict")
_TOOL_HINTS = frozenset({"cache_control"})  # Anthropic-style clients mark tools for caching
EMPTY_PARAMETERS: Json = {"type": "object", "properties": {}}
# Reasoning is replayed as a thinking chunk only when the request asks the model to reason: such a model is a
# reasoning model, whose validator takes thinking chunks on assistant turns (mistral-common: ThinkChunk allowed in
# assistant messages from tokenizer v11; reasoning_effort only from v15). Otherwise it is dropped, as before.
_NO_REASONING_EFFORT = (None, "none")


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


def _thinking_chunk(text: str) -> Json:
    # The wire form (mistralai 3.7.0 ThinkChunk; what Mistral's answers carry, providers.md "Streaming").
    return {"type": "thinking", "thinking": [{"type": "text", "text": text}], "closed": True}


def _with_thinking(content: Any, reasoning: str) -> list[Any]:
    if isinstance(content, list):
        return [_thinking_chunk(reasoning), *content]
    text = content if isinstance(content, str) else ""
    return [_thinking_chunk(reasoning), {"type": "text", "text": text}] if text else [_thinking_chunk(reasoning)]


def _conversation(messages: list[Json], thinking: bool) -> list[Json]:
    """Make a rebuilt history one Mistral takes (mistral-common's models and serving validator), in place.

    - assistant tool-call ids become Mistral's 9 characters (mistral_tool_id), the same for the tool result that
      answers them; a repeated id within one turn (or a missing one) is told apart by its position, so parallel
      calls stay distinct; a legacy `function_call` becomes a tool call, a `function` message its tool result;
    - a call with no result before the next assistant turn is dropped (the validator wants as many results as
      calls), a result that answers no pending call, or that follows a user or system message, is sent as a user
      message with the same content (the validator refuses a tool result there);
    - a tool result's `content: null` is sent as "" (ToolMessage.content is required); its `name` only when
      mistral-common's name rule holds (it is deprecated and unused since tokenizer v3);
    - a system message after an assistant or tool turn is sent as a user message (the validator allows system only
      after system or user);
    - `reasoning_content` / `reasoning` on an assistant turn: a leading thinking chunk if `thinking`, else dropped;
      Kimi's `partial: true` on the last message is Mistral's `prefix: true`.
    """
    pending: dict[str, list[str]] = {}  # the latest assistant turn's calls not answered yet: client key -> ids
    calls_turn: Json | None = None
    last = len(messages) - 1
    previous = None
    for index, message in enumerate(messages):
        role = message["role"]
        if role == "assistant":
            _drop_unanswered(calls_turn, pending)
            pending, calls_turn = {}, None
            reasoning = message.pop("reasoning_content", None) or message.pop("reasoning", None)
            message.pop("reasoning", None)
            partial = message.pop("partial", None)
            legacy = message.pop("function_call", None)
            if isinstance(legacy, dict) and not message.get("tool_calls"):
                name = legacy.get("name")
                message["tool_calls"] = [{"id": f"function:{name}", "type": "function", "function": legacy}]
            calls = message.get("tool_calls")
            if isinstance(calls, list) and calls:
                seen: dict[str, int] = {}
                for position, call in enumerate(calls):
                    if not isinstance(call, dict):
                        continue
                    original = str(call.get("id") or "")
                    count = seen.get(original, 0)
                    seen[original] = count + 1
                    mapped = mistral_tool_id(original if count == 0 and original else f"{original}#{position}")
                    call["id"] = mapped
                    call.setdefault("type", "function")
                    pending.setdefault(original, []).append(mapped)
                message.setdefault("content", "")
                calls_turn = message
            if isinstance(reasoning, str) and reasoning and thinking:
                message["content"] = _with_thinking(message.get("content"), reasoning)
            if partial is True and index == last:
                message["prefix"] = True
        elif role in ("tool", "function"):
            key = str(message.get("tool_call_id") or "") if role == "tool" else f"function:{message.get('name')}"
            queue = pending.get(key)
            if queue and previous in ("assistant", "tool"):
                message["role"] = "tool"
                message["tool_call_id"] = queue.pop(0)
                if message.get("content") is None:
                    message["content"] = ""
                name = message.get("name")
                if not (isinstance(name, str) and _NAME.match(name)):
                    message.pop("name", None)
            else:
                content = message.get("content")
                message.clear()
                message.update({"role": "user", "content": "" if content is None else content})
        elif role == "system" and previous in ("assistant", "tool"):
            message["role"] = "user"
        previous = message["role"]
    _drop_unanswered(calls_turn, pending)
    return messages


def _drop_unanswered(turn: Json | None, pending: dict[str, list[str]]) -> None:
    unanswered = {mapped for queue in pending.values() for mapped in queue}
    if turn is None or not unanswered:
        return
    kept = [call for call in turn["tool_calls"] if not (isinstance(call, dict) and call.get("id") in unanswered)]
    if kept:
        turn["tool_calls"] = kept
    else:
        del turn["tool_calls"]


def _tools(tools: Any, model: ModelConfig) -> Any:
    """Function tools as mistral-common's Tool takes them: `parameters` required (an empty object schema when the
    client sent none, as OpenAI makes it optional), nulls left out, cache hints dropped, anything else refused."""
    if not isinstance(tools, list):
        return tools
    out = []
    for index, tool in enumerate(tools):
        if not isinstance(tool, dict):
            out.append(tool)
            continue
        for key in tool:
            if key not in ("type", "function") and key not in _TOOL_HINTS:
                raise unsupported(f"tools[{index}].{key}", model)
        function = tool.get("function")
        if isinstance(function, dict):
            for key in function:
                if key not in _FUNCTION_KEYS:
                    raise unsupported(f"tools[{index}].function.{key}", model)
            function = {key: function[key] for key in _FUNCTION_KEYS if function.get(key) is not None}
            function.setdefault("parameters", EMPTY_PARAMETERS)
        out.append({"type": tool.get("type") or "function", "function": function})
    return out


def _text_of(content: list[Any]) -> tuple[str, str]:
    """Split Mistral's array content into (text, thinking)."""
    text: list[str] = []
    thinking: list[str] = []
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


def _without_negative_seed(out: Json) -> Json:
    """Mistral requires random_seed >= 0 (mistral-common BaseCompletionRequest.random_seed: ge=0). A negative seed
    (`seed: -1`) is the convention for "no fixed seed" (llama.cpp and the clients that follow it), so it is dropped:
    Mistral then samples with a random seed, which is what -1 asks for. Mapping it to some other non-negative number
    would instead make every such request reproduce the same answer."""
    seed = out.get("random_seed")
    if isinstance(seed, int) and not isinstance(seed, bool) and seed < 0:
        del out["random_seed"]
    return out


class _UsageOnLastChunk:
    """A stream reshaper for Mistral's own clients: usage stays where Mistral puts it, on the chunk that carried it
    (the last content chunk, with finish_reason; providers.md "Streaming"), instead of OpenAI's separate final
    chunk. fix_chunk has already taken the usage into the stream's outcome when this runs on the same chunk."""

    __slots__ = ("outcome", "_placed")

    def __init__(self) -> None:
        self.outcome: StreamOutcome | None = None
        self._placed: Any = None

    def __call__(self, chunk: Json) -> Json:
        outcome = self.outcome
        if (
            outcome is not None
            and outcome.usage is not None
            and outcome.usage is not self._placed
            and chunk.get("choices")
        ):
            self._placed = outcome.usage
            chunk["usage"] = outcome.usage.as_openai()
        return chunk


def _encode_base64(reply: Reply) -> Reply:
    """OpenAI's `encoding_format: base64`: each vector as the base64 of its little-endian float32 values (the form
    OpenAI's SDKs decode). Mistral answers float arrays whatever it is asked (gateway/emulators/README.md), so the
    gateway encodes them itself."""
    body = orjson.loads(reply.body)
    for item in body.get("data") or ():
        vector = item.get("embedding") if isinstance(item, dict) else None
        if isinstance(vector, list):
            item["embedding"] = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return Reply(body=orjson.dumps(body), usage=reply.usage)


class MistralAdapter(OpenAICompatibleAdapter):
    fim_path = "/fim/completions"

    def prepare_chat(self, body: Json, model: ModelConfig, stream: bool) -> Json:
        out = _without_negative_seed(rebuild(body, CHAT, model))
        if "tools" in out:
            out["tools"] = _tools(out["tools"], model)
        thinking = out.get("reasoning_effort") not in _NO_REASONING_EFFORT or out.get("prompt_mode") == "reasoning"
        out["messages"] = _conversation(out["messages"], thinking)
        return out

    def prepare_fim(self, body: Json, model: ModelConfig, stream: bool) -> Json:
        return _without_negative_seed(rebuild(body, FIM, model))

    def prepare_embeddings(self, body: Json, model: ModelConfig) -> Json:
        return rebuild(body, EMBEDDINGS, model)

    async def fim(
        self, body: Json, model: ModelConfig, *, stream: bool, include_usage: bool, reshape: ChunkReshaper | None = None
    ) -> Reply | StreamReply:
        """`reshape` is None only on Mistral's own endpoint (`POST /v1/fim/completions`, whose clients are Mistral's:
        its SDK, Continue's Mistral provider): there a stream keeps Mistral's usage placement. The legacy
        `/v1/completions` passes its reshaper and gets OpenAI's."""
        if not (stream and reshape is None):
            return await super().fim(body, model, stream=stream, include_usage=include_usage, reshape=reshape)
        keeper = _UsageOnLastChunk()
        reply = await self._call(self.fim_path, self.prepare_fim(body, model, stream), True, include_usage, keeper)
        if isinstance(reply, StreamReply):
            keeper.outcome = reply.outcome  # read only while the events are iterated, after this returns
        return reply

    async def embeddings(self, body: Json, model: ModelConfig) -> Reply:
        reply = await super().embeddings(body, model)
        native_dtype = body.get("output_dtype") not in (None, "float")  # Mistral's own integer/binary encodings
        if body.get("encoding_format") == "base64" and not native_dtype:
            return _encode_base64(reply)
        return reply

    def fix_reply(self, reply: Json) -> bool:
        changed = False
        for choice in reply.get("choices") or ():
            message = choice.get("message") if isinstance(choice, dict) else None
            if isinstance(message, dict):
                changed |= _flatten_content(message)
        return super().fix_reply(reply) or changed  # `tool_calls: null`, no logprobs/refusal, model_length

    def fix_choice(self, choice: Json, outcome: StreamOutcome) -> bool:
        # Mistral puts usage on the last content chunk (taken out by fix_chunk); `model_length` is its name for
        # OpenAI's `length`; content may come as a list of parts.
        changed = False
        if choice.get("finish_reason") == "model_length":
            choice["finish_reason"] = "length"
            changed = True
        delta = choice.get("delta")
        return (isinstance(delta, dict) and _flatten_content(delta)) or changed
