"""Anthropic Messages requests (`POST /v1/messages`, `/v1/messages/count_tokens`) -> the canonical OpenAI chat body.

The request side of the Messages door: `translate_request` checks an Anthropic body and builds the OpenAI chat
request the pipeline serves (validated again by `check_chat`; each adapter then turns it into its provider's body).
The body is rebuilt from the fields and blocks below, never copied, so nothing a client adds (an upstream URL, a key,
litellm's controls) can reach a provider through it; unknown top-level fields are refused by name.

Sources: Anthropic's Messages API as the official `anthropic` Python SDK 2.17.0 models it (types/message_create_params
.py and types/beta/message_create_params.py: the request fields; the *_block_param.py files: the content blocks;
tool_union_param.py: the tool kinds), and Claude Code 2.1.197's captured request (../shared/reference/providers.md,
Claude Code section). Where a thing has no equivalent in OpenAI's chat format or at any of our providers, the comment
next to it says what happens to it (accepted and dropped, or refused with a 400).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeGuard

import orjson

from gateway.errors import GatewayError, invalid_request
from gateway.pipeline.validation import refuse_forbidden
from gateway.types import Json

# Translated into the canonical body.
TRANSLATED_FIELDS = frozenset(
    {
        "model",
        "max_tokens",
        "messages",
        "system",
        "stream",
        "stop_sequences",
        "temperature",
        "top_p",
        "top_k",
        "metadata",
        "tools",
        "tool_choice",
        "thinking",
        "output_config",
    }
)
# Accepted and dropped: none of our providers has an equivalent, and leaving them out changes nothing the client can
# rely on (each is Anthropic's own service feature, not part of the model's answer):
# - cache_control (top level): Anthropic's prompt-cache marker; Mistral and Kimi cache prefixes by themselves;
# - container: the sandbox of Anthropic's code-execution tool, which is not run here (its tool is left out);
# - context_management: Anthropic clearing old tool results / thinking server-side; the client's history is sent
#   as it is (Claude Code compacts its history itself when it nears the window);
# - diagnostics: Anthropic's prompt-cache miss explanations;
# - fallback_credit_token: a billing credit for Anthropic's refusal fallbacks;
# - service_tier: Anthropic's priority capacity ("auto" / "standard_only");
# - speed: Anthropic's fast-output mode.
DROPPED_FIELDS = frozenset(
    {
        "cache_control",
        "container",
        "context_management",
        "diagnostics",
        "fallback_credit_token",
        "service_tier",
        "speed",
    }
)
# Accepted only at the value that asks for nothing, refused otherwise (see _refused_unless_neutral):
# billing_policy (bill someone else: the gateway bills the key's team), compaction (the answer would have to be a
# compaction block), inference_geo (Anthropic's regions; residency here is the x-gateway-residency header),
# mcp_servers (MCP servers Anthropic would call: the gateway calls no URL a client names), thread (server-held
# conversation state: the gateway keeps none; send the whole conversation).
NEUTRAL_ONLY_FIELDS = frozenset({"billing_policy", "compaction", "inference_geo", "mcp_servers", "thread"})
KNOWN_FIELDS = TRANSLATED_FIELDS | DROPPED_FIELDS | NEUTRAL_ONLY_FIELDS

# Custom tools (`type` absent or "custom"); every other tool type is Anthropic-defined (web_search_*, web_fetch_*,
# code_execution_*, bash_*, text_editor_*, computer_*, memory_*, tool_search_tool_*, *_toolset_*): run by Anthropic's
# servers, or described to Claude by a schema only Claude knows. Our providers can run neither, so they are left out
# of the provider call and named in this response header; a tool_choice that forces one is refused.
CUSTOM_TOOL_TYPES = (None, "custom")
DROPPED_TOOLS_HEADER = "x-gateway-dropped-tools"

# Anthropic's thinking budget -> OpenAI's reasoning_effort, which each adapter maps to its provider (Mistral takes it
# as it is; Kimi turns thinking on for low/high, off for none, its default for medium: providers/moonshot.py). The
# bounds follow Anthropic's own guidance (the minimum budget is 1,024; "start at the minimum and increase", 16k+ for
# complex tasks, >32k rarely used): up to 4k is light reasoning, up to 16k moderate, beyond that heavy.
BUDGET_EFFORT = ((4096, "low"), (16384, "medium"))
BUDGET_EFFORT_ABOVE = "high"
# output_config.effort -> reasoning_effort. Anthropic's "max" has no OpenAI name; "xhigh" is OpenAI's highest (Mistral
# takes it; Kimi reads it as thinking on).
EFFORTS = {"low": "low", "medium": "medium", "high": "high", "xhigh": "xhigh", "max": "xhigh"}
THINKING_DISPLAYS = (None, "summarized", "omitted", "updates")

# Claude Code puts a billing line for Anthropic's servers first in `system` ("x-anthropic-billing-header:
# cc_version=2.1.197.fa9; cc_entrypoint=sdk-cli;": tests/clients/fixtures/claude_code_2.1.197_request.json). It is
# addressed to Anthropic's billing, which strips it; forwarded, it would be billed as prompt tokens and, as it changes
# with the client's version, restart the providers' prefix caching of everything after it. Left out.
BILLING_HEADER_PREFIX = "x-anthropic-billing-header:"

IMAGE_MEDIA_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
TOOL_ERROR_PREFIX = "Error: "  # how a tool_result's `is_error: true` reaches a model that has no such flag


@dataclass(slots=True)
class Translated:
    """An Anthropic request in the canonical shape, and what the answer's renderer must know about it."""

    body: Json  # the OpenAI chat request
    model: str  # the model the client asked for (the answer names it)
    dropped_tools: list[str] = field(default_factory=list)  # Anthropic-defined tools left out, by type
    omit_thinking: bool = False  # thinking.display "omitted": thinking blocks carry a signature and no text

    @property
    def headers(self) -> dict[str, str]:
        return {DROPPED_TOOLS_HEADER: ", ".join(self.dropped_tools)} if self.dropped_tools else {}


