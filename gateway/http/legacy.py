"""Legacy text completions (`/v1/completions`) served by chat or FIM endpoints.

Chat-shaped answers are reshaped into OpenAI's `text_completion` objects, both
complete answers and stream chunks.
"""

from __future__ import annotations

from typing import Any

from gateway.errors import invalid_request

Json = dict[str, Any]

# Completion-only fields that a chat endpoint has no twin for. `best_of` and `logprobs` ask for more or for
# extra detail (an answer without them is still the answer asked for): dropped. `echo: true` asks for the
# prompt in the text: dropping it would change the answer, so only its default (false or null) is dropped.
_DROPPED_FOR_CHAT = ("prompt", "suffix", "best_of", "logprobs")
# CreateCompletionResponse's finish reasons; a chat's tool or function call ended the text normally.
_FINISH_REASONS = {
    "stop": "stop",
    "length": "length",
    "model_length": "length",
    "content_filter": "content_filter",
    "tool_calls": "stop",
    "function_call": "stop",
}


def prompt_as_chat(body: Json) -> Json:
    """A legacy completion body as a chat body (prompt becomes one user message)."""
    echo = body.get("echo")
    if echo is not None and echo is not False:
        raise invalid_request(
            "Parameter 'echo' is not supported: this completion is served by a chat model.",
            param="echo",
            code="unsupported_parameter",
        )
    chat = {k: v for k, v in body.items() if k not in _DROPPED_FOR_CHAT and k != "echo"}
    chat["messages"] = [{"role": "user", "content": body["prompt"]}]
    return chat


def as_text_completion(answer: Json) -> Json:
    """Reshape a chat completion or chunk (complete or streamed) into a text completion."""
    choices = []
    for position, choice in enumerate(answer.get("choices") or ()):
        part = choice.get("message") or choice.get("delta") or {}
        text = part.get("content")
        reason = choice.get("finish_reason")
        choices.append(
            {
                "text": text if isinstance(text, str) else "",
                "index": choice.get("index", position),
                "logprobs": None,
                "finish_reason": _FINISH_REASONS.get(reason, reason) if isinstance(reason, str) else reason,
            }
        )
    out: Json = {
        "id": answer.get("id"),
        "object": "text_completion",
        "created": answer.get("created"),
        "model": answer.get("model"),
        "choices": choices,
    }
    if answer.get("usage") is not None:
        out["usage"] = answer["usage"]
    if "x_gateway" in answer:  # the settled cost on a stream's usage chunk (providers/sse.stream_end)
        out["x_gateway"] = answer["x_gateway"]
    return out
