"""Times typed in the console's forms: ISO dates and times, Unix seconds, or a span back from now (`30d`, `12h`,
`90m`), as the CLI's `--since` takes them."""

from __future__ import annotations

import re

from gateway.admin.service import parse_time
from gateway.errors import GatewayError

SPAN = re.compile(r"^(\d{1,6})\s*([mhdw])$")
SPAN_SECONDS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def moment(text: str, now: float, field: str) -> float | None:
    """Unix seconds for `text` (None: empty); a 400 naming `field` when it cannot be read."""
    cleaned = text.strip()
    if not cleaned:
        return None
    span = SPAN.match(cleaned.lower())
    if span is not None:
        return now - int(span.group(1)) * SPAN_SECONDS[span.group(2)]
    try:
        return float(parse_time(cleaned))
    except ValueError as exc:
        raise GatewayError(
            400,
            f"Invalid '{field}': {exc}; use a date (2026-11-01), an ISO time, Unix seconds or a span back from now "
            "(30d, 12h, 90m).",
            "invalid_request_error",
            "invalid_value",
            field,
        ) from exc
