"""Responses input items -> chat messages.

Sources: the `openai` SDK's `response_input_item_param.py` (message, function_call, function_call_output,
custom_tool_call(_output), reasoning items; content parts), Codex's `codex-rs/protocol/src/models.rs` (what it
replays: reasoning items with `summary` and `encrypted_content`, calls with `namespace`). The rules are in
gateway/translate/responses.py's docstring.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from typing import Any

import orjson

from gateway.pipeline.validation import type_error
from gateway.translate.responses_tools import ToolNames, bad_value
from gateway.types import Json

ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}
# Item keys that describe the item and are not read by the model (ids, statuses, Codex's `phase`).
ITEM_HINTS = frozenset({"id", "status", "phase", "type"})
# The reasoning this door produced itself, carried in `encrypted_content` (see encode_reasoning).
REASONING_PREFIX = "gwr1."


def encode_reasoning(text: str) -> str:
    """Reasoning text as `encrypted_content`: readable back by `decode_reasoning` when a client replays it (Kimi's
    thinking mode needs a replayed tool-call turn's reasoning). Not a secret: it is the client's own conversation,
    and the summary carries the same text."""
    return REASONING_PREFIX + base64.urlsafe_b64encode(orjson.dumps({"text": text})).decode()


def decode_reasoning(value: Any) -> str | None:
    """The text of an `encrypted_content` this door produced, else None (OpenAI's own is opaque to us)."""
    if not isinstance(value, str) or not value.startswith(REASONING_PREFIX):
        return None
    try:
        data = orjson.loads(base64.urlsafe_b64decode(value[len(REASONING_PREFIX) :]))
    except (ValueError, binascii.Error, orjson.JSONDecodeError):
        return None
    text = data.get("text") if isinstance(data, dict) else None
    return text if isinstance(text, str) else None


class _Conversation:
    """Builds the chat messages item by item: consecutive calls become one assistant turn, reasoning waits for the
    assistant turn it belongs to, and images a tool returned follow its results as a user message (a chat tool
    message takes text only)."""

    def __init__(self, names: ToolNames) -> None:
        self.names = names
        self.messages: list[Json] = []
        self.reasoning: list[str] = []
        self.open_turn: Json | None = None  # the assistant turn the next function_call joins
        self.tool_images: list[Json] = []

    def message(self, role: str, content: Any) -> None:
        self._flush_images()
        if role == "assistant":
            turn: Json = {"role": "assistant", "content": content}
            self._take_reasoning(turn)
            self.messages.append(turn)
            self.open_turn = turn
            return
        self.open_turn = None
        self.messages.append({"role": role, "content": content})

    def call(self, call_id: str, name: str, arguments: str) -> None:
        self._flush_images()
        turn = self.open_turn
        if turn is None:
            turn = {"role": "assistant", "content": None}
            self._take_reasoning(turn)
            self.messages.append(turn)
            self.open_turn = turn
        elif self.reasoning:  # reasoning between a text and a call of the same turn: one turn's reasoning
            self._take_reasoning(turn)
        turn.setdefault("tool_calls", []).append(
            {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
        )

    def result(self, call_id: str, text: str, images: list[Json]) -> None:
        self.open_turn = None
        self.messages.append({"role": "tool", "tool_call_id": call_id, "content": text})
        self.tool_images.extend(images)

    def think(self, text: str) -> None:
        if text:
            self.reasoning.append(text)

    def _take_reasoning(self, turn: Json) -> None:
        if self.reasoning:
            earlier = turn.get("reasoning_content")
            turn["reasoning_content"] = "\n\n".join(([earlier] if earlier else []) + self.reasoning)
            self.reasoning = []

    def _flush_images(self) -> None:
        if self.tool_images:
            parts: list[Json] = [{"type": "text", "text": "(Images returned by the tool calls above.)"}]
            self.messages.append({"role": "user", "content": parts + self.tool_images})
            self.tool_images = []

    def done(self) -> list[Json]:
        self._flush_images()
        return self.messages


def input_messages(value: list[Any], names: ToolNames, earlier: int) -> list[Json]:
    """`earlier`: how many of the items are the kept turns of `previous_response_id` (named so in errors)."""
    conversation = _Conversation(names)
    for index, item in enumerate(value):
        where = f"input[{index - earlier}]" if index >= earlier else f"previous_response_id's item {index}"
        if not isinstance(item, dict):
            raise type_error(where, "an object")
        kind = item.get("type", "message" if "role" in item else None)
        if kind == "message":
            _message_item(item, where, conversation)
        elif kind == "function_call":
            _call_item(item, where, conversation)
        elif kind == "function_call_output" or kind == "custom_tool_call_output":
            _output_item(item, where, conversation)
        elif kind == "custom_tool_call":
            _custom_call_item(item, where, conversation)
        elif kind == "reasoning":
            _reasoning_item(item, where, conversation)
        else:
            raise bad_value(
                f"{where} is an item of type {kind!r}, which cannot be sent to the providers behind this gateway "
                "(message, function_call, custom_tool_call, their outputs and reasoning items can).",
                f"{where}.type",
                "unsupported_item",
            )
    return conversation.done()


def _only(item: Json, where: str, keys: Iterable[str]) -> None:
    allowed = ITEM_HINTS.union(keys)
    for key in item:
        if key not in allowed:
            raise bad_value(f"Unknown parameter '{where}.{key}'.", f"{where}.{key}", "unknown_parameter")


def _message_item(item: Json, where: str, conversation: _Conversation) -> None:
    _only(item, where, ("role", "content"))
    given = item.get("role")
    role = ROLES.get(given) if isinstance(given, str) else None
    if role is None:
        raise bad_value(f"Invalid value for '{where}.role': {item.get('role')!r}.", f"{where}.role")
    content = item.get("content")
    if isinstance(content, str):
        conversation.message(role, content)
        return
    if not isinstance(content, list):
        raise type_error(f"{where}.content", "a string or an array of parts")
    parts = [_part(part, f"{where}.content[{i}]", role) for i, part in enumerate(content)]
    if all(part["type"] == "text" for part in parts):
        texts = [part["text"] for part in parts]
        # One text part is sent as a string (every provider's simplest form); several stay separate parts,
        # except for roles whose chat content must be a string here (system and assistant turns are joined).
        if len(texts) == 1 or role != "user":
            conversation.message(role, "".join(texts) if role == "assistant" else "\n\n".join(texts))
            return
    elif role != "user":
        raise bad_value(f"{where}: images can only be sent in user messages.", f"{where}.content")
    conversation.message(role, parts)


def _part(part: Any, where: str, role: str) -> Json:
    if not isinstance(part, dict) or not isinstance(part.get("type"), str):
        raise type_error(where, "an object with a 'type'")
    kind = part["type"]
    if kind in ("input_text", "output_text", "text"):
        text = part.get("text")
        if not isinstance(text, str):
            raise type_error(f"{where}.text", "a string")
        return {"type": "text", "text": text}
    if kind == "refusal" and role == "assistant":
        refusal = part.get("refusal")
        if not isinstance(refusal, str):
            raise type_error(f"{where}.refusal", "a string")
        return {"type": "text", "text": refusal}
    if kind == "input_image":
        return _image(part, where)
    raise bad_value(
        f"{where} is a content part of type {kind!r}, which the providers behind this gateway cannot take "
        "(input_text, input_image by image_url and output_text can be sent).",
        f"{where}.type",
        "unsupported_content",
    )


def _image(part: Json, where: str) -> Json:
    if part.get("file_id") is not None:
        raise bad_value(
            f"{where}: images by 'file_id' cannot be sent (files are OpenAI's storage; no provider here reads "
            "them): send the image as 'image_url' (a URL or a data: URL).",
            f"{where}.file_id",
            "unsupported_content",
        )
    url = part.get("image_url")
    if not isinstance(url, str) or not url:
        raise type_error(f"{where}.image_url", "a URL string")
    image: Json = {"url": url}
    if part.get("detail") in ("low", "high", "auto"):
        image["detail"] = part["detail"]
    return {"type": "image_url", "image_url": image}


def _call_id_and_name(item: Json, where: str) -> tuple[str, str]:
    """The `call_id` and `name` of a replayed call (a function's or a custom tool's), each a non-empty string."""
    call_id, name = item.get("call_id"), item.get("name")
    if not isinstance(call_id, str) or not call_id:
        raise type_error(f"{where}.call_id", "a non-empty string")
    if not isinstance(name, str) or not name:
        raise type_error(f"{where}.name", "a non-empty string")
    return call_id, name


def _call_item(item: Json, where: str, conversation: _Conversation) -> None:
    _only(item, where, ("call_id", "name", "arguments", "namespace", "caller"))
    call_id, name = _call_id_and_name(item, where)
    arguments, namespace = item.get("arguments"), item.get("namespace")
    if not isinstance(arguments, str):
        raise type_error(f"{where}.arguments", "a string (JSON)")
    if namespace is not None and not isinstance(namespace, str):
        raise type_error(f"{where}.namespace", "a string")
    conversation.call(call_id, conversation.names.to_chat(name, namespace), arguments)


def _custom_call_item(item: Json, where: str, conversation: _Conversation) -> None:
    """A custom tool's call, replayed as the function call it was sent as (its input as the `input` argument)."""
    _only(item, where, ("call_id", "name", "input", "namespace", "caller"))
    call_id, name = _call_id_and_name(item, where)
    text, namespace = item.get("input"), item.get("namespace")
    if not isinstance(text, str):
        raise type_error(f"{where}.input", "a string")
    if namespace is not None and not isinstance(namespace, str):
        raise type_error(f"{where}.namespace", "a string")
    arguments = orjson.dumps({"input": text}).decode()
    conversation.call(call_id, conversation.names.to_chat(name, namespace), arguments)


def _output_item(item: Json, where: str, conversation: _Conversation) -> None:
    _only(item, where, ("call_id", "output", "name", "namespace", "caller"))
    call_id, output = item.get("call_id"), item.get("output")
    if not isinstance(call_id, str) or not call_id:
        raise type_error(f"{where}.call_id", "a non-empty string")
    if isinstance(output, str):
        conversation.result(call_id, output, [])
        return
    if not isinstance(output, list):
        raise type_error(f"{where}.output", "a string or an array of parts")
    texts: list[str] = []
    images: list[Json] = []
    for position, part in enumerate(output):
        spot = f"{where}.output[{position}]"
        if not isinstance(part, dict):
            raise type_error(spot, "an object")
        if part.get("type") == "input_text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif part.get("type") == "input_image":
            images.append(_image(part, spot))
        else:
            raise bad_value(
                f"{spot} is a tool output part of type {part.get('type')!r}, which cannot be sent "
                "(input_text and input_image can).",
                f"{spot}.type",
                "unsupported_content",
            )
    if images and not texts:
        texts.append("(The tool returned images: see the next message.)")
    conversation.result(call_id, "\n".join(texts), images)


def _reasoning_item(item: Json, where: str, conversation: _Conversation) -> None:
    _only(item, where, ("summary", "content", "encrypted_content"))
    ours = decode_reasoning(item.get("encrypted_content"))
    if ours is not None:
        conversation.think(ours)
        return
    # Raw reasoning text where a client has it (`content`), else the summary; OpenAI's own encrypted reasoning
    # is opaque and only OpenAI reads it.
    for key, kind in (("content", "reasoning_text"), ("summary", "summary_text")):
        parts = item.get(key)
        if parts is None:
            continue
        if not isinstance(parts, list):
            raise type_error(f"{where}.{key}", "an array")
        texts = [p.get("text") for p in parts if isinstance(p, dict) and p.get("type") == kind]
        if not all(isinstance(t, str) for t in texts):
            raise type_error(f"{where}.{key}", f"an array of {kind} parts")
        if texts:
            conversation.think("\n\n".join(str(t) for t in texts))
            return
