"""The policy routing pipeline: which models may serve a request, in which order, and why.

`decide(DecisionRequest) -> RouteDecision` is pure: it reads nothing but its request (the catalog, the policy,
what the team and key allow, and the request's figures), so a decision can be explained or replayed without
adapters. Steps, in this order, each a function below recording what it removed and why (with the numbers):

1. `allowed`    - the policy's `models`, narrowed by the team's and the key's models;
2. `residency`  - the policy's `regions`, narrowed by the team's regions and `x-gateway-residency`;
3. `capability` - what the request needs (chat, tools, vision, fim, embeddings);
4. `context`    - counted prompt tokens plus expected output against each model's usable window;
5. `budget`     - above `prefer_cheapest_above_pct` spent, the cheapest allowed downgrade goes first
                  (a reservation that does not fit is handled at admission, see `gateway.pipeline.admit`);
6. `preference` - `prefer`, then catalog order (the order is kept through every step).

Route reason codes (`x-gateway-route-reason`, the ledger), short and stable:

- `pinned`              a named model the policy allows, served as named;
- `preferred`           `auto`, the first choice of the policy for this request's capabilities;
- `context>WINDOW`      a model preferred over the chosen one was skipped because the prompt does not fit its
                        WINDOW tokens (e.g. `context>262144`);
- `residency:REGIONS`   residency removed a model preferred over the chosen one (e.g. `residency:eu`);
- `budget-downgrade`    the budget rules moved the request to a cheaper model (`prefer_cheapest_above_pct`, or
                        a reservation that did not fit the remaining budget: `cheaper_model`);
- `rerouted`            a named model the policy forbids, routed as `auto` because of `named_model: reroute`;
- `alias`               a name that is neither `auto` nor a catalog model, mapped by the policy's `aliases`, served
                        by the alias's first choice (what `pinned` or `preferred` says for a name the client chose;
                        the more specific codes above win, and `explain()["alias"]` names the entry).

Aliases: a requested name that is neither `auto` nor a catalog model (by name or upstream id) is looked up in the
policy's `aliases` (first match wins). Its target is routed exactly as if the client had named it: a catalog
model follows the named-model rules (`named_model` reroutes or refuses one the team may not use: an alias never
widens), `auto` is `auto`, and `cheapest` is `auto` with the candidates ordered by expected cost, cheapest first.
`RouteDecision.requested` stays the client's name (the ledger's `requested_model`). A name nothing maps is
404 `model_not_found`, saying how to map it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from gateway.catalog import AUTO_MODEL, Catalog, ModelConfig
from gateway.errors import GatewayError, invalid_request
from gateway.policy import CHEAPEST, Alias, Policy
from gateway.routing.route import Allowed, Route, lookup
from gateway.tokens import Count

REASON_CODES = ("pinned", "preferred", "context>WINDOW", "residency:REGIONS", "budget-downgrade", "rerouted", "alias")
ALIAS_REASON = "alias"
STEPS = ("allowed", "residency", "capability", "context", "budget", "preference")


def _n(value: int) -> str:
    return f"{value:,}"


@dataclass(slots=True)
class Removal:
    model: str
    reason: str  # human readable, with the numbers


@dataclass(slots=True)
class Step:
    name: str
    removed: list[Removal] = field(default_factory=list)
    note: str = ""  # what the step did besides removing (budget: moved X first)

    def as_json(self) -> dict[str, Any]:
        return {
            "step": self.name,
            "removed": [{"model": r.model, "reason": r.reason} for r in self.removed],
            "note": self.note,
        }


@dataclass(frozen=True, slots=True)
class AliasUse:
    """The entry of the policy's `aliases` that mapped the requested name: `aliases[index]`, `match` -> `to`."""

    requested: str
    index: int
    alias: Alias

    def as_json(self) -> dict[str, Any]:
        return {
            "requested": self.requested,
            "entry": f"aliases[{self.index}]",
            "match": self.alias.match,
            "to": self.alias.to,
        }

    def text(self) -> str:
        """' (requested as 'claude-opus-4-1', mapped by aliases[1] 'claude-*')': for messages about the target."""
        return f" (requested as '{self.requested}', mapped by aliases[{self.index}] '{self.alias.match}')"


