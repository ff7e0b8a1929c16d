"""Choosing the model for a request.

`route` holds the building blocks (`Route`, `Allowed`, `lookup`, `check_limits`);
`decision` is the policy routing pipeline (`decide(DecisionRequest)` -> `RouteDecision`); `counting` says how
prompt tokens are counted before the call.
"""

from gateway.routing.decision import REASON_CODES, DecisionRequest, RouteDecision, decide
from gateway.routing.route import Allowed, Route, check_limits, lookup

__all__ = ["Allowed", "Route", "check_limits", "lookup", "REASON_CODES", "DecisionRequest", "RouteDecision", "decide"]
