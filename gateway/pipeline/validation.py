"""Check the fields of an OpenAI request that the gateway relies on.

Only the fields routing and billing need, plus the types of the common
parameters, so that a mistyped request gets a 400 naming the parameter instead
of a provider error or a 500. The rest of the body is the provider's business.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gateway.catalog import FORBIDDEN_FIELDS, FORBIDDEN_PREFIXES
from gateway.errors import GatewayError, invalid_request

# Never taken from a client: upstream URLs, keys and headers are configuration only, and litellm's own
# control arguments (fallbacks with their own api_base, mock answers, routing lists) are not requests.
# Every adapter also rebuilds its body from a whitelist (providers/fields.py); this refuses the worst by
# name on every endpoint, /v1/route/explain included, before any routing.
ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})


@dataclass(slots=True)
class Request:
    model: str
    stream: bool
    include_usage: bool
    needs: set[str] = field(default_factory=set)  # capabilities beyond the endpoint's own
    n: int = 1  # answers asked for: the output a reservation prices is n (or best_of) times one answer's
    max_output: int | None = None
    max_output_param: str = "max_tokens"
    min_output: int = 0  # Mistral's `min_tokens` (FIM): the provider generates at least this many per answer


def type_error(param: str, expected: str) -> GatewayError:
    """400 `invalid_type` naming the parameter (the OpenAI doors' wording, the Responses door's too)."""
    return invalid_request(f"Invalid type for '{param}': expected {expected}.", param=param, code="invalid_type")


def refuse_forbidden(body: dict[str, Any]) -> None:
    """400 `forbidden_parameter` for a top-level field that could move, re-key or re-head a request (every door,
    before it reads anything else)."""
    for key in FORBIDDEN_FIELDS:
        if key in body:
            raise invalid_request(f"Parameter '{key}' cannot be set by clients.", param=key, code="forbidden_parameter")
    for key in body:
        if key.startswith(FORBIDDEN_PREFIXES):
            raise invalid_request(f"Parameter '{key}' cannot be set by clients.", param=key, code="forbidden_parameter")


def _common(body: dict[str, Any]) -> tuple[str, bool, bool]:
    refuse_forbidden(body)
    model = body.get("model")
    if model is None:
        raise invalid_request("You must provide a model parameter.", param="model", code="missing_required_parameter")
    if not isinstance(model, str) or not model.strip():
        raise type_error("model", "a non-empty string")
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise type_error("stream", "a boolean")
    options = body.get("stream_options")
    include_usage = False
    if options is not None:
        if not isinstance(options, dict):
            raise type_error("stream_options", "an object")
        include_usage = options.get("include_usage") is True
        if not stream:
            raise invalid_request(
                "The 'stream_options' parameter is only allowed when 'stream' is enabled.", param="stream_options"
            )
    return model, stream, include_usage


def _int(body: dict[str, Any], key: str, minimum: int, maximum: int | None = None) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise type_error(key, "an integer")
    if value < minimum:
        raise invalid_request(f"'{key}' must be at least {minimum}.", param=key, code="invalid_value")
    if maximum is not None and value > maximum:
        raise invalid_request(f"'{key}' must be at most {maximum}.", param=key, code="invalid_value")
    return value


def _number(body: dict[str, Any], key: str, low: float, high: float) -> None:
    value = body.get(key)
    if value is None:
        return
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise type_error(key, "a number")
    if not low <= value <= high:
        raise invalid_request(f"'{key}' must be between {low} and {high}.", param=key, code="invalid_value")


# OpenAI's documented bounds: chat `n` 1-128, legacy `best_of` 0-20. Each answer is billed, so these
# multiply the output a reservation must price; anything larger is refused before routing.
MAX_N = 128
MAX_BEST_OF = 20
MAX_OUTPUT_TOKENS = 2**31 - 1  # no model produces more; a larger value is a mistake, not a request


def _sampling(body: dict[str, Any]) -> tuple[int, int | None]:
    _number(body, "temperature", 0, 2)
    _number(body, "top_p", 0, 1)
    _number(body, "presence_penalty", -2, 2)
    _number(body, "frequency_penalty", -2, 2)
    _int(body, "seed", -(2**63), 2**63 - 1)
    n = _int(body, "n", 1, MAX_N) or 1
    # best_of answers are generated (and billed) to return n of them.
    n = max(n, _int(body, "best_of", 1, MAX_BEST_OF) or 1)
    max_tokens = _int(body, "max_tokens", 1, MAX_OUTPUT_TOKENS)
    max_completion = _int(body, "max_completion_tokens", 1, MAX_OUTPUT_TOKENS)
    stop = body.get("stop")
    if stop is not None and not isinstance(stop, str | list):
        raise type_error("stop", "a string or a list of strings")
    if isinstance(stop, list) and not all(isinstance(s, str) for s in stop):
        raise type_error("stop", "a string or a list of strings")
    if max_completion is not None and max_tokens is not None:
        return n, min(max_completion, max_tokens)
    return n, max_completion if max_completion is not None else max_tokens


def check_chat(body: dict[str, Any]) -> Request:
    model, stream, include_usage = _common(body)
    messages = body.get("messages")
    if messages is None:
        raise invalid_request("You must provide 'messages'.", param="messages", code="missing_required_parameter")
    if not isinstance(messages, list):
        raise type_error("messages", "an array")
    if not messages:
        raise invalid_request("'messages' must contain at least one message.", param="messages", code="empty_array")
    needs: set[str] = set()
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise type_error(f"messages[{index}]", "an object")
        role = message.get("role")
        if not isinstance(role, str) or role not in ROLES:  # a list or object role is unhashable: no TypeError
            raise invalid_request(
                f"Invalid value for 'messages[{index}].role': {role!r}.", param=f"messages[{index}].role"
            )
        content = message.get("content")
        if isinstance(content, list):
            for part in content:
                if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                    raise type_error(f"messages[{index}].content", "a string or an array of typed parts")
                if part["type"] in ("image_url", "input_image", "image"):
                    needs.add("vision")
        elif content is not None and not isinstance(content, str):
            raise type_error(f"messages[{index}].content", "a string or an array of parts")
    tools = body.get("tools", body.get("functions"))
    if tools is not None:
        if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
            raise type_error("tools", "an array of objects")
        if tools:
            needs.add("tools")
    response_format = body.get("response_format")
    if response_format is not None and (
        not isinstance(response_format, dict)
        or response_format.get("type") not in ("text", "json_object", "json_schema")
    ):
        raise invalid_request(
            "'response_format.type' must be one of 'text', 'json_object', 'json_schema'.", param="response_format"
        )
    n, max_output = _sampling(body)
    if body.get("max_completion_tokens") is not None and body.get("max_tokens") is not None:
        # Both sent (they mean the same): every provider is sent the smaller, and the budget prices that one, so no
        # adapter's choice of name can send a larger limit than was reserved.
        body["max_tokens"] = body["max_completion_tokens"] = max_output
    param = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    return Request(model, stream, include_usage, needs, n, max_output, param)


def check_completion(body: dict[str, Any]) -> Request:
    """Legacy /v1/completions and /v1/fim/completions."""
    model, stream, include_usage = _common(body)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        body["prompt"] = prompt = prompt[0]
    if prompt is None:
        raise invalid_request("You must provide 'prompt'.", param="prompt", code="missing_required_parameter")
    if not isinstance(prompt, str):
        raise type_error("prompt", "a string (one prompt per request)")
    suffix = body.get("suffix")
    if suffix is not None and not isinstance(suffix, str):
        raise type_error("suffix", "a string")
    n, max_output = _sampling(body)
    minimum = _int(body, "min_tokens", 0, MAX_OUTPUT_TOKENS) or 0
    if max_output is not None and minimum > max_output:
        raise invalid_request(
            f"'min_tokens' ({minimum}) is more than 'max_tokens' ({max_output}).",
            param="min_tokens",
            code="invalid_value",
        )
    needs = {"fim"} if suffix is not None else set()
    return Request(model, stream, include_usage, needs, n, max_output, min_output=minimum)


def check_embeddings(body: dict[str, Any]) -> Request:
    model, _, _ = _common(body)
    value = body.get("input")
    if value is None:
        raise invalid_request("You must provide 'input'.", param="input", code="missing_required_parameter")
    ok = isinstance(value, str) or (isinstance(value, list) and value and all(isinstance(v, str) for v in value))
    if not ok:
        raise type_error("input", "a string or a non-empty array of strings")
    _int(body, "dimensions", 1)
    if body.get("encoding_format") not in (None, "float", "base64"):  # null is the default, float
        raise invalid_request("'encoding_format' must be 'float' or 'base64'.", param="encoding_format")
    return Request(model, False, False)
