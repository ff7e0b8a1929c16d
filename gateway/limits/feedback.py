"""What a provider's answer says about its capacity: how long to hold off before sending it more.

A 429 (Moonshot's `rate_limit_reached_error` and `engine_overloaded_error`, Mistral's "Rate limit exceeded") says
so with `Retry-After` (seconds or an HTTP date); a successful answer can say it too, with OpenAI's rate-limit
headers showing nothing left (`x-ratelimit-remaining-requests: 0` and `x-ratelimit-reset-requests: 6m0s`, the
same for tokens; Kimi's help centre names the bare `X-RateLimit-Remaining` / `X-RateLimit-Reset` pair,
kimi.com/help/kimi-api/api-rate-limits). The provider queues block the provider's limits for that long
(`ProviderQueues.busy`) so that no node sends more until then.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime

# A 429 that gives no hint: Moonshot's help centre advises waiting 1 s first (kimi.com/help/kimi-api/api-rate-limits).
DEFAULT_HOLD_SECONDS = 1.0
# A hold longer than this is cut to it: a daily quota's reset (or a bogus date) must not stop a provider for hours
# on one answer's word; a provider still refusing after it answers 429 again and is held again.
MAX_HOLD_SECONDS = 600.0
# A bare number this large is a Unix time (some providers send the reset as a timestamp), not a duration.
EPOCH_THRESHOLD = 1e9
# Exhausted counters, with the header that says when each is whole again.
_EXHAUSTED = (
    ("x-ratelimit-remaining-requests", "x-ratelimit-reset-requests"),
    ("x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens"),
    ("x-ratelimit-remaining", "x-ratelimit-reset"),
)
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|us|µs|ns|h|m|s)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def retry_after_seconds(value: str, now: float | None = None) -> float | None:
    """`Retry-After` in seconds: a number of seconds, or an HTTP date (RFC 9110); None when it is neither."""
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an HTTP date is GMT; a date without a zone is taken as GMT too
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def reset_seconds(value: str, now: float | None = None) -> float | None:
    """A reset time as providers write it: Go-style durations (`1s`, `6m0s`, `250ms`, `1h2m3.5s`), a bare
    number of seconds, or a Unix time; None when it is none of those."""
    value = value.strip()
    try:
        number = float(value)
    except ValueError:
        pass
    else:
        if number >= EPOCH_THRESHOLD:
            return max(0.0, number - (time.time() if now is None else now))
        return max(0.0, number)
    parts = _DURATION_PART.findall(value)
    if not parts or "".join(a + u for a, u in parts) != value:
        return None
    return sum(float(amount) * _UNIT_SECONDS[unit] for amount, unit in parts)


def provider_feedback(status: int, headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to hold off from a provider after this answer, or None when nothing says to.

    A 429: its `Retry-After`, else the longest reset of an exhausted counter, else `DEFAULT_HOLD_SECONDS`. Any
    other answer: the longest reset of a counter at 0 (`x-ratelimit-remaining-requests: 0` with
    `x-ratelimit-reset-requests`, the same for tokens), else None. Capped at `MAX_HOLD_SECONDS`; None for 0.

    A 429 for an account out of balance (Moonshot's `exceeded_current_quota_error`) is not a rate limit: the
    caller knows it from the body (`gateway.routing.failover.classify`) and does not ask here."""
    lowered = {name.lower(): value for name, value in headers.items()}
    hold: float | None = None
    if status == 429 and "retry-after" in lowered:
        hold = retry_after_seconds(lowered["retry-after"], now)
    if hold is None:
        for remaining, reset in _EXHAUSTED:
            if lowered.get(remaining, "").strip() in ("0", "0.0") and reset in lowered:
                seconds = reset_seconds(lowered[reset], now)
                if seconds is not None and (hold is None or seconds > hold):
                    hold = seconds
    if hold is None and status == 429:
        hold = DEFAULT_HOLD_SECONDS
    if hold is None or hold <= 0:
        return None
    return min(hold, MAX_HOLD_SECONDS)
