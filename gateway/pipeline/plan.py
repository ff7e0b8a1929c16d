"""Planning a request before the call: the policy's routing decision (no provider called, nothing reserved;
the explain endpoint stops here). `gateway.pipeline.admit` reserves the budget on the route it chose."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gateway.auth.principal import Principal
from gateway.catalog import Catalog
from gateway.errors import GatewayError
from gateway.pipeline.request import InferenceRequest
from gateway.policy import Policy
from gateway.routing.counting import PromptCounts
from gateway.routing.decision import DecisionRequest, RouteDecision, decide
from gateway.routing.route import Allowed
from gateway.state import Gateway
from gateway.store import Store
from gateway.store.base import key_scope, team_scope
from gateway.tokens import TokenCounter

# The budget period holding a moment: (start, end or None), as `Accounting.window` computes it.
Window = Callable[[str, datetime], tuple[int, int | None]]


def allowed_for(principal: Principal) -> Allowed:
    """What a team and its key may use (the key only narrows the team)."""
    team, key = principal.team, principal.key
    models = set(team.models) if team.models is not None else None
    if key is not None and key.models is not None:
        models = set(key.models) if models is None else models & set(key.models)
    regions = frozenset(team.regions) if team.regions is not None else None
    return Allowed(frozenset(models) if models is not None else None, regions)


RESIDENCY_HEADER = "x-gateway-residency"


def residency_header(catalog: Catalog, headers: Any) -> frozenset[str] | None:
    """`x-gateway-residency: eu[,onprem]`: regions the request may use (it only narrows); unknown -> 400."""
    raw = headers.get(RESIDENCY_HEADER) if headers is not None else None
    if raw is None:
        return None
    wanted = [part.strip().lower() for part in raw.split(",") if part.strip()]
    known = catalog.regions
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


async def spent_fraction(store: Store, window: Window, principal: Principal, policy: Policy) -> float | None:
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
    start, _ = window(team.period, datetime.now(UTC))
    fractions = []
    for scope, budget in scopes:
        usage = await store.usage(scope, start)
        fractions.append(usage.spent_nanos / budget)
    return max(fractions)


@dataclass(frozen=True, slots=True)
class Planner:
    """What planning reads, and nothing else: the catalog, the policies, the prompt counter and the budget
    figures. A decision runs from these alone (explain, replay), without adapters, metrics or accounting."""

    catalog: Catalog
    policy_for: Callable[[str | None], Policy]  # a team's policy by name; fails closed (503 policy_not_found)
    tokens: TokenCounter
    default_expected_output: int  # priced when a request sets no max_tokens
    store: Store  # spend figures (read only when a policy's budget rules need them)
    window: Window  # the budget period holding a moment

    @classmethod
    def of(cls, gateway: Gateway) -> Planner:
        """The planner of a running gateway, as it is now (a request keeps the catalog and policy it took)."""
        policies = gateway.policy_set()
        return cls(
            gateway.catalog,
            lambda name: gateway.policy_for(policies, name),
            gateway.tokens,
            gateway.settings.default_expected_output_tokens,
            gateway.store,
            gateway.accounting.window,
        )


@dataclass
class Plan:
    policy: Policy
    decision: RouteDecision
    counts: PromptCounts  # per model; the text stays until `counts.done()` (admission may count it again)
    catalog: Catalog  # the catalog the decision was made with (a reload may swap gateway.catalog meanwhile)


async def plan(planner: Planner, request: InferenceRequest) -> Plan:
    """The routing decision for a request (no provider called, nothing reserved)."""
    principal, params, body, endpoint = request.principal, request.params, request.body, request.operation
    policy = planner.policy_for(principal.team.policy)
    catalog = planner.catalog
    regions = residency_header(catalog, request.headers)
    expected = 0 if endpoint == "embeddings" else (params.max_output or planner.default_expected_output)
    counts = PromptCounts(planner.tokens, catalog, body, request.size)
    allowed = allowed_for(principal)
    spent = await spent_fraction(planner.store, planner.window, principal, policy)

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
