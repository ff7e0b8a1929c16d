"""OpenAI Responses requests (`POST /v1/responses`) -> the canonical OpenAI chat request.

Sources: OpenAI's Responses API reference (the `openai` Python SDK's types, `openai/types/responses/`, which are
generated from it: `response_create_params.py`, `response_input_item_param.py`, `tool_param.py`,
`namespace_tool_param.py`) and what Codex CLI sends (../shared/reference/providers.md, "Codex CLI"; Codex's own
client, openai/codex `codex-rs/core/src/tools/router.rs`: a `function_call` item names its tool by `name` plus an
optional `namespace`, and `codex-rs/tools/src/responses_api.rs`: a `namespace` tool groups function tools).

The rules:
- Lossless where chat can say the same thing; a 400 naming the field or item where it cannot (an input item,
  a content part, a top-level field), never a silent drop of anything the model would have read.
- Built-in tools (`web_search`, `file_search`, ...) run on OpenAI's side; no provider behind this gateway runs
  them through chat completions, so they are left out of the provider call and named in `dropped_tools` (the door
  says so in a header). Codex sends `web_search` on every request: refusing it would make Codex unusable. A
  `tool_choice` that forces a dropped tool is refused.
- `namespace` tools are flattened into function tools named `<namespace>__<tool>` and restored on the way back
  (`ToolNames`).
- `custom` (freeform) tools take one string, not JSON: each is sent as a function tool with a single string
  argument `input` (its grammar, if any, told in the description: chat providers cannot constrain output by a
  grammar), and its calls come back as `custom_tool_call` items with that string.
- Nothing from an item or a field is copied into the chat body as it is: every message and tool is rebuilt from
  the keys named here, so nothing can be smuggled through to a provider (the forbidden control fields are refused
  by name at the top level as on the OpenAI doors).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.errors import invalid_request
from gateway.pipeline.validation import refuse_forbidden, type_error
from gateway.translate.responses_items import input_messages
from gateway.translate.responses_tools import ToolNames, bad_value, translate_tool_choice, translate_tools
from gateway.types import Json

# Top-level fields of ResponseCreateParams this door reads (translated, or accepted as hints). Anything else is
# refused by name. `client_metadata` is Codex's own (it sends it on every request; OpenAI ignores it).
TRANSLATED = frozenset(
    {
        "model",
        "input",
        "instructions",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "max_output_tokens",
        "temperature",
        "top_p",
        "reasoning",
        "text",
        "prompt_cache_key",
        "metadata",
        "user",
        "safety_identifier",
        "service_tier",
        "stream",
    }
)
ACCEPTED = frozenset(
    {
        "include",  # `reasoning.encrypted_content` is honoured (see `encode_reasoning`); the others ask for nothing
        "store",  # nothing is stored at a provider; see previous_response_id below
        "client_metadata",
        "truncation",
        "stream_options",  # {include_obfuscation}: this door adds no obfuscation padding
        "max_tool_calls",  # limits built-in tool calls, and no built-in tool runs here
        "prompt_cache_retention",
        "background",  # only `false`
        "previous_response_id",  # the door looks it up (gateway/http/response_store.py) and passes the history
        "top_logprobs",  # only null or 0: log probabilities are not translated
        "conversation",  # only null: conversations are not kept
        "prompt",  # only null: stored prompt templates do not exist here
    }
)
KNOWN_FIELDS = TRANSLATED | ACCEPTED
EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")


@dataclass(slots=True)
class Translated:
    """A Responses request as the pipeline's chat request, with what the answer needs to be rendered back."""

    chat: Json
    names: ToolNames
    dropped_tools: list[str]
    echo: Json  # request fields the response object repeats (tools, tool_choice, instructions, ...)
    encrypted_reasoning: bool  # `include` asks for `reasoning.encrypted_content`
    conversation: list[Json]  # the earlier turns and this request's input, as Responses items (to be kept)


