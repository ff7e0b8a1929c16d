"""What both translating doors (Anthropic Messages, OpenAI Responses) read the same way in a chat answer."""

from __future__ import annotations

import orjson

from gateway.types import Json


def json_object(arguments: str) -> Json | None:
    """The JSON object a tool call's `arguments` text holds, or None when it holds no object (not JSON: a model's
    malformed output; or JSON of another type). A chat tool call's arguments are the model's text: "the model does
    not always generate valid JSON" (the openai SDK's types/chat/chat_completion_message_function_tool_call.py,
    `Function.arguments`); each door decides what to make of text that is not an object."""
    try:
        parsed = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return None
    return parsed if isinstance(parsed, dict) else None
