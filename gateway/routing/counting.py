"""How the gateway counts a request's prompt tokens before the call (the context-fit step and reservations).

One number per request from `gateway.tokens.estimate`: it reads the messages, tools and images (microseconds
even for a 4 MB body; typical error 6%, Mistral weights, leaning high on digits). Counting exactly with each
model's tokenizer near a window boundary (`TokenCounter.count_async`) is the next step: it needs a count per
candidate model in the context step.
"""

from __future__ import annotations

from typing import Any

from gateway.spend.accounting import estimate_prompt_tokens
from gateway.tokens import estimate

# The estimate's error is within about 20% (see gateway.tokens); a reservation must not be below the real
# cost, or concurrent requests could together spend past the budget, so it prices the prompt at the top of it.
RESERVATION_HEADROOM = 1.25


def prompt_tokens(body: dict[str, Any], size: int) -> int:
    """Prompt tokens of a request body (system prompt, messages, tools and images included), as counted before the call.

    `size` (the body's bytes) bounds the estimate from below at a sixteenth of it for bodies whose text the
    estimate does not read (unknown fields), so a reservation never prices a large body as nearly empty.
    """
    return max(estimate(body), size // 16)


def reservation_prompt_tokens(counted: int, size: int) -> int:
    """The prompt tokens a budget reservation prices: an upper bound (counted + headroom, and never less than
    the body-size estimate), so that what a request really costs stays within what it reserved."""
    return max(int(counted * RESERVATION_HEADROOM), estimate_prompt_tokens(size))
