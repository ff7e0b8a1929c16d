"""What each provider kind is sent: request bodies rebuilt from a whitelist, never passed through.

A client body is untrusted. Anything an adapter forwards that it does not know to be a request
parameter of its provider may be read by the provider (or, for litellm, by the library) as something
else: an upstream address (`api_base`, `fallbacks[].api_base`), credentials (`api_key`), headers
(`headers`, `extra_headers`), an answer that skips the provider (`mock_response`). So every adapter
rebuilds the body from its kind's `Shape`: the fields it forwards, the OpenAI names it translates to
the provider's twin, the known OpenAI hints it drops, and the fields of each message role. Anything
else is refused with a 400 naming it, before the provider is called. Messages are rebuilt the same
way (a key unknown to OpenAI and to the provider inside a message is refused), and so are their
content parts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.catalog import ModelConfig
from gateway.errors import GatewayError, invalid_request

Json = dict[str, Any]

# Fields an OpenAI client may send that are hints, not requirements; an adapter
# whose provider lacks them drops them instead of failing the request.
HINT_FIELDS = frozenset({"user", "service_tier", "store", "logprobs", "top_logprobs", "metadata"})


# OpenAI's request fields per endpoint, with the defaults its spec documents
# (../shared/reference/openai-openapi-subset.yaml: CreateChatCompletionRequest, CreateCompletionRequest,
# CreateEmbeddingRequest). A client that sends a field as null, or at its documented default, asks for what
# omitting it gives: a kind that lacks the field drops it instead of refusing the request (Mistral has no
# `logit_bias`, its FIM no `n`). Only these names are dropped so; any other unknown key is still refused, null
# or not, and nothing dropped is forwarded, so this cannot reach an upstream URL, a key or a header.
@dataclass(frozen=True, slots=True)
class OpenAIEndpoint:
    fields: frozenset[str]
    defaults: Mapping[str, Any]  # only the documented ones


def _endpoint(defaults: Mapping[str, Any], *others: str) -> OpenAIEndpoint:
    return OpenAIEndpoint(frozenset(defaults) | frozenset(others), dict(defaults))


CHAT_REQUEST = _endpoint(
    {
        "frequency_penalty": 0,
        "logit_bias": None,
        "logprobs": False,
        "n": 1,
        "parallel_tool_calls": True,
        "presence_penalty": 0,
        "reasoning_effort": "medium",
        "service_tier": "auto",
        "stop": None,
        "store": False,
        "stream": False,
        "stream_options": None,
        "temperature": 1,
        "top_p": 1,
        "verbosity": "medium",
    },
    "model",
    "messages",
    "audio",
    "function_call",
    "functions",
    "max_completion_tokens",
    "max_tokens",
    "metadata",
    "modalities",
    "moderation",
    "prediction",
    "prompt_cache_key",
    "prompt_cache_options",
    "prompt_cache_retention",
    "response_format",
    "safety_identifier",
    "seed",
    "tool_choice",
    "tools",
    "top_logprobs",
    "user",
    "web_search_options",
)
COMPLETION_REQUEST = _endpoint(
    {
        "best_of": 1,
        "echo": False,
        "frequency_penalty": 0,
        "logit_bias": None,
        "logprobs": None,
        "max_tokens": 16,
        "n": 1,
        "presence_penalty": 0,
        "stop": None,
        "stream": False,
        "stream_options": None,
        "suffix": None,
        "temperature": 1,
        "top_p": 1,
    },
    "model",
    "prompt",
    "seed",
    "user",
)
EMBEDDING_REQUEST = _endpoint({"encoding_format": "float"}, "model", "input", "dimensions", "user")
REQUIRED_FIELDS = frozenset({"model", "messages", "prompt", "input"})  # never dropped: validation refuses a null


def is_default(value: Any, default: Any) -> bool:
    """`value` is `default` itself: `1.0` is `1`, but `true` is not `1` and `0` is not `false`."""
    if isinstance(value, bool) or isinstance(default, bool):
        return value is default
    if isinstance(default, (int, float)):
        return isinstance(value, (int, float)) and value == default
    return value == default


# Every key a message may carry in OpenAI's request and response schemas
# (../shared/reference/openai-openapi-subset.yaml: ChatCompletionRequest*Message, ChatCompletionResponseMessage,
# which SDK clients replay as they received it) or in a provider's twin (Mistral `prefix`, Moonshot `partial`
# and `reasoning_content`, OpenRouter `reasoning`/`reasoning_details`, Anthropic-style `cache_control`).
# A kind that lacks one of them drops it; a key outside this set is refused.
KNOWN_MESSAGE_KEYS = frozenset(
    {
        "role",
        "content",
        "name",
        "tool_calls",
        "tool_call_id",
        "function_call",
        "refusal",
        "audio",
        "annotations",
        "reasoning_content",
        "reasoning",
        "reasoning_details",
        "prefix",
        "partial",
        "cache_control",
    }
)

# Content parts by type, with their keys (OpenAI's ChatCompletionRequestMessageContentPart*; Moonshot's
# `video_url`; Mistral's `document_url` and replayed `thinking`). Hints inside a part are dropped.
PART_KEYS: Mapping[str, frozenset[str]] = {
    "text": frozenset({"type", "text"}),
    "image_url": frozenset({"type", "image_url"}),
    "input_audio": frozenset({"type", "input_audio"}),
    "file": frozenset({"type", "file"}),
    "refusal": frozenset({"type", "refusal"}),
    "video_url": frozenset({"type", "video_url"}),
    "document_url": frozenset({"type", "document_url", "document_name"}),
    "thinking": frozenset({"type", "thinking", "closed"}),
}
PART_HINTS = frozenset({"cache_control", "prompt_cache_breakpoint"})
TOOL_CALL_KEYS = ("id", "type", "function")
TOOL_CALL_FUNCTION_KEYS = ("name", "arguments")


@dataclass(frozen=True, slots=True)
class Messages:
    """The message roles a provider accepts and the keys it reads on each."""

    fields: Mapping[str, frozenset[str]]
    aliases: Mapping[str, str] = field(default_factory=dict)  # e.g. developer -> system
    # Per role, every key a message may carry as it is (its fields and `role`): the fast path of `_message`.
    plain: Mapping[str, frozenset[str]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "plain", {role: keys | {"role"} for role, keys in self.fields.items()})


@dataclass(frozen=True, slots=True)
class Shape:
    """One endpoint of one provider kind."""

    allowed: frozenset[str]  # forwarded as they are
    renames: Mapping[str, str] = field(default_factory=dict)  # OpenAI name -> the provider's twin
    dropped: frozenset[str] = frozenset()  # known OpenAI fields the provider lacks that are hints
    messages: Messages | None = None
    translate_functions: bool = False  # legacy functions/function_call -> tools/tool_choice
    openai: OpenAIEndpoint = CHAT_REQUEST  # the OpenAI endpoint clients call (its fields' nulls and defaults)
    # Forwarded fields dropped all the same when at their documented default: for a forwarder that refuses what
    # one of its providers lacks (litellm), where omitting the field asks every provider for the same thing.
    defaults_dropped: frozenset[str] = frozenset()


def unsupported(param: str, model: ModelConfig) -> GatewayError:
    return invalid_request(
        f"Parameter '{param}' is not supported by model {model.name!r} (provider kind of {model.provider!r}).",
        param=param,
        code="unsupported_parameter",
    )


def rebuild(body: Json, shape: Shape, model: ModelConfig) -> Json:
    """The body to send: `shape`'s fields only, OpenAI names translated, hints, nulls and OpenAI fields at their
    default that the provider lacks dropped, the rest refused."""
    if shape.translate_functions:
        _functions_as_tools(body)
    out: Json = {}
    openai = shape.openai
    for key, value in body.items():
        if (
            value is None
            and key not in REQUIRED_FIELDS
            and (key in openai.fields or key in shape.allowed or key in shape.renames or key in shape.dropped)
        ):
            continue  # null is "not given" for every optional OpenAI field; strict providers refuse a null
        if key in shape.defaults_dropped and key in openai.defaults and is_default(value, openai.defaults[key]):
            continue
        if key in shape.allowed:
            out.setdefault(key, value)  # a provider-named field the client sent wins over a translated one
        elif key in shape.renames:
            twin = shape.renames[key]
            if body.get(twin) is None:
                out[twin] = value
        elif key in shape.dropped:
            continue
        elif key in openai.defaults and is_default(value, openai.defaults[key]):
            continue  # the default the provider applies anyway (`n: 1` on FIM)
        else:
            raise unsupported(key, model)
    out["model"] = model.upstream_model
    if shape.messages is not None and "messages" in out:
        out["messages"] = rebuild_messages(out["messages"], shape.messages, model)
    return out


def _functions_as_tools(body: Json) -> None:
    functions = body.pop("functions", None)
    call = body.pop("function_call", None)
    if functions is not None and body.get("tools") is None:
        body["tools"] = (
            [{"type": "function", "function": f} for f in functions] if isinstance(functions, list) else functions
        )
    if call is not None and body.get("tool_choice") is None:
        body["tool_choice"] = {"type": "function", "function": call} if isinstance(call, dict) else call
    messages = body.get("messages")
    if isinstance(messages, list) and any(_legacy_turn(m) for m in messages):
        body["messages"] = _function_turns_as_tools(messages)


def _legacy_turn(message: Any) -> bool:
    return isinstance(message, dict) and (message.get("role") == "function" or message.get("function_call") is not None)


def _function_turns_as_tools(messages: list[Any]) -> list[Any]:
    """OpenAI's legacy function turns as tool turns, for providers that have only tools (Moonshot, litellm's, and
    Mistral before its own repairs): an assistant `function_call` becomes one tool call, and the `function` message
    that answers it a tool result with the same id. Ids come from the call's position in the history, so every turn
    of a conversation maps them alike. A new list of new dicts: the client's history is left as it was (a
    fallback replays it to another provider)."""
    out: list[Any] = []
    pending: dict[str, list[str]] = {}  # function name -> ids of its calls not answered yet
    for index, message in enumerate(messages):
        if not _legacy_turn(message):
            out.append(message)
            continue
        if message.get("role") == "function":
            name = str(message.get("name") or "")
            queue = pending.get(name)
            content = message.get("content")
            out.append(
                {
                    "role": "tool",
                    "tool_call_id": queue.pop(0) if queue else f"call_{index}",
                    "content": content if content is not None else "",
                    "name": name,  # dropped where a kind lacks it
                }
            )
            continue
        turn = {key: value for key, value in message.items() if key != "function_call"}
        call = message.get("function_call")
        if isinstance(call, dict) and not message.get("tool_calls"):
            name = str(call.get("name") or "")
            call_id = f"call_{index}"
            turn["tool_calls"] = [
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": name, "arguments": call.get("arguments") or "{}"},
                }
            ]
            pending.setdefault(name, []).append(call_id)
        out.append(turn)
    return out


def rebuild_messages(messages: Any, shape: Messages, model: ModelConfig) -> list[Json]:
    if not isinstance(messages, list):
        raise invalid_request("'messages' must be an array.", param="messages", code="invalid_type")
    return [_message(message, index, shape, model) for index, message in enumerate(messages)]


def _message(message: Any, index: int, shape: Messages, model: ModelConfig) -> Json:
    if isinstance(message, dict):
        # Most turns (a role and a string) need nothing removed or rebuilt: a copy, at C speed, instead of the
        # key-by-key walk below (a 600-turn agent history: about 3x less time). A copy, never the client's dict:
        # adapters change messages, and a fallback replays the same body to another provider.
        role = message.get("role")
        plain = shape.plain.get(role) if type(role) is str else None
        if (
            plain is not None
            and message.keys() <= plain
            and type(message.get("content")) is str
            and "tool_calls" not in message
            and None not in message.values()
        ):
            return dict(message)
    where = f"messages[{index}]"
    if not isinstance(message, dict):
        raise invalid_request(f"{where} must be an object", param=where, code="invalid_type")
    role = message.get("role")
    role = shape.aliases.get(role, role) if isinstance(role, str) else role
    keep = shape.fields.get(role) if isinstance(role, str) else None
    if keep is None:
        raise invalid_request(
            f"{where}.role {message.get('role')!r} is not supported by model {model.name!r}.", param=f"{where}.role"
        )
    out: Json = {"role": role}
    for key, value in message.items():
        if key == "role" or value is None:
            continue
        if key in keep:
            out[key] = value
        elif key not in KNOWN_MESSAGE_KEYS:
            raise unsupported(f"{where}.{key}", model)
    content = out.get("content")
    if isinstance(content, list):
        out["content"] = [_part(part, f"{where}.content[{i}]", model) for i, part in enumerate(content)]
    calls = out.get("tool_calls")
    if isinstance(calls, list):
        out["tool_calls"] = [_tool_call(call) for call in calls]
    return out


def _part(part: Any, where: str, model: ModelConfig) -> Any:
    if not isinstance(part, dict):
        return part  # validation refused non-object parts already; the provider judges the rest
    keys = PART_KEYS.get(part.get("type"))  # type: ignore[arg-type]
    if keys is None:
        raise unsupported(f"{where}.type", model)
    out: Json = {}
    for key, value in part.items():
        if key in keys:
            out[key] = value
        elif key not in PART_HINTS:
            raise unsupported(f"{where}.{key}", model)
    return out


def _tool_call(call: Any) -> Any:
    """A replayed tool call: id, type and function name and arguments (SDKs echo `index` and more: dropped)."""
    if not isinstance(call, dict):
        return call
    out = {key: call[key] for key in TOOL_CALL_KEYS if key in call}
    function = out.get("function")
    if isinstance(function, dict):
        out["function"] = {key: function[key] for key in TOOL_CALL_FUNCTION_KEYS if key in function}
    return out


def roles(**fields: tuple[str, ...]) -> dict[str, frozenset[str]]:
    """Role -> keys, `role` itself implied."""
    return {role: frozenset(keys) for role, keys in fields.items()}
