"""Responses tools -> chat function tools, and the names by which calls refer to them.

Sources: the `openai` SDK's `tool_param.py` (the tool types), `namespace_tool_param.py` and `custom_tool_param.py`;
Codex's `codex-rs/tools/src/responses_api.rs` (a `namespace` groups function tools) and
`codex-rs/core/src/tools/router.rs` (a call names its tool by `name` plus `namespace`). The rules are in
gateway/translate/responses.py's docstring.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.errors import GatewayError, invalid_request
from gateway.pipeline.validation import type_error
from gateway.types import Json

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


def bad_value(message: str, param: str, code: str = "invalid_value") -> GatewayError:
    return invalid_request(message, param=param, code=code)


@dataclass(slots=True)
class ToolNames:
    """Chat function name <-> the Responses tool it stands for (a namespace's tools are flattened)."""

    namespaces: dict[str, tuple[str, str]] = field(default_factory=dict)  # flat name -> (namespace, name)
    flat: dict[tuple[str, str], str] = field(default_factory=dict)
    custom: set[str] = field(default_factory=set)  # chat names of `custom` (freeform) tools

    def add(self, namespace: str, name: str, where: str) -> str:
        joined = f"{namespace}{NAMESPACE_JOIN}{name}"
        if not FUNCTION_NAME.match(joined):
            raise bad_value(
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


def translate_tools(tools: Any, names: ToolNames) -> tuple[list[Json], list[str]]:
    if tools is None:
        return [], []
    if not isinstance(tools, list):
        raise type_error("tools", "an array")
    out: list[Json] = []
    dropped: list[str] = []
    for index, tool in enumerate(tools):
        where = f"tools[{index}]"
        if not isinstance(tool, dict) or not isinstance(tool.get("type"), str):
            raise type_error(where, "an object with a 'type'")
        kind = tool["type"]
        if kind == "function":
            out.append(_function(tool, where, None, names))
        elif kind == "custom":
            out.append(_custom(tool, where, None, names))
        elif kind == "namespace":
            namespace = tool.get("name")
            if not isinstance(namespace, str) or not namespace:
                raise type_error(f"{where}.name", "a non-empty string")
            inner = tool.get("tools")
            if not isinstance(inner, list):
                raise type_error(f"{where}.tools", "an array")
            for position, member in enumerate(inner):
                spot = f"{where}.tools[{position}]"
                if not isinstance(member, dict):
                    raise type_error(spot, "an object")
                if member.get("type") == "function":
                    out.append(_function(member, spot, namespace, names))
                elif member.get("type") == "custom":
                    out.append(_custom(member, spot, namespace, names))
                else:
                    raise bad_value(f"Unknown tool type {member.get('type')!r} in {spot}.", f"{spot}.type")
        elif kind.startswith(BUILT_IN_TOOLS):
            dropped.append(kind)
        else:
            raise bad_value(f"Unknown tool type {kind!r} in {where}.", f"{where}.type")
    seen: set[str] = set()
    for tool in out:
        name = tool["function"]["name"]
        if name in seen:
            raise bad_value(f"Two tools are named {name!r} (after flattening namespaces).", "tools")
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
            raise bad_value(f"Unknown parameter '{where}.{key}'.", f"{where}.{key}", "unknown_parameter")
    description = tool.get("description")
    if description is not None and not isinstance(description, str):
        raise type_error(f"{where}.description", "a string")
    form = tool.get("format")
    text = description or ""
    if isinstance(form, dict) and form.get("type") == "grammar":
        definition, syntax = form.get("definition"), form.get("syntax")
        if not isinstance(definition, str) or not isinstance(syntax, str):
            raise type_error(f"{where}.format", "a grammar with 'syntax' and 'definition' strings")
        text += f"\n\nThe input must follow this {syntax} grammar:\n{definition}"
    elif form is not None and not (isinstance(form, dict) and form.get("type") == "text"):
        raise bad_value(f"'{where}.format' must be of type 'text' or 'grammar'.", f"{where}.format")
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
        raise type_error(f"{where}.name", "a string")
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
            raise bad_value(f"Unknown parameter '{where}.{key}'.", f"{where}.{key}", "unknown_parameter")
    if namespace is not None:
        flat = names.add(namespace, name, f"{where}.name")
    else:
        if not FUNCTION_NAME.match(name):
            raise bad_value(
                f"Invalid function name {name!r}: letters, digits, '_' and '-', at most 64 characters.",
                f"{where}.name",
            )
        flat = name
    function: Json = {"name": flat}
    description = tool.get("description")
    if description is not None:
        if not isinstance(description, str):
            raise type_error(f"{where}.description", "a string")
        function["description"] = description
    parameters = tool.get("parameters")
    if parameters is not None:
        if not isinstance(parameters, dict):
            raise type_error(f"{where}.parameters", "an object (a JSON schema)")
        function["parameters"] = parameters
    strict = tool.get("strict")
    if strict is not None:
        if not isinstance(strict, bool):
            raise type_error(f"{where}.strict", "a boolean")
        function["strict"] = strict
    return {"type": "function", "function": function}


def translate_tool_choice(choice: Any, names: ToolNames, dropped: list[str], chat: Json) -> Any:
    if choice is None:
        return None
    if choice in ("none", "auto", "required"):
        return choice
    if not isinstance(choice, dict) or not isinstance(choice.get("type"), str):
        raise bad_value("'tool_choice' must be 'none', 'auto', 'required' or an object with a 'type'.", "tool_choice")
    kind = choice["type"]
    if kind in ("function", "custom"):
        name, namespace = choice.get("name"), choice.get("namespace")
        if not isinstance(name, str) or not (namespace is None or isinstance(namespace, str)):
            raise type_error("tool_choice.name", "a string")
        flat = names.to_chat(name, namespace)
        if not any(tool["function"]["name"] == flat for tool in chat.get("tools", ())):
            raise bad_value(f"'tool_choice' names the function {name!r}, which is not among 'tools'.", "tool_choice")
        return {"type": "function", "function": {"name": flat}}
    if kind == "allowed_tools":
        # Chat's providers have no allowed-tools list: the same effect by sending only the allowed function tools.
        mode = choice.get("mode")
        allowed = choice.get("tools")
        if mode not in ("auto", "required") or not isinstance(allowed, list):
            raise bad_value(
                "'tool_choice' of type allowed_tools needs 'mode' (auto|required) and 'tools'.", "tool_choice"
            )
        keep: set[str] = set()
        for entry in allowed:
            if not isinstance(entry, dict) or entry.get("type") != "function" or not isinstance(entry.get("name"), str):
                raise bad_value("'tool_choice.tools' may name function tools only here.", "tool_choice.tools")
            keep.add(names.to_chat(entry["name"], entry.get("namespace")))
        chat["tools"] = [tool for tool in chat.get("tools", ()) if tool["function"]["name"] in keep]
        if not chat["tools"]:
            raise bad_value("'tool_choice.tools' allows none of the function tools sent.", "tool_choice.tools")
        return mode
    raise bad_value(
        f"'tool_choice' forces the tool type {kind!r}, which no provider behind this gateway runs"
        + (f" (left out of the call: {', '.join(dropped)})." if dropped else "."),
        "tool_choice",
        "unsupported_tool_choice",
    )


def dropped_header(dropped: list[str]) -> Mapping[str, str]:
    """The header naming the built-in tools left out of the provider call (none: no header)."""
    # Only characters a header takes (tool names are the client's own strings).
    safe = [re.sub(r"[^A-Za-z0-9_.:-]", "?", label)[:100] for label in dropped]
    return {"x-gateway-dropped-tools": ", ".join(safe)} if safe else {}
