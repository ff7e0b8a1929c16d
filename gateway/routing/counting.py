"""How the gateway counts a request's prompt tokens before the call (the context-fit step and reservations).

One function, so that the exact counter of `gateway.tokens` can replace the estimate in one place: today the
body-size estimate of `gateway.spend.accounting` (about 4 bytes per token of JSON, leaning high) applies.
"""

from __future__ import annotations

from typing import Any

from gateway.spend.accounting import estimate_prompt_tokens


def prompt_tokens(body: dict[str, Any], size: int) -> int:
    """Prompt tokens of a request body (system prompt, messages, tools and images included), as counted before the call."""
    return estimate_prompt_tokens(size)
