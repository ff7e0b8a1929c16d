"""Answers in OpenAI's response schema, whatever the provider sent.

OpenAI's CreateChatCompletionResponse (../shared/reference/openai-openapi-subset.yaml) requires
`choices[].logprobs` and `message.role`, `content` and `refusal`, null when empty; `tool_calls`,
`function_call` and `annotations` are absent or of their type, never null; `system_fingerprint` is a
string or absent. Providers differ: Mistral sends `tool_calls: null` and no `logprobs` or `refusal`,
Moonshot no `logprobs` or `refusal`, litellm's objects dumped without their nulls lose required keys.
These functions fill in and take out only what the schema needs, in place, and say whether they changed
anything, so an answer that already conforms (OpenAI, vLLM) is sent as the provider's bytes.
"""

from __future__ import annotations

from typing import Any

Json = dict[str, Any]

# Mistral's name for "the model's window ran out" is OpenAI's "length".
FINISH_REASON_ALIASES = {"model_length": "length"}
# Keys OpenAI types as an object or an array and never sends as null (clients index them).
_NEVER_NULL_MESSAGE_KEYS = ("tool_calls", "function_call", "annotations")
_NEVER_NULL_TOP_KEYS = ("system_fingerprint",)


def conform_reply(reply: Json) -> bool:
    """A complete chat (or chat-shaped FIM) answer or an embeddings answer, made schema-valid in place."""
    if isinstance(reply.get("choices"), list):
        return conform_chat_reply(reply)
    if isinstance(reply.get("data"), list):
        return conform_embeddings_reply(reply)
    return False


def conform_chat_reply(reply: Json) -> bool:
    changed = _drop_nulls(reply, _NEVER_NULL_TOP_KEYS)
    for position, choice in enumerate(reply.get("choices") or ()):
        if not isinstance(choice, dict):
            continue
        if "logprobs" not in choice:
            choice["logprobs"] = None
            changed = True
        if "index" not in choice:
            choice["index"] = position
            changed = True
        changed |= _finish_reason(choice)
        message = choice.get("message")
        if isinstance(message, dict):
            changed |= _message(message)
    return changed


def conform_chat_chunk(chunk: Json) -> bool:
    """One stream chunk (CreateChatCompletionStreamResponse): each choice has `index`, `delta` and
    `finish_reason` (null until the last), deltas carry no null arrays or objects."""
    changed = _drop_nulls(chunk, _NEVER_NULL_TOP_KEYS)
    for position, choice in enumerate(chunk.get("choices") or ()):
        if not isinstance(choice, dict):
            continue
        if "index" not in choice:
            choice["index"] = position
            changed = True
        if "finish_reason" not in choice:
            choice["finish_reason"] = None
            changed = True
        changed |= _finish_reason(choice)
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            choice["delta"] = {}
            changed = True
        else:
            changed |= _drop_nulls(delta, _NEVER_NULL_MESSAGE_KEYS)
    return changed


def conform_embeddings_reply(reply: Json) -> bool:
    """CreateEmbeddingResponse: `object: "list"`, each item with `object: "embedding"` and its `index`."""
    changed = False
    if "object" not in reply:
        reply["object"] = "list"
        changed = True
    for position, item in enumerate(reply["data"]):
        if not isinstance(item, dict):
            continue
        if "object" not in item:
            item["object"] = "embedding"
            changed = True
        if "index" not in item:
            item["index"] = position
            changed = True
    return changed


def _message(message: Json) -> bool:
    changed = _drop_nulls(message, _NEVER_NULL_MESSAGE_KEYS)
    for key, value in (("role", "assistant"), ("content", None), ("refusal", None)):
        if key not in message:
            message[key] = value
            changed = True
    return changed


def _finish_reason(choice: Json) -> bool:
    reason = choice.get("finish_reason")
    if isinstance(reason, str) and reason in FINISH_REASON_ALIASES:
        choice["finish_reason"] = FINISH_REASON_ALIASES[reason]
        return True
    return False


def _drop_nulls(holder: Json, keys: tuple[str, ...]) -> bool:
    changed = False
    for key in keys:
        if key in holder and holder[key] is None:
            del holder[key]
            changed = True
    return changed