@dataclass
class RouteDecision:
    """The outcome of `decide`: the candidates in order (the first serves; the rest are fallbacks), the reason
    code, the trace of every step, and the refusal when nothing is left."""

    requested: str
    policy: str
    capabilities: frozenset[str]
    prompt_tokens: int
    expected_output: int
    regions: frozenset[str] | None  # the effective residency (None: any)
    candidates: list[ModelConfig]
    reason: str
    steps: list[Step]
    pinned: bool = False
    rerouted: bool = False
    error: GatewayError | None = None
    considered: list[ModelConfig] = field(default_factory=list)  # every model looked at, in preference order
    counts: Mapping[str, Count] | None = None  # prompt tokens per model (None: `prompt_tokens` for all)
    uncertain: list[str] = field(default_factory=list)  # models decided on an estimate a tokenizer can improve
    alias: AliasUse | None = None  # the `aliases` entry that mapped `requested` (None: the name was used as it is)

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.candidates)

    def check(self) -> None:
        """Raise the refusal (404, 403 `model_not_allowed`, 400 `no_route` ...) if there is one."""
        if self.error is not None:
            raise self.error

    def route(self, catalog: Catalog) -> Route:
        self.check()
        model = self.candidates[0]
        return Route(model, catalog.provider_of(model), self.reason)

    def count_for(self, model: ModelConfig) -> Count:
        """The prompt's count for `model` (the model-neutral figure, as exact, when there is none per model)."""
        count = self.counts.get(model.name) if self.counts is not None else None
        return count if count is not None else Count(self.prompt_tokens, True, "given", 0)

    def removed_by(self) -> dict[str, tuple[str, str]]:
        """model -> (step, reason) for every model a step removed."""
        return {r.model: (s.name, r.reason) for s in self.steps for r in s.removed}

    def explain(self, catalog: Catalog, policy: Policy) -> dict[str, Any]:
        """The full decision as JSON-ready data (what `POST /v1/route/explain` returns)."""
        from gateway.money import usd_text

        removed = self.removed_by()
        rows = []
        for model in self.considered:
            provider = catalog.provider_of(model)
            step, why = removed.get(model.name, (None, None))
            count = self.count_for(model)
            cost = Policy.expected_cost_nanos(model, count.tokens, self.expected_output)
            rows.append(
                {
                    "model": model.name,
                    "provider": provider.name,
                    "region": provider.region,
                    "context_window": model.context_window,
                    "usable_window": policy.usable_window(model),
                    "prompt_tokens": count.tokens,
                    "prompt_tokens_range": [count.lower, count.upper],
                    "count_method": count.method,
                    "expected_output_tokens": self.expected_output,
                    "estimated_cost_usd": usd_text(cost),
                    "kept": model in self.candidates,
                    "rank": self.candidates.index(model) + 1 if model in self.candidates else None,
                    "removed_by": step,
                    "reason": why,
                }
            )
        chosen = self.candidates[0] if self.ok else None
        return {
            "requested_model": self.requested,
            "alias": self.alias.as_json() if self.alias is not None else None,
            "policy": self.policy,
            "capabilities": sorted(self.capabilities),
            "prompt_tokens": self.prompt_tokens,
            "expected_output_tokens": self.expected_output,
            "regions": sorted(self.regions) if self.regions is not None else None,
            "steps": [s.as_json() for s in self.steps],
            "candidates": rows,
            "order": [m.name for m in self.candidates],
            "model": chosen.name if chosen else None,
            "provider": catalog.provider_of(chosen).name if chosen else None,
            "region": catalog.provider_of(chosen).region if chosen else None,
            "reason": self.reason if chosen else None,
            "estimated_cost_usd": (
                usd_text(Policy.expected_cost_nanos(chosen, self.count_for(chosen).tokens, self.expected_output))
                if chosen
                else None
            ),
            "error": (
                {"status": self.error.status, "code": self.error.code, "message": self.error.message}
                if self.error is not None
                else None
            ),
        }


