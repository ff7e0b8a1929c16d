"""Attempts: the provider call, with circuits, retries and failover, until one attempt answers.

Every way an attempt ends moves its deployment's circuit (a half-open probe included): the provider failing
opens it, the provider answering (a client error is an answer) closes it, a request refused before it reached
the provider gives the probe back to the next request, and an exhausted account holds every deployment of
that provider. A failure the policy retries waits (its backoff, or the provider's Retry-After) and tries the
same model again, then the next candidate of the same decision, so a fallback never leaves the allowed
regions; each new route is admitted (its budget reserved) again. What the failure means is one table:
`gateway.routing.failover.classify`.
"""

from __future__ import annotations

import asyncio
import time

from gateway.budget.accounting import Outcome, Ticket
from gateway.errors import GatewayError
from gateway.limits.base import LimitsUnavailable
from gateway.limits.headers import describe, retry_headers
from gateway.limits.provider_queue import provider_feedback
from gateway.pipeline.admit import admit
from gateway.pipeline.plan import Plan
from gateway.pipeline.request import Context, InferenceRequest
from gateway.pipeline.settle import Settlement
from gateway.providers.base import Adapter, Reply, StreamReply
from gateway.providers.upstream_errors import quota_exhausted
from gateway.routing.circuits import deployment
from gateway.routing.failover import Failover, Failure, classify
from gateway.routing.route import Route
from gateway.state import Gateway
from gateway.types import Json


async def call(adapter: Adapter, request: InferenceRequest, route: Route, body: Json) -> Reply | StreamReply:
    """One provider call for the request's operation (`body` is this attempt's own copy)."""
    model, params = route.model, request.params
    if request.operation == "embeddings":
        return await adapter.embeddings(body, model)
    if request.operation == "fim":
        return await adapter.fim(
            body, model, stream=params.stream, include_usage=params.include_usage, reshape=request.reshape
        )
    return await adapter.chat(
        body, model, stream=params.stream, include_usage=params.include_usage, reshape=request.reshape
    )


# The route reason of a request moved to the next candidate because a route had no capacity for it in time (the
# provider's limits, or the team's limit on that model).
CAPACITY_FALLBACK = "fallback:capacity"


