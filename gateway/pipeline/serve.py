"""The pipeline, top to bottom: plan, admit, attempt, then settle the answer (or wrap the stream to settle it).

Authentication is the front door's guard (it builds the `InferenceRequest` for a principal); recording is the
observer's. Every front door calls `serve` and renders what it returns.
"""

from __future__ import annotations

from gateway.errors import GatewayError
from gateway.pipeline.admit import admit, fit_limits
from gateway.pipeline.attempts import Attempts
from gateway.pipeline.limits import RequestLimits, reserved_tokens
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
    # Rate limits before the budget: a refused request (a runaway loop) writes nothing to the database.
    limits = RequestLimits(gateway, request, reserved_tokens(found, request))
    try:
        await limits.take_caller()
        ticket, route = await admit(gateway, request, route, found)
    except BaseException as error:
        await limits.settle(None)
        _with_headers(error, limits)
        raise
    settlement = Settlement(gateway, request, context.observer, found.counts, limits)
    try:
        ticket, route, reply, started = await Attempts(gateway, request, context, found, settlement).run(ticket, route)
    except BaseException as error:
        _with_headers(error, limits)  # (the attempts' failures were settled, their limits with them)
        raise
    found.counts.done()  # the answer has started: the prompt's collected text is no longer needed
    answer: Answer | StreamAnswer
    if isinstance(reply, Reply):
        answer = await settlement.answer(ticket, route, reply, started)
    else:
        answer = settlement.stream(ticket, route, reply, started)
    answer.headers.update(limits.headers)
    return answer


def _with_headers(error: BaseException, limits: RequestLimits) -> None:
    """Every response of a rate-limited caller carries the x-ratelimit-* headers, errors too."""
    if isinstance(error, GatewayError) and limits.headers:
        for name, value in limits.headers.items():
            error.headers.setdefault(name, value)