@dataclass(frozen=True, slots=True)
class DecisionRequest:
    """Everything `decide` reads: the catalog, the policy, what the team and key allow, and the request's figures.

    No adapter, store or gateway: a decision can be explained or replayed from these alone. `prompt_tokens` is
    the model-neutral count (reports, cost estimates); `counts` gives each model its own count with its error
    band (see `gateway.routing.counting`; None: `prompt_tokens` for every model). `residency` holds the regions
    of the `x-gateway-residency` header (None: no header); `spent_fraction` the larger spent share of the
    team's and the key's budgets (None: not read, or no budget).
    """

    catalog: Catalog
    policy: Policy
    allowed: Allowed
    requested_model: str
    capabilities: frozenset[str]
    prompt_tokens: int
    expected_output: int
    residency: frozenset[str] | None = None
    spent_fraction: float | None = None
    counts: Mapping[str, Count] | None = None

    def __post_init__(self) -> None:  # any collection of names in, a frozen set kept
        object.__setattr__(self, "capabilities", frozenset(self.capabilities))
        if self.residency is not None:
            object.__setattr__(self, "residency", frozenset(self.residency))


def effective_regions(policy: Policy, allowed: Allowed, header: Collection[str] | None) -> frozenset[str] | None:
    """Intersection of the policy's, the team's and the header's regions; None when none of them restricts."""
    result: frozenset[str] | None = None
    for regions in (policy.regions, allowed.regions, header):
        if regions is None:
            continue
        result = frozenset(regions) if result is None else result & frozenset(regions)
    return result


def decide(request: DecisionRequest) -> RouteDecision:
    """Apply the policy to one request. Never raises: a refusal is in `.error` (`.check()` raises it).

    Where a count's band straddles a limit, the step decides on the count's best guess and lists the model
    in `.uncertain`: the caller may count those models with their tokenizers and decide again.
    """
    decision = RouteDecision(
        request.requested_model,
        request.policy.name,
        request.capabilities,
        request.prompt_tokens,
        request.expected_output,
        effective_regions(request.policy, request.allowed, request.residency),
        [],
        "",
        [],
        counts=request.counts,
    )
    if request.requested_model == AUTO_MODEL:
        return _auto(request, decision)
    named = lookup(request.catalog, request.requested_model)
    if named is None:
        return _aliased(request, decision)
    return _named_or_rerouted(request, decision, named)


def _named_or_rerouted(request: DecisionRequest, decision: RouteDecision, named: ModelConfig) -> RouteDecision:
    settled = _named(request, decision, named)
    if settled is not None:
        return settled
    decision.rerouted = True
    return _auto(request, decision)


def _aliased(request: DecisionRequest, decision: RouteDecision) -> RouteDecision:
    """A name that is neither `auto` nor a catalog model: the policy's first matching alias says what it stands
    for, and that is routed as if the client had named it (a model: the named-model rules, never wider)."""
    found = request.policy.alias_for(request.requested_model)
    if found is None:
        decision.error = _not_found(request, decision)
        return decision
    decision.alias = AliasUse(request.requested_model, *found)
    target = decision.alias.alias.to
    if target in (AUTO_MODEL, CHEAPEST):
        return _auto(request, decision, cheapest=target == CHEAPEST)
    named = lookup(request.catalog, target)
    if named is None:  # `gateway policy check` refuses this; a policy object built in code may still hold it
        decision.error = GatewayError(
            404,
            f"The model '{target}'{decision.alias.text()} is not in the catalog: fix aliases[{found[0]}] of policy "
            f"'{request.policy.name}' (policies/{request.policy.name}.yaml).",
            "invalid_request_error",
            "model_not_found",
            "model",
        )
        return decision
    return _named_or_rerouted(request, decision, named)


# -- auto: the six steps over the whole catalog ----------------------------------------------------------------


def _auto(request: DecisionRequest, decision: RouteDecision, cheapest: bool = False) -> RouteDecision:
    """`auto` (or a rerouted named model): every step over the whole catalog, in preference order. `cheapest`
    (an alias's target): in order of the request's expected cost instead, cheapest first (ties in preference order)."""
    decision.considered = _in_preference_order(request)
    if cheapest:
        decision.considered = request.policy.cheapest(
            request.catalog, decision.considered, request.prompt_tokens, request.expected_output
        )
    allowed = _filter(request, decision, decision.considered, "allowed", _allowed)
    preferred = [m for m in allowed if decision.capabilities <= m.capabilities]  # the policy's choice for this request
    alive = _filter(request, decision, allowed, "residency", _residency)
    alive = _filter(request, decision, alive, "capability", _capability)
    alive = _filter(request, decision, alive, "context", _context)
    if cheapest:  # already cheapest first: nothing for the budget rules to move
        decision.steps.append(Step("budget", note="alias to 'cheapest': the candidates are cheapest first already"))
        moved = False
    else:
        alive, moved = _budget(request, decision, alive)
    _preference(decision, alive, "cheapest first: " if cheapest else "")
    if not alive:
        summary = _summary(decision, preferred or decision.considered)
        decision.error = _no_route(f"No model can serve this request: {summary}.")
    else:
        decision.reason = _reason_code(request, decision, preferred, moved)
    return decision


