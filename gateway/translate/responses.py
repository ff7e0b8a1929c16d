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

import base64
import binascii
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.catalog import FORBIDDEN_FIELDS, FORBIDDEN_PREFIXES
from gateway.errors import GatewayError, invalid_request
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
# Built-in tool types of tool_param.py (and their dated variants, matched by prefix). None runs behind this
# gateway: Mistral's and Moonshot's chat completions take function tools only (providers.md).
BUILT_IN_TOOLS = (
    "web_search",
    "web_search_preview",
    "file_search",
    "code_interpreter",
    "image_generation",
    "local_shell",
    "shell",
    "computer_use_preview",
    "computer",
    "mcp",
    "apply_patch",
    "tool_search",
    "programmatic_tool_calling",
)
# Function names as OpenAI's chat and Mistral take them (mistral-common's validator: ^[a-zA-Z0-9_-]{1,64}$).
FUNCTION_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
NAMESPACE_JOIN = "__"
ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}
# Item keys that describe the item and are not read by the model (ids, statuses, Codex's `phase`).
ITEM_HINTS = frozenset({"id", "status", "phase", "type"})
# The reasoning this door produced itself, carried in `encrypted_content` (see encode_reasoning).
REASONING_PREFIX = "gwr1."
EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")


def _bad(message: str, param: str, code: str = "invalid_value") -> GatewayError:
    return invalid_request(message, param=param, code=code)


def _type_error(param: str, expected: str) -> GatewayError:
    return _bad(f"Invalid type for '{param}': expected {expected}.", param, "invalid_type")


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


@dataclass(slots=True)
class ToolNames:
    """Chat function name <-> the Responses tool it stands for (a namespace's tools are flattened)."""

    namespaces: dict[str, tuple[str, str]] = field(default_factory=dict)  # flat name -> (namespace, name)
    flat: dict[tuple[str, str], str] = field(default_factory=dict)
    custom: set[str] = field(default_factory=set)  # chat names of `custom` (freeform) tools

    def add(self, namespace: str, name: str, where: str) -> str:
        joined = f"{namespace}{NAMESPACE_JOIN}{name}"
        if not FUNCTION_NAME.match(joined):
            raise _bad(
                f"The tool {name!r} of namespace {namespace!r} would be sent to the provider as {joined!r}, which "
                "is not a valid function name (letters, digits, '_' and '-', at most 64 characters). Use shorter "
                "names.",
                where,
            )
        self.namespaces[joined] = (namespace, name)
        self.flat[(namespace, name)] = joined
        return joined

    def to_chat(self, name: str, namespace: str | None) -> str:
        """A replayed call's name as it was sent to the provider."""
        if namespace:
            return self.flat.get((namespace, name)) or f"{namespace}{NAMESPACE_JOIN}{name}"
        return name

    def from_chat(self, name: str) -> tuple[str | None, str]:
        """A provider's call -> (namespace, name) as the client declared the tool."""
        found = self.namespaces.get(name)
        return found if found is not None else (None, name)


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
    tools, dropped = _tools(body.get("tools"), names)
    messages: list[Json] = []
    instructions = body.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise _type_error("instructions", "a string")
        if instructions:
            messages.append({"role": "system", "content": instructions})
    if given is not None and not isinstance(given, (str, list)):
        raise _type_error("input", "a string or an array of items")
    if not conversation:  # (a follow-up of a kept response may add nothing to its turns)
        raise invalid_request("You must provide 'input'.", param="input", code="missing_required_parameter")
    messages.extend(_input(conversation, names, len(history or ())))
    chat["messages"] = messages
    if tools:
        chat["tools"] = tools
    choice = _tool_choice(body.get("tool_choice"), names, dropped, chat)
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
    for key in body:
        if key in FORBIDDEN_FIELDS or key.startswith(FORBIDDEN_PREFIXES):
            raise _bad(f"Parameter '{key}' cannot be set by clients.", key, "forbidden_parameter")
    unknown = sorted(key for key in body if key not in KNOWN_FIELDS)
    if unknown:
        raise _bad(
            f"Unknown parameter(s) for /v1/responses: {', '.join(repr(k) for k in unknown)}.",
            unknown[0],
            "unknown_parameter",
        )
    previous = body.get("previous_response_id")
    if previous is not None and not isinstance(previous, str):
        raise _type_error("previous_response_id", "a string")
    for key, meaning in (
        ("conversation", "conversations are not kept here"),
        ("prompt", "stored prompt templates do not exist here"),
    ):
        if body.get(key) is not None:
            raise _bad(f"'{key}' is not supported: {meaning}.", key, "unsupported_parameter")
    if body.get("background") not in (None, False):
        raise _bad("'background' is not supported: responses are answered in the request.", "background")
    if body.get("top_logprobs") not in (None, 0):
        raise _bad("'top_logprobs' is not supported by this gateway's Responses door.", "top_logprobs")
    if body.get("truncation") not in (None, "auto", "disabled"):
        raise _bad("'truncation' must be 'auto' or 'disabled'.", "truncation")
    for key in ("client_metadata", "stream_options"):
        if body.get(key) is not None and not isinstance(body[key], dict):
            raise _type_error(key, "an object")
    if body.get("store") is not None and not isinstance(body["store"], bool):
        raise _type_error("store", "a boolean")


