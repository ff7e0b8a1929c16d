"""Moonshot / Kimi (`https://api.moonshot.ai/v1`) as its clients see it.

Quirks reproduced: fixed sampling on K2.5/K2.6 (400 "only 0.6 is allowed"), thinking
mode rules, partial mode, `functions.NAME:IDX` tool-call ids, usage inside the final
stream choice (plus a trailing usage chunk only with stream_options.include_usage),
both cached-token shapes, and errors always shaped `{"error": {"message", "type"}}`.

Kimi K2.6 as Moonshot documents it (../shared/reference/providers.md, Moonshot section, from Moonshot's guide to
the K2 thinking models and its chat API reference; see README.md here for where newer sources differ):
thinking is on by default (`thinking: {"type": "disabled"}` turns it off) and answers then carry
`reasoning_content`; in thinking mode an assistant tool-call turn replayed without `reasoning_content` and a forced
`tool_choice` ("required" or a named function) are refused; the `developer` role is refused ("unsupported role
ROLE_UNSPECIFIED"); `max_completion_tokens` is the output limit (`max_tokens`, deprecated, still accepted). Its
three 429s are faults: `status=429` (engine_overloaded_error), `status=429,error=rate_limit_reached_error`
(both transient, with Retry-After) and `status=429,error=exceeded_current_quota_error` (the account has no
balance: not transient, no Retry-After; also `status=403`, which Moonshot's help pages give for it).
"""

from __future__ import annotations

import time
import uuid
from http import HTTPStatus
from typing import Any

from starlette.responses import JSONResponse, Response

from gateway.emulators.app import Call, Handler, Provider, Reply, Stream
from gateway.emulators.engine import Choice, Generation, chat_spec, complete
from gateway.emulators.script import script_of
from gateway.emulators.sse import Event
from gateway.emulators.text import count_prompt, split_chunks

CREATED = 1_760_000_000
FIXED = "fixed"  # K2.5 / K2.6: sampling parameters cannot be changed
# id: (context window, family, supports_image_in, supports_reasoning)
MODELS: dict[str, tuple[int, str, bool, bool]] = {
    "kimi-k2.6": (1_048_576, FIXED, True, True),
    "kimi-k2.5": (262_144, FIXED, True, True),
    "kimi-k2-0905-preview": (262_144, "k2", False, False),
    "kimi-k2-turbo-preview": (262_144, "k2", False, False),
    "kimi-k2-thinking": (262_144, "thinking", False, True),
}
# Thinking is on unless the request turns it off (providers.md: "On kimi-k2.6 thinking is enabled by default").
THINKING_BY_DEFAULT = frozenset({"kimi-k2.6"})
# The roles Moonshot's chat API takes; any other (OpenAI's `developer`) is refused with the message users of
# several clients reported (providers.md: "unsupported role ROLE_UNSPECIFIED").
ROLES = frozenset({"system", "user", "assistant", "tool"})
_FIXED_VALUES = {"top_p": 0.95, "n": 1, "presence_penalty": 0, "frequency_penalty": 0}
QUOTA_MESSAGE = "You exceeded your current quota, please check your account balance"
# Fault bodies by error type (providers.md, Moonshot errors: the 429 types and the 403). Moonshot does not publish
# the exact message of every type; these follow the ones seen. Each type: (statuses it comes with, message,
# transient: a retry may succeed).
_TYPED_BODIES: dict[str, tuple[tuple[int, ...], str, bool]] = {
    "engine_overloaded_error": ((429, 503), "The engine is currently overloaded, please try again later", True),
    "rate_limit_reached_error": (
        (429,),
        "Your account reached its rate limit (requests or tokens per minute), please try again later",
        True,
    ),
    "exceeded_current_quota_error": ((403, 429), QUOTA_MESSAGE, False),
}
_STATUS_BODIES = {  # status: (type, message)
    400: ("invalid_request_error", "Invalid request"),
    403: ("exceeded_current_quota_error", QUOTA_MESSAGE),
    404: ("resource_not_found_error", "Not found the model or Permission denied"),
    429: ("engine_overloaded_error", "The engine is currently overloaded, please try again later"),
    500: ("server_error", "Internal server error"),
    502: ("server_error", "Bad gateway"),
    503: ("engine_overloaded_error", "The service is temporarily unavailable, please try again later"),
}


def _error(status: int, message: str, type_: str = "invalid_request_error") -> Response:
    return JSONResponse({"error": {"message": message, "type": type_}}, status_code=status)


def _field(body: dict, name: str, key: str) -> Any:
    value = body.get(name)
    return value.get(key) if isinstance(value, dict) else None


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, (int, float)) else str(value)


