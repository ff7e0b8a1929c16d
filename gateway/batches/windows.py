"""A batch's completion window: OpenAI's `completion_window` ("24h"), and the providers' own ranges."""

from __future__ import annotations

import re

from gateway.errors import invalid_request

MAX_WINDOW_HOURS = 7 * 24  # Moonshot's longest (7 days) and Mistral's `timeout_hours` bound alike
_WINDOW = re.compile(r"^([1-9][0-9]{0,3})([hd])$")


def window_hours(text: object) -> int:
    """Hours in a window written `Nh` or `Nd` (OpenAI's only value is "24h"; Moonshot takes 12h to 7d), from 1 hour
    to 7 days; 400 otherwise. A provider that cannot finish within it has its lines run interactively."""
    if not isinstance(text, str):
        raise invalid_request(
            "'completion_window' must be a string such as '24h'.", param="completion_window", code="invalid_type"
        )
    match = _WINDOW.match(text.strip())
    hours = (int(match.group(1)) * (24 if match.group(2) == "d" else 1)) if match else 0
    if not 1 <= hours <= MAX_WINDOW_HOURS:
        raise invalid_request(
            f"Invalid 'completion_window' {text!r}: give hours or days, from '1h' to '7d' (for example '24h').",
            param="completion_window",
            code="invalid_value",
        )
    return hours
