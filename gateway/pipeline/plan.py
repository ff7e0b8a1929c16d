"""Planning a request before the call: the policy's routing decision, then the budget admission.

`plan` runs the decision pipeline (no provider called, nothing reserved; the explain endpoint stops
there); `admit` reserves the budget on the chosen route and, when the reservation does not fit,
applies the policy's `budget.on_reservation_too_large` steps before refusing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from gateway.auth.principal import Principal
from gateway.budget.accounting import Ticket
from gateway.catalog import Catalog
from gateway.errors import GatewayError
from gateway.pipeline.validation import Request as RequestParams
from gateway.policy import Policy
from gateway.pricing import estimate_nanos
from gateway.routing.counting import PromptCounts
from gateway.routing.decision import DecisionRequest, RouteDecision, decide
from gateway.routing.route import Allowed, Route, check_limits
from gateway.store.base import key_scope, team_scope

if TYPE_CHECKING:
    from gateway.state import Gateway


def allowed_for(principal: Principal) -> Allowed:
    """What a team and its key may use (the key only narrows the team)."""
    team, key = principal.team, principal.key
    models = set(team.models) if team.models is not None else None
    if key is not None and key.models is not None:
        models = set(key.models) if models is None else models & set(key.models)
    regions = frozenset(team.regions) if team.regions is not None else None
    return Allowed(frozenset(models) if models is not None else None, regions)


RESIDENCY_HEADER = "x-gateway-residency"


def residency_header(gateway: Gateway, headers: Any) -> frozenset[str] | None:
    """`x-gateway-residency: eu[,onprem]`: regions the request may use (it only narrows); unknown -> 400."""
    raw = headers.get(RESIDENCY_HEADER) if headers is not None else None
    if raw is None:
        return None
    wanted = [part.strip().lower() for part in raw.split(",") if part.strip()]
    known = sorted({p.region for p in gateway.catalog.providers.values()})
    unknown = [r for r in wanted if r not in known]
    if not wanted or unknown:
        raise GatewayError(
            400,
            f"Header '{RESIDENCY_HEADER}': {'unknown region ' + repr(unknown[0]) if unknown else 'no region given'}"
            f" (known: {', '.join(known)}).",
            "invalid_request_error",
            "invalid_residency",
        )
    return frozenset(wanted)


async def spent_fraction(gateway: Gateway, principal: Principal, policy: Policy) -> float | None:
    """The larger of the team's and the key's spent share of their budget, read only when the policy needs it."""
    if policy.budget.prefer_cheapest_above_pct is None:
        return None
    team, key = principal.team, principal.key
    scopes = []
    if team.budget_nanos:
        scopes.append((team_scope(team.name), team.budget_nanos))
    if key is not None and key.budget_nanos:
        scopes.append((key_scope(key.id), key.budget_nanos))
    if not scopes:
        return None
    start, _ = gateway.accounting.window(team.period, datetime.now(UTC))
    fractions = []
    for scope, budget in scopes:
        usage = await gateway.store.usage(scope, start)
        fractions.append(usage.spent_nanos / budget)
    return max(fractions)


@dataclass
class Plan:
    policy: Policy
    decision: RouteDecision
    counts: PromptCounts  # per model; the text stays until `counts.done()` (admission may count it again)
    catalog: Catalog  # the catalog the decision was made with (a reload may swap gateway.catalog meanwhile)


async def plan(
    gateway: Gateway,
    principal: Principal,
    params: RequestParams,
    body: dict[str, Any],
    size: int,
    endpoint: str,
    headers: Any,
) -> Plan:
    """The routing decision for a request (no provider called, nothing reserved)."""
    policy = gateway.policy_for(gateway.policy_set(), principal.team.policy)
    regions = residency_header(gateway, headers)
    expected = 0 if endpoint == "embeddings" else (params.max_output or gateway.settings.default_expected_output_tokens)
    catalog = gateway.catalog
    counts = PromptCounts(gateway.tokens, catalog, body, size)
    allowed, spent = allowed_for(principal), await spent_fraction(gateway, principal, policy)

    def decide_now() -> RouteDecision:
        return decide(
            DecisionRequest(
                catalog=catalog,
                policy=policy,
                allowed=allowed,
                requested_model=params.model,
                capabilities=frozenset({endpoint, *params.needs}),
                prompt_tokens=counts.tokens,
                expected_output=expected,
                residency=regions,
                spent_fraction=spent,
                counts=counts.by_model,
            )
        )

    decision = decide_now()
    if decision.uncertain:  # near a window: count those models with their tokenizers, then decide on that
        await counts.refine(decision.uncertain)
        decision = decide_now()
    return Plan(policy, decision, counts, catalog)


def _is_budget_refusal(error: GatewayError) -> bool:
    return error.status == 429 and error.code == "budget_exceeded"


# A reservation at least this share of the smallest budget it is charged to is "large": its prompt is counted
# with the model's tokenizer before reserving, so the estimate's wider band does not refuse what fits.
LARGE_RESERVATION_SHARE = 0.01


def _smallest_budget(principal: Principal) -> int | None:
    budgets = [b for b in (principal.team.budget_nanos, principal.key.budget_nanos if principal.key else None) if b]
    return min(budgets) if budgets else None


async def admit(
    gateway: Gateway,
    principal: Principal,
    params: RequestParams,
    body: dict[str, Any],
    route: Route,
    found: Plan,
    dry_run: bool = False,
) -> tuple[Ticket, Route]:
    """Reserve the request's worst case on the first candidate (its prompt at the upper bound of its count, plus
    `max_tokens` or the model's output limit, times `n`). When it does not fit, apply the policy's
    `budget.on_reservation_too_large` in order: `cheaper_model` (the worst case on a cheaper candidate), then
    `lower_max_tokens` (reserve what is left, down to `max_tokens_floor`, and send `max_tokens` lowered to what
    it covers), before refusing with the first refusal. A large reservation, or one refused on the estimate,
    counts the prompt with the model's tokenizer first. `dry_run`: the same steps against the budgets as they
    are now, reserving nothing (what explain predicts)."""
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
                    check_limits(model, params.n, params.max_output, params.max_output_param)
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


async def predict_admission(
    gateway: Gateway, principal: Principal, params: RequestParams, body: dict[str, Any], found: Plan
) -> dict[str, Any] | None:
    """What admission would do now with the budgets as they are (explain): reserve on the chosen model, or
    move to a cheaper one / lower max_tokens (the policy's `on_reservation_too_large`), or refuse with 429."""
    from gateway.money import usd_text

    if not found.decision.ok:
        return None
    route = found.decision.route(found.catalog)
    asked = params.max_output
    try:
        ticket, admitted = await admit(gateway, principal, params, dict(body), route, found, dry_run=True)
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
