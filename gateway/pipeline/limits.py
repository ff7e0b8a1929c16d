"""The rate limits of one request: its caller's (team, key, team on a model) and its provider's capacity.

Taken around the provider call, like the budget's ticket: the caller's limits before admission (a refused request
writes nothing to the database), the team's limit on a model and the provider's capacity for each route that is
tried (a route without capacity in time is skipped like an open circuit, so a fallback never leaves the allowed
regions), and all of it given back at settlement, where the tokens reserved are corrected to the real usage.
"""

from __future__ import annotations

import asyncio
import logging
import secrets

from gateway.errors import GatewayError
from gateway.limits.base import Grant, Limit, LimitsUnavailable, State, Want
from gateway.limits.callers import caller_limits, model_limits, wants
from gateway.limits.headers import describe, rate_headers, retry_headers, scope_kind
from gateway.limits.provider_queue import QueueTimeout, Seat, limits_for, max_wait_for
from gateway.pipeline.plan import Plan
from gateway.pipeline.request import InferenceRequest
from gateway.routing.route import Route
from gateway.state import Gateway
from gateway.types import Json

log = logging.getLogger("gateway")


def limits_unavailable(gateway: Gateway) -> GatewayError:
    """`fail_closed` and the limit store cannot be reached: refused before anything is spent or sent."""
    return GatewayError(
        503,
        "The gateway's rate-limit store cannot be reached and this gateway refuses requests until it can "
        "(GATEWAY_REDIS_FAILURE=fail_closed); nothing was sent to a provider. Try again shortly.",
        "server_error",
        "rate_limits_unavailable",
        headers=retry_headers(gateway.settings.redis_retry_seconds),
    )


def rate_limited(limit: Limit, grant: Grant, headers: dict[str, str]) -> GatewayError:
    """429 `rate_limit_exceeded` naming the limit, with when to retry (or, for a request larger than the limit
    itself, that retrying cannot help)."""
    if grant.too_large:
        message = (
            f"Request too large: it needs more than the {describe(limit)}; send a smaller request "
            "(fewer prompt tokens or a lower max_tokens), or ask an administrator to raise the limit."
        )
        return GatewayError(
            429, message, _error_type(limit), "rate_limit_exceeded", headers={**headers, "x-should-retry": "false"}
        )
    message = f"Rate limit reached: the {describe(limit)}. Retry after {max(grant.retry_after, 0.001):.3g} s."
    return GatewayError(
        429,
        message,
        _error_type(limit),
        "rate_limit_exceeded",
        headers={**headers, **retry_headers(grant.retry_after)},
    )


def reserved_tokens(found: Plan, request: InferenceRequest) -> int:
    """What a request takes of a tokens-per-minute limit before its call: its prompt's count and its expected
    output (`max_tokens`, or the default expected output) for each of its answers."""
    return found.counts.tokens + found.decision.expected_output * request.params.n


def _error_type(limit: Limit) -> str:
    """OpenAI's error `type` of a rate-limit refusal: `tokens` for a tokens-per-minute limit, else `requests`."""
    return "tokens" if limit.kind == "tpm" else "requests"


