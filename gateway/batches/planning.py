"""Routing a batch: each line through the team's policy, then the batch priced and fitted to the budget.

Every valid line gets the routing decision a request with its body would get (gateway.routing.decision: residency
fails closed, capabilities, context fit, the team's and key's models, the policy's aliases and named-model rule),
without a provider call. Then the policy's `batch` section applies: a line that names no model goes to the
cheapest candidate at batch prices (`prefer: cheapest`), and a line whose provider has no batch API, or cannot
finish within the window, runs interactively (`without_batch_api`). Each line is priced at its worst case (its
prompt's upper bound plus its output limit, times `n`) at the price it will run at: the batch price (the catalog's
`batch_discount`) on a batch API, the normal price otherwise. When the sum does not fit the team's or key's
budget, `batch.on_reservation_too_large` moves lines to cheaper models and lowers output limits, batch-wide,
before refusing with 429 `budget_exceeded`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from gateway.auth.principal import Principal
from gateway.batches.lines import ENDPOINTS, ParsedLine
from gateway.catalog import Catalog, ModelConfig, Provider
from gateway.errors import GatewayError
from gateway.money import usd_text
from gateway.pipeline.plan import allowed_for, residency_header, spent_fraction
from gateway.policy import Policy
from gateway.pricing import cost_nanos
from gateway.routing.counting import PromptCounts
from gateway.routing.decision import DecisionRequest, decide
from gateway.routing.route import check_limits
from gateway.state import Gateway
from gateway.store.base import Scope
from gateway.types import Usage

BATCH, INTERACTIVE, INVALID = "batch", "interactive", "invalid"
YIELD_EVERY = 100  # lines planned between two turns of the event loop


def price(model: ModelConfig, prompt_tokens: int, output_tokens: int, batch: bool) -> int:
    """Nano-dollars for this many tokens on `model`, nothing cached, at batch prices or not."""
    return cost_nanos(model, Usage(prompt_tokens=max(prompt_tokens, 0), completion_tokens=max(output_tokens, 0)), batch)


@dataclass(slots=True)
class LinePlan:
    """Where one line runs and what it may cost."""

    line: ParsedLine
    mode: str = INVALID
    model: ModelConfig | None = None
    provider: Provider | None = None
    reason: str = ""
    pinned: bool = False  # the line named a model (a named model is never swapped for a cheaper one)
    candidates: list[ModelConfig] = field(default_factory=list)  # every model the line may use, in order
    prompt_upper: int = 0  # on `model`: the count's upper bound (what is reserved)
    prompt_tokens: int = 0  # on `model`: the best guess (what explain estimates)
    counts: Mapping[str, tuple[int, int]] = field(default_factory=dict)  # model -> (best guess, upper bound)
    max_output: int = 0  # one answer's output limit reserved (the line's max_tokens, else the model's limit)
    error: GatewayError | None = None

    @property
    def answers(self) -> int:
        params = self.line.params
        return params.n if params is not None else 1

    @property
    def output(self) -> int:
        return self.max_output * self.answers

    @property
    def reserved_nanos(self) -> int:
        if self.model is None or self.mode == INVALID:
            return 0
        return price(self.model, self.prompt_upper, self.output, self.mode == BATCH)

    def expected_nanos(self, default_output: int, batch_prices: bool = True) -> int:
        """The line's expected cost: its prompt's best guess and its output limit or the usual answer's length."""
        if self.model is None or self.mode == INVALID:
            return 0
        params = self.line.params
        per_answer = min(params.max_output or default_output, self.max_output) if params is not None else 0
        if self.model.max_output_tokens == 0:
            per_answer = 0  # (embeddings)
        return price(self.model, self.prompt_tokens, per_answer * self.answers, batch_prices and self.mode == BATCH)

    def move_to(self, model: ModelConfig, catalog: Catalog, batch_windows: Mapping[str, int], window: int) -> None:
        self.model = model
        self.provider = catalog.provider_of(model)
        self.prompt_tokens, self.prompt_upper = self.counts.get(model.name, (self.prompt_tokens, self.prompt_upper))
        params = self.line.params
        limit = model.max_output_tokens
        self.max_output = min(params.max_output or limit, limit) if params is not None and limit else 0
        minimum = batch_windows.get(self.provider.name)
        self.mode = BATCH if minimum is not None and minimum <= window else INTERACTIVE