def _error(param: str, message: str, code: str = "invalid_value") -> GatewayError:
    return invalid_request(message, param=param, code=code)


def _type_error(param: str, expected: str) -> GatewayError:
    return _error(param, f"{param}: expected {expected}.", "invalid_type")


def translate_request(body: Json, *, counting: bool = False) -> Translated:
    """Check an Anthropic Messages body and build the canonical OpenAI chat request. `counting`: the body of
    `/v1/messages/count_tokens`, where `max_tokens` is not required. Raises a 400 GatewayError naming the field."""
    _refuse_unknown(body)
    model = body.get("model")
    if model is None:
        raise _error("model", "model: field required.", "missing_required_parameter")
    if not isinstance(model, str) or not model.strip():
        raise _type_error("model", "a non-empty string")
    out: Json = {"model": model}
    max_tokens = body.get("max_tokens")
    if max_tokens is None and not counting:
        raise _error(
            "max_tokens", "max_tokens: field required (Anthropic's API requires it).", "missing_required_parameter"
        )
    if max_tokens is not None:
        if not _is_int(max_tokens):
            raise _type_error("max_tokens", "an integer")
        if max_tokens < 1:
            # Anthropic's 0 pre-warms its prompt cache without an answer; our providers have no such call.
            raise _error("max_tokens", "max_tokens: must be at least 1 (cache pre-warming with 0 is not supported).")
        out["max_tokens"] = max_tokens
    messages = translate_messages(body.get("messages"))
    system = _system(body.get("system"))
    if system:
        messages.insert(0, {"role": "system", "content": system})
    out["messages"] = messages
    stream = body.get("stream")
    if stream is not None:
        if not isinstance(stream, bool):
            raise _type_error("stream", "a boolean")
        out["stream"] = stream
    _sampling(body, out)
    _metadata(body.get("metadata"), out)
    translated = Translated(out, model)
    _tools(body.get("tools"), body.get("tool_choice"), out, translated)
    _reasoning(body.get("thinking"), body.get("output_config"), out, translated)
    return translated


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _refuse_unknown(body: Json) -> None:
    # The OpenAI doors' hostility rules: upstream URLs, keys, headers and litellm's controls are never taken from a
    # client. Anthropic's own `fallbacks` (substitute models on a refusal) shares a name with litellm's and is refused
    # with them: fallbacks here are the team's policy.
    refuse_forbidden(body)
    unknown = sorted(key for key in body if key not in KNOWN_FIELDS)
    if unknown:
        raise _error(
            unknown[0],
            f"Unknown field{'s' if len(unknown) > 1 else ''} for the Messages API: {', '.join(unknown)}.",
            "unknown_parameter",
        )
    for key in NEUTRAL_ONLY_FIELDS:
        _refused_unless_neutral(key, body.get(key))


