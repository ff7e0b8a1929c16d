"""Mistral La Plateforme (`https://api.mistral.ai/v1`) as its clients see it.

Quirks reproduced: pydantic-strict bodies (422 `extra_forbidden` with `message` as an
object), 9-character tool-call ids (400, code 3280), usage on the last content chunk,
a random padding field "p" on every chunk, thinking chunks as content arrays, the
rate-limit headers, and a prefix message whose text is repeated in the reply.

Every request is validated the way the API does it, in this order:
1. the request's field list (which top-level and message keys exist) is the one of the `mistralai` SDK's request
   models (SDK 3.7.0: ChatCompletionRequest, FIMCompletionRequest, EmbeddingRequest, SystemMessage, UserMessage,
   AssistantMessage, ToolMessage), written out below because the emulator also runs where the SDK is not
   installed (demo mode); tests/providers/test_mistral_reference.py checks the lists against the installed SDK;
2. what mistral-common (Mistral's own library) models is validated with its own pydantic models
   (`mistral_common.protocol.instruct.request.ChatCompletionRequest`, `mistral_common.protocol.fim.request.FIMRequest`:
   messages, content chunks, tools, tool calls, tool_choice, response_format, max_tokens, random_seed), so their
   errors come back as the same 422 detail list;
3. the conversation is checked by mistral-common's `MistralRequestValidator` for the model's tokenizer version in
   serving mode (`get_validator(version, ValidationMode.serving)`): message order, the last role, tool-call/result
   pairing, function names, tool schemas; its refusals are 400s in Mistral's error envelope.
Where the sources disagree with ../shared/reference/providers.md, gateway/emulators/README.md says which one is
followed and why.
"""

from __future__ import annotations

import math
import re
import time
import uuid
from collections.abc import Set
from http import HTTPStatus
from typing import Any

from mistral_common.exceptions import (
    InvalidFunctionCallException,
    InvalidMessageStructureException,
    InvalidToolMessageException,
    MistralCommonException,
)
from mistral_common.protocol.fim.request import FIMRequest
from mistral_common.protocol.instruct.messages import ChatMessage
from mistral_common.protocol.instruct.request import ChatCompletionRequest
from mistral_common.protocol.instruct.validator import ValidationMode, get_validator
from mistral_common.tokens.tokenizers.base import TokenizerVersion
from pydantic import ValidationError
from starlette.responses import JSONResponse, Response

from gateway.emulators.app import Call, Handler, Provider, Reply, Stream
from gateway.emulators.engine import ChatSpec, Choice, Generation, chat_spec, complete, generate
from gateway.emulators.script import script_of
from gateway.emulators.sse import Event
from gateway.emulators.text import count_prompt, count_tokens, random_id, rng_for, split_chunks
from gateway.tokens.vocab import Lazy, TokenizerUnavailable, load_tekken