def _check_sampling(body: dict, family: str, thinking: bool) -> Response | None:
    temperature = body.get("temperature")
    if family == FIXED:
        wanted = {"temperature": 1.0 if thinking else 0.6, **_FIXED_VALUES}
        for name, value in wanted.items():
            if body.get(name) is not None and body[name] != value:
                return _error(400, f"invalid {name}: only {_number(value)} is allowed for this model")
        return None
    if isinstance(temperature, (int, float)) and not 0 <= temperature <= 1:
        return _error(400, f"invalid temperature: {_number(temperature)}, only [0, 1] is allowed")
    n = body.get("n")
    if n is not None and not (isinstance(n, int) and 1 <= n <= 5):
        return _error(400, f"invalid n: {n}, only [1, 5] is allowed")
    if (n or 1) > 1 and isinstance(temperature, (int, float)) and temperature < 0.01:
        return _error(400, "invalid n: n must be 1 when temperature is close to 0")
    return None


def _check_thinking(body: dict, messages: list) -> Response | None:
    choice = body.get("tool_choice")
    if choice == "required" or isinstance(choice, dict):
        name = choice if isinstance(choice, str) else "specified"
        return _error(400, f"tool_choice '{name}' is incompatible with thinking enabled")
    for index, message in enumerate(messages):
        if message.get("role") == "assistant" and message.get("tool_calls") and not message.get("reasoning_content"):
            where = f"in assistant tool call message at index {index}"
            return _error(400, f"thinking is enabled but reasoning_content is missing {where}")
    return None


def _usage(gen: Generation, model: str) -> dict:
    usage: dict[str, Any] = {
        "prompt_tokens": gen.prompt_tokens,
        "completion_tokens": gen.completion_tokens,
        "total_tokens": gen.prompt_tokens + gen.completion_tokens,
        "cached_tokens": gen.cached_tokens,  # the older, top-level shape: every model has it
    }
    if MODELS[model][1] == FIXED:  # newer models report the OpenAI shape as well
        usage["prompt_tokens_details"] = {"cached_tokens": gen.cached_tokens}
    if gen.reasoning_tokens:
        usage["completion_tokens_details"] = {"reasoning_tokens": gen.reasoning_tokens}
    return usage


def _tool_call(choice: Choice, counter: int) -> dict:
    return {
        "index": 0,
        "id": f"functions.{choice.tool_name}:{counter}",
        "type": "function",
        "function": {"name": choice.tool_name, "arguments": choice.tool_arguments},
    }


def _completion(gen: Generation, model: str, calls_so_far: int) -> dict:
    choices = []
    for index, choice in enumerate(gen.choices):
        message: dict[str, Any] = {"role": "assistant", "content": None if choice.tool_name else choice.content}
        if choice.reasoning:
            message["reasoning_content"] = choice.reasoning
        if choice.tool_name:
            message["tool_calls"] = [_tool_call(choice, calls_so_far)]
        choices.append({"index": index, "message": message, "finish_reason": choice.finish_reason})
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": _usage(gen, model),
    }


