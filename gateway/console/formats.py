"""How numbers read on the console's pages: money as money (from exact nano-dollars, never through a float),
counts with thousands separators, times in UTC."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from gateway.money import NANOS_PER_USD

DASH = "\u2013"


def money(nanos: int | None, none: str = DASH) -> str:
    """`$1,234.56`; under $1,000 an amount with a part below a cent is written exactly (`$0.0000405`, `$74.9995824`),
    as requests' costs and what a budget has left after them often are: a small spend never disappears in rounding."""
    if nanos is None:
        return none
    sign = "-" if nanos < 0 else ""
    amount = Decimal(abs(nanos)) / NANOS_PER_USD
    cents = amount.quantize(Decimal("0.01"), ROUND_HALF_EVEN)
    if cents == amount or amount >= 1000:
        return f"{sign}${cents:,}"
    return f"{sign}${amount.quantize(Decimal('0.000000001')):,f}".rstrip("0")


def usd(value: Any, none: str = DASH) -> str:
    """Money given in USD (a number or a decimal string, as the replay report and explain give it)."""
    if value is None or value == "":
        return none
    return money(int((Decimal(str(value)) * NANOS_PER_USD).to_integral_value(ROUND_HALF_EVEN)))


def count(value: int | float | None, none: str = DASH) -> str:
    if value is None:
        return none
    return f"{value:,.0f}" if isinstance(value, float) else f"{value:,}"


def percent(value: float | None, none: str = DASH, digits: int = 1) -> str:
    """A fraction (0.25) as `25.0%`."""
    if value is None:
        return none
    return f"{value * 100:.{digits}f}%"


def millis(value: float | None, none: str = DASH) -> str:
    if value is None:
        return none
    return f"{value:,.0f} ms" if value >= 10 else f"{value:.1f} ms"


def when(seconds: float | str | None, none: str = DASH) -> str:
    """Unix seconds (or an ISO time from the admin service) as `2026-12-07 14:03:22 UTC`."""
    if seconds is None or seconds == "":
        return none
    if isinstance(seconds, str):
        moment = datetime.fromisoformat(seconds.replace("Z", "+00:00"))
    else:
        moment = datetime.fromtimestamp(seconds, UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def stamp(seconds: float | None, none: str = DASH) -> str:
    """`2026-12-07 14:03:22`: a table's time, its column saying UTC."""
    if seconds is None:
        return none
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S")


def day(seconds: float | None, none: str = DASH) -> str:
    if seconds is None:
        return none
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d")


def listed(values: list[str] | tuple[str, ...] | None, none: str = "any") -> str:
    return ", ".join(values) if values else none


FILTERS: dict[str, Callable[..., str]] = {
    "money": money,
    "usd": usd,
    "count": count,
    "percent": percent,
    "millis": millis,
    "when": when,
    "stamp": stamp,
    "day": day,
    "listed": listed,
}