def _in_preference_order(request: DecisionRequest) -> list[ModelConfig]:
    """Every model of the catalog, `prefer` first, then catalog order (a stable sort)."""
    rank = {name: index for index, name in enumerate(request.policy.prefer)}
    return sorted(request.catalog.models.values(), key=lambda m: rank.get(m.name, len(rank)))


# Why a step removes a model (None: the model stays).
StepReason = Callable[[DecisionRequest, RouteDecision, ModelConfig], str | None]


def _filter(
    request: DecisionRequest, decision: RouteDecision, alive: list[ModelConfig], name: str, reason_of: StepReason
) -> list[ModelConfig]:
    """Run one removing step over `alive`, record it in the trace, and return what it kept (in order)."""
    step = Step(name)
    kept = []
    for model in alive:
        why = reason_of(request, decision, model)
        if why is None:
            kept.append(model)
        else:
            step.removed.append(Removal(model.name, why))
    decision.steps.append(step)
    return kept


def _allowed(request: DecisionRequest, decision: RouteDecision, model: ModelConfig) -> str | None:
    """Step 1: the policy's `models`, narrowed by the team's and the key's models."""
    if request.allowed.models is not None and model.name not in request.allowed.models:
        return "is not in the models allowed for this team or key"
    if request.policy.models is not None and model.name not in request.policy.models:
        return f"is not in the models of policy '{request.policy.name}'"
    return None


def _residency(request: DecisionRequest, decision: RouteDecision, model: ModelConfig) -> str | None:
    """Step 2: the effective regions (the policy's, the team's and the header's)."""
    regions = decision.regions
    region = request.catalog.provider_of(model).region
    if regions is None or region in regions:
        return None
    if not regions:
        return f"is excluded by residency (the policy's, team's and header's regions have none in common; it runs in {region})"
    return f"is excluded by residency {','.join(sorted(regions))} (it runs in {region})"


def _capability(request: DecisionRequest, decision: RouteDecision, model: ModelConfig) -> str | None:
    """Step 3: what the request needs (chat, tools, vision, fim, embeddings)."""
    missing = decision.capabilities - model.capabilities
    return f"lacks {', '.join(sorted(missing))}" if missing else None


def _context(request: DecisionRequest, decision: RouteDecision, model: ModelConfig) -> str | None:
    """Step 4: the model's count of the prompt plus the expected output, against its usable window."""
    policy, output = request.policy, request.expected_output
    if not policy.context.skip_if_over_window:
        return None
    count = decision.count_for(model)
    if not _exceeds(decision, model, count, policy.usable_window(model) - output):
        return None
    return (
        f"holds {_n(model.context_window)} (usable {_n(policy.usable_window(model))} with the "
        f"{policy.context.safety_margin_pct:g}% margin; needs {_n(count.tokens + output)}: "
        f"{_n(count.tokens)} prompt tokens {_HOW[count.method]} + {_n(output)} output)"
    )


def _budget(
    request: DecisionRequest, decision: RouteDecision, alive: list[ModelConfig]
) -> tuple[list[ModelConfig], bool]:
    """Step 5: above `prefer_cheapest_above_pct` spent, the cheapest allowed downgrade goes first.
    Returns the candidates and whether the step moved one."""
    policy, spent = request.policy, request.spent_fraction
    budget = Step("budget")
    decision.steps.append(budget)
    if not alive or spent is None or not policy.prefers_cheapest(spent * 100):
        return alive, False
    cheaper = policy.downgrades(request.catalog, alive, request.prompt_tokens, request.expected_output, alive[0])
    if not cheaper:
        budget.note = f"{spent * 100:.1f}% spent, but no cheaper allowed candidate"
        return alive, False
    first = cheaper[0]
    budget.note = f"{spent * 100:.1f}% of the budget spent (over {policy.budget.prefer_cheapest_above_pct:g}%): {first.name} first"
    return [first, *(m for m in alive if m.name != first.name)], True