def translate_request(body: Json, history: list[Json] | None = None) -> Translated:
    """A Responses request body -> the canonical chat body (validated afterwards by `check_chat`). `history`: the
    items of the response named by `previous_response_id`, which the caller looked up (they come first)."""
    _refuse_unknown(body)
    given = body.get("input")
    items: list[Any] = [{"role": "user", "content": given}] if isinstance(given, str) else []
    if isinstance(given, list):
        items = given
    conversation = [*(history or []), *items]
    chat: Json = {"model": body.get("model")}
    names = ToolNames()
    tools, dropped = translate_tools(body.get("tools"), names)
    messages: list[Json] = []
    instructions = body.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise type_error("instructions", "a string")
        if instructions:
            messages.append({"role": "system", "content": instructions})
    if given is not None and not isinstance(given, (str, list)):
        raise type_error("input", "a string or an array of items")
    if not conversation:  # (a follow-up of a kept response may add nothing to its turns)
        raise invalid_request("You must provide 'input'.", param="input", code="missing_required_parameter")
    messages.extend(input_messages(conversation, names, len(history or ())))
    chat["messages"] = messages
    if tools:
        chat["tools"] = tools
    choice = translate_tool_choice(body.get("tool_choice"), names, dropped, chat)
    if choice is not None:
        chat["tool_choice"] = choice
    _copy(body, chat)
    _reasoning(body.get("reasoning"), chat)
    _text(body.get("text"), chat)
    include = _include(body.get("include"))
    echo = {
        key: body.get(key)
        for key in (
            "instructions",
            "metadata",
            "max_output_tokens",
            "temperature",
            "top_p",
            "user",
            "prompt_cache_key",
            "safety_identifier",
            "service_tier",
        )
    }
    echo["tools"] = body.get("tools") or []
    echo["tool_choice"] = body.get("tool_choice") or "auto"
    echo["parallel_tool_calls"] = body.get("parallel_tool_calls") is not False
    echo["reasoning"] = body.get("reasoning") if isinstance(body.get("reasoning"), dict) else None
    echo["text"] = body.get("text") if isinstance(body.get("text"), dict) else {"format": {"type": "text"}}
    echo["truncation"] = body.get("truncation") or "disabled"
    echo["previous_response_id"] = body.get("previous_response_id")
    return Translated(chat, names, dropped, echo, "reasoning.encrypted_content" in include, conversation)


def _refuse_unknown(body: Json) -> None:
    refuse_forbidden(body)
    unknown = sorted(key for key in body if key not in KNOWN_FIELDS)
    if unknown:
        raise bad_value(
            f"Unknown parameter(s) for /v1/responses: {', '.join(repr(k) for k in unknown)}.",
            unknown[0],
            "unknown_parameter",
        )
    previous = body.get("previous_response_id")
    if previous is not None and not isinstance(previous, str):
        raise type_error("previous_response_id", "a string")
    for key, meaning in (
        ("conversation", "conversations are not kept here"),
        ("prompt", "stored prompt templates do not exist here"),
    ):
        if body.get(key) is not None:
            raise bad_value(f"'{key}' is not supported: {meaning}.", key, "unsupported_parameter")
    if body.get("background") not in (None, False):
        raise bad_value("'background' is not supported: responses are answered in the request.", "background")
    if body.get("top_logprobs") not in (None, 0):
        raise bad_value("'top_logprobs' is not supported by this gateway's Responses door.", "top_logprobs")
    if body.get("truncation") not in (None, "auto", "disabled"):
        raise bad_value("'truncation' must be 'auto' or 'disabled'.", "truncation")
    for key in ("client_metadata", "stream_options"):
        if body.get(key) is not None and not isinstance(body[key], dict):
            raise type_error(key, "an object")
    if body.get("store") is not None and not isinstance(body["store"], bool):
        raise type_error("store", "a boolean")


