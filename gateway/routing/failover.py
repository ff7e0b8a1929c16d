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


@dataclass(frozen=True, slots=True)
class Failure:
    """What one failed provider call means, for every part of the gateway that reacts to it (the one table)."""

    metric: str | None  # gateway_upstream_errors_total's `kind`; None: not the provider's failure
    retry: str | None  # the policy's failure kind (`connect`, `timeout`, `429`, `503`...); None: a retry cannot cure it
    # The circuit of the deployment: "failed" (the provider is failing), "answered" (it answered: a client error is
    # an answer), "account" (the provider's account is exhausted: all its deployments), "unprobed" (refused before
    # the provider was reached: a half-open probe goes to the next request).
    circuit: str

    @property
    def account_exhausted(self) -> bool:
        """The provider's account is out of balance: every model of that provider fails the same way."""
        return self.circuit == "account"


_ACCOUNT = Failure("quota_exhausted", None, "account")
_BY_CODE = {
    "upstream_unreachable": Failure("connect", "connect", "failed"),
    "upstream_timeout": Failure("timeout", "timeout", "failed"),
}
_NOT_REACHED = Failure(None, None, "unprobed")


def classify(error: GatewayError) -> Failure:
    """The meaning of a failed call. A quota exhausted is no retry's business (no wait cures it); a connect error
    or timeout, a 429 or a 5xx is retried (the policy says how); any other answer of the provider is the client's."""
    if error.code == QUOTA_EXHAUSTED:
        return _ACCOUNT
    known = _BY_CODE.get(error.code or "")
    if known is not None:
        return known
    status = error.upstream_status
    if status is None:
        return _NOT_REACHED
    if status == 429:
        return Failure("status_429", "429", "failed")
    if status >= 500:
        return Failure("status_5xx", str(status), "failed")
    return Failure("status_4xx", None, "answered")


# A stream that ended badly (`StreamOutcome.error`) -> gateway_upstream_errors_total's `kind`.
STREAM_FAILURES = {
    "stream_cut": "stream_cut",
    "timeout": "timeout",
    "upstream_error": "status_5xx",
    "malformed": "malformed",
}


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
        failure = classify(error)
        if failure.account_exhausted:
            moved = self.skip(route, "fallback:quota-exhausted")
            return (moved, 0.0) if moved is not None else None
        kind = failure.retry
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