def _copy(body: Json, chat: Json) -> None:
    """The fields with a chat twin under the same meaning."""
    for source, target in (
        ("max_output_tokens", "max_tokens"),
        ("temperature", "temperature"),
        ("top_p", "top_p"),
        ("parallel_tool_calls", "parallel_tool_calls"),
        ("prompt_cache_key", "prompt_cache_key"),
        ("user", "user"),
        ("safety_identifier", "safety_identifier"),
        ("service_tier", "service_tier"),
        ("stream", "stream"),
    ):
        value = body.get(source)
        if value is not None:
            chat[target] = value
    if "parallel_tool_calls" in chat and not isinstance(chat["parallel_tool_calls"], bool):
        raise _type_error("parallel_tool_calls", "a boolean")
    for key in ("prompt_cache_key", "user", "safety_identifier", "service_tier"):
        if key in chat and not isinstance(chat[key], str):
            raise _type_error(key, "a string")
    metadata = body.get("metadata")
    if metadata is not None:
        # OpenAI's Metadata: at most 16 pairs of strings (keys up to 64 characters, values up to 512). Checked so
        # that only such strings reach a provider that reads `metadata` (Mistral).
        if not isinstance(metadata, dict) or len(metadata) > 16:
            raise _type_error("metadata", "an object of at most 16 string values")
        for key, value in metadata.items():
            if len(key) > 64 or not isinstance(value, str) or len(value) > 512:
                raise _bad("'metadata' takes string values (keys up to 64, values up to 512 characters).", "metadata")
        if metadata:
            chat["metadata"] = dict(metadata)


def _reasoning(reasoning: Any, chat: Json) -> None:
    if reasoning is None:
        return
    if not isinstance(reasoning, dict):
        raise _type_error("reasoning", "an object")
    for key in reasoning:
        if key not in ("effort", "summary", "generate_summary", "context", "mode"):
            raise _bad(f"Unknown parameter 'reasoning.{key}'.", f"reasoning.{key}", "unknown_parameter")
    effort = reasoning.get("effort")
    if effort is not None:
        if effort not in EFFORTS:
            raise _bad(f"'reasoning.effort' must be one of {', '.join(EFFORTS)}.", "reasoning.effort")
        chat["reasoning_effort"] = effort
    for key in ("summary", "generate_summary"):
        if reasoning.get(key) not in (None, "auto", "concise", "detailed"):
            raise _bad(f"'reasoning.{key}' must be 'auto', 'concise' or 'detailed'.", f"reasoning.{key}")
    if reasoning.get("mode") not in (None, "standard"):
        raise _bad("'reasoning.mode' other than 'standard' is not supported.", "reasoning.mode")


