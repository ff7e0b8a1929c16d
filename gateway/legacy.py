"""Legacy text completions (`/v1/completions`) served by chat or FIM endpoints.

Chat-shaped answers are reshaped into OpenAI's `text_completion` objects, both
complete answers and stream chunks.
"""

from __future__ import annotations

from typing import Any

Json = dict[str, Any]


def prompt_as_chat(body: Json) -> Json:
    """A legacy completion body as a chat body (prompt becomes one user message)."""
    chat = {k: v for k, v in body.items() if k not in ("prompt", "suffix", "echo", "best_of", "logprobs")}
    chat["messages"] = [{"role": "user", "content": body["prompt"]}]
    return chat


def as_text_completion(answer: Json) -> Json:
    """Reshape a chat completion or chunk (complete or streamed) into a text completion."""
    choices = []
    for choice in answer.get("choices") or ():
        part = choice.get("message") or choice.get("delta") or {}
        text = part.get("content")
        choices.append(
            {
                "text": text if isinstance(text, str) else "",
                "index": choice.get("index", 0),
                "logprobs": None,
                "finish_reason": choice.get("finish_reason"),
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
    return out
