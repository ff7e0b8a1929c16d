"""The pipeline, top to bottom: plan, admit, attempt, then settle the answer (or wrap the stream to settle it).

Authentication is the front door's guard (it builds the `InferenceRequest` for a principal); recording is the
observer's. Every front door calls `serve` and renders what it returns.
"""

from __future__ import annotations

from gateway.pipeline.admit import admit, fit_limits
from gateway.pipeline.attempts import Attempts
from gateway.pipeline.plan import Planner, plan
from gateway.pipeline.request import Answer, Context, InferenceRequest, StreamAnswer
from gateway.pipeline.settle import Settlement
from gateway.providers.base import Reply
from gateway.state import Gateway


async def serve(gateway: Gateway, request: InferenceRequest, context: Context) -> Answer | StreamAnswer:
    """Serve one request through the whole pipeline; a refusal or a failure raises its GatewayError."""
    found = await plan(Planner.of(gateway), request)
    decision = found.decision
    if decision.pinned and decision.considered:  # a named model's own limits, before any refusal of the policy's
        fit_limits(request, decision.considered[0])
    route = decision.route(found.catalog)
    fit_limits(request, route.model)
    ticket, route = await admit(gateway, request, route, found)
    settlement = Settlement(gateway, request, context.observer, found.counts)
    ticket, route, reply, started = await Attempts(gateway, request, context, found, settlement).run(ticket, route)
    found.counts.done()  # the answer has started: the prompt's collected text is no longer needed
    if isinstance(reply, Reply):
        return await settlement.answer(ticket, route, reply, started)
    return settlement.stream(ticket, route, reply, started)