def _text(text: Any, chat: Json) -> None:
    if text is None:
        return
    if not isinstance(text, dict):
        raise _type_error("text", "an object")
    for key in text:
        if key not in ("format", "verbosity"):
            raise _bad(f"Unknown parameter 'text.{key}'.", f"text.{key}", "unknown_parameter")
    if text.get("verbosity") is not None:
        if text["verbosity"] not in ("low", "medium", "high"):
            raise _bad("'text.verbosity' must be 'low', 'medium' or 'high'.", "text.verbosity")
        chat["verbosity"] = text["verbosity"]
    form = text.get("format")
    if form is None:
        return
    if not isinstance(form, dict):
        raise _type_error("text.format", "an object")
    kind = form.get("type")
    if kind == "text":
        return
    if kind == "json_object":
        chat["response_format"] = {"type": "json_object"}
        return
    if kind == "json_schema":
        # Responses puts the schema's fields on `format` itself; chat nests them under `json_schema`.
        if not isinstance(form.get("name"), str) or not isinstance(form.get("schema"), dict):
            raise _bad("'text.format' of type json_schema needs 'name' and 'schema'.", "text.format")
        schema = {key: form[key] for key in ("name", "schema", "description", "strict") if form.get(key) is not None}
        chat["response_format"] = {"type": "json_schema", "json_schema": schema}
        return
    raise _bad("'text.format.type' must be 'text', 'json_object' or 'json_schema'.", "text.format.type")


def _include(include: Any) -> list[str]:
    if include is None:
        return []
    if not isinstance(include, list) or not all(isinstance(i, str) for i in include):
        raise _type_error("include", "an array of strings")
    return include


def _tools(tools: Any, names: ToolNames) -> tuple[list[Json], list[str]]:
    if tools is None:
        return [], []
    if not isinstance(tools, list):
        raise _type_error("tools", "an array")
    out: list[Json] = []
    dropped: list[str] = []
    for index, tool in enumerate(tools):
        where = f"tools[{index}]"
        if not isinstance(tool, dict) or not isinstance(tool.get("type"), str):
            raise _type_error(where, "an object with a 'type'")
        kind = tool["type"]
        if kind == "function":
            out.append(_function(tool, where, None, names))
        elif kind == "custom":
            out.append(_custom(tool, where, None, names))
        elif kind == "namespace":
            namespace = tool.get("name")
            if not isinstance(namespace, str) or not namespace:
                raise _type_error(f"{where}.name", "a non-empty string")
            inner = tool.get("tools")
            if not isinstance(inner, list):
                raise _type_error(f"{where}.tools", "an array")
            for position, member in enumerate(inner):
                spot = f"{where}.tools[{position}]"
                if not isinstance(member, dict):
                    raise _type_error(spot, "an object")
                if member.get("type") == "function":
                    out.append(_function(member, spot, namespace, names))
                elif member.get("type") == "custom":
                    out.append(_custom(member, spot, namespace, names))
                else:
                    raise _bad(f"Unknown tool type {member.get('type')!r} in {spot}.", f"{spot}.type")
        elif kind.startswith(BUILT_IN_TOOLS):
            dropped.append(kind)
        else:
            raise _bad(f"Unknown tool type {kind!r} in {where}.", f"{where}.type")
    seen: set[str] = set()
    for tool in out:
        name = tool["function"]["name"]
        if name in seen:
            raise _bad(f"Two tools are named {name!r} (after flattening namespaces).", "tools")
        seen.add(name)
    return out, dropped


# The one argument a custom tool's function takes.
CUSTOM_PARAMETERS: Json = {
    "type": "object",
    "properties": {"input": {"type": "string", "description": "The tool's whole input, as free text."}},
    "required": ["input"],
}