CREATED = 1_760_000_000
_CHAT = {
    "completion_chat": True,
    "function_calling": True,
    "completion_fim": False,
    "fine_tuning": False,
    "vision": False,
    "classification": False,
    "ocr": False,
    "moderation": False,
    "audio": False,
}
# `tokenizer`: the mistral-common tokenizer version whose validator the model's requests pass. Neither the SDK nor
# the API's model cards say which version a served model uses; v15 is mistral-common's newest and the only one that
# takes `reasoning_effort` (mistral_common.protocol.instruct.request.ReasoningEffort: "Supported for tokenizer >= v15
# only"), which the API documents for its chat models.
MODELS: dict[str, dict] = {
    "mistral-medium-3.5": {
        "ctx": 262144,
        "caps": {**_CHAT, "vision": True},
        "aliases": ["mistral-medium-latest"],
        "tokenizer": "v15",
        "description": "Mistral Medium 3.5: 128B dense, chat, tools and vision.",
    },
    "mistral-medium-latest": {
        "ctx": 262144,
        "caps": {**_CHAT, "vision": True},
        "aliases": ["mistral-medium-3.5"],
        "tokenizer": "v15",
        "description": "Alias of mistral-medium-3.5.",
    },
    "mistral-small-latest": {
        "ctx": 131072,
        "caps": {**_CHAT, "vision": True},
        "aliases": [],
        "tokenizer": "v15",
        "description": "Mistral Small: fast and cheap chat.",
    },
    "codestral-latest": {
        "ctx": 262144,
        "caps": {**_CHAT, "completion_fim": True},
        "aliases": [],
        "tokenizer": "v15",
        "description": "Codestral: code generation and fill-in-the-middle.",
    },
    "mistral-embed": {
        "ctx": 8192,
        "caps": {**{k: False for k in _CHAT}},
        "aliases": [],
        "embed": True,
        "description": "Mistral Embed: 1024-dimension text embeddings.",
    },
}
# The request fields of the mistralai SDK 3.7.0 (mistralai.client.models: ChatCompletionRequest and
# ChatCompletionStreamRequest, FIMCompletionRequest and FIMCompletionStreamRequest, EmbeddingRequest, by wire name).
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
        "metadata",
        "response_format",
        "tools",
        "tool_choice",
        "presence_penalty",
        "frequency_penalty",
        "min_tokens",
        "repetition_penalty",
        "top_k",
        "logprobs",
        "top_logprobs",
        "prompt_logprobs",
        "top_prompt_logprobs",
        "n",
        "prediction",
        "parallel_tool_calls",
        "reasoning_effort",
        "prompt_mode",
        "guardrails",
        "prompt_cache_key",
        "service_tier",
        "safe_prompt",
    }
)
FIM_FIELDS = frozenset(
    {
        "model",
        "prompt",
        "temperature",
        "top_p",
        "max_tokens",
        "stream",
        "stop",
        "random_seed",
        "metadata",
        "suffix",
        "min_tokens",
        "prompt_cache_key",
    }
)
EMBED_FIELDS = frozenset({"model", "input", "metadata", "output_dimension", "output_dtype", "encoding_format"})
# SDK 3.7.0 SystemMessage, UserMessage, AssistantMessage, ToolMessage (the same keys as mistral-common's messages).
MESSAGE_FIELDS = {
    "system": {"role", "content"},
    "user": {"role", "content"},
    "assistant": {"role", "content", "tool_calls", "prefix"},
    "tool": {"role", "content", "tool_call_id", "name"},
}
# SDK 3.7.0 ChatCompletionRequest.reasoning_effort and mistral-common's ReasoningEffort (both list "max").
REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")
# What mistral-common's ChatCompletionRequest / FIMRequest model of a body: passed to them as sent. `temperature` and
# `top_p` are not: mistral-common bounds temperature to [0, 1] (BaseCompletionRequest), the API takes up to 1.5
# (see _check_range below and gateway/emulators/README.md).
_MC_CHAT_FIELDS = (
    "model",
    "messages",
    "response_format",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "reasoning_effort",
    "max_tokens",
    "random_seed",
)
_MC_FIM_FIELDS = ("prompt", "suffix", "max_tokens", "random_seed")
EMBED_DIMENSION = 1024
TOOL_ID = re.compile(r"[a-zA-Z0-9]{9}")
RATE_LIMIT_REQUESTS, RATE_LIMIT_TOKENS = 300, 2_000_000
_STATUS_BODIES = {  # status: (message, type, code)
    400: ("Bad request", "invalid_request_error", "3000"),
    429: ("Rate limit exceeded", "rate_limited", "1300"),
    500: ("Internal server error", "internal_server_error", "1000"),
    502: ("Bad gateway", "upstream_error", "1000"),
    503: ("Service unavailable", "service_unavailable", "1000"),
    504: ("Gateway timeout", "timeout", "1000"),
}


def _error(status: int, message: str, type_: str, code: str | None, **extra: Any) -> Response:
    return JSONResponse(
        {"object": "error", "message": message, "type": type_, "param": None, "code": code, **extra}, status_code=status
    )


def _detail(type_: str, loc: list, msg: str, value: Any, ctx: dict | None = None) -> dict:
    detail = {"type": type_, "loc": ["body", *loc], "msg": msg, "input": value}
    return {**detail, "ctx": ctx} if ctx else detail


def _unprocessable(details: list[dict]) -> Response:
    # FastAPI's validation list wrapped in Mistral's envelope: `message` is an object.
    return _error(422, {"detail": details}, "invalid_request_error", None)  # type: ignore[arg-type]