def _preference(decision: RouteDecision, alive: list[ModelConfig], how: str = "") -> None:
    """Step 6: `prefer`, then catalog order (kept through every step); the candidates are the outcome."""
    decision.steps.append(Step("preference", note=how + " > ".join(m.name for m in alive)))
    decision.candidates = alive


def _reason_code(request: DecisionRequest, decision: RouteDecision, preferred: list[ModelConfig], moved: bool) -> str:
    """The route reason for the first candidate (see the module docstring). `preferred`: the models the
    policy allows for this request's capabilities, before residency and the context step."""
    if decision.rerouted:
        return "rerouted"
    if moved:
        return "budget-downgrade"
    chosen = decision.candidates[0]
    ahead = {m.name for m in (preferred[: preferred.index(chosen)] if chosen in preferred else preferred)}
    by_residency = [r for r in _step(decision, "residency").removed if r.model in ahead]
    by_context = [r for r in _step(decision, "context").removed if r.model in ahead]
    if by_residency and decision.regions is not None:
        return f"residency:{','.join(sorted(decision.regions))}"
    if by_context:
        return f"context>{request.catalog.models[by_context[0].model].context_window}"
    return ALIAS_REASON if decision.alias is not None else "preferred"


def _step(decision: RouteDecision, name: str) -> Step:
    return next(s for s in decision.steps if s.name == name)


def _summary(decision: RouteDecision, considered: list[ModelConfig]) -> str:
    """'prompt is 300,112 tokens (+1,024 expected output); mistral-medium-3.5 holds 262,144; kimi-k2.6 is excluded
    by residency eu'."""
    parts = []
    context = _step(decision, "context")
    if context.removed:
        first = decision.counts.get(context.removed[0].model) if decision.counts else None
        tokens = first.tokens if first is not None else decision.prompt_tokens
        parts.append(f"prompt is {_n(tokens)} tokens (+{_n(decision.expected_output)} expected output)")
    for step in decision.steps:
        for removal in step.removed:
            parts.append(f"{removal.model} {removal.reason}")
    if not considered:
        parts.append("the policy and the team allow no model")
    return "; ".join(parts)


# A client-chosen name is quoted in the 404 up to this length (the body limit is the only bound on it).
_NAME_SHOWN = 120


def _not_found(request: DecisionRequest, decision: RouteDecision) -> GatewayError:
    """A name that is neither `auto`, a catalog model nor matched by an alias: which names would work, and how to
    map this one (Claude Code and other tools send their own model ids)."""
    name = request.requested_model
    shown = name if len(name) <= _NAME_SHOWN else name[:_NAME_SHOWN] + "..."
    policy = request.policy.name
    usable = request.policy.candidates(request.catalog, (), regions=decision.regions, models=request.allowed.models)
    names = ", ".join(["auto", *(m.name for m in usable)])
    return GatewayError(
        404,
        f"The model '{shown}' does not exist or you do not have access to it: it is not a model of the catalog "
        f"and no alias of policy '{policy}' maps it. Name one of: {names}; or map this name with `aliases` in "
        f'policies/{policy}.yaml (e.g. `- {{match: "{shown}", to: auto}}`; see policies/README.md).',
        "invalid_request_error",
        "model_not_found",
        "model",
    )


def _no_route(message: str) -> GatewayError:
    return GatewayError(
        400, message, "invalid_request_error", "no_route", headers={"x-gateway-route-reason": "no_route"}
    )


_HOW = {"estimate": "(estimated)", "tekken": "(counted with Tekken)", "o200k": "(o200k count, calibrated)", "given": ""}


def _exceeds(decision: RouteDecision, model: ModelConfig, count: Count, limit: int) -> bool:
    """Whether `count` is over `limit`: on its band when the band is clear of the limit, else on its best
    guess, noting the model as uncertain when a tokenizer could count it better."""
    if count.upper <= limit:
        return False
    if count.lower > limit:
        return True
    if count.refinable and model.name not in decision.uncertain:
        decision.uncertain.append(model.name)
    return count.tokens > limit


# -- a named model ---------------------------------------------------------------------------------------------