@dataclass(slots=True)
class BatchPlan:
    lines: list[LinePlan]
    window_hours: int
    steps: list[str] = field(default_factory=list)  # the budget steps applied ("cheaper_model", "lower_max_tokens")
    room_nanos: int | None = None  # what the tightest budget had left (None: no budget)
    refusal: GatewayError | None = None
    scopes: list[Scope] = field(default_factory=list)
    residency: list[str] | None = None

    @property
    def reserved_nanos(self) -> int:
        return sum(line.reserved_nanos for line in self.lines)

    def summary(self, default_output: int) -> dict[str, Any]:
        """Lines per model and mode with their estimated cost at the prices they run at and at interactive prices
        (what the batch saves), the reservation, and per-line errors counted by code."""
        models: dict[str, dict[str, Any]] = {}
        errors: dict[str, int] = {}
        expected = listed = 0
        for line in self.lines:
            if line.mode == INVALID or line.model is None:
                code = (line.error.code if line.error is not None else None) or "invalid_request"
                errors[code] = errors.get(code, 0) + 1
                continue
            entry = models.setdefault(
                line.model.name,
                {
                    "model": line.model.name,
                    "provider": line.model.provider,
                    "region": line.provider.region if line.provider else None,
                    "lines": 0,
                    "batch_api_lines": 0,
                    "interactive_lines": 0,
                    "_expected": 0,
                    "_listed": 0,
                    "_reserved": 0,
                },
            )
            entry["lines"] += 1
            entry["batch_api_lines" if line.mode == BATCH else "interactive_lines"] += 1
            cost = line.expected_nanos(default_output)
            full = line.expected_nanos(default_output, batch_prices=False)
            entry["_expected"] += cost
            entry["_listed"] += full
            entry["_reserved"] += line.reserved_nanos
            expected += cost
            listed += full
        rows = []
        for entry in models.values():
            rows.append(
                {
                    **{k: v for k, v in entry.items() if not k.startswith("_")},
                    "estimated_cost_usd": usd_text(entry["_expected"]),
                    "estimated_interactive_cost_usd": usd_text(entry["_listed"]),
                    "reserved_usd": usd_text(entry["_reserved"]),
                }
            )
        return {
            "lines": len(self.lines),
            "valid_lines": sum(1 for line in self.lines if line.mode != INVALID),
            "invalid_lines": sum(1 for line in self.lines if line.mode == INVALID),
            "errors": errors,
            "models": rows,
            "estimated_cost_usd": usd_text(expected),
            "estimated_interactive_cost_usd": usd_text(listed),
            "estimated_saving_usd": usd_text(max(listed - expected, 0)),
            "reserved_usd": usd_text(self.reserved_nanos),
            "budget_left_usd": usd_text(self.room_nanos) if self.room_nanos is not None else None,
            "budget_steps": list(self.steps),
            "window_hours": self.window_hours,
            "residency": self.residency,
        }