class RequestLimits:
    """What one request holds of rate limits and provider capacity, until `settle`."""

    def __init__(self, gateway: Gateway, request: InferenceRequest, tokens: int) -> None:
        self.gateway, self.request = gateway, request
        self.tokens = tokens  # reserved in every tpm limit: the prompt's count and the expected output
        self.holder = "req_" + secrets.token_hex(8)
        self.headers: dict[str, str] = {}  # the x-ratelimit-* headers every response of this request carries
        self._taken: list[Want] = []  # the caller's wants held (tpm corrected and slots released at settle)
        self._states: dict[Limit, State] = {}
        self._model: str | None = None  # the model whose team-model limits are held
        self._model_taken: list[Want] = []
        self.seat: Seat | None = None
        self._seats = 0  # seats taken so far (each attempt's has a holder of its own)
        self.settled = False

    # -- the caller's limits ------------------------------------------------------------------

    async def take_caller(self) -> None:
        """The team's and the key's limits: taken, or 429 (503 when the store cannot be reached, `fail_closed`)."""
        principal = self.request.principal
        limits = caller_limits(principal.team, principal.key)
        if limits:
            self._taken = await self._acquire(wants(limits, self.tokens))

    async def take_model(self, route: Route) -> None:
        """The team's limits on the route's model (held once per model: a retry of the same model keeps them, a
        fallback to another model gives them back and takes the other's)."""
        model = route.model.name
        if model == self._model:
            return
        await self._give_back(self._model_taken, used=0)
        self._model, self._model_taken = None, []
        limits = model_limits(self.request.principal.team, model)
        if limits:
            self._model_taken = await self._acquire(wants(limits, self.tokens))
        self._model = model

    async def _acquire(self, wanted: list[Want]) -> list[Want]:
        gateway = self.gateway
        try:
            grant = await gateway.limit_store.acquire(wanted, self.holder, gateway.leases.lease_seconds)
        except LimitsUnavailable:
            raise limits_unavailable(gateway) from None
        if grant.degraded:
            return []  # fail_open: nothing was taken, so nothing is given back
        self._states.update({state.limit: state for state in grant.states})
        self.headers = rate_headers(self._states.values())
        if not grant.ok:
            limit = grant.refused or wanted[0].limit
            gateway.metrics.rate_limited(scope_kind(limit), limit.kind)
            raise rate_limited(limit, grant, self.headers)
        gateway.leases.hold(self.holder, (want.limit for want in wanted))
        return wanted

    # -- the provider's capacity --------------------------------------------------------------

    async def seat_for(self, route: Route, weight: float) -> tuple[QueueTimeout, float] | None:
        """A seat in the route's provider capacity (waiting its fair turn), or the QueueTimeout that makes the
        route unavailable for this request (with the wait it was allowed). The previous route's seat, if any, is
        given back first."""
        await self.leave_seat(None)
        gateway = self.gateway
        max_wait = max_wait_for(route.provider, route.model, gateway.settings.provider_queue_wait_seconds)
        try:
            self.seat = await gateway.provider_queues.enter(
                route.provider,
                route.model,
                self.request.principal.team.name,
                weight,
                self.tokens,
                f"{self.holder}:{self._seats}",  # one holder per attempt: a seat given back late frees only its own
                max_wait,
                gateway.leases.lease_seconds,
            )
        except QueueTimeout as timeout:
            gateway.metrics.rate_limited(scope_kind(timeout.limit), timeout.limit.kind)
            return timeout, max_wait
        except LimitsUnavailable:
            raise limits_unavailable(gateway) from None
        self._seats += 1
        gateway.leases.hold(self.seat.holder, self.seat.limits)
        return None

    async def leave_seat(self, used_tokens: int | None) -> None:
        seat, self.seat = self.seat, None
        if seat is not None:
            self.gateway.leases.drop(seat.holder)
            try:
                await self.gateway.provider_queues.leave(seat, used_tokens)
            except LimitsUnavailable as error:
                log.warning("provider capacity not given back (the limit store cannot be reached): %s", error.detail)

    # -- the end --------------------------------------------------------------------------------

    async def settle(self, used_tokens: int | None) -> None:
        """Give everything back: the seat and the slots; tokens corrected from the reservation to `used_tokens`
        (None: the request never reached a provider, so none were used). Called once per request, from its
        settlement or from the path that refused it; a second call does nothing."""
        if self.settled:
            return
        self.settled = True
        taken, self._taken, self._model_taken = self._taken + self._model_taken, [], []
        if not taken and self.seat is None:
            return
        if self.gateway.limit_store.kind == "memory":  # nothing suspends: a cancellation cannot cut it short
            await self._finish(taken, used_tokens)
            return
        # A request cancelled while it gives back (the client left as its answer was settled) must still give
        # back: in a task of its own, shielded, or its slots would stay taken until their leases end.
        await asyncio.shield(self.gateway.in_background(self._finish(taken, used_tokens)))

    async def _finish(self, taken: list[Want], used_tokens: int | None) -> None:
        await self.leave_seat(used_tokens)
        await self._give_back(taken, used_tokens or 0)  # (one round trip for all of them)

    async def _give_back(self, taken: list[Want], used: int) -> None:
        if not taken:
            return
        slots = [want.limit for want in taken if want.limit.kind == "concurrency"]
        settles = [(want.limit, used - want.cost) for want in taken if want.limit.kind == "tpm" and used != want.cost]
        self.gateway.leases.drop(self.holder, slots)
        try:
            await self.gateway.limit_store.give_back(self.holder, slots, settles)
        except LimitsUnavailable as error:
            # The slots come back when their leases end; the tokens stay counted as reserved.
            log.warning("rate limits not settled (the limit store cannot be reached): %s", error.detail)


async def predict_limits(gateway: Gateway, request: InferenceRequest, tokens: int, route: Route | None) -> Json | None:
    """What the rate limits say of this request now (explain), taking nothing: each limit of the caller, of the
    team on the chosen model and of its provider's capacity, what is left of it and whether this request fits;
    None when no limit applies."""
    principal = request.principal
    limits = caller_limits(principal.team, principal.key)
    if route is not None:
        limits += model_limits(principal.team, route.model.name) + limits_for(route.provider, route.model)
    if not limits:
        return None
    try:
        states = await gateway.limit_store.peek(limits)
    except LimitsUnavailable:
        return {"reachable": False, "on_failure": gateway.settings.redis_failure}
    shown = []
    for want, state in zip(wants(limits, tokens), states, strict=True):
        shown.append(
            {
                "scope": want.limit.scope,
                "limit": want.limit.kind,
                "amount": want.limit.amount,
                "remaining": state.remaining,
                "reset_seconds": round(state.reset_seconds, 3),
                "takes": want.cost,
                "fits": want.cost <= state.remaining,
            }
        )
    return {"reachable": True, "tokens_reserved": tokens, "fits": all(item["fits"] for item in shown), "limits": shown}