def _refused_unless_neutral(key: str, value: Any) -> None:
    if value is None:
        return
    if key == "mcp_servers" and value == []:
        return
    if key == "inference_geo" and value == "global":
        return
    if key == "billing_policy" and isinstance(value, dict) and value.get("bill_to") in (None, "self"):
        return
    reasons = {
        "billing_policy": "the gateway bills the team of the key that calls it",
        "compaction": "compaction requests are not supported (no provider returns a compaction block)",
        "inference_geo": "residency is chosen by the team's policy and the 'x-gateway-residency' header",
        "mcp_servers": "the gateway does not call MCP servers for a model (run them in the client)",
        "thread": "the gateway keeps no conversation state: send the whole conversation in 'messages'",
    }
    raise _error(key, f"{key}: not supported: {reasons[key]}.", "unsupported_parameter")


# --- system and messages -----------------------------------------------------------------------------------------


def _system(system: Any) -> str:
    if system is None:
        return ""
    if isinstance(system, str):
        return system
    if not isinstance(system, list):
        raise _type_error("system", "a string or an array of text blocks")
    texts = []
    for index, block in enumerate(system):
        where = f"system.{index}"
        if not isinstance(block, dict) or block.get("type") != "text":
            raise _type_error(where, "a text block")
        text = block.get("text")
        if not isinstance(text, str):
            raise _type_error(f"{where}.text", "a string")
        if text.startswith(BILLING_HEADER_PREFIX):
            continue
        texts.append(text)
    return "\n\n".join(t for t in texts if t)


Block = tuple[str, Json]  # (where, block): where names it in errors, as Anthropic does ("messages.2.content.0")


def translate_messages(messages: Any) -> list[Json]:
    """Anthropic's turns -> OpenAI messages. Consecutive turns of one role are merged first, as Anthropic's API does
    ("Consecutive user or assistant turns in your request will be combined into a single turn").

    A `system` turn among the messages (Claude Code 2.1.197 sends one after the first user turn, under its
    `mid-conversation-system-2026-04-07` beta: tests/clients/fixtures/claude_code_2.1.197_request.json) is a system
    message where it stands; Mistral's adapter sends one that follows an assistant or tool turn as a user message."""
    if messages is None:
        raise _error("messages", "messages: field required.", "missing_required_parameter")
    if not isinstance(messages, list):
        raise _type_error("messages", "an array")
    if not messages:
        raise _error("messages", "messages: at least one message is required.", "empty_array")
    turns: list[tuple[str, list[Block]]] = []
    for index, message in enumerate(messages):
        where = f"messages.{index}"
        if not isinstance(message, dict):
            raise _type_error(where, "an object")
        role = message.get("role")
        if role not in ("user", "assistant", "system"):
            raise _error(
                f"{where}.role", f"{where}.role: must be 'user', 'assistant' or 'system' (got {_shown(role)})."
            )
        blocks = _blocks(message.get("content"), f"{where}.content")
        if not blocks and role != "assistant":
            raise _error(f"{where}.content", f"{where}.content: a {role} turn must not be empty.")
        if turns and turns[-1][0] == role:
            turns[-1][1].extend(blocks)
        else:
            turns.append((role, blocks))
    out: list[Json] = []
    for role, blocks in turns:
        if role == "user":
            out.extend(_user_turn(blocks))
        elif role == "system":
            out.append({"role": "system", "content": _system_turn(blocks)})
        else:
            turn = _assistant_turn(blocks)
            if turn is not None:
                out.append(turn)
    last = out[-1] if out else None
    if last is not None and last["role"] == "assistant" and not last.get("tool_calls"):
        if not last["content"]:
            out.pop()  # nothing to continue (a last turn of thinking only): the answer starts afresh
        else:
            # A last assistant turn is Anthropic's prefill: the answer continues it. That is Mistral's `prefix:
            # true` (Kimi's `partial: true`, which its adapter makes of it; fields.KNOWN_MESSAGE_KEYS for the others).
            last["prefix"] = True
    if not out:
        raise _error("messages", "messages: nothing to answer (only empty assistant turns).")
    return out


