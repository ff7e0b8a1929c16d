"""Planning a request before the call: the policy's routing decision, then the budget admission.

`plan` runs the decision pipeline (no provider called, nothing reserved; the explain endpoint stops
there); `admit` reserves the budget on the chosen route and, when the reservation does not fit,
applies the policy's `budget.on_reservation_too_large` steps before refusing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from gateway.auth import Principal
from gateway.config import Catalog
from gateway.errors import GatewayError
from gateway.policy import Policy
from gateway.routing.core import Allowed, Route, check_limits
from gateway.routing.counting import PromptCounts, reservation_prompt_tokens
from gateway.routing.pipeline import RouteDecision, decide
from gateway.spend.accounting import Ticket
from gateway.store.base import key_scope, team_scope
from gateway.validation import Request as RequestParams

if TYPE_CHECKING:
    from gateway.core import Gateway


def allowed_for(principal: Principal) -> Allowed:
    """What a team and its key may use (the key only narrows the team)."""
    team, key = principal.team, principal.key
    models = set(team.models) if team.models is not None else None
    if key is not None and key.models is not None:
        models = set(key.models) if models is None else models & set(key.models)
    regions = frozenset(team.regions) if team.regions is not None else None
    return Allowed(frozenset(models) if models is not None else None, regions)


RESIDENCY_HEADER = "x-gateway-residency"


def residency_header(gateway: "Gateway", headers: Any) -> frozenset[str] | None:
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


async def spent_fraction(gateway: "Gateway", principal: Principal, policy: Policy) -> float | None:
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
    start, _ = gateway.accounting.window(team.period, datetime.now(timezone.utc))
    fractions = []
    for scope, budget in scopes:
        usage = await gateway.store.usage(scope, start)
        fractions.append(usage.spent_nanos / budget)
    return max(fractions)


@dataclass
class Plan:
    policy: Policy
    decision: RouteDecision
    reserve_prompt_tokens: int  # the prompt as the budget reservation prices it (an upper bound)
    counts: PromptCounts
    catalog: Catalog  # the catalog the decision was made with (a reload may swap gateway.catalog meanwhile)


async def plan(
    gateway: "Gateway", principal: Principal, params: RequestParams, body: dict[str, Any], size: int, endpoint: str,
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
            catalog, policy, allowed, params.model, {endpoint, *params.needs}, counts.tokens, expected, regions,
            spent, counts.by_model,
        )  # fmt: skip

    decision = decide_now()
    if decision.uncertain:  # near a window: count those models with their tokenizers, then decide on that
        await counts.refine(decision.uncertain)
        decision = decide_now()
    reserve = reservation_prompt_tokens(counts.tokens, size, counts.upper(m.name for m in decision.candidates))
    counts.done()  # the counts stay (calibration after the call); the request's text must not live as long
    return Plan(policy, decision, reserve, counts, catalog)


def _is_budget_refusal(error: GatewayError) -> bool:
    return error.status == 429 and error.code == "budget_exceeded"


async def admit(
    gateway: "Gateway", principal: Principal, params: RequestParams, body: dict[str, Any], route: Route, found: Plan,
    dry_run: bool = False,
) -> tuple[Ticket, Route]:
    """Reserve the budget on the first candidate; when it does not fit, apply `budget.on_reservation_too_large`
    in order (`cheaper_model`, `lower_max_tokens`) before refusing with the first refusal. `dry_run`: the same
    steps against the budgets as they are now, reserving nothing (what explain predicts)."""
    accounting = gateway.accounting
    decision, policy = found.decision, found.policy
    prompt = found.reserve_prompt_tokens

    async def attempt(model_route: Route, max_output: int | None) -> Ticket:
        return await accounting.admit(
            principal, model_route.model, params.model, prompt, max_output, model_route.provider.timeouts.total,
            dry_run=dry_run,
        )

    try:
        return await attempt(route, params.max_output), route
    except GatewayError as error:
        if not _is_budget_refusal(error):
            raise
        refusal = error
    tried: list[Route] = [route]
    for action in policy.budget.on_reservation_too_large:
        if action == "cheaper_model" and not decision.pinned:
            for model in policy.downgrades(found.catalog, decision.candidates, prompt, decision.expected_output, route.model):
                try:
                    check_limits(model, params.n, params.max_output, params.max_output_param)
                except GatewayError:
                    continue
                cheaper = Route(model, found.catalog.provider_of(model), "budget-downgrade")
                tried.append(cheaper)
                try:
                    return await attempt(cheaper, params.max_output), cheaper
                except GatewayError as error:
                    if not _is_budget_refusal(error):
                        raise
        elif action == "lower_max_tokens":
            floor = policy.budget.max_tokens_floor
            for candidate in tried:
                current = accounting.estimator.expected(candidate.model.name, params.max_output, candidate.model.max_output_tokens)
                lowered = current
                while lowered > floor:
                    lowered = max(floor, lowered // 2)
                    try:
                        ticket = await attempt(candidate, lowered)
                    except GatewayError as error:
                        if not _is_budget_refusal(error):
                            raise
                        continue
                    params.max_output = lowered
                    body[params.max_output_param] = lowered
                    return ticket, candidate
    raise refusal


async def predict_admission(
    gateway: "Gateway", principal: Principal, params: RequestParams, body: dict[str, Any], found: Plan
) -> dict[str, Any] | None:
    """What admission would do now with the budgets as they are (explain): reserve on the chosen model, or
    move to a cheaper one / lower max_tokens (the policy's `on_reservation_too_large`), or refuse with 429."""
    from gateway.spend.money import usd_text

    if not found.decision.ok:
        return None
    route = found.decision.route(found.catalog)
    asked = params.max_output
    try:
        ticket, admitted = await admit(gateway, principal, params, dict(body), route, found, dry_run=True)
    except GatewayError as error:
        return {"admitted": False, "status": error.status, "code": error.code, "message": error.message}
    return {
        "admitted": True, "model": admitted.model.name, "provider": admitted.provider.name,
        "region": admitted.provider.region, "reason": admitted.reason,
        "max_tokens": params.max_output, "max_tokens_lowered": params.max_output != asked,
        "reservation_usd": usd_text(ticket.reserved_nanos),
    }  # fmt: skip
