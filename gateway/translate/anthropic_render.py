"""The pipeline's answers (OpenAI chat completions and chunks) -> Anthropic Messages answers, stream events and errors.

Sources: Anthropic's Messages API as the official `anthropic` Python SDK 2.17.0 reads it: types/message.py (the
answer), types/raw_message_*_event.py and types/raw_content_block_*_event.py (the stream events), lib/streaming/
_messages.py `accumulate_event` (how a stream becomes a message: the usage on `message_delta` overwrites the one of
`message_start`), _streaming.py (an event named `error` raises; every event has a name), _error_classes.py (the
error body's `error.type`, `error.message` and `error.details.error_code`; the statuses each exception class takes),
_base_client.py `_should_retry` (the `x-should-retry` header).

Decisions, each for a client that reads this door as Anthropic's API:
- `model` is the name the client asked for, as Anthropic answers: Claude Code keys its per-model state on the name it
  sent (its `claude-...` ids, mapped to a model by the policy's aliases). The served model is in the x-gateway-model
  header and, for streams, in `message_delta.x_gateway`.
- Thinking (Kimi's `reasoning_content`, Mistral's thinking chunks: both arrive as `reasoning_content`) is a thinking
  block with a `signature`, which Anthropic's SDKs and Claude Code expect and send back. Nothing verifies it here: it
  is an opaque digest of the thinking text ("gw1." + base64url of BLAKE2b-128), the same for a stream and a complete
  answer. Replayed, the thinking text is what the provider gets back (gateway/translate/anthropic.py).
- Tool arguments that are not a JSON object (a model's malformed JSON) become `{"_raw": text}` in a complete answer,
  so the client's tool fails visibly and the model sees its own text again (the request side sends `_raw` back as
  the original arguments). A stream relays argument fragments as they come (holding them back would delay a large
  file write until its end); the SDK's accumulator then raises on the malformed JSON, as it does for Anthropic's own
  fine-grained tool streaming.
- finish_reason -> stop_reason: stop -> end_turn (or tool_use when the answer holds tool calls), length and Mistral's
  model_length -> max_tokens, tool_calls -> tool_use, content_filter -> refusal. `stop_sequence` is never reported:
  OpenAI's `stop` does not say whether a stop sequence matched, or which.
- Usage: Anthropic's input_tokens excludes the cached tokens (cache_read_input_tokens); cache_creation_input_tokens
  is 0 (our providers cache prefixes by themselves and charge no cache writes). A stream only learns its usage at
  the end: `message_start` says 0 and `message_delta` carries every count (the SDK overwrites the start's); a stream
  that ends without usage says 0 rather than failing. The settled cost goes in `message_delta` as `x_gateway` (the
  SDKs keep unknown fields), as the OpenAI doors' usage chunk carries it.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from typing import Any

import orjson

from gateway.errors import GatewayError
from gateway.providers.base import usage_from
from gateway.translate.anthropic import Translated
from gateway.translate.common import json_object
from gateway.types import Json

STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "model_length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}

# HTTP status -> Anthropic's error type (Anthropic's "Errors" page, which the SDK's exception classes follow).
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}
# Mid-stream errors carry no status; their OpenAI code or type says which Anthropic type they are.
STREAM_ERROR_TYPES = {
    "gateway_shutting_down": "overloaded_error",
    "storage_unavailable": "overloaded_error",
    "upstream_timeout": "timeout_error",
    "budget_exceeded": "rate_limit_error",
    "invalid_request_error": "invalid_request_error",
    "rate_limit_error": "rate_limit_error",
    "insufficient_quota": "rate_limit_error",
}
# Refusals a retry cannot cure (the budget is spent): `x-should-retry: false` stops the SDK's (and so Claude Code's)
# automatic retries of a 429.
FINAL_CODES = frozenset({"budget_exceeded"})


def error_type(status: int) -> str:
    found = ERROR_TYPES.get(status)
    if found is not None:
        return found
    return "api_error" if status >= 500 else "invalid_request_error"


def error_body(type: str, message: str, code: str | None) -> Json:
    """Anthropic's error body. The gateway's own code is kept where the SDK reads an error code
    (`error.details.error_code`: it shows it in the exception's text), so `budget_exceeded` stays visible."""
    error: Json = {"type": type, "message": message}
    if code:
        error["details"] = {"error_code": code}
    return {"type": "error", "error": error}


def error_headers(error: GatewayError) -> dict[str, str]:
    headers = dict(error.headers)  # Retry-After and the rest stay
    if error.code in FINAL_CODES:
        headers["x-should-retry"] = "false"
    return headers


def gateway_error(error: GatewayError) -> Json:
    return error_body(error_type(error.status), error.message, error.code)


def signature(thinking: str) -> str:
    digest = hashlib.blake2b(thinking.encode(), digest_size=16).digest()
    return "gw1." + base64.urlsafe_b64encode(digest).decode().rstrip("=")


def usage(raw: Any) -> Json:
    counted = usage_from(raw)
    prompt = counted.prompt_tokens if counted is not None else 0
    cached = min(counted.cached_tokens, prompt) if counted is not None else 0
    return {
        "input_tokens": prompt - cached,
        "output_tokens": counted.completion_tokens if counted is not None else 0,
        "cache_read_input_tokens": cached,
        "cache_creation_input_tokens": 0,
    }


def stop_reason(finish: Any, has_tools: bool) -> str:
    reason = STOP_REASONS.get(finish, "end_turn") if isinstance(finish, str) else "end_turn"
    return "tool_use" if has_tools and reason == "end_turn" else reason


def tool_input(arguments: Any) -> Json:
    if isinstance(arguments, dict):
        return arguments
    if not isinstance(arguments, str) or not arguments.strip():
        return {}
    parsed = json_object(arguments)
    return parsed if parsed is not None else {"_raw": arguments}


def _split(content: Any) -> tuple[str, str]:
    """(text, thinking) of a message's or delta's content: a string, or a list of parts (Mistral's thinking chunks,
    in case an adapter left them as they came)."""
    if isinstance(content, str):
        return content, ""
    if not isinstance(content, list):
        return "", ""
    text: list[str] = []
    thinking: list[str] = []
    for part in content:
        if not isinstance(part, dict):
            continue
        if part.get("type") == "text" and isinstance(part.get("text"), str):
            text.append(part["text"])
        elif part.get("type") == "thinking":
            inner = part.get("thinking")
            if isinstance(inner, str):
                thinking.append(inner)
            elif isinstance(inner, list):
                thinking.extend(p["text"] for p in inner if isinstance(p, dict) and isinstance(p.get("text"), str))
    return "".join(text), "".join(thinking)


def _reasoning(holder: Json) -> str:
    for key in ("reasoning_content", "reasoning"):
        value = holder.get(key)
        if isinstance(value, str) and value:
            return value
    return ""


def event(name: str, data: Json) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


class AnthropicRenderer:
    """Renders one request's answer in Anthropic's format (the `Renderer` of gateway/http/doors.py). One object per
    request: a stream's blocks are numbered as they open."""

    def __init__(self, translated: Translated) -> None:
        self.model = translated.model
        self.omit_thinking = translated.omit_thinking
        self.headers: dict[str, str] = translated.headers
        self.id = "msg_" + uuid.uuid4().hex[:24]
        # The stream's state.
        self._started = False
        self._open: str | None = None  # the kind of the block now open: "text", "thinking" or "tool_use"
        self._blocks = 0  # blocks opened so far (the next one's index)
        self._tools: dict[int, int] = {}  # OpenAI tool-call index -> its block's index
        self._thinking: list[str] = []  # the open thinking block's text (its signature is computed at its end)
        self._finish: Any = None
        self._usage: Any = None
        self._cost: Any = None

    # --- a complete answer -----------------------------------------------------------------------------------------

    def reply(self, chat: Json) -> Json:
        choices = chat.get("choices")
        choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
        message = _object(choice.get("message"))
        text, thinking = _split(message.get("content"))
        thinking = _reasoning(message) or thinking
        if not text and isinstance(message.get("refusal"), str):
            text = message["refusal"]
        content: list[Json] = []
        if thinking:
            content.append(self._thinking_block(thinking))
        if text:
            content.append({"type": "text", "text": text})
        calls = message.get("tool_calls")
        for call in calls if isinstance(calls, list) else ():
            if not isinstance(call, dict):
                continue
            function = _object(call.get("function"))
            content.append(
                {
                    "type": "tool_use",
                    "id": _call_id(call.get("id")),
                    "name": str(function.get("name") or ""),
                    "input": tool_input(function.get("arguments")),
                }
            )
        has_tools = any(block["type"] == "tool_use" for block in content)
        return {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": content,
            "stop_reason": stop_reason(choice.get("finish_reason"), has_tools),
            "stop_sequence": None,
            "usage": usage(chat.get("usage")),
        }

    def _thinking_block(self, thinking: str) -> Json:
        return {
            "type": "thinking",
            "thinking": "" if self.omit_thinking else thinking,
            "signature": signature(thinking),
        }

    # --- a stream ---------------------------------------------------------------------------------------------------

    def chunk(self, chunk: Json) -> bytes:
        if "usage" in chunk and chunk["usage"] is not None:
            self._usage = chunk["usage"]
        if isinstance(chunk.get("x_gateway"), dict):
            self._cost = chunk["x_gateway"]
        choices = chunk.get("choices")
        if not isinstance(choices, list) or not choices:
            return b""
        out = [self._start()]
        for choice in choices:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue  # Anthropic has one answer per request (no `n` is sent)
            delta = choice.get("delta")
            if isinstance(delta, dict):
                self._delta(delta, out)
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]
        return b"".join(out)

    def end(self) -> bytes:
        out = [self._start()]
        self._close(out)
        delta: Json = {
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason(self._finish, bool(self._tools)), "stop_sequence": None},
            "usage": usage(self._usage),
        }
        if self._cost is not None:
            delta["x_gateway"] = self._cost
        out.append(event("message_delta", delta))
        out.append(event("message_stop", {"type": "message_stop"}))
        return b"".join(out)

    def error(self, error: Json) -> bytes:
        code = error.get("code")
        kind = error.get("type")
        anthropic = STREAM_ERROR_TYPES.get(str(code)) or STREAM_ERROR_TYPES.get(str(kind)) or "api_error"
        message = error.get("message")
        text = message if isinstance(message, str) else orjson.dumps(message).decode()
        return event("error", error_body(anthropic, text, code if isinstance(code, str) else None))

    def _start(self) -> bytes:
        if self._started:
            return b""
        self._started = True
        message: Json = {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage(None),
        }
        return event("message_start", {"type": "message_start", "message": message}) + event("ping", {"type": "ping"})

    def _delta(self, delta: Json, out: list[bytes]) -> None:
        text, thinking = _split(delta.get("content"))
        thinking = _reasoning(delta) or thinking
        if thinking:
            self._open_block("thinking", {"type": "thinking", "thinking": "", "signature": ""}, out)
            self._thinking.append(thinking)
            if not self.omit_thinking:
                self._block_delta({"type": "thinking_delta", "thinking": thinking}, out)
        if not text and isinstance(delta.get("refusal"), str):
            text = delta["refusal"]
        if text:
            self._open_block("text", {"type": "text", "text": ""}, out)
            self._block_delta({"type": "text_delta", "text": text}, out)
        calls = delta.get("tool_calls")
        for position, call in enumerate(calls if isinstance(calls, list) else ()):
            if isinstance(call, dict):
                self._tool_delta(call, position, out)

    def _tool_delta(self, call: Json, position: int, out: list[bytes]) -> None:
        """A tool call whole (Mistral) or in pieces (an index with its id and name first, then argument fragments)."""
        index = call.get("index")
        index = index if isinstance(index, int) and not isinstance(index, bool) else position
        function = _object(call.get("function"))
        if index not in self._tools:
            block = {
                "type": "tool_use",
                "id": _call_id(call.get("id")),
                "name": str(function.get("name") or ""),
                "input": {},
            }
            self._open_block("tool_use", block, out, force=True)
            self._tools[index] = self._blocks - 1
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            data = {"type": "input_json_delta", "partial_json": arguments}
            out.append(
                event(
                    "content_block_delta", {"type": "content_block_delta", "index": self._tools[index], "delta": data}
                )
            )

    def _open_block(self, kind: str, block: Json, out: list[bytes], force: bool = False) -> None:
        if self._open == kind and not force:
            return
        self._close(out)
        self._open = kind
        out.append(
            event("content_block_start", {"type": "content_block_start", "index": self._blocks, "content_block": block})
        )
        self._blocks += 1

    def _block_delta(self, delta: Json, out: list[bytes]) -> None:
        out.append(
            event("content_block_delta", {"type": "content_block_delta", "index": self._blocks - 1, "delta": delta})
        )

    def _close(self, out: list[bytes]) -> None:
        if self._open is None:
            return
        if self._open == "thinking":
            # The signature ends a thinking block (Anthropic sends signature_delta just before content_block_stop).
            self._block_delta({"type": "signature_delta", "signature": signature("".join(self._thinking))}, out)
            self._thinking = []
        out.append(event("content_block_stop", {"type": "content_block_stop", "index": self._blocks - 1}))
        self._open = None


def _object(value: Any) -> Json:
    return value if isinstance(value, dict) else {}


def _call_id(value: Any) -> str:
    """The provider's tool-call id as it is (Kimi's `functions.NAME:N` ids must come back unchanged: its chat template
    reads them), or a fresh one in Anthropic's style when the provider gave none."""
    return value if isinstance(value, str) and value else "toolu_" + uuid.uuid4().hex[:24]