def _copy(body: Json, chat: Json) -> None:
    """The fields with a chat twin under the same meaning."""
    for source, target in (
        ("max_output_tokens", "max_tokens"),
        ("temperature", "temperature"),
        ("top_p", "top_p"),
        ("parallel_tool_calls", "parallel_tool_calls"),
        ("prompt_cache_key", "prompt_cache_key"),
        ("user", "user"),
        ("service_tier", "service_tier"),
        ("stream", "stream"),
    ):
        value = body.get(source)
        if value is not None:
            chat[target] = value
    if "parallel_tool_calls" in chat and not isinstance(chat["parallel_tool_calls"], bool):
        raise type_error("parallel_tool_calls", "a boolean")
    for key in ("prompt_cache_key", "user", "service_tier"):
        if key in chat and not isinstance(chat[key], str):
            raise type_error(key, "a string")
    # `safety_identifier` is OpenAI's successor of `user` for the same purpose (telling end users apart for abuse
    # detection): sent as chat's `user`, the hint every kind takes or drops (Mistral refuses `safety_identifier`).
    safety = body.get("safety_identifier")
    if safety is not None:
        if not isinstance(safety, str):
            raise type_error("safety_identifier", "a string")
        chat.setdefault("user", safety)
    metadata = body.get("metadata")
    if metadata is not None:
        # OpenAI's Metadata: at most 16 pairs of strings (keys up to 64 characters, values up to 512). Checked so
        # that only such strings reach a provider that reads `metadata` (Mistral).
        if not isinstance(metadata, dict) or len(metadata) > 16:
            raise type_error("metadata", "an object of at most 16 string values")
        for key, value in metadata.items():
            if len(key) > 64 or not isinstance(value, str) or len(value) > 512:
                raise bad_value(
                    "'metadata' takes string values (keys up to 64, values up to 512 characters).", "metadata"
                )
        if metadata:
            chat["metadata"] = dict(metadata)


def _reasoning(reasoning: Any, chat: Json) -> None:
    if reasoning is None:
        return
    if not isinstance(reasoning, dict):
        raise type_error("reasoning", "an object")
    for key in reasoning:
        if key not in ("effort", "summary", "generate_summary", "context", "mode"):
            raise bad_value(f"Unknown parameter 'reasoning.{key}'.", f"reasoning.{key}", "unknown_parameter")
    effort = reasoning.get("effort")
    if effort is not None:
        if effort not in EFFORTS:
            raise bad_value(f"'reasoning.effort' must be one of {', '.join(EFFORTS)}.", "reasoning.effort")
        chat["reasoning_effort"] = effort
    for key in ("summary", "generate_summary"):
        if reasoning.get(key) not in (None, "auto", "concise", "detailed"):
            raise bad_value(f"'reasoning.{key}' must be 'auto', 'concise' or 'detailed'.", f"reasoning.{key}")
    if reasoning.get("mode") not in (None, "standard"):
        raise bad_value("'reasoning.mode' other than 'standard' is not supported.", "reasoning.mode")


def _text(text: Any, chat: Json) -> None:
    if text is None:
        return
    if not isinstance(text, dict):
        raise type_error("text", "an object")
    for key in text:
        if key not in ("format", "verbosity"):
            raise bad_value(f"Unknown parameter 'text.{key}'.", f"text.{key}", "unknown_parameter")
    if text.get("verbosity") is not None:
        if text["verbosity"] not in ("low", "medium", "high"):
            raise bad_value("'text.verbosity' must be 'low', 'medium' or 'high'.", "text.verbosity")
        chat["verbosity"] = text["verbosity"]
    form = text.get("format")
    if form is None:
        return
    if not isinstance(form, dict):
        raise type_error("text.format", "an object")
    kind = form.get("type")
    if kind == "text":
        return
    if kind == "json_object":
        chat["response_format"] = {"type": "json_object"}
        return
    if kind == "json_schema":
        # Responses puts the schema's fields on `format` itself; chat nests them under `json_schema`.
        if not isinstance(form.get("name"), str) or not isinstance(form.get("schema"), dict):
            raise bad_value("'text.format' of type json_schema needs 'name' and 'schema'.", "text.format")
        schema = {key: form[key] for key in ("name", "schema", "description", "strict") if form.get(key) is not None}
        chat["response_format"] = {"type": "json_schema", "json_schema": schema}
        return
    raise bad_value("'text.format.type' must be 'text', 'json_object' or 'json_schema'.", "text.format.type")


def _include(include: Any) -> list[str]:
    if include is None:
        return []
    if not isinstance(include, list) or not all(isinstance(i, str) for i in include):
        raise type_error("include", "an array of strings")
    return include
