"""Retries and fallbacks before the first byte reached the client.

A failure of the provider (connect error, timeout, 429, 5xx) is retried on the
same model with backoff (honouring Retry-After up to the policy's limit), then
moved to the next candidate of the routing decision. The candidates are the
ones that passed every step of the pipeline, residency included, so a
fallback can never leave the regions the request was allowed; the budget is
reserved again for the new model.

A provider account out of balance (`upstream_quota_exhausted`) is not retried: no wait cures it. The request
moves on to the next candidate as it would past an open circuit (the policy's `to_next_candidate` and
`when_pinned`), with reason `fallback:quota-exhausted`.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.catalog import Catalog
from gateway.errors import GatewayError
from gateway.policy import Fallbacks
from gateway.providers.upstream_errors import QUOTA_EXHAUSTED
from gateway.routing.decision import RouteDecision
from gateway.routing.route import Route


def account_exhausted(error: GatewayError) -> bool:
    """The provider's account is out of balance: every model of that provider fails the same way."""
    return error.code == QUOTA_EXHAUSTED


def failure_kind(error: GatewayError) -> str | None:
    """The policy's name for an upstream failure, or None for errors that a retry would not cure."""
    if account_exhausted(error):
        return None
    if error.code == "upstream_unreachable":
        return "connect"
    if error.code == "upstream_timeout":
        return "timeout"
    status = error.upstream_status
    if status == 429 or (status is not None and status >= 500):
        return str(status)
    return None


def upstream_error_kind(error: GatewayError) -> str | None:
    """gateway_upstream_errors_total's `kind` for a failed provider call (None: not the provider's failure)."""
    if account_exhausted(error):
        return "quota_exhausted"
    if error.code == "upstream_unreachable":
        return "connect"
    if error.code == "upstream_timeout":
        return "timeout"
    status = error.upstream_status
    if status is None:
        return None
    return "status_429" if status == 429 else "status_5xx" if status >= 500 else "status_4xx"


def retry_after_seconds(error: GatewayError) -> float | None:
    value = error.headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None  # an HTTP date: treated as "no hint"


@dataclass
class Failover:
    """Where the next attempt goes after a failure, following the policy's `fallbacks`."""

    decision: RouteDecision
    catalog: Catalog
    rules: Fallbacks
    attempt: int = 0  # retries made on the current model

    def next(self, route: Route, error: GatewayError) -> tuple[Route, float] | None:
        """(route, seconds to wait first), or None when the error should go to the client."""
        if account_exhausted(error):
            moved = self.skip(route, "fallback:quota-exhausted")
            return (moved, 0.0) if moved is not None else None
        kind = failure_kind(error)
        if kind is None or not self.rules.handles(kind):
            return None
        reason = f"fallback:upstream-{kind}" if kind.isdigit() else f"fallback:{kind}"
        wait = self.rules.backoff_s(self.attempt + 1, retry_after_seconds(error))
        if wait is not None:
            self.attempt += 1
            return Route(route.model, route.provider, route.reason), wait
        following = self.skip(route, reason)
        return (following, 0.0) if following is not None else None

    def skip(self, route: Route, reason: str = "fallback:circuit-open") -> Route | None:
        """The next candidate after `route`, if the policy lets the request move on."""
        if not self.rules.to_next_candidate or (self.decision.pinned and not self.rules.when_pinned):
            return None
        names = [m.name for m in self.decision.candidates]
        later = self.decision.candidates[names.index(route.model.name) + 1 :] if route.model.name in names else []
        if not later:
            return None
        self.attempt = 0
        model = later[0]
        return Route(model, self.catalog.provider_of(model), reason)
