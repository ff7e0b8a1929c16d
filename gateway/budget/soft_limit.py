"""Telling people a team crossed its soft limit: a log line, a counter, and an optional webhook.

The webhook is posted in the background with a timeout and retries, so it
never delays a request; it is the only outbound call besides the providers,
and only when an operator configured its URL.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp

log = logging.getLogger("gateway.budget")

ATTEMPTS = 4
TIMEOUT_SECONDS = 5.0


class SoftLimitNotifier:
    def __init__(self, webhook_url: str | None) -> None:
        self.webhook_url = webhook_url
        self.crossed: dict[str, int] = {}  # team -> times crossed since start (exported as a metric)
        self.delivered = 0
        self.failed = 0

    async def notify(self, payload: dict[str, Any]) -> None:
        team = str(payload["team"])
        self.crossed[team] = self.crossed.get(team, 0) + 1
        log.warning(
            "team %s crossed its soft limit: spent %s of %s USD (%s%%) in the %s period starting %s",
            team,
            payload["spent_usd"],
            payload["budget_usd"],
            payload["soft_limit_pct"],
            payload["period"],
            payload["period_start"],
        )
        if self.webhook_url:
            await self._post(payload)

    async def _post(self, payload: dict[str, Any]) -> None:
        delay = 0.5
        timeout = aiohttp.ClientTimeout(total=TIMEOUT_SECONDS)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            for attempt in range(1, ATTEMPTS + 1):
                try:
                    async with session.post(self.webhook_url, json=payload) as response:  # type: ignore[arg-type]
                        if response.status < 300:
                            self.delivered += 1
                            return
                        log.warning("soft-limit webhook answered %s (attempt %d)", response.status, attempt)
                except (TimeoutError, aiohttp.ClientError) as exc:
                    log.warning("soft-limit webhook failed (attempt %d): %s", attempt, type(exc).__name__)
                if attempt < ATTEMPTS:
                    await asyncio.sleep(delay)  # backoff between retries, off the request path
                    delay *= 2
        self.failed += 1
