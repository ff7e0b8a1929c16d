"""Amounts of money are integers of nano-dollars (1e-9 USD) everywhere they are stored or summed.

Costs are computed exactly with Decimal and rounded once, per request, to the
nano-dollar; sums of integers never accumulate error. A signed 64-bit column
holds up to about 9.2 billion USD.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

NANOS_PER_USD = 1_000_000_000


def usd_to_nanos(usd: Decimal | int | str) -> int:
    return int((Decimal(usd) * NANOS_PER_USD).to_integral_value(ROUND_HALF_EVEN))


def usd_text(nanos: int) -> str:
    """A fixed-point string with 9 decimals, e.g. '0.001250000' (exact, for JSON and CSV)."""
    sign = "-" if nanos < 0 else ""
    whole, frac = divmod(abs(nanos), NANOS_PER_USD)
    return f"{sign}{whole}.{frac:09d}"


def usd_float(nanos: int) -> float:
    """For JSON consumers that want a number (and for metrics); never summed."""
    return nanos / NANOS_PER_USD