class BatchPlanner:
    """Plans one batch for one principal with the configuration in use now."""

    def __init__(
        self,
        gateway: Gateway,
        principal: Principal,
        headers: Mapping[str, str],
        batch_windows: Mapping[str, int],
    ) -> None:
        self.gateway = gateway
        self.principal = principal
        self.catalog = gateway.catalog
        self.policy: Policy = gateway.policy_for(gateway.policy_set(), principal.team.policy)
        self.regions = residency_header(self.catalog, headers)
        # Providers with a batch API, and the shortest window each can promise (hours).
        self.batch_windows = batch_windows

    async def plan(self, lines: list[ParsedLine], endpoint: str, window: int) -> BatchPlan:
        gateway, policy = self.gateway, self.policy
        spent = await spent_fraction(gateway.store, gateway.accounting.window, self.principal, policy)
        operation, _ = ENDPOINTS[endpoint]
        plans = []
        for line in lines:
            plans.append(await self._route(line, operation, window, spent))
            if len(plans) % YIELD_EVERY == 0:
                await asyncio.sleep(0)  # a large batch is planned in slices: the requests in flight keep being served
        out = BatchPlan(plans, window, residency=sorted(self.regions) if self.regions is not None else None)
        out.scopes = gateway.accounting.scopes(self.principal, datetime.now(UTC))
        out.room_nanos = await self._room(out.scopes)
        if out.room_nanos is not None and out.reserved_nanos > out.room_nanos:
            self._fit_budget(out)
        return out

    async def _route(self, line: ParsedLine, operation: str, window: int, spent: float | None) -> LinePlan:
        plan = LinePlan(line, error=line.error)
        params, body = line.params, line.body
        if params is None or body is None:
            return plan
        gateway, catalog = self.gateway, self.catalog
        counts = PromptCounts(gateway.tokens, catalog, body, line.size)
        expected = (
            0 if operation == "embeddings" else (params.max_output or gateway.settings.default_expected_output_tokens)
        )

        def decide_now() -> Any:
            return decide(
                DecisionRequest(
                    catalog=catalog,
                    policy=self.policy,
                    allowed=allowed_for(self.principal),
                    requested_model=params.model,
                    capabilities=frozenset({operation, *params.needs}),
                    prompt_tokens=counts.tokens,
                    expected_output=expected,
                    residency=self.regions,
                    spent_fraction=spent,
                    counts=counts.by_model,
                )
            )

        decision = decide_now()
        if decision.uncertain:
            await counts.refine(decision.uncertain)
            decision = decide_now()
        if not decision.ok:
            plan.error = decision.error or GatewayError(
                400, "No model can serve this line.", "invalid_request_error", "no_route"
            )
            return plan
        candidates = list(decision.candidates)
        fitting: list[ModelConfig] = []
        refusal: GatewayError | None = None
        for model in candidates:
            try:
                check_limits(model, params.n, params.max_output, params.max_output_param)
            except GatewayError as error:
                refusal = refusal or error
                continue
            fitting.append(model)
        if not fitting:
            plan.error = refusal
            return plan
        plan.pinned = decision.pinned
        plan.counts = {name: (count.tokens, count.upper) for name, count in counts.by_model.items()}
        if not decision.pinned and self.policy.batch.prefer == "cheapest":
            # Among the policy's own choice and the models its budget rules may move to (`budget.downgrade_to`, all
            # when null): the default policy never moves general chat to codestral, a code model, and neither does this.
            moves = self.policy.budget.downgrade_to
            pool = [m for m in fitting if m is fitting[0] or moves is None or m.name in moves]
            fitting = sorted(pool, key=lambda m: self._expected(m, plan, counts.tokens, expected, window)) + [
                m for m in fitting if m not in pool
            ]
            plan.reason = "batch:cheapest"
        else:
            plan.reason = decision.reason
        plan.candidates = fitting
        plan.move_to(fitting[0], catalog, self.batch_windows, window)
        if plan.mode == INTERACTIVE and self.policy.batch.without_batch_api == "refuse":
            plan.mode = INVALID
            plan.error = GatewayError(
                400,
                f"{fitting[0].name} at {fitting[0].provider} has no batch API that can finish within the batch's window"
                " and this team's policy does not run batch lines interactively.",
                "invalid_request_error",
                "no_batch_api",
            )
        return plan

    def _expected(self, model: ModelConfig, plan: LinePlan, tokens: int, output: int, window: int) -> int:
        provider = self.catalog.provider_of(model)
        minimum = self.batch_windows.get(provider.name)
        prompt = plan.counts.get(model.name, (tokens, tokens))[0]
        out = min(output, model.max_output_tokens) if model.max_output_tokens else 0
        return price(model, prompt, out * plan.answers, minimum is not None and minimum <= window)

    async def _room(self, scopes: list[Scope]) -> int | None:
        rooms = []
        for scope in scopes:
            if scope.budget_nanos is None:
                continue
            usage = await self.gateway.store.usage(scope.name, scope.period_start)
            rooms.append(scope.budget_nanos - usage.spent_nanos - usage.reserved_nanos)
        return max(min(rooms), 0) if rooms else None

    def _fit_budget(self, out: BatchPlan) -> None:
        """The policy's steps when the batch's worst case does not fit what the budget has left; else the refusal."""
        assert out.room_nanos is not None
        policy = self.policy
        steps = policy.batch.on_reservation_too_large
        if steps is None:
            steps = policy.budget.on_reservation_too_large
        needed = out.reserved_nanos
        for step in steps:
            if step == "cheaper_model":
                self._cheapest(out)
            elif step == "lower_max_tokens":
                self._lower_output(out, policy.budget.max_tokens_floor)
            out.steps.append(step)
            if out.reserved_nanos <= out.room_nanos:
                return
        out.refusal = self._refusal(out, needed)

    def _cheapest(self, out: BatchPlan) -> None:
        allowed = self.policy.budget.downgrade_to
        for line in out.lines:
            if line.pinned or line.model is None or line.mode == INVALID:
                continue
            pool = [m for m in line.candidates if allowed is None or m.name in allowed or m is line.model]
            best = min(pool, key=lambda m: self._worst(line, m, out.window_hours))
            if self._worst(line, best, out.window_hours) < line.reserved_nanos:
                line.move_to(best, self.catalog, self.batch_windows, out.window_hours)
                line.reason = "batch:budget-downgrade"

    def _worst(self, line: LinePlan, model: ModelConfig, window: int) -> int:
        provider = self.catalog.provider_of(model)
        minimum = self.batch_windows.get(provider.name)
        upper = line.counts.get(model.name, (line.prompt_tokens, line.prompt_upper))[1]
        params = line.line.params
        limit = model.max_output_tokens
        per_answer = min(params.max_output or limit, limit) if params is not None and limit else 0
        return price(model, upper, per_answer * line.answers, minimum is not None and minimum <= window)

    def _lower_output(self, out: BatchPlan, floor: int) -> None:
        """One output limit for every line (the largest that fits, not below `floor`), written into their bodies."""
        assert out.room_nanos is not None
        movable = [
            line for line in out.lines if line.mode != INVALID and line.model is not None and line.max_output > floor
        ]
        if not movable:
            return
        original = {id(line): line.max_output for line in movable}

        def cost_at(cap: int) -> int:
            total = 0
            for line in out.lines:
                if id(line) in original:
                    line.max_output = min(original[id(line)], cap)
                total += line.reserved_nanos
            return total

        low, high = floor, max(original.values())
        if cost_at(low) > out.room_nanos:
            cost_at(high)  # even the floor does not fit: leave the lines as they were
            return
        while low < high:  # the largest cap whose total fits
            middle = (low + high + 1) // 2
            if cost_at(middle) <= out.room_nanos:
                low = middle
            else:
                high = middle - 1
        cost_at(low)
        for line in movable:
            body, params = line.line.body, line.line.params
            if body is None or params is None or line.max_output >= original[id(line)]:
                continue
            params.max_output = line.max_output
            body[params.max_output_param] = line.max_output
            for name in ("max_tokens", "max_completion_tokens"):
                if body.get(name) is not None:
                    body[name] = line.max_output

    def _refusal(self, out: BatchPlan, needed: int) -> GatewayError:
        team = self.principal.team
        return GatewayError(
            429,
            f"Budget exceeded for team {team.name!r}: this batch needs up to ${usd_text(out.reserved_nanos)} at batch "
            f"prices (${usd_text(needed)} before the policy's steps: {', '.join(out.steps) or 'none'}) and its "
            f"budget has ${usd_text(out.room_nanos or 0)} left after spend and reservations in flight.",
            "insufficient_quota",
            "budget_exceeded",
        )