def _system_turn(blocks: list[Block]) -> str:
    texts = []
    for where, block in blocks:
        if block["type"] != "text":
            raise _error(f"{where}.type", f"{where}: a system turn holds text blocks only.")
        texts.append(_text(block, where))
    return "\n\n".join(texts)


def _shown(value: Any) -> str:
    return repr(value) if isinstance(value, str | int | float | bool) or value is None else type(value).__name__


def _blocks(content: Any, where: str) -> list[Block]:
    if isinstance(content, str):
        return [(where, {"type": "text", "text": content})]
    if not isinstance(content, list):
        raise _type_error(where, "a string or an array of content blocks")
    blocks = []
    for index, block in enumerate(content):
        at = f"{where}.{index}"
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            raise _type_error(at, "a content block (an object with a 'type')")
        blocks.append((at, block))
    return blocks


def _text(block: Json, where: str, key: str = "text") -> str:
    text = block.get(key)
    if not isinstance(text, str):
        raise _type_error(f"{where}.{key}", "a string")
    return text


def _user_turn(blocks: list[Block]) -> list[Json]:
    """A user turn: its tool results as tool messages (first, in order: OpenAI wants them right after the assistant
    turn that called the tools; Anthropic requires them first in the turn anyway), then one user message with the
    rest, led by any images the tool results returned (a tool message cannot carry an image)."""
    tools: list[Json] = []
    moved: list[Json] = []
    parts: list[Json] = []
    for where, block in blocks:
        kind = block["type"]
        if kind == "tool_result":
            message, images = _tool_result(block, where)
            tools.append(message)
            if images:
                moved.append({"type": "text", "text": f"The image(s) returned by tool call {message['tool_call_id']}:"})
                moved.extend(images)
        elif kind in ("tool_use", "thinking", "redacted_thinking"):
            raise _error(f"{where}.type", f"{where}: a '{kind}' block belongs in an assistant turn.")
        else:
            parts.append(_user_part(block, where))
    out = list(tools)
    content = moved + parts
    if content:
        out.append({"role": "user", "content": _content(content)})
    return out


def _content(parts: list[Json]) -> str | list[Json]:
    """One text part as a plain string (what every provider takes), else the list of parts."""
    if len(parts) == 1 and parts[0]["type"] == "text":
        return str(parts[0]["text"])
    return parts


def _user_part(block: Json, where: str) -> Json:
    kind = block["type"]
    if kind == "text":
        return {"type": "text", "text": _text(block, where)}
    if kind == "image":
        return _image(block, where)
    if kind == "document":
        return {"type": "text", "text": _document(block, where)}
    if kind == "search_result":
        return {"type": "text", "text": _search_result(block, where)}
    # server_tool_use, web_search_tool_result, code_execution_tool_result, container_upload, ...: records of
    # Anthropic's server tools, which no provider here ran or can read.
    raise _error(f"{where}.type", f"{where}: content blocks of type '{kind}' are not supported by this gateway.")


def _image(block: Json, where: str) -> Json:
    """An image block as OpenAI's image_url part (a data URL for base64 data)."""
    source = block.get("source")
    if not isinstance(source, dict):
        raise _type_error(f"{where}.source", "an object")
    kind = source.get("type")
    if kind == "base64":
        media = source.get("media_type")
        if media not in IMAGE_MEDIA_TYPES:
            raise _error(
                f"{where}.source.media_type", f"{where}.source.media_type: one of {', '.join(IMAGE_MEDIA_TYPES)}."
            )
        data = _text(source, f"{where}.source", "data")
        return {"type": "image_url", "image_url": {"url": f"data:{media};base64,{data}"}}
    if kind == "url":
        return {"type": "image_url", "image_url": {"url": _text(source, f"{where}.source", "url")}}
    # "file": an id in Anthropic's Files API, which the gateway does not have.
    raise _error(f"{where}.source.type", f"{where}.source.type: 'base64' or 'url' (got {_shown(kind)}).")


