"""What a provider's answer says about its capacity: Retry-After (seconds or an HTTP date), and OpenAI-style
rate-limit headers that show nothing left."""

from __future__ import annotations

from email.utils import formatdate

import pytest

from gateway.limits.feedback import (
    DEFAULT_HOLD_SECONDS,
    MAX_HOLD_SECONDS,
    provider_feedback,
    reset_seconds,
    retry_after_seconds,
)

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("3", 3.0),
        (" 1.5 ", 1.5),
        ("0", 0.0),
        ("-4", 0.0),
        (formatdate(NOW + 30, usegmt=True), 30.0),
        (formatdate(NOW - 30, usegmt=True), 0.0),
        ("soon", None),
        ("", None),
    ],
)
def test_retry_after(value: str, seconds: float | None) -> None:
    assert retry_after_seconds(value, NOW) == seconds


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("1s", 1.0),
        ("6m0s", 360.0),
        ("250ms", 0.25),
        ("1h2m3.5s", 3723.5),
        ("20", 20.0),
        ("0.5", 0.5),
        (str(int(NOW + 12)), 12.0),  # a Unix time
        ("1 s", None),
        ("6m0", None),
        ("later", None),
    ],
)
def test_reset(value: str, seconds: float | None) -> None:
    found = reset_seconds(value, NOW)
    assert found is None if seconds is None else found == pytest.approx(seconds)


def test_a_429_holds_off_for_its_retry_after() -> None:
    assert provider_feedback(429, {"Retry-After": "7"}, NOW) == 7.0
    assert provider_feedback(429, {"retry-after": formatdate(NOW + 20, usegmt=True)}, NOW) == pytest.approx(20.0)


def test_a_429_without_retry_after_uses_the_counters_or_a_default() -> None:
    spent = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "6m0s"}
    assert provider_feedback(429, spent, NOW) == 360.0
    assert provider_feedback(429, {}, NOW) == DEFAULT_HOLD_SECONDS
    assert provider_feedback(429, {"Retry-After": "whenever"}, NOW) == DEFAULT_HOLD_SECONDS


def test_a_success_with_a_counter_at_zero_holds_off_until_its_reset() -> None:
    headers = {
        "X-RateLimit-Remaining-Requests": "12",
        "X-RateLimit-Reset-Requests": "5s",
        "X-RateLimit-Remaining-Tokens": "0",
        "X-RateLimit-Reset-Tokens": "1.5s",
    }
    assert provider_feedback(200, headers, NOW) == 1.5
    both = {**headers, "X-RateLimit-Remaining-Requests": "0"}
    assert provider_feedback(200, both, NOW) == 5.0  # the later of the two
    assert provider_feedback(200, {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "2"}, NOW) == 2.0


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"x-ratelimit-remaining-requests": "3", "x-ratelimit-reset-requests": "1s"},
        {"x-ratelimit-remaining-requests": "0"},  # no reset: nothing to go by
        {"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "0s"},
        {"Retry-After": "30"},  # only a 429's Retry-After counts
    ],
)
def test_nothing_to_hold_off_for(headers: dict[str, str]) -> None:
    assert provider_feedback(200, headers, NOW) is None


def test_a_hold_is_bounded() -> None:
    assert provider_feedback(429, {"Retry-After": "86400"}, NOW) == MAX_HOLD_SECONDS
