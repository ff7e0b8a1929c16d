"""Budget periods on calendar boundaries in a configured time zone."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

Period = Literal["daily", "weekly", "monthly", "total"]
PERIODS: tuple[str, ...] = ("daily", "weekly", "monthly", "total")
EPOCH_START = 0  # the "total" period starts at the epoch and never resets


def period_window(period: str, tz: str, now: datetime) -> tuple[int, int | None]:
    """(start, end) of the period holding `now`, as Unix seconds; end is None for `total`.

    Weeks start on Monday. Computed in local time and converted back, so a
    daylight-saving change moves the boundary with the wall clock.
    """
    if period == "total":
        return EPOCH_START, None
    zone = ZoneInfo(tz)
    local = now.astimezone(zone)
    if period == "daily":
        start = local.replace(hour=0, minute=0, second=0, microsecond=0)
        end = (start + timedelta(days=1)).replace(hour=0)
    elif period == "weekly":
        start = (local - timedelta(days=local.weekday())).replace(hour=0, minute=0, second=0, microsecond=0)
        end = start + timedelta(days=7)
    elif period == "monthly":
        start = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
    else:
        raise ValueError(f"unknown period {period!r}")
    # Re-attach the zone so the UTC offset is the one in force at each boundary.
    start = start.replace(tzinfo=None).replace(tzinfo=zone)
    end = end.replace(tzinfo=None).replace(tzinfo=zone)
    return int(start.timestamp()), int(end.timestamp())