def _document(block: Json, where: str) -> str:
    """A document block with text in it, as text (its title and context first). PDFs are refused: no provider here
    takes a PDF in a chat message through OpenAI's format."""
    source = block.get("source")
    if not isinstance(source, dict):
        raise _type_error(f"{where}.source", "an object")
    kind = source.get("type")
    if kind == "text":
        body = _text(source, f"{where}.source", "data")
    elif kind == "content":
        inner = source.get("content")
        if isinstance(inner, str):
            body = inner
        else:
            texts = []
            for at, part in _blocks(inner, f"{where}.source.content"):
                if part["type"] != "text":
                    raise _error(f"{at}.type", f"{at}: only text blocks are supported inside a document.")
                texts.append(_text(part, at))
            body = "\n".join(texts)
    else:
        raise _error(
            f"{where}.source.type",
            f"{where}: documents of source type {_shown(kind)} (PDF or file) are not supported; send the text instead.",
        )
    heading = [str(block[key]) for key in ("title", "context") if isinstance(block.get(key), str) and block[key]]
    return "\n".join([*heading, body])


def _search_result(block: Json, where: str) -> str:
    texts = [_text(block, where, "title"), _text(block, where, "source")]
    for at, part in _blocks(block.get("content"), f"{where}.content"):
        if part["type"] != "text":
            raise _error(f"{at}.type", f"{at}: only text blocks are supported inside a search result.")
        texts.append(_text(part, at))
    return "\n".join(texts)


def _tool_result(block: Json, where: str) -> tuple[Json, list[Json]]:
    """A tool_result as a tool message, and the images it returned (moved to the next user message)."""
    call_id = block.get("tool_use_id")
    if not isinstance(call_id, str) or not call_id:
        raise _type_error(f"{where}.tool_use_id", "a non-empty string")
    is_error = block.get("is_error")
    if is_error is not None and not isinstance(is_error, bool):
        raise _type_error(f"{where}.is_error", "a boolean")
    content = block.get("content")
    texts: list[str] = []
    images: list[Json] = []
    if isinstance(content, str):
        texts.append(content)
    elif content is not None:
        for at, part in _blocks(content, f"{where}.content"):
            kind = part["type"]
            if kind == "image":
                images.append(_image(part, at))
            elif kind in ("text", "document", "search_result"):
                texts.append(_user_part(part, at)["text"])
            else:
                raise _error(f"{at}.type", f"{at}: blocks of type '{kind}' are not supported inside a tool_result.")
    text = "\n".join(texts)
    if is_error:
        text = TOOL_ERROR_PREFIX + text
    if images:
        note = f"[{len(images)} image(s) of this result follow in the next user message: a tool message cannot carry images]"
        text = f"{text}\n{note}" if text else note
    return {"role": "tool", "tool_call_id": call_id, "content": text}, images


def _assistant_turn(blocks: list[Block]) -> Json | None:
    """An assistant turn: its text, its tool calls (arguments as JSON text) and its thinking as `reasoning_content`
    (Kimi needs it on replayed tool turns in thinking mode; Mistral's adapter makes a thinking chunk of it)."""
    texts: list[str] = []
    calls: list[Json] = []
    thoughts: list[str] = []
    for where, block in blocks:
        kind = block["type"]
        if kind == "text":
            texts.append(_text(block, where))
        elif kind == "tool_use":
            calls.append(_tool_call(block, where))
        elif kind == "thinking":
            thoughts.append(_text(block, where, "thinking"))
        elif kind == "redacted_thinking":
            # Anthropic-encrypted reasoning: no other model can read it. Left out; a tool turn without reasoning is
            # then handled by the adapter (Kimi: thinking off, or a note that none was recorded).
            continue
        else:
            raise _error(
                f"{where}.type", f"{where}: content blocks of type '{kind}' are not supported in an assistant turn."
            )
    if not texts and not calls and not thoughts:
        return None
    turn: Json = {"role": "assistant", "content": "".join(texts)}
    if calls:
        turn["tool_calls"] = calls
    reasoning = "".join(thoughts)
    if reasoning:
        turn["reasoning_content"] = reasoning
    return turn


