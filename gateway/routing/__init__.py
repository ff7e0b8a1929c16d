"""Choosing the model for a request.

`core` holds the building blocks (`Route`, `Allowed`, `lookup`, `check_limits`, and the policy-free `choose`);
`pipeline` is the policy routing pipeline (`decide` -> `RouteDecision`); `counting` says how prompt tokens are
counted before the call.
"""

from gateway.routing.core import Allowed, Route, check_limits, choose, lookup
from gateway.routing.pipeline import REASON_CODES, RouteDecision, decide

__all__ = ["Allowed", "Route", "check_limits", "choose", "lookup", "REASON_CODES", "RouteDecision", "decide"]