def _custom(tool: Json, where: str, namespace: str | None, names: ToolNames) -> Json:
    """A custom (freeform) tool as a function tool taking one string, `input`."""
    for key in tool:
        if key not in ("type", "name", "description", "format", "defer_loading"):
            raise _bad(f"Unknown parameter '{where}.{key}'.", f"{where}.{key}", "unknown_parameter")
    description = tool.get("description")
    if description is not None and not isinstance(description, str):
        raise _type_error(f"{where}.description", "a string")
    form = tool.get("format")
    text = description or ""
    if isinstance(form, dict) and form.get("type") == "grammar":
        definition, syntax = form.get("definition"), form.get("syntax")
        if not isinstance(definition, str) or not isinstance(syntax, str):
            raise _type_error(f"{where}.format", "a grammar with 'syntax' and 'definition' strings")
        text += f"\n\nThe input must follow this {syntax} grammar:\n{definition}"
    elif form is not None and not (isinstance(form, dict) and form.get("type") == "text"):
        raise _bad(f"'{where}.format' must be of type 'text' or 'grammar'.", f"{where}.format")
    function = _function(
        {
            "type": "function",
            "name": tool.get("name"),
            "description": text.strip() or None,
            "parameters": CUSTOM_PARAMETERS,
        },
        where,
        namespace,
        names,
    )
    names.custom.add(function["function"]["name"])
    return function


def _function(tool: Json, where: str, namespace: str | None, names: ToolNames) -> Json:
    name = tool.get("name")
    if not isinstance(name, str):
        raise _type_error(f"{where}.name", "a string")
    for key in tool:
        if key not in (
            "type",
            "name",
            "description",
            "parameters",
            "strict",
            "defer_loading",
            "allowed_callers",
            "output_schema",
        ):
            raise _bad(f"Unknown parameter '{where}.{key}'.", f"{where}.{key}", "unknown_parameter")
    if namespace is not None:
        flat = names.add(namespace, name, f"{where}.name")
    else:
        if not FUNCTION_NAME.match(name):
            raise _bad(
                f"Invalid function name {name!r}: letters, digits, '_' and '-', at most 64 characters.",
                f"{where}.name",
            )
        flat = name
    function: Json = {"name": flat}
    description = tool.get("description")
    if description is not None:
        if not isinstance(description, str):
            raise _type_error(f"{where}.description", "a string")
        function["description"] = description
    parameters = tool.get("parameters")
    if parameters is not None:
        if not isinstance(parameters, dict):
            raise _type_error(f"{where}.parameters", "an object (a JSON schema)")
        function["parameters"] = parameters
    strict = tool.get("strict")
    if strict is not None:
        if not isinstance(strict, bool):
            raise _type_error(f"{where}.strict", "a boolean")
        function["strict"] = strict
    return {"type": "function", "function": function}


def _tool_choice(choice: Any, names: ToolNames, dropped: list[str], chat: Json) -> Any:
    if choice is None:
        return None
    if choice in ("none", "auto", "required"):
        return choice
    if not isinstance(choice, dict) or not isinstance(choice.get("type"), str):
        raise _bad("'tool_choice' must be 'none', 'auto', 'required' or an object with a 'type'.", "tool_choice")
    kind = choice["type"]
    if kind in ("function", "custom"):
        name, namespace = choice.get("name"), choice.get("namespace")
        if not isinstance(name, str) or not (namespace is None or isinstance(namespace, str)):
            raise _type_error("tool_choice.name", "a string")
        flat = names.to_chat(name, namespace)
        if not any(tool["function"]["name"] == flat for tool in chat.get("tools", ())):
            raise _bad(f"'tool_choice' names the function {name!r}, which is not among 'tools'.", "tool_choice")
        return {"type": "function", "function": {"name": flat}}
    if kind == "allowed_tools":
        # Chat's providers have no allowed-tools list: the same effect by sending only the allowed function tools.
        mode = choice.get("mode")
        allowed = choice.get("tools")
        if mode not in ("auto", "required") or not isinstance(allowed, list):
            raise _bad("'tool_choice' of type allowed_tools needs 'mode' (auto|required) and 'tools'.", "tool_choice")
        keep: set[str] = set()
        for entry in allowed:
            if not isinstance(entry, dict) or entry.get("type") != "function" or not isinstance(entry.get("name"), str):
                raise _bad("'tool_choice.tools' may name function tools only here.", "tool_choice.tools")
            keep.add(names.to_chat(entry["name"], entry.get("namespace")))
        chat["tools"] = [tool for tool in chat.get("tools", ()) if tool["function"]["name"] in keep]
        if not chat["tools"]:
            raise _bad("'tool_choice.tools' allows none of the function tools sent.", "tool_choice.tools")
        return mode
    raise _bad(
        f"'tool_choice' forces the tool type {kind!r}, which no provider behind this gateway runs"
        + (f" (left out of the call: {', '.join(dropped)})." if dropped else "."),
        "tool_choice",
        "unsupported_tool_choice",
    )