def _tool_call(block: Json, where: str) -> Json:
    call_id = block.get("id")
    if not isinstance(call_id, str) or not call_id:
        raise _type_error(f"{where}.id", "a non-empty string")
    name = block.get("name")
    if not isinstance(name, str) or not name:
        raise _type_error(f"{where}.name", "a non-empty string")
    arguments = block.get("input")
    if not isinstance(arguments, dict):
        raise _type_error(f"{where}.input", "an object")
    raw = arguments.get("_raw") if len(arguments) == 1 else None
    # {"_raw": text} is how this door returned arguments that were not a JSON object (anthropic_render.py): replayed,
    # they are the model's text again.
    text = raw if isinstance(raw, str) else orjson.dumps(arguments).decode()
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": text}}


# --- sampling, metadata, tools, reasoning ------------------------------------------------------------------------


def _number(body: Json, key: str, low: float, high: float) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise _type_error(key, "a number")
    if not low <= value <= high:
        raise _error(key, f"{key}: must be between {low:g} and {high:g}.")
    return value


def _sampling(body: Json, out: Json) -> None:
    # Anthropic's ranges (temperature and top_p 0-1) are within OpenAI's; the values mean the same.
    for key in ("temperature", "top_p"):
        value = _number(body, key, 0, 1)
        if value is not None:
            out[key] = value
    top_k = body.get("top_k")
    if top_k is not None:
        if not _is_int(top_k) or top_k < 0:
            raise _type_error("top_k", "a non-negative integer")
        # Not an OpenAI field: Mistral takes it (mistral-common / SDK 3.7.0 chat request: top_k); Moonshot documents
        # none and drops it (providers/moonshot.py); other kinds refuse it with a 400 naming it.
        out["top_k"] = top_k
    stops = body.get("stop_sequences")
    if stops is not None:
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise _type_error("stop_sequences", "an array of strings")
        if stops:
            out["stop"] = list(stops)


def _metadata(metadata: Any, out: Json) -> None:
    """Anthropic's metadata has one field, `user_id`: OpenAI's `user` (a hint: providers that lack it drop it).
    Anything else in it is refused, as Anthropic refuses it, so nothing rides in on it."""
    if metadata is None:
        return
    if not isinstance(metadata, dict):
        raise _type_error("metadata", "an object")
    extra = sorted(key for key in metadata if key != "user_id")
    if extra:
        raise _error(
            f"metadata.{extra[0]}",
            f"metadata: unknown field(s) {', '.join(extra)} (only user_id).",
            "unknown_parameter",
        )
    user = metadata.get("user_id")
    if user is not None:
        if not isinstance(user, str):
            raise _type_error("metadata.user_id", "a string")
        out["user"] = user


def _tools(tools: Any, choice: Any, out: Json, translated: Translated) -> None:
    functions: list[Json] = []
    dropped_names: set[str] = set()
    if tools is not None:
        if not isinstance(tools, list):
            raise _type_error("tools", "an array")
        for index, tool in enumerate(tools):
            where = f"tools.{index}"
            if not isinstance(tool, dict):
                raise _type_error(where, "an object")
            kind = tool.get("type")
            if kind in CUSTOM_TOOL_TYPES:
                functions.append(_function(tool, where))
            elif isinstance(kind, str):
                translated.dropped_tools.append(kind)
                name = tool.get("name")
                dropped_names.add(name if isinstance(name, str) else kind)
            else:
                raise _type_error(f"{where}.type", "a string")
    if functions:
        out["tools"] = functions
    _tool_choice(choice, out, {f["function"]["name"] for f in functions}, dropped_names)


def _function(tool: Json, where: str) -> Json:
    name = tool.get("name")
    if not isinstance(name, str) or not name:
        raise _type_error(f"{where}.name", "a non-empty string")
    schema = tool.get("input_schema")
    if not isinstance(schema, dict):
        raise _type_error(f"{where}.input_schema", "an object (a JSON schema)")
    function: Json = {"name": name}
    description = tool.get("description")
    if description is not None:
        if not isinstance(description, str):
            raise _type_error(f"{where}.description", "a string")
        function["description"] = description
    function["parameters"] = schema
    if tool.get("strict") is True:
        function["strict"] = True
    # cache_control, defer_loading, allowed_callers, eager_input_streaming, input_examples: Anthropic's serving hints
    # (caching, tool search, programmatic calls, streaming granularity, examples); no provider takes them.
    return {"type": "function", "function": function}