def _named(request: DecisionRequest, decision: RouteDecision, model: ModelConfig) -> RouteDecision | None:
    """A named model that steps 1-2 allow is pinned (`named_model: honour` lets through one the policy's
    models leave out, not one the team or key does); one they refuse is a 403, unless the policy says
    `named_model: reroute`: then None, and the request is routed as `auto`."""
    policy, allowed = request.policy, request.allowed
    refusal = _allowed(request, decision, model)
    honoured = (
        refusal is not None
        and policy.named_model == "honour"
        and (allowed.models is None or model.name in allowed.models)
    )
    if refusal is None or honoured:
        refusal = _residency(request, decision, model)
    if refusal is None:
        return _with_fallbacks(request, _pinned(request, decision, model))
    if policy.named_model == "reroute":
        return None
    via = decision.alias.text() if decision.alias is not None else ""
    decision.error = GatewayError(
        403,
        f"Model '{model.name}'{via} {refusal} (policy '{policy.name}' refuses named models it does not allow).",
        "invalid_request_error",
        "model_not_allowed",
        "model",
    )
    decision.steps.append(Step("allowed", [Removal(model.name, refusal)]))
    decision.considered = [model]
    return decision


def _with_fallbacks(request: DecisionRequest, pinned: RouteDecision) -> RouteDecision:
    """`fallbacks.when_pinned`: after the named model, what `auto` would choose for the same request (every
    step applied, residency too)."""
    if pinned.ok and request.policy.fallbacks.when_pinned:
        auto = decide(replace(request, requested_model=AUTO_MODEL))
        named = pinned.candidates[0].name
        pinned.candidates += [m for m in auto.candidates if m.name != named]
        pinned.uncertain += [m for m in auto.uncertain if m not in pinned.uncertain]
    return pinned


def _pinned(request: DecisionRequest, decision: RouteDecision, model: ModelConfig) -> RouteDecision:
    """A named model that steps 1-2 allow: a missing capability is a 400; over the window it is sent anyway
    (noted in the trace), since the count before the call may be an estimate and the provider decides."""
    decision.pinned = True
    decision.considered = [model]
    decision.steps.append(Step("allowed"))
    decision.steps.append(Step("residency"))
    missing = decision.capabilities - model.capabilities
    if missing:
        capability = sorted(missing)[0]
        param = {"tools": "tools", "vision": "messages", "fim": "suffix"}.get(capability, "model")
        decision.steps.append(Step("capability", [Removal(model.name, f"lacks {', '.join(sorted(missing))}")]))
        via = decision.alias.text() if decision.alias is not None else ""
        decision.error = invalid_request(
            f"Model '{model.name}'{via} does not support {capability}"
            f" (it supports: {', '.join(sorted(model.capabilities))}).",
            param=param,
            code="unsupported_capability",
        )
        return decision
    decision.steps.append(Step("capability"))
    context = Step("context")
    count = decision.count_for(model)
    if _exceeds(decision, model, count, model.context_window) and (
        count.lower > model.context_window or count.method != "estimate"
    ):
        # The prompt alone is over the window by a count we trust (its band, or a tokenizer): refuse here
        # as the provider would, without the round trip.
        context.removed.append(
            Removal(
                model.name,
                f"holds {_n(model.context_window)}; the prompt is {_n(count.tokens)} tokens {_HOW[count.method]}",
            )
        )
        decision.steps.append(context)
        via = decision.alias.text() if decision.alias is not None else ""
        decision.error = GatewayError(
            400,
            f"This model's maximum context length is {_n(model.context_window)} tokens ({model.name}{via}); the "
            f"prompt is {_n(count.tokens)} tokens {_HOW[count.method]}. Shorten the messages, or use model 'auto'.",
            "invalid_request_error",
            "context_length_exceeded",
            "messages",
        )
        return decision
    if not request.policy.fits(model, count.tokens, decision.expected_output):
        # Pinned: the count before the call may be an estimate, so the provider has the last word.
        context.note = (
            f"{model.name} holds {_n(model.context_window)} (usable {_n(request.policy.usable_window(model))}); the "
            f"prompt is {_n(count.tokens)} tokens plus {_n(decision.expected_output)} by the gateway's count: "
            "sent anyway, as named (the provider refuses if it does not fit)"
        )
    decision.steps.append(context)
    decision.steps.append(Step("budget", note="pinned: the budget rules do not change the model"))
    decision.steps.append(Step("preference", note=model.name))
    decision.candidates = [model]
    decision.reason = ALIAS_REASON if decision.alias is not None else "pinned"
    return decision
