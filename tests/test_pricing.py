"""Price arithmetic: exact, with cached tokens and the batch discount, from every usage shape."""

from __future__ import annotations

from datetime import UTC
from decimal import Decimal
from fractions import Fraction
from itertools import product

import pytest

from gateway.budget.periods import period_window
from gateway.catalog import load_catalog
from gateway.money import NANOS_PER_USD, usd_text, usd_to_nanos
from gateway.pricing import cost_nanos
from gateway.providers.openai_compatible import usage_from
from gateway.types import Usage

CATALOG = load_catalog(None, {})
MEDIUM = CATALOG.models["mistral-medium-3.5"]
KIMI = CATALOG.models["kimi-k2.6"]


def exact(model, prompt: int, completion: int, cached: int, batch: bool = False) -> Fraction:
    p = model.price
    cached_price = p.cached_input if p.cached_input is not None else p.input
    usd = (
        Fraction(prompt - cached) * Fraction(p.input)
        + Fraction(cached) * Fraction(cached_price)
        + Fraction(completion) * Fraction(p.output)
    ) / 1_000_000
    if batch and p.batch_discount:
        usd *= 1 - Fraction(p.batch_discount)
    return usd


def test_published_examples() -> None:
    # 1M prompt tokens and 1M completion tokens cost exactly the list prices.
    assert cost_nanos(MEDIUM, Usage(1_000_000, 1_000_000)) == usd_to_nanos("9.00")
    assert cost_nanos(KIMI, Usage(1_000_000, 1_000_000)) == usd_to_nanos("2.40")
    # Cached input at the cached price: 900k cached of 1M on Kimi = 0.1M x 0.60 + 0.9M x 0.15.
    assert cost_nanos(KIMI, Usage(1_000_000, 0, 900_000)) == usd_to_nanos("0.195")
    # Mistral's batch discount halves everything.
    assert cost_nanos(MEDIUM, Usage(1_000_000, 1_000_000), batch=True) == usd_to_nanos("4.50")


@pytest.mark.parametrize("model", [MEDIUM, KIMI], ids=lambda m: m.name)
def test_matches_exact_fractions(model) -> None:
    for prompt, completion, cached in product(
        [0, 1, 7, 999, 123_457, 1_048_576], [0, 1, 333, 65_536], [0, 1, 5, 100_000]
    ):
        cached = min(cached, prompt)
        want = exact(model, prompt, completion, cached) * NANOS_PER_USD
        got = cost_nanos(model, Usage(prompt, completion, cached))
        assert abs(Fraction(got) - want) <= Fraction(1, 2), (prompt, completion, cached)


def test_sum_of_many_small_requests_has_no_float_drift() -> None:
    one = cost_nanos(KIMI, Usage(3, 1, 1))
    assert one == 3150  # 2 uncached x $0.60/M + 1 cached x $0.15/M + 1 completion x $1.80/M = 3,150 nano-dollars
    assert sum(cost_nanos(KIMI, Usage(3, 1, 1)) for _ in range(1_000_000)) == one * 1_000_000


def test_cached_cannot_exceed_prompt_or_go_negative() -> None:
    assert cost_nanos(KIMI, Usage(10, 0, 50)) == cost_nanos(KIMI, Usage(10, 0, 10))
    assert cost_nanos(KIMI, Usage(-5, -1, -3)) == 0


@pytest.mark.parametrize(
    "raw",
    [
        {"prompt_tokens": 90, "completion_tokens": 50, "total_tokens": 140, "cached_tokens": 90},  # older Kimi
        {
            "prompt_tokens": 90,
            "completion_tokens": 50,
            "total_tokens": 140,
            "cached_tokens": 90,
            "prompt_tokens_details": {"cached_tokens": 90},
        },  # Kimi now
        {
            "prompt_tokens": 90,
            "completion_tokens": 50,
            "total_tokens": 140,
            "prompt_tokens_details": {"cached_tokens": 90},
        },  # Mistral / OpenAI
        {
            "prompt_tokens": 90,
            "completion_tokens": 50,
            "total_tokens": 140,
            "num_cached_tokens": 90,
        },  # Mistral, other field
    ],
)
def test_every_usage_shape_prices_the_same(raw: dict) -> None:
    usage = usage_from(raw)
    assert usage is not None
    assert cost_nanos(KIMI, usage) == usd_to_nanos(Decimal("0.0000135") + Decimal("0.00009"))


def test_money_text_is_exact() -> None:
    assert (
        usd_text(1) == "0.000000001"
        and usd_text(usd_to_nanos("12.5")) == "12.500000000"
        and usd_text(-5) == "-0.000000005"
    )


def test_period_windows() -> None:
    from datetime import datetime

    now = datetime(2026, 3, 29, 12, 0, tzinfo=UTC)  # a Sunday; DST starts in Europe that night
    assert period_window("daily", "UTC", now) == (
        int(datetime(2026, 3, 29, tzinfo=UTC).timestamp()),
        int(datetime(2026, 3, 30, tzinfo=UTC).timestamp()),
    )
    start, end = period_window("weekly", "UTC", now)
    assert datetime.fromtimestamp(start, UTC) == datetime(2026, 3, 23, tzinfo=UTC) and end - start == 7 * 86400
    start, end = period_window("monthly", "UTC", datetime(2026, 12, 31, 23, 59, tzinfo=UTC))
    assert datetime.fromtimestamp(end, UTC) == datetime(2027, 1, 1, tzinfo=UTC)
    start, end = period_window("daily", "Europe/Paris", now)
    assert end - start == 23 * 3600  # the day the clocks go forward is 23 hours long
    assert period_window("total", "UTC", now) == (0, None)
