"""Settlement: one ledger row per request, its metrics, and the wrapper around a provider's stream.

The budget ticket is taken by admission and returned here, on the pipeline side: a complete answer is
settled before it is handed back; a stream is settled by the wrapper around the provider's events, after
the provider's last chunk and before the client gets the usage chunk and [DONE] (so the usage chunk carries
the settled cost, and a settlement that cannot be made durable ends the stream with its error instead). A
stream cut or abandoned is settled in the background for what was relayed. Providers return data and
streams; they never call back up.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import orjson

from gateway.budget.accounting import Charged, Outcome, Served, Ticket
from gateway.errors import GatewayError
from gateway.money import usd_text
from gateway.pipeline.limits import RequestLimits
from gateway.pipeline.plan import RESIDENCY_HEADER
from gateway.pipeline.request import Answer, InferenceRequest, Observer, StreamAnswer, route_headers
from gateway.providers.base import Reply, StreamReply
from gateway.providers.sse import gateway_error_event, stream_end
from gateway.replay.inputs import encode_inputs, residency_regions
from gateway.routing.counting import PromptCounts
from gateway.routing.failover import STREAM_FAILURES
from gateway.routing.route import Route
from gateway.state import Gateway
from gateway.types import Usage


class Settlement:
    """Settles one request (whichever route served it) and tells its observer and the metrics."""

    def __init__(
        self,
        gateway: Gateway,
        request: InferenceRequest,
        observer: Observer,
        counts: PromptCounts,
        limits: RequestLimits,
    ) -> None:
        self.gateway, self.request, self.observer, self.counts = gateway, request, observer, counts
        self.limits = limits
        # What the ledger stores when GATEWAY_LEDGER_CONTENT is on: the request and the answer.
        self.request_body = dict(request.body) if gateway.settings.ledger_content else None

    async def settle(self, ticket: Ticket, route: Route, outcome: Outcome) -> Charged:
        """Write the request's ledger row (charging its real cost, releasing its reservation) and its metrics, and
        give back its rate limits and provider capacity (tokens corrected to what was used)."""
        provider = route.provider
        request = self.request
        served = Served(
            provider.name,
            provider.region,
            route.reason,
            request.params.stream,
            request.endpoint,
            request.batch,
            self._inputs(),
        )
        try:
            charged = await self.gateway.accounting.settle(ticket, served, outcome)
        except BaseException:
            await self.limits.settle(None)
            raise
        used = charged.usage.total_tokens if outcome.status == 200 or outcome.prompt_sent else None
        await self.limits.settle(used)
        self.gateway.metrics.settled(
            route.model.name,
            provider.name,
            request.principal.team.name,
            charged.usage,
            charged.cost_nanos,
            endpoint=request.endpoint,
        )
        self.observer.settled(charged)
        return charged

    def _inputs(self) -> str:
        """What the routing decision read, for the ledger row (policy replay, `gateway.replay.inputs`): the prompt's
        counts as they ended (refined ones included), never its text."""
        request = self.request
        params, asked = request.params, request.asked_max_output
        expected = (
            0 if request.operation == "embeddings" else (asked or self.gateway.settings.default_expected_output_tokens)
        )
        return encode_inputs(
            self.counts.by_model,
            self.counts.tokens,
            {request.operation, *params.needs},
            asked,
            params.n,
            residency_regions(request.headers.get(RESIDENCY_HEADER)),
            expected,
        )

    def upstream_ended(self, route: Route, started: float) -> None:
        seconds = time.monotonic() - started
        self.gateway.metrics.upstream_ended(route.provider.name, seconds)
        self.observer.waited_for(seconds)

    def _content(self, response: Any) -> str | None:
        if self.request_body is None:
            return None
        return orjson.dumps({"request": self.request_body, "response": response}).decode()

    def _observe(self, route: Route, usage: Usage | None) -> None:
        """Our prompt count against the provider's: calibration and per-model error statistics."""
        counted = self.counts.by_model.get(route.model.name)
        if counted is not None and usage is not None and usage.prompt_tokens > 0:
            self.gateway.tokens.observe(route.model.name, counted, usage.prompt_tokens)
            self.gateway.metrics.estimate_ratio(route.model.name, counted.tokens, usage.prompt_tokens)

    async def answer(self, ticket: Ticket, route: Route, reply: Reply, started: float) -> Answer:
        """A complete answer: settled, then handed back with the gateway's headers and its cost."""
        self.upstream_ended(route, started)
        content = self._content(orjson.loads(reply.body)) if self.request_body is not None else None
        charged = await self.settle(ticket, route, Outcome(200, reply.usage, content=content))
        self._observe(route, reply.usage)
        headers = route_headers(route)
        headers["x-gateway-cost-usd"] = usd_text(charged.cost_nanos)
        return Answer(reply.body, headers)

    def stream(self, ticket: Ticket, route: Route, reply: StreamReply, started: float) -> StreamAnswer:
        """A stream, wrapped so that it is settled however it ends."""
        if self.request_body is not None:
            reply.outcome.transcript = []
        return StreamAnswer(self._settled_events(ticket, route, reply, started), route_headers(route))

    def _streamed_content(self, reply: StreamReply) -> str | None:
        transcript = reply.outcome.transcript
        return self._content("".join(transcript)) if transcript is not None else None

    async def _settled_events(
        self, ticket: Ticket, route: Route, reply: StreamReply, started: float
    ) -> AsyncIterator[bytes]:
        outcome, params = reply.outcome, self.request.params
        try:
            async for chunk in reply.events:
                yield chunk
            if outcome.completed:
                try:
                    done = Outcome(
                        200, outcome.usage, ttft=outcome.first_chunk_at, content=self._streamed_content(reply)
                    )
                    charged = await self.settle(ticket, route, done)
                except GatewayError as error:  # the ledger could not take it: the answer is not vouched for
                    outcome.error = "unrecorded"
                    yield gateway_error_event(error)
                    return
                self._observe(route, outcome.usage)
                extra = charged.x_gateway(route.model.name, route.provider.name, route.reason)
                yield stream_end(outcome, params.include_usage, self.request.reshape, extra)
        finally:
            self.upstream_ended(route, started)
            self.observer.first_token_at = outcome.first_chunk_at
            metrics = self.gateway.metrics
            if outcome.malformed_chunks:
                metrics.upstream_error(route.provider.name, "malformed")
            kind = STREAM_FAILURES.get(outcome.error or "")
            if kind is not None and kind != "malformed":
                metrics.upstream_error(route.provider.name, kind)
            if not ticket.settled:
                # Cut or abandoned: bill what was relayed (estimated if the provider never sent usage).
                self.observer.retain()
                self.gateway.in_background(self._settle_cut(ticket, route, reply))

    async def _settle_cut(self, ticket: Ticket, route: Route, reply: StreamReply) -> None:
        outcome = reply.outcome
        try:
            relayed = Outcome(
                200, outcome.usage, outcome.completion_chars, outcome.first_chunk_at, self._streamed_content(reply)
            )
            await self.settle(ticket, route, relayed)
        finally:
            self.observer.release()
