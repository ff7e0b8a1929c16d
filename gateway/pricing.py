"""The cost of one request, from usage and the model's prices (USD per million tokens)."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

from gateway.catalog import ModelConfig
from gateway.money import NANOS_PER_USD
from gateway.types import Usage

MILLION = Decimal(1_000_000)


def cost_nanos(model: ModelConfig, usage: Usage, batch: bool = False) -> int:
    """(prompt - cached) x input + cached x cached-input + completion x output, less the batch discount.

    Cached tokens are billed at the cached-input price when the model has one,
    else at the input price. Exact Decimal arithmetic, rounded once to the nano-dollar.
    """
    price = model.price
    cached = min(max(usage.cached_tokens, 0), max(usage.prompt_tokens, 0))
    uncached = max(usage.prompt_tokens, 0) - cached
    cached_price = price.cached_input if price.cached_input is not None else price.input
    usd = (uncached * price.input + cached * cached_price + max(usage.completion_tokens, 0) * price.output) / MILLION
    if batch and price.batch_discount:
        usd *= 1 - price.batch_discount
    return int((usd * NANOS_PER_USD).to_integral_value(ROUND_HALF_EVEN))


def estimate_nanos(model: ModelConfig, prompt_tokens: int, completion_tokens: int) -> int:
    """A reservation: nothing assumed cached, so it never under-reserves the prompt."""
    return cost_nanos(model, Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens))