def _invalid_model(model: Any) -> Response:
    return _error(400, f"Invalid model: {model}", "invalid_model", "1500", raw_status_code=400)


def _too_long(tokens: int, window: int) -> Response:
    message = (
        f"Prompt contains {tokens} tokens and 0 draft tokens, too large for model with {window} maximum context length"
    )
    return _error(400, message, "invalid_request_error", "3051")


def _texts(value: Any) -> list[str] | None:
    """An embeddings `input` (a string or a list of strings) as a list, or None if it is neither."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(i, str) for i in value):
        return value
    return None


def _check_fields(body: dict, allowed: Set[str], required: tuple[str, ...], loc: tuple = ()) -> list[dict]:
    """pydantic `extra="forbid"`: every unknown field and every missing one, in body order."""
    details = [_detail("missing", [*loc, name], "Field required", body) for name in required if name not in body]
    details += [
        _detail("extra_forbidden", [*loc, name], "Extra inputs are not permitted", value)
        for name, value in body.items()
        if name not in allowed
    ]
    return details


def _check_range(body: dict, name: str, low: float, high: float) -> list[dict]:
    value = body.get(name)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or low <= value <= high:
        return []
    if value < low:
        return [
            _detail(
                "greater_than_equal", [name], f"Input should be greater than or equal to {low:g}", value, {"ge": low}
            )
        ]
    return [_detail("less_than_equal", [name], f"Input should be less than or equal to {high:g}", value, {"le": high})]


def _check_int(body: dict, name: str, low: int) -> list[dict]:
    value = body.get(name)
    if value is None:
        return []
    if not isinstance(value, int) or isinstance(value, bool):
        return [_detail("int_type", [name], "Input should be a valid integer", value)]
    return _check_range(body, name, low, math.inf)


def _check_enum(body: dict, name: str, allowed: tuple) -> list[dict]:
    value = body.get(name)
    if value is None or value in allowed:
        return []
    expected = ", ".join(f"'{a}'" for a in allowed[:-1]) + f" or '{allowed[-1]}'"
    return [_detail("enum", [name], f"Input should be {expected}", value, {"expected": expected})]


def _check_messages(messages: Any) -> list[dict]:
    if not isinstance(messages, list):
        return [_detail("list_type", ["messages"], "Input should be a valid list", messages)]
    details = []
    for index, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in MESSAGE_FIELDS:
            tags = "'system', 'user', 'assistant', 'tool'"
            text = f"Input tag '{role}' found using 'role' does not match any of the expected tags: {tags}"
            details.append(
                _detail(
                    "union_tag_invalid",
                    ["messages", index],
                    text,
                    message,
                    {"discriminator": "'role'", "tag": str(role), "expected_tags": tags},
                )
            )
            continue
        required = ("content",) if role in ("system", "user", "tool") else ()
        details += _check_fields(message, MESSAGE_FIELDS[role], required, ("messages", index, role))
    return details


def _bad_tool_ids(messages: list) -> Response | None:
    for message in messages:
        ids = [call.get("id") for call in message.get("tool_calls") or [] if isinstance(call, dict)]
        if message.get("role") == "tool":
            ids.append(message.get("tool_call_id"))
        for tool_id in ids:
            if not isinstance(tool_id, str) or not TOOL_ID.fullmatch(tool_id):
                message_text = f"Tool call id was {tool_id} but must be a-z, A-Z, 0-9, with a length of 9."
                return _error(400, message_text, "invalid_function_call", "3280", raw_status_code=400)
    return None


def _pydantic_details(error: ValidationError) -> list[dict]:
    """pydantic's errors as FastAPI lists them (what the API's 422 carries): loc under "body", no docs url."""
    details = []
    for item in error.errors(include_url=False):
        ctx = {
            key: value if isinstance(value, (str, int, float, bool)) or value is None else str(value)
            for key, value in (item.get("ctx") or {}).items()
        }
        details.append(_detail(item["type"], list(item["loc"]), item["msg"], item.get("input"), ctx or None))
    return details


def _mc_part(part: Any) -> Any:
    """A content part in the form mistral-common's chunk models take. The wire (SDK 3.7.0 ThinkChunk) sends
    `thinking` as a list of text chunks and may add `signature`; mistral-common's ThinkChunk has `thinking` as one
    string: the SDK's form is read into it. `document_url` parts (SDK DocumentURLChunk) have no mistral-common
    model; they stand as an empty text for the checks."""
    if not isinstance(part, dict):
        return part
    if part.get("type") == "thinking" and isinstance(part.get("thinking"), list):
        texts = [p.get("text", "") for p in part["thinking"] if isinstance(p, dict)]
        out = {key: value for key, value in part.items() if key != "signature"}
        return {**out, "thinking": "".join(t for t in texts if isinstance(t, str))}
    if part.get("type") == "document_url":
        return {"type": "text", "text": ""}
    return part


def _mc_message(message: Any) -> Any:
    if isinstance(message, dict) and isinstance(message.get("content"), list):
        return {**message, "content": [_mc_part(part) for part in message["content"]]}
    return message


# mistral-common's refusals as the API answers them: the message is the exception's text. Tool-call id errors have
# their documented type and code (providers.md: invalid_function_call, 3280), conversation-structure errors
# Mistral's message-order error (invalid_request_message_order, 3230); anything else is a plain invalid request.
def _refusal(exc: MistralCommonException) -> Response:
    text = str(exc)
    if "Tool call id" in text and isinstance(exc, (InvalidFunctionCallException, InvalidToolMessageException)):
        return _error(400, text, "invalid_function_call", "3280", raw_status_code=400)
    if isinstance(exc, InvalidMessageStructureException):
        return _error(400, text, "invalid_request_message_order", "3230")
    return _error(400, text, "invalid_request_error", "3000")


def _mistral_common_chat(body: dict, tokenizer: str) -> Response | None:
    """Steps 2 and 3 of the module docstring for a chat body whose field list already passed."""
    data = {name: body[name] for name in _MC_CHAT_FIELDS if body.get(name) is not None}
    data["messages"] = [_mc_message(message) for message in body["messages"]]
    try:
        request: ChatCompletionRequest[ChatMessage] = ChatCompletionRequest.model_validate(data)
    except ValidationError as exc:
        return _unprocessable(_pydantic_details(exc))
    try:
        get_validator(TokenizerVersion(tokenizer), ValidationMode.serving).validate_request(request)
    except MistralCommonException as exc:
        return _refusal(exc)
    except ValueError as exc:  # mistral-common raises a bare ValueError for some combinations (system + audio)
        return _error(400, str(exc), "invalid_request_error", "3000")
    return None


def _mistral_common_fim(body: dict) -> list[dict]:
    try:
        FIMRequest.model_validate({name: body[name] for name in _MC_FIM_FIELDS if body.get(name) is not None})
    except ValidationError as exc:
        return _pydantic_details(exc)
    return []


def _usage(gen: Generation) -> dict:
    usage = {
        "prompt_tokens": gen.prompt_tokens,
        "completion_tokens": gen.completion_tokens,
        "total_tokens": gen.prompt_tokens + gen.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": gen.cached_tokens},
        "num_cached_tokens": gen.cached_tokens,
    }
    if gen.reasoning_tokens:
        usage["completion_tokens_details"] = {"reasoning_tokens": gen.reasoning_tokens}
    return usage


def _thinking(text: str) -> dict:
    return {"type": "thinking", "thinking": [{"type": "text", "text": text}], "closed": True}


def _tool_call(gen: Generation, index: int, choice: Choice) -> dict:
    call_id = random_id(rng_for(gen.key, "tool-id", index), 9)
    function = {"name": choice.tool_name, "arguments": choice.tool_arguments}
    return {"id": call_id, "type": "function", "function": function, "index": 0}


def _completion(gen: Generation, model: str, prefix: str) -> dict:
    choices = []
    for index, choice in enumerate(gen.choices):
        text = "" if choice.tool_name else prefix + choice.content
        content: Any = [_thinking(choice.reasoning), {"type": "text", "text": text}] if choice.reasoning else text
        tool_calls = [_tool_call(gen, index, choice)] if choice.tool_name else None
        choices.append(
            {
                "index": index,
                "finish_reason": choice.finish_reason,
                "message": {"role": "assistant", "tool_calls": tool_calls, "content": content},
            }
        )
    return {
        "id": uuid.uuid4().hex,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": _usage(gen),
    }


def _stream(gen: Generation, model: str, prefix: str, tokens_per_chunk: int) -> Stream:
    """Role chunk, [thinking chunk], content chunks; the last one has finish_reason and usage."""
    head = {"id": uuid.uuid4().hex, "object": "chat.completion.chunk", "created": int(time.time()), "model": model}
    events: list[Event] = []

    def add(
        index: int, delta: dict, finish: str | None = None, usage: dict | None = None, content: bool = True
    ) -> None:
        pad = random_id(rng_for(gen.key, "p", len(events)), 1 + len(events) * 7 % 23)
        chunk = {**head, "choices": [{"index": index, "delta": delta, "finish_reason": finish}]}
        chunk.update({"usage": usage} if usage else {})
        events.append(Event({**chunk, "p": pad}, content=content, final=finish is not None))

    for index, choice in enumerate(gen.choices):
        usage = _usage(gen) if index == len(gen.choices) - 1 else None
        add(index, {"role": "assistant", "content": ""}, content=False)
        if choice.reasoning:
            add(index, {"content": [_thinking(choice.reasoning)]})
        if choice.tool_name:
            add(index, {"tool_calls": [_tool_call(gen, index, choice)]}, choice.finish_reason, usage)
            continue
        pieces = split_chunks(choice.content, tokens_per_chunk) or [""]
        pieces[0] = prefix + pieces[0]
        for number, piece in enumerate(pieces):
            last = number == len(pieces) - 1
            add(index, {"content": piece}, choice.finish_reason if last else None, usage if last else None)
    events.append(Event("[DONE]"))
    return Stream(events)


def _embedding(vector: list[float], dtype: str) -> list:
    """One embedding as the API returns it: always a JSON array, whatever `encoding_format` asked. The SDK types it
    so (mistralai 3.7.0 EmbeddingResponseData.embedding: List[float]), and the API was seen ignoring
    `encoding_format: base64` (Mintplex-Labs/anything-llm#5794 and arabold/docs-mcp-server#471, 2026: the OpenAI
    JS client, which asks base64 by default, decoded Mistral's float arrays into zeros)."""
    if dtype in ("int8", "uint8"):
        scale = 127 / (max(abs(v) for v in vector) or 1.0)
        values: list = [round(v * scale) + (128 if dtype == "uint8" else 0) for v in vector]
    elif dtype in ("binary", "ubinary"):
        bits = [v > 0 for v in vector] + [False] * (-len(vector) % 8)  # one bit per dimension, 8 per byte
        offset = 0 if dtype == "ubinary" else -128
        values = [sum(bits[i + b] << (7 - b) for b in range(8)) + offset for i in range(0, len(bits), 8)]
    else:
        values = vector
    return values


class MistralProvider(Provider):
    kind = "mistral"

    def __init__(self) -> None:
        self._window = -1  # the minute the rate-limit counters below belong to
        self._requests = self._tokens = 0
        # Mistral bills prompts in Tekken tokens (mistral-common's tokenizer, shipped in its wheel): the
        # usage reported here is counted with it, so budget tests see what Mistral would charge. Loaded
        # on first use (about 0.2 s).
        self._tekken = Lazy(load_tekken)

    def count(self, text: str | None) -> int:
        """Tekken tokens of one text (the words-and-punctuation count if the vocabulary cannot be read)."""
        if not isinstance(text, str) or not text:
            return 0
        try:
            return len(self._tekken.get().encode_ordinary(text))
        except TokenizerUnavailable:
            return count_tokens(text)

    def routes(self) -> list[tuple[str, str, Handler]]:
        return [
            ("POST", "/v1/chat/completions", self.chat),
            ("POST", "/v1/fim/completions", self.fim),
            ("POST", "/v1/embeddings", self.embeddings),
            ("GET", "/v1/models", self.models),
        ]

    # --- errors and headers -------------------------------------------------------
    def auth_error(self, key_sent: bool) -> Response:
        return JSONResponse({"detail": "Invalid API Key" if key_sent else "Unauthorized"}, status_code=401)

    def status_error(self, status: int) -> Response:
        if status == 401:
            return self.auth_error(True)
        message, type_, code = _STATUS_BODIES.get(status, (HTTPStatus(status).phrase, "api_error", None))
        return _error(status, message, type_, code)

    def malformed_json(self, error: str) -> Response:
        return _unprocessable([_detail("json_invalid", [0], "JSON decode error", {}, {"error": error})])

    def not_found(self, path: str) -> Response:
        return JSONResponse({"detail": "Not Found"}, status_code=404)

    def stream_error_event(self) -> dict:
        return {
            "object": "error",
            "message": "Internal server error",
            "type": "internal_server_error",
            "param": None,
            "code": "1000",
        }

    def response_headers(self) -> dict[str, str]:
        minute = int(time.time() // 60)
        if minute != self._window:
            self._window, self._requests, self._tokens = minute, 0, 0
        self._requests += 1
        return {
            "x-ratelimit-limit-req-minute": str(RATE_LIMIT_REQUESTS),
            "x-ratelimit-remaining-req-minute": str(max(0, RATE_LIMIT_REQUESTS - self._requests)),
            "x-ratelimit-limit-tokens-minute": str(RATE_LIMIT_TOKENS),
            "x-ratelimit-remaining-tokens-minute": str(max(0, RATE_LIMIT_TOKENS - self._tokens)),
            "mistral-correlation-id": str(uuid.uuid4()),
        }

    def _reply(self, call: Call, gen: Generation, model: str, prefix: str = "") -> Reply:
        self._tokens += gen.prompt_tokens + gen.completion_tokens
        if call.body.get("stream") is True:
            return _stream(gen, model, prefix, call.emu.options.tokens_per_chunk)
        return _completion(gen, model, prefix)

    # --- endpoints ------------------------------------------------------------------
    async def chat(self, call: Call) -> Reply:
        body = call.body
        if not isinstance(body, dict):
            return _unprocessable([_detail("model_attributes_type", [], "Input should be a valid dictionary", body)])
        details = _check_fields(body, CHAT_FIELDS, ("model", "messages")) + _check_range(body, "temperature", 0, 1.5)
        details += _check_int(body, "max_tokens", 0) + _check_int(body, "n", 1) + _check_int(body, "min_tokens", 0)
        details += _check_int(body, "random_seed", 0)  # mistral-common: random_seed ge=0
        details += _check_enum(body, "reasoning_effort", REASONING_EFFORTS) + _check_messages(body.get("messages", []))
        if details:
            return _unprocessable(details)
        messages, model = body["messages"], body["model"]
        card = MODELS.get(model)
        if card is None or card.get("embed"):
            return _invalid_model(model)
        # The documented tool-id refusal first (providers.md: 400, code 3280, "Tool call id was turn1_0 ..."), even
        # where mistral-common's structure checks would find an unpaired id before it.
        bad_ids = _bad_tool_ids(messages)
        if bad_ids is not None:
            return bad_ids
        refused = _mistral_common_chat(body, card["tokenizer"])
        if refused is not None:
            return refused
        last = messages[-1] if messages else {}
        prefix_turn = last.get("role") == "assistant" and last.get("prefix") is True
        prompt = count_prompt(messages, body.get("tools"), self.count)
        max_tokens = body.get("max_tokens")
        if prompt.total + (max_tokens or 0) > card["ctx"]:
            return _too_long(prompt.total + (max_tokens or 0), card["ctx"])
        effort = body.get("reasoning_effort")
        thinking = effort not in (None, "none") or body.get("prompt_mode") == "reasoning"
        spec = chat_spec(body, seed=body.get("random_seed"), thinking=thinking, max_tokens=max_tokens)
        spec.min_tokens = int(body.get("min_tokens") or 0)  # SDK 3.7.0 ChatCompletionRequest.min_tokens
        gen = complete(spec, prompt, call.emu.options, call.emu.cache, model, script_of(call.emu))
        content = last.get("content")
        prefix = content if prefix_turn and isinstance(content, str) else ""
        return self._reply(call, gen, model, prefix)

    async def fim(self, call: Call) -> Reply:
        body = call.body
        if not isinstance(body, dict):
            return _unprocessable([_detail("model_attributes_type", [], "Input should be a valid dictionary", body)])
        details = _check_fields(body, FIM_FIELDS, ("model", "prompt")) + _check_range(body, "temperature", 0, 1.5)
        details += _check_int(body, "max_tokens", 0) + _check_int(body, "min_tokens", 0)
        details += _check_int(body, "random_seed", 0)
        if "prompt" in body and not isinstance(body["prompt"], str):
            details.append(_detail("string_type", ["prompt"], "Input should be a valid string", body["prompt"]))
        if details:
            return _unprocessable(details)
        details = _mistral_common_fim(body)
        if details:
            return _unprocessable(details)
        model = body["model"]
        if not MODELS.get(model, {}).get("caps", {}).get("completion_fim"):
            return _invalid_model(model)
        prompt_tokens = self.count(body["prompt"]) + self.count(body.get("suffix"))
        max_tokens = body.get("max_tokens")
        if prompt_tokens + (max_tokens or 0) > MODELS[model]["ctx"]:
            return _too_long(prompt_tokens + (max_tokens or 0), MODELS[model]["ctx"])
        material = {"prompt": body["prompt"], "suffix": body.get("suffix")}
        spec = ChatSpec(
            material=material,
            max_tokens=max_tokens,
            min_tokens=int(body.get("min_tokens") or 0),
            seed=body.get("random_seed"),
            stop=body.get("stop"),
        )
        options = call.emu.options
        choices = generate(options.seed, options.default_max_tokens, spec)
        return self._reply(call, Generation(choices, prompt_tokens, 0, [options.seed, material, spec.seed]), model)

    async def embeddings(self, call: Call) -> Reply:
        body = call.body
        if not isinstance(body, dict):
            return _unprocessable([_detail("model_attributes_type", [], "Input should be a valid dictionary", body)])
        details = _check_fields(body, EMBED_FIELDS, ("model", "input"))
        details += _check_enum(body, "output_dtype", ("float", "int8", "uint8", "binary", "ubinary"))
        details += _check_enum(body, "encoding_format", ("float", "base64"))
        inputs = _texts(body.get("input"))
        if "input" in body and inputs is None:
            details.append(_detail("string_type", ["input"], "Input should be a valid string", body["input"]))
        dimension = body.get("output_dimension") or EMBED_DIMENSION
        if not isinstance(dimension, int) or not 1 <= dimension <= EMBED_DIMENSION:
            details.append(
                _detail(
                    "less_than_equal",
                    ["output_dimension"],
                    f"Input should be less than or equal to {EMBED_DIMENSION}",
                    dimension,
                    {"le": EMBED_DIMENSION},
                )
            )
        if details or inputs is None:  # (no inputs only with a detail: "missing" or "string_type")
            return _unprocessable(details)
        if not MODELS.get(body["model"], {}).get("embed"):
            return _invalid_model(body["model"])
        counts = [self.count(text) for text in inputs]
        if counts and max(counts) > MODELS["mistral-embed"]["ctx"]:
            return _too_long(max(counts), MODELS["mistral-embed"]["ctx"])
        data = []
        for index, text in enumerate(inputs):
            rng = rng_for(call.emu.options.seed, "embed", text)
            raw = [rng.gauss(0, 1) for _ in range(dimension)]
            norm = math.sqrt(sum(v * v for v in raw)) or 1.0
            vector = _embedding([v / norm for v in raw], body.get("output_dtype") or "float")
            data.append({"object": "embedding", "embedding": vector, "index": index})
        total = sum(counts)
        return {
            "id": uuid.uuid4().hex,
            "object": "list",
            "data": data,
            "model": body["model"],
            "usage": {"prompt_tokens": total, "total_tokens": total, "completion_tokens": 0},
        }

    async def models(self, call: Call) -> Reply:
        cards = [
            {
                "id": model_id,
                "object": "model",
                "created": CREATED,
                "owned_by": "mistralai",
                "name": model_id,
                "description": card["description"],
                "capabilities": card["caps"],
                "max_context_length": card["ctx"],
                "aliases": card["aliases"],
                "deprecation": None,
                "deprecation_replacement_model": None,
                "default_model_temperature": None if card.get("embed") else 0.3,
                "type": "base",
            }
            for model_id, card in MODELS.items()
        ]
        return {"object": "list", "data": cards}