class Attempts:
    """The attempts of one request, from its admitted first route to the one that answers."""

    def __init__(
        self, gateway: Gateway, request: InferenceRequest, context: Context, found: Plan, settlement: Settlement
    ) -> None:
        self.gateway, self.request, self.context, self.found, self.settlement = (
            gateway,
            request,
            context,
            found,
            settlement,
        )
        self.failover = Failover(found.decision, found.catalog, found.policy.fallbacks)

    async def run(self, ticket: Ticket, route: Route) -> tuple[Ticket, Route, Reply | StreamReply, float]:
        """Call until an attempt answers: (its ticket, its route, the reply, when the call started). A failure
        that ends the request is settled (a ledger row with its status) and raised."""
        gateway, observer = self.gateway, self.context.observer
        while True:
            observer.routed(route)
            circuit = deployment(route.provider.name, route.model.name)
            if not gateway.circuits.allows(circuit):
                following = self.failover.skip(route)
                if following is None:
                    await self.settlement.settle(ticket, route, Outcome(503))
                    raise self._circuit_refusal(route, circuit)
                await self._give_back(ticket, route, following)
                ticket, route = await admit(gateway, self.request, following, self.found)
                continue
            try:
                unavailable = await self._capacity(route)
            except BaseException:
                # The client left while the request waited for capacity, or the limit store refused (fail_closed):
                # nothing reached the provider, so no ledger row; its reservation and its limits are given back.
                gateway.in_background(self._abandon(ticket))
                raise
            if unavailable is not None:  # the team's limit on this model, or the provider's capacity in time
                following = self.failover.skip(route, CAPACITY_FALLBACK)
                if following is None:
                    await self.settlement.settle(ticket, route, Outcome(429))
                    raise unavailable
                await self._give_back(ticket, route, following)
                ticket, route = await admit(gateway, self.request, following, self.found)
                continue
            observer.attempts += 1
            started = time.monotonic()
            gateway.metrics.upstream_started(route.provider.name)
            try:
                reply = await call(gateway.adapter_for(route.model), self.request, route, dict(self.request.body))
            except GatewayError as error:
                self.settlement.upstream_ended(route, started)
                failure = classify(error)
                self._failed(route, circuit, failure)
                await self._provider_said(route, error, failure)
                step = self.failover.next(route, error)
                if step is None:
                    await self.settlement.settle(ticket, route, Outcome(error.status))
                    raise
                following, wait = step
                await self._give_back(ticket, route, following)
                if wait:
                    await asyncio.sleep(wait)  # the policy's backoff (or the provider's Retry-After) before retrying
                    observer.waited_for(wait)
                ticket, route = await admit(gateway, self.request, following, self.found)  # reserved again
                continue
            except BaseException as error:
                # The client left (cancelled) or the gateway failed while the provider had the request: its outcome
                # is unknown, so a probe reopens the circuit (another probe follows the cool-down). A client that
                # left has sent its prompt to the provider, which bills it: one ledger row, estimated, status 499.
                self.settlement.upstream_ended(route, started)
                gateway.circuits.abandoned(circuit)
                left = isinstance(error, asyncio.CancelledError)
                status = (503 if self.context.shut_down() else 499) if left else 500
                gateway.in_background(self.settlement.settle(ticket, route, Outcome(status, prompt_sent=left)))
                raise
            gateway.circuits.succeeded(circuit)
            if reply.upstream_limits:  # the provider's headers may say its account has nothing left
                await self._provider_answered(route, reply.upstream_limits)
            return ticket, route, reply, started

    async def _capacity(self, route: Route) -> GatewayError | None:
        """Take what `route` needs of the rate limits (the team's on its model) and of its provider's capacity
        (waiting a fair turn); the refusal that makes the route unavailable for this request, or None."""
        limits = self.settlement.limits
        try:
            await limits.take_model(route)
        except GatewayError as error:
            if error.status != 429:
                raise
            return error
        refused = await limits.seat_for(route, self.found.policy.queue.weight)
        if refused is None:
            return None
        timeout, max_wait = refused
        if timeout.too_large:
            why = f"it needs more than the {describe(timeout.limit)} on its own"
            headers = {"x-should-retry": "false"}
        else:
            why = f"the {describe(timeout.limit)} has no room for it within {max_wait:g} s"
            headers = retry_headers(timeout.retry_after)
        return GatewayError(
            429,
            f"{route.model.name} at {route.provider.name} cannot take this request now: {why}.",
            "tokens" if timeout.limit.kind == "tpm" else "requests",
            "rate_limit_exceeded",
            headers=headers,
        )

    async def _abandon(self, ticket: Ticket) -> None:
        try:
            await self.gateway.accounting.release(ticket)
        finally:
            await self.settlement.limits.settle(None)

    async def _provider_said(self, route: Route, error: GatewayError, failure: Failure) -> None:
        """A failed call gives its seat back; a provider's 429 (or its headers saying nothing is left) holds every
        node off its capacity for the time it asked."""
        limits = self.settlement.limits
        await limits.leave_seat(0)
        if error.upstream_status is None or failure.account_exhausted:  # (no wait cures an empty account)
            return
        seconds = provider_feedback(error.upstream_status, error.upstream_limits or error.headers)
        if seconds is not None:
            try:
                await self.gateway.provider_queues.busy(route.provider, route.model, seconds)
            except LimitsUnavailable:
                pass  # (fail_open: the provider's own 429s keep coming, and are retried as before)

    async def _provider_answered(self, route: Route, headers: dict[str, str]) -> None:
        seconds = provider_feedback(200, headers)
        if seconds is not None:
            try:
                await self.gateway.provider_queues.busy(route.provider, route.model, seconds)
            except LimitsUnavailable:
                pass

    def _circuit_refusal(self, route: Route, circuit: str) -> GatewayError:
        if self.gateway.circuits.held(circuit):
            return quota_exhausted(route.provider.name)
        return GatewayError(
            503,
            f"{route.model.name} at {route.provider.name} is failing (circuit open); try again shortly.",
            "upstream_error",
            "circuit_open",
        )

    def _failed(self, route: Route, circuit: str, failure: Failure) -> None:
        gateway = self.gateway
        if failure.metric is not None:
            gateway.metrics.upstream_error(route.provider.name, failure.metric)
        if failure.account_exhausted:  # every model of this provider fails alike until the account is topped up
            provider = route.provider.name
            held = [deployment(provider, m.name) for m in self.found.catalog.models.values() if m.provider == provider]
            gateway.circuits.hold(held or [circuit], gateway.settings.quota_cooldown_seconds)
        elif failure.circuit == "failed":
            gateway.circuits.failed(circuit)
        elif failure.circuit == "answered":
            gateway.circuits.succeeded(circuit)
        else:
            gateway.circuits.unprobed(circuit)

    async def _give_back(self, ticket: Ticket, previous: Route, following: Route) -> None:
        """The request moves on to `following`: the reservation made for `previous` is released."""
        await self.gateway.accounting.release(ticket)
        if following.model.name != previous.model.name:
            self.gateway.metrics.fallback(previous.model.name, following.model.name, following.reason)