def _tool_choice(choice: Any, out: Json, functions: set[str], dropped: set[str]) -> None:
    if choice is None:
        return
    if not isinstance(choice, dict):
        raise _type_error("tool_choice", "an object")
    kind = choice.get("type")
    parallel = choice.get("disable_parallel_tool_use")
    if parallel is not None and not isinstance(parallel, bool):
        raise _type_error("tool_choice.disable_parallel_tool_use", "a boolean")
    if kind == "none":
        if functions:
            out["tool_choice"] = "none"
        return
    if kind == "auto":
        value: Any = "auto"
    elif kind == "any":
        if not functions:
            raise _error("tool_choice", "tool_choice 'any': no tool that this gateway's providers can call was given.")
        value = "required"
    elif kind == "tool":
        name = choice.get("name")
        if not isinstance(name, str) or not name:
            raise _type_error("tool_choice.name", "a non-empty string")
        if name in dropped and name not in functions:
            raise _error(
                "tool_choice.name",
                f"tool_choice forces the tool {name!r}, an Anthropic-defined tool that this gateway's providers cannot run.",
                "unsupported_parameter",
            )
        if name not in functions:
            raise _error("tool_choice.name", f"tool_choice names the tool {name!r}, which is not in 'tools'.")
        value = {"type": "function", "function": {"name": name}}
    else:
        raise _error("tool_choice.type", f"tool_choice.type: 'auto', 'any', 'tool' or 'none' (got {_shown(kind)}).")
    if functions:
        out["tool_choice"] = value
        if parallel:
            out["parallel_tool_calls"] = False


def _reasoning(thinking: Any, config: Any, out: Json, translated: Translated) -> None:
    """`thinking` and `output_config` -> OpenAI's `reasoning_effort` (and `response_format` from output_config.format).

    - thinking disabled: "none" (Mistral: no reasoning; Kimi: thinking off);
    - thinking enabled: its budget_tokens by BUDGET_EFFORT;
    - adaptive ("Claude decides when and how much to think"), between_tools, or no `thinking`: output_config.effort
      if given, else nothing, so each model keeps its own default. That default is the provider's adaptive choice
      (Kimi K2.6 thinks by default; Mistral reasons only when asked), and it is what the same request through the
      OpenAI door gets. "medium" instead would turn paid reasoning on for every Mistral request of Claude Code, which
      sends `adaptive` on each one, its small/fast-model calls included.
    """
    effort: str | None = None
    if config is not None:
        if not isinstance(config, dict):
            raise _type_error("output_config", "an object")
        asked = config.get("effort")
        if asked is not None:
            if asked not in EFFORTS:
                raise _error("output_config.effort", f"output_config.effort: one of {', '.join(EFFORTS)}.")
            effort = EFFORTS[asked]
        _output_format(config.get("format"), out)
        # output_config.task_budget: Anthropic's token budget across contexts; no provider has one (dropped).
    if thinking is not None:
        if not isinstance(thinking, dict):
            raise _type_error("thinking", "an object")
        kind = thinking.get("type")
        display = thinking.get("display")
        if display not in THINKING_DISPLAYS:
            raise _error("thinking.display", "thinking.display: 'summarized', 'omitted' or 'updates'.")
        translated.omit_thinking = display == "omitted"
        if kind == "disabled":
            effort = "none"
        elif kind == "enabled":
            budget = thinking.get("budget_tokens")
            if not _is_int(budget) or budget < 1:
                raise _type_error("thinking.budget_tokens", "a positive integer")
            effort = next((name for bound, name in BUDGET_EFFORT if budget <= bound), BUDGET_EFFORT_ABOVE)
        elif kind not in ("adaptive", "between_tools"):
            raise _error("thinking.type", f"thinking.type: 'enabled', 'adaptive' or 'disabled' (got {_shown(kind)}).")
    if effort is not None:
        out["reasoning_effort"] = effort


def _output_format(format: Any, out: Json) -> None:
    """output_config.format (structured output) -> OpenAI's json_schema response_format."""
    if format is None:
        return
    if (
        not isinstance(format, dict)
        or format.get("type") != "json_schema"
        or not isinstance(format.get("schema"), dict)
    ):
        raise _type_error("output_config.format", "{'type': 'json_schema', 'schema': {...}}")
    out["response_format"] = {"type": "json_schema", "json_schema": {"name": "output", "schema": format["schema"]}}
