"""Choosing the model for a request.

`core` holds the building blocks (`Route`, `Allowed`, `lookup`, `check_limits`);
`pipeline` is the policy routing pipeline (`decide` -> `RouteDecision`); `counting` says how prompt tokens are
counted before the call.
"""

from gateway.routing.decision import REASON_CODES, RouteDecision, decide
from gateway.routing.route import Allowed, Route, check_limits, lookup

__all__ = ["Allowed", "Route", "check_limits", "lookup", "REASON_CODES", "RouteDecision", "decide"]