# --- input items -> messages ------------------------------------------------------------------------------------


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


def _input(value: list[Any], names: ToolNames, earlier: int) -> list[Json]:
    """`earlier`: how many of the items are the kept turns of `previous_response_id` (named so in errors)."""
    conversation = _Conversation(names)
    for index, item in enumerate(value):
        where = f"input[{index - earlier}]" if index >= earlier else f"previous_response_id's item {index}"
        if not isinstance(item, dict):
            raise _type_error(where, "an object")
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
            raise _bad(
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
            raise _bad(f"Unknown parameter '{where}.{key}'.", f"{where}.{key}", "unknown_parameter")


def _message_item(item: Json, where: str, conversation: _Conversation) -> None:
    _only(item, where, ("role", "content"))
    given = item.get("role")
    role = ROLES.get(given) if isinstance(given, str) else None
    if role is None:
        raise _bad(f"Invalid value for '{where}.role': {item.get('role')!r}.", f"{where}.role")
    content = item.get("content")
    if isinstance(content, str):
        conversation.message(role, content)
        return
    if not isinstance(content, list):
        raise _type_error(f"{where}.content", "a string or an array of parts")
    parts = [_part(part, f"{where}.content[{i}]", role) for i, part in enumerate(content)]
    if all(part["type"] == "text" for part in parts):
        texts = [part["text"] for part in parts]
        # One text part is sent as a string (every provider's simplest form); several stay separate parts,
        # except for roles whose chat content must be a string here (system and assistant turns are joined).
        if len(texts) == 1 or role != "user":
            conversation.message(role, "".join(texts) if role == "assistant" else "\n\n".join(texts))
            return
    elif role != "user":
        raise _bad(f"{where}: images can only be sent in user messages.", f"{where}.content")
    conversation.message(role, parts)


def _part(part: Any, where: str, role: str) -> Json:
    if not isinstance(part, dict) or not isinstance(part.get("type"), str):
        raise _type_error(where, "an object with a 'type'")
    kind = part["type"]
    if kind in ("input_text", "output_text", "text"):
        text = part.get("text")
        if not isinstance(text, str):
            raise _type_error(f"{where}.text", "a string")
        return {"type": "text", "text": text}
    if kind == "refusal" and role == "assistant":
        refusal = part.get("refusal")
        if not isinstance(refusal, str):
            raise _type_error(f"{where}.refusal", "a string")
        return {"type": "text", "text": refusal}
    if kind == "input_image":
        return _image(part, where)
    raise _bad(
        f"{where} is a content part of type {kind!r}, which the providers behind this gateway cannot take "
        "(input_text, input_image by image_url and output_text can be sent).",
        f"{where}.type",
        "unsupported_content",
    )


def _image(part: Json, where: str) -> Json:
    if part.get("file_id") is not None:
        raise _bad(
            f"{where}: images by 'file_id' cannot be sent (files are OpenAI's storage; no provider here reads "
            "them): send the image as 'image_url' (a URL or a data: URL).",
            f"{where}.file_id",
            "unsupported_content",
        )
    url = part.get("image_url")
    if not isinstance(url, str) or not url:
        raise _type_error(f"{where}.image_url", "a URL string")
    image: Json = {"url": url}
    if part.get("detail") in ("low", "high", "auto"):
        image["detail"] = part["detail"]
    return {"type": "image_url", "image_url": image}


def _call_item(item: Json, where: str, conversation: _Conversation) -> None:
    _only(item, where, ("call_id", "name", "arguments", "namespace", "caller"))
    call_id, name, arguments = item.get("call_id"), item.get("name"), item.get("arguments")
    namespace = item.get("namespace")
    if not isinstance(call_id, str) or not call_id:
        raise _type_error(f"{where}.call_id", "a non-empty string")
    if not isinstance(name, str) or not name:
        raise _type_error(f"{where}.name", "a non-empty string")
    if not isinstance(arguments, str):
        raise _type_error(f"{where}.arguments", "a string (JSON)")
    if namespace is not None and not isinstance(namespace, str):
        raise _type_error(f"{where}.namespace", "a string")
    conversation.call(call_id, conversation.names.to_chat(name, namespace), arguments)


def _custom_call_item(item: Json, where: str, conversation: _Conversation) -> None:
    """A custom tool's call, replayed as the function call it was sent as (its input as the `input` argument)."""
    _only(item, where, ("call_id", "name", "input", "namespace", "caller"))
    call_id, name, text, namespace = item.get("call_id"), item.get("name"), item.get("input"), item.get("namespace")
    if not isinstance(call_id, str) or not call_id:
        raise _type_error(f"{where}.call_id", "a non-empty string")
    if not isinstance(name, str) or not name:
        raise _type_error(f"{where}.name", "a non-empty string")
    if not isinstance(text, str):
        raise _type_error(f"{where}.input", "a string")
    if namespace is not None and not isinstance(namespace, str):
        raise _type_error(f"{where}.namespace", "a string")
    arguments = orjson.dumps({"input": text}).decode()
    conversation.call(call_id, conversation.names.to_chat(name, namespace), arguments)


def _output_item(item: Json, where: str, conversation: _Conversation) -> None:
    _only(item, where, ("call_id", "output", "name", "namespace", "caller"))
    call_id, output = item.get("call_id"), item.get("output")
    if not isinstance(call_id, str) or not call_id:
        raise _type_error(f"{where}.call_id", "a non-empty string")
    if isinstance(output, str):
        conversation.result(call_id, output, [])
        return
    if not isinstance(output, list):
        raise _type_error(f"{where}.output", "a string or an array of parts")
    texts: list[str] = []
    images: list[Json] = []
    for position, part in enumerate(output):
        spot = f"{where}.output[{position}]"
        if not isinstance(part, dict):
            raise _type_error(spot, "an object")
        if part.get("type") == "input_text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif part.get("type") == "input_image":
            images.append(_image(part, spot))
        else:
            raise _bad(
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
            raise _type_error(f"{where}.{key}", "an array")
        texts = [p.get("text") for p in parts if isinstance(p, dict) and p.get("type") == kind]
        if not all(isinstance(t, str) for t in texts):
            raise _type_error(f"{where}.{key}", f"an array of {kind} parts")
        if texts:
            conversation.think("\n\n".join(str(t) for t in texts))
            return


def dropped_header(dropped: list[str]) -> Mapping[str, str]:
    """The header naming the built-in tools left out of the provider call (none: no header)."""
    # Only characters a header takes (tool names are the client's own strings).
    safe = [re.sub(r"[^A-Za-z0-9_.:-]", "?", label)[:100] for label in dropped]
    return {"x-gateway-dropped-tools": ", ".join(safe)} if safe else {}
