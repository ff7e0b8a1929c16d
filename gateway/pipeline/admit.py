"""Budget admission: reserve the request's worst case on its route, or apply the policy's
`budget.on_reservation_too_large` steps (a cheaper model, a lower `max_tokens`) before refusing with 429."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from gateway.auth.principal import Principal
from gateway.budget.accounting import Ticket
from gateway.catalog import ModelConfig
from gateway.errors import GatewayError
from gateway.money import usd_text
from gateway.pipeline.plan import Plan
from gateway.pipeline.request import InferenceRequest
from gateway.pricing import estimate_nanos
from gateway.routing.route import Route, check_limits
from gateway.state import Gateway


def _is_budget_refusal(error: GatewayError) -> bool:
    return error.status == 429 and error.code == "budget_exceeded"


# A reservation at least this share of the smallest budget it is charged to is "large": its prompt is counted
# with the model's tokenizer before reserving, so the estimate's wider band does not refuse what fits.
LARGE_RESERVATION_SHARE = 0.01


def _smallest_budget(principal: Principal) -> int | None:
    budgets = [b for b in (principal.team.budget_nanos, principal.key.budget_nanos if principal.key else None) if b]
    return min(budgets) if budgets else None


def fit_output(request: InferenceRequest, model: ModelConfig) -> None:
    """For a door whose output limit is only a ceiling (`InferenceRequest.output_ceiling`): lower it to what
    `model` can produce, in the body sent and in what the budget reserves. Other doors keep their 400."""
    params, limit = request.params, model.max_output_tokens
    if not request.output_ceiling or params.max_output is None or not limit or params.max_output <= limit:
        return
    params.max_output = limit
    for name in ("max_tokens", "max_completion_tokens"):
        if request.body.get(name) is not None:
            request.body[name] = limit


def fit_limits(request: InferenceRequest, model: ModelConfig) -> None:
    """The request within `model`'s limits: its output limit lowered where it is only a ceiling (`fit_output`), then
    `n` and the output limit checked (400 naming the parameter)."""
    fit_output(request, model)
    params = request.params
    check_limits(model, params.n, params.max_output, params.max_output_param)


async def admit(
    gateway: Gateway, request: InferenceRequest, route: Route, found: Plan, dry_run: bool = False
) -> tuple[Ticket, Route]:
    """Reserve the request's worst case on the first candidate (its prompt at the upper bound of its count, plus
    `max_tokens` or the model's output limit, times `n`). When it does not fit, apply the policy's
    `budget.on_reservation_too_large` in order: `cheaper_model` (the worst case on a cheaper candidate), then
    `lower_max_tokens` (reserve what is left, down to `max_tokens_floor`, and send `max_tokens` lowered to what
    it covers), before refusing with the first refusal. A large reservation, or one refused on the estimate,
    counts the prompt with the model's tokenizer first. `dry_run`: the same steps against the budgets as they
    are now, reserving nothing (what explain predicts)."""
    fit_output(request, route.model)  # (a fallback's model may produce less than the first one)
    principal, params, body = request.principal, request.params, request.body
    accounting = gateway.accounting
    decision, policy, counts = found.decision, found.policy, found.counts
    smallest = _smallest_budget(principal)

    def worst_per_answer(model: Any) -> int:
        return max(params.max_output or model.max_output_tokens, params.min_output)

    async def attempt(model_route: Route, lower: bool) -> Ticket:
        model = model_route.model
        count = counts.by_model.get(model.name)
        prompt_upper = count.upper if count is not None else counts.tokens
        per_answer = worst_per_answer(model)
        minimum = max(min(policy.budget.max_tokens_floor, per_answer), params.min_output) * params.n if lower else None
        return await accounting.admit(
            principal,
            model,
            params.model,
            prompt_upper,
            per_answer * params.n,
            model_route.provider.timeouts.total,
            min_output=minimum,
            prompt_estimate=count.tokens if count is not None else counts.tokens,
            dry_run=dry_run,
            ledger_id=request.ledger_id,
        )

    async def counted_better(model_route: Route) -> bool:
        """Count the prompt for this model with its tokenizer, if not done yet; whether its bound went down."""
        before = counts.by_model.get(model_route.model.name)
        if before is None or not before.refinable or not counts.parts.chars:
            return False
        await counts.refine([model_route.model.name])
        return counts.by_model[model_route.model.name].upper < before.upper

    async def reserve(model_route: Route, lower: bool) -> Ticket:
        count = counts.by_model.get(model_route.model.name)
        if smallest is not None and count is not None and count.refinable:
            worst = estimate_nanos(model_route.model, count.upper, worst_per_answer(model_route.model) * params.n)
            if worst >= smallest * LARGE_RESERVATION_SHARE:
                await counted_better(model_route)
        try:
            return await attempt(model_route, lower)
        except GatewayError as error:
            if not _is_budget_refusal(error) or not await counted_better(model_route):
                raise
        return await attempt(model_route, lower)

    def lowered(ticket: Ticket, model_route: Route) -> Ticket:
        """Send the lowered max_tokens the reservation covers (when it covers less than the worst case)."""
        per_answer = ticket.output_tokens // params.n
        if per_answer < worst_per_answer(model_route.model):
            params.max_output = per_answer
            body[params.max_output_param] = per_answer
            for name in ("max_tokens", "max_completion_tokens"):  # both, when a client sent both names
                if body.get(name) is not None:
                    body[name] = per_answer
        return ticket

    try:
        return await reserve(route, lower=False), route
    except GatewayError as error:
        if not _is_budget_refusal(error):
            raise
        refusal = error
    tried: list[Route] = [route]
    for action in policy.budget.on_reservation_too_large:
        if action == "cheaper_model" and not decision.pinned:
            for model in policy.downgrades(
                found.catalog, decision.candidates, counts.tokens, decision.expected_output, route.model
            ):
                try:
                    fit_limits(request, model)
                except GatewayError:
                    continue
                cheaper = Route(model, found.catalog.provider_of(model), "budget-downgrade")
                tried.append(cheaper)
                try:
                    return await reserve(cheaper, lower=False), cheaper
                except GatewayError as error:
                    if not _is_budget_refusal(error):
                        raise
        elif action == "lower_max_tokens":
            for candidate in tried:
                try:
                    return lowered(await reserve(candidate, lower=True), candidate), candidate
                except GatewayError as error:
                    if not _is_budget_refusal(error):
                        raise
    raise refusal


async def predict_admission(gateway: Gateway, request: InferenceRequest, found: Plan) -> dict[str, Any] | None:
    """What admission would do now with the budgets as they are (explain): reserve on the chosen model, or
    move to a cheaper one / lower max_tokens (the policy's `on_reservation_too_large`), or refuse with 429."""
    if not found.decision.ok:
        return None
    route = found.decision.route(found.catalog)
    params = request.params
    asked = params.max_output
    try:
        # On a copy of the body: a lowered max_tokens is written into it.
        ticket, admitted = await admit(gateway, replace(request, body=dict(request.body)), route, found, dry_run=True)
    except GatewayError as error:
        return {"admitted": False, "status": error.status, "code": error.code, "message": error.message}
    return {
        "admitted": True,
        "model": admitted.model.name,
        "provider": admitted.provider.name,
        "region": admitted.provider.region,
        "reason": admitted.reason,
        "max_tokens": params.max_output,
        "max_tokens_lowered": params.max_output != asked,
        "reservation_usd": usd_text(ticket.reserved_nanos),
    }