def _stream(gen: Generation, model: str, calls_so_far: int, include_usage: bool, tokens_per_chunk: int) -> Stream:
    head = {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": "fpv0_" + uuid.uuid4().hex[:8],
    }
    usage = _usage(gen, model)
    events: list[Event] = []

    def add(choice: dict, content: bool = True, final: bool = False) -> None:
        events.append(Event({**head, "choices": [choice]}, content=content, final=final))

    for index, choice in enumerate(gen.choices):
        add({"index": index, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}, content=False)
        for piece in split_chunks(choice.reasoning or "", tokens_per_chunk):
            add({"index": index, "delta": {"reasoning_content": piece}, "finish_reason": None})
        if choice.tool_name:
            call = _tool_call(choice, calls_so_far)
            arguments = call["function"]["arguments"]
            opening = {**call, "function": {"name": choice.tool_name, "arguments": ""}}  # id and name first
            add({"index": index, "delta": {"tool_calls": [opening]}, "finish_reason": None})
            for part in (arguments[: len(arguments) // 2], arguments[len(arguments) // 2 :]):
                add(
                    {
                        "index": index,
                        "delta": {"tool_calls": [{"index": 0, "function": {"arguments": part}}]},
                        "finish_reason": None,
                    }
                )
        for piece in split_chunks(choice.content, tokens_per_chunk):
            add({"index": index, "delta": {"content": piece}, "finish_reason": None})
        final = {"index": index, "delta": {}, "finish_reason": choice.finish_reason}
        add({**final, "usage": usage} if index == len(gen.choices) - 1 else final, content=False, final=True)
    if include_usage:
        events.append(Event({**head, "choices": [], "usage": usage}, final=True))
    events.append(Event("[DONE]"))
    return Stream(events)


class MoonshotProvider(Provider):
    kind = "moonshot"

    def routes(self) -> list[tuple[str, str, Handler]]:
        return [
            ("POST", "/v1/chat/completions", self.chat),
            ("GET", "/v1/models", self.models),
            ("POST", "/v1/tokenizers/estimate-token-count", self.estimate),
            ("GET", "/v1/users/me/balance", self.balance),
        ]

    # --- errors ---------------------------------------------------------------------
    def auth_error(self, key_sent: bool) -> Response:
        return _error(401, "Invalid Authentication", "invalid_authentication_error")

    def status_error(self, status: int) -> Response:
        if status == 401:
            return self.auth_error(True)
        type_, message = _STATUS_BODIES.get(status, ("server_error", HTTPStatus(status).phrase))
        return _error(status, message, type_)

    def fault_error(self, status: int, error_type: str | None) -> tuple[Response, bool]:
        typed = _TYPED_BODIES.get(error_type) if error_type is not None else None
        if typed is not None and status in typed[0]:
            return _error(status, typed[1], error_type), typed[2]  # type: ignore[arg-type]
        if error_type is not None:
            return _error(status, HTTPStatus(status).phrase, error_type), status in (429, 503)
        return self.status_error(status), status != 403  # a bare 403 is the quota body: not transient

    def malformed_json(self, error: str) -> Response:
        return _error(400, f"Invalid request: failed to parse JSON body: {error}")

    def not_found(self, path: str) -> Response:
        return _error(404, f"Not found: {path}", "resource_not_found_error")

    def stream_error_event(self) -> dict:
        return {
            "error": {
                "message": "The engine is currently overloaded, please try again later",
                "type": "engine_overloaded_error",
            }
        }

    # --- endpoints ------------------------------------------------------------------
    def _model_and_messages(self, body: Any) -> tuple[str, list] | Response:
        if not isinstance(body, dict):
            return _error(400, "Invalid request: body must be a JSON object")
        model, messages = body.get("model"), body.get("messages")
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
            return _error(400, "Invalid request: messages must be a non-empty list of objects")
        if model not in MODELS:
            return _error(404, f"Not found the model {model} or Permission denied", "resource_not_found_error")
        return model, messages

    async def chat(self, call: Call) -> Reply:
        checked = self._model_and_messages(call.body)
        if isinstance(checked, Response):
            return checked
        (model, messages), body = checked, call.body
        window, family, _, _ = MODELS[model]
        for message in messages:
            if message.get("role") not in ROLES:
                return _error(400, "unsupported role ROLE_UNSPECIFIED")
        asked = _field(body, "thinking", "type")
        thinking = family == "thinking" or (
            family == FIXED and (asked == "enabled" or (asked is None and model in THINKING_BY_DEFAULT))
        )
        refused = _check_sampling(body, family, thinking) or (_check_thinking(body, messages) if thinking else None)
        if refused is not None:
            return refused
        last = messages[-1]
        partial = last.get("role") == "assistant" and last.get("partial") is True
        if partial and _field(body, "response_format", "type") == "json_object":
            return _error(400, "Invalid request: partial mode is not compatible with response_format json_object")
        prompt = count_prompt(messages, body.get("tools"))
        # max_completion_tokens is the documented limit; max_tokens is deprecated but still taken.
        name = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
        max_tokens = body.get(name)
        if max_tokens is not None and (not isinstance(max_tokens, int) or isinstance(max_tokens, bool)):
            return _error(400, f"Invalid request: {name} must be an integer, got {max_tokens!r}")
        if prompt.total + (max_tokens or 0) > window:
            return _error(400, f"Your request exceeded model token limit : {window}")
        spec = chat_spec(body, seed=body.get("seed"), thinking=thinking, max_tokens=max_tokens)
        gen = complete(spec, prompt, call.emu.options, call.emu.cache, model, script_of(call.emu))
        # Kimi numbers tool calls across the conversation: functions.NAME:IDX
        calls_so_far = sum(len(m["tool_calls"]) for m in messages if isinstance(m.get("tool_calls"), list))
        if body.get("stream") is True:
            include_usage = _field(body, "stream_options", "include_usage") is True
            return _stream(gen, model, calls_so_far, include_usage, call.emu.options.tokens_per_chunk)
        return _completion(gen, model, calls_so_far)

    async def estimate(self, call: Call) -> Reply:
        checked = self._model_and_messages(call.body)
        if isinstance(checked, Response):
            return checked
        return {"data": {"total_tokens": count_prompt(checked[1], call.body.get("tools")).total}}

    async def models(self, call: Call) -> Reply:
        cards: list[dict[str, Any]] = [
            {
                "id": model_id,
                "object": "model",
                "created": CREATED,
                "owned_by": "moonshot",
                "root": model_id,
                "parent": None,
                "permission": [],
                "context_length": window,
                "supports_image_in": image,
                "supports_reasoning": reasoning,
            }
            for model_id, (window, _, image, reasoning) in MODELS.items()
        ]
        return {"object": "list", "data": cards}

    async def balance(self, call: Call) -> Reply:
        balance = {"available_balance": 49.58894, "voucher_balance": 46.58893, "cash_balance": 3.00001}
        return {"code": 0, "data": balance, "scode": "0x0", "status": True}
