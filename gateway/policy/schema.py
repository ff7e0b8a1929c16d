"""The policy schema: pydantic models `Policy`, `ContextRules`, `BudgetRules`, `Fallbacks` and their field types.

What it gives the routing pipeline is pure: `Policy.candidates`, `Policy.fits`, `Policy.cheapest`,
`Policy.downgrades` read nothing but their arguments.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Collection, Iterable
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StrictBool,
    StrictInt,
)

from gateway.catalog import AUTO_MODEL, Capability, Catalog, ModelConfig

DEFAULT_POLICY = "default"
# A policy name (a file name, and a team field checked by the admin API).
POLICY_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,62}$"
POLICIES_DIR_ENV = "GATEWAY_POLICIES_DIR"
CAPABILITIES: tuple[str, ...] = get_args(Capability)
FAILURE_KINDS = ("connect", "timeout", "429", "5xx")  # or one status from 500 to 599
NamedModel = Literal["honour", "reroute", "refuse"]
# An alias's target besides a catalog model: `auto` (the policy chooses) or `cheapest` (auto, cheapest first).
CHEAPEST = "cheapest"
ALIAS_KEYWORDS = (AUTO_MODEL, CHEAPEST)
Downgrade = Literal["cheaper_model", "lower_max_tokens"]


# -- schema ------------------------------------------------------------------------------------


def _failure_kind(value: Any) -> Any:
    # YAML reads an unquoted 429 or 503 as an integer.
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _known_failure(value: str) -> str:
    if value in FAILURE_KINDS or (len(value) == 3 and value.isdigit() and 500 <= int(value) <= 599):
        return value
    raise ValueError(f"unknown failure kind {value!r} (known: {', '.join(FAILURE_KINDS)}, or one status 500-599)")


FailureKind = Annotated[str, BeforeValidator(_failure_kind), AfterValidator(_known_failure)]


def _number(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"must be a number, not {value!r}")
    return value


# A number as written (80 or 2.5); shown back as an integer when it is one.
Number = Annotated[
    float, BeforeValidator(_number), PlainSerializer(lambda v: int(v) if float(v).is_integer() else float(v))
]
Percent = Annotated[Number, Field(ge=0, le=100)]
Millis = Annotated[StrictInt, Field(ge=0, le=300_000)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _glob(value: str) -> str:
    """A model-name glob (fnmatch: `*`, `?`, `[seq]`, `[!seq]`): refuse what cannot be what the author meant."""
    if not value:
        raise ValueError("an empty pattern matches no model name")
    if any(c.isspace() or not c.isprintable() for c in value):
        raise ValueError(f"{value!r} holds a space or a control character, which no model name has")
    # fnmatch reads an unclosed `[` as a literal bracket, silently: almost always a typo for a set.
    opened = value.find("[")
    while opened != -1:
        first = opened + 1 + (value[opened + 1 : opened + 2] == "!")  # `[!seq]` negates
        closed = value.find("]", first + (value[first : first + 1] == "]"))  # a `]` first is a member
        if closed == -1:
            raise ValueError(f"{value!r}: '[' at position {opened} is not closed by ']'")
        opened = value.find("[", closed + 1)
    return value


Glob = Annotated[str, AfterValidator(_glob)]


class Alias(_Strict):
    """One entry of `aliases`: a client-chosen model name matching `match` is routed as if it named `to`."""

    match: Glob
    to: str = Field(min_length=1)

    def matches(self, name: str) -> bool:
        """fnmatch, case-sensitive (model ids are: `Claude-...` is not Claude Code's)."""
        return fnmatch.fnmatchcase(name, self.match)


# Claude Code's own model ids (`claude-sonnet-4-5-20250929`, `claude-opus-4-1`, `claude-haiku-4-5-20251001`,
# `claude-3-5-haiku-20241022`, ...; /work/shared/reference/providers.md, "Claude Code": it sends its `claude-...`
# ids unless ANTHROPIC_MODEL / ANTHROPIC_SMALL_FAST_MODEL are set). Its small/fast model (haiku: titles,
# summaries) goes to the cheapest allowed model, the others to the policy's choice. The shipped policy files
# list these entries; the built-in policy (no policy directory) uses this constant.
CLAUDE_CODE_ALIASES = (Alias(match="claude-*haiku*", to=CHEAPEST), Alias(match="claude-*", to=AUTO_MODEL))


class ContextRules(_Strict):
    """Step "context fit": counted prompt tokens plus expected output against each model's window."""

    skip_if_over_window: StrictBool = True
    safety_margin_pct: Annotated[Number, Field(ge=0, le=50)] = 2.0


class BudgetRules(_Strict):
    """Step "budget": move to cheaper models near the limit; what to try before refusing a reservation."""

    prefer_cheapest_above_pct: Percent | None = None
    downgrade_to: tuple[str, ...] | None = None
    on_reservation_too_large: tuple[Downgrade, ...] = ()
    max_tokens_floor: StrictInt = Field(1024, ge=1)


class Fallbacks(_Strict):
    """Upstream failures before the first byte: retry the same model, then move to the next candidate."""

    on_failure: tuple[FailureKind, ...] = FAILURE_KINDS
    retries: StrictInt = Field(1, ge=0, le=10)
    backoff_ms: Millis = 200
    max_backoff_ms: Millis = 2000
    retry_after_max_ms: Millis = 5000
    to_next_candidate: StrictBool = True
    when_pinned: StrictBool = False

    def handles(self, kind: str) -> bool:
        """Whether a failure kind (`connect`, `timeout`, or an HTTP status as text) triggers retries and fallbacks."""
        return kind in self.on_failure or (kind.isdigit() and kind.startswith("5") and "5xx" in self.on_failure)

    def backoff_s(self, attempt: int, retry_after_s: float | None = None) -> float | None:
        """Seconds to wait before retry number `attempt` (1, 2, ...); None: do not retry this model, move on."""
        if attempt > self.retries:
            return None
        if retry_after_s is not None:
            return None if retry_after_s * 1000 > self.retry_after_max_ms else max(retry_after_s, 0.0)
        return min(self.backoff_ms * 2 ** (attempt - 1), self.max_backoff_ms) / 1000


class QueueRules(_Strict):
    """Provider queues (the catalog's `limits:`): this policy's teams' share of a provider's capacity when requests
    wait for it. Teams are served by weighted fair queueing: a team of weight 2 gets twice the turns of a team of
    weight 1 while both wait, and a team flooding the queue never starves another team's single request."""

    weight: Annotated[Number, Field(gt=0, le=1000)] = 1


BatchPrefer = Literal["cheapest", "policy"]
NoBatchApi = Literal["interactive", "refuse"]


class BatchRules(_Strict):
    """Batches (`POST /v1/batches`): how their lines are routed. Every line passes the same steps as a request
    (residency fails closed, capabilities, context fit, the team's and key's models); then `prefer: cheapest`
    orders the candidates of a line that names no model (`auto` or an alias to it) by their expected cost at batch
    prices (the catalog's `batch_discount`), `policy` keeps the policy's own order. A line whose model's provider has
    no batch API, or whose provider cannot finish within the batch's window, runs through the interactive pipeline
    at normal prices (`without_batch_api: interactive`) or fails (`refuse`). When the batch's reservation does not
    fit the budget, `on_reservation_too_large` applies, batch-wide: `cheaper_model` moves lines that name no model to
    the cheapest allowed candidate at batch prices, `lower_max_tokens` lowers each line's output limit (not below
    `budget.max_tokens_floor`); then 429 `budget_exceeded`. Default: the policy's `budget.on_reservation_too_large`."""

    prefer: BatchPrefer = "cheapest"
    without_batch_api: NoBatchApi = "interactive"
    on_reservation_too_large: tuple[Downgrade, ...] | None = None


class Policy(_Strict):
    """One policy file. Every field but `name` (which defaults to the file name) has a default."""

    name: str = Field(pattern=POLICY_PATTERN)
    description: str = ""
    models: tuple[str, ...] | None = None
    regions: tuple[str, ...] | None = None
    prefer: tuple[str, ...] = ()
    context: ContextRules = ContextRules()
    budget: BudgetRules = BudgetRules()
    named_model: NamedModel = "refuse"
    fallbacks: Fallbacks = Fallbacks()
    aliases: tuple[Alias, ...] = ()
    queue: QueueRules = QueueRules()
    batch: BatchRules = BatchRules()

    # -- helpers for the routing pipeline (pure) ------------------------------------------------

    def allows(self, catalog: Catalog, model: ModelConfig) -> bool:
        """In this policy's models and regions (teams, keys and headers may narrow further)."""
        if self.models is not None and model.name not in self.models:
            return False
        return self.regions is None or catalog.provider_of(model).region in self.regions

    def alias_for(self, name: str) -> tuple[int, Alias] | None:
        """The first entry of `aliases` matching a requested model name, with its index (None: none matches).
        The routing pipeline asks only for names that are neither `auto` nor a catalog model."""
        return next(((index, alias) for index, alias in enumerate(self.aliases) if alias.matches(name)), None)

    def allowed(self, catalog: Catalog) -> list[ModelConfig]:
        """Every model this policy allows, in catalog order."""
        return [m for m in catalog.models.values() if self.allows(catalog, m)]

    def candidates(
        self,
        catalog: Catalog,
        capability: str | Iterable[str],
        *,
        regions: Collection[str] | None = None,
        models: Collection[str] | None = None,
    ) -> list[ModelConfig]:
        """Allowed models having every capability asked for: `prefer` first, in its order, then the rest in catalog order.

        `regions` and `models` narrow further (a team's or key's lists, the residency header); they never widen.
        """
        wanted = {capability} if isinstance(capability, str) else set(capability)
        found = [
            m
            for m in self.allowed(catalog)
            if wanted <= m.capabilities
            and (regions is None or catalog.provider_of(m).region in regions)
            and (models is None or m.name in models)
        ]
        rank = {name: index for index, name in enumerate(self.prefer)}
        return sorted(found, key=lambda m: rank.get(m.name, len(rank)))  # stable: catalog order after `prefer`

    def usable_window(self, model: ModelConfig) -> int:
        """The tokens (prompt plus output) this policy lets a request use on `model`."""
        if not self.context.skip_if_over_window:
            return model.context_window
        return int(model.context_window * (100 - self.context.safety_margin_pct) / 100)

    def fits(self, model: ModelConfig, prompt_tokens: int, output_tokens: int) -> bool:
        """Context rule: True unless the prompt plus expected output exceeds the model's window (less the margin)."""
        return not self.context.skip_if_over_window or prompt_tokens + output_tokens <= self.usable_window(model)

    @staticmethod
    def expected_cost_nanos(model: ModelConfig, prompt_tokens: int, output_tokens: int) -> int:
        """What the request would cost on `model`, nothing cached (the reservation's estimate)."""
        from gateway.pricing import estimate_nanos

        return estimate_nanos(model, max(prompt_tokens, 0), max(output_tokens, 0))

    def cheapest(
        self, catalog: Catalog, candidates: Iterable[ModelConfig | str], prompt_tokens: int, output_tokens: int
    ) -> list[ModelConfig]:
        """`candidates` ordered by the expected cost of this request, cheapest first (ties keep their order)."""
        models = [c if isinstance(c, ModelConfig) else catalog.models[c] for c in candidates]
        return sorted(models, key=lambda m: self.expected_cost_nanos(m, prompt_tokens, output_tokens))

    def downgrades(
        self,
        catalog: Catalog,
        candidates: Iterable[ModelConfig | str],
        prompt_tokens: int,
        output_tokens: int,
        current: ModelConfig | str | None = None,
    ) -> list[ModelConfig]:
        """Where the budget rules may move a request: candidates in `budget.downgrade_to` (all, if it is null),
        cheaper than `current` if given, cheapest first."""
        allowed = self.budget.downgrade_to
        pool = [
            m
            for m in self.cheapest(catalog, candidates, prompt_tokens, output_tokens)
            if allowed is None or m.name in allowed
        ]
        if current is None:
            return pool
        now = current if isinstance(current, ModelConfig) else catalog.models[current]
        limit = self.expected_cost_nanos(now, prompt_tokens, output_tokens)
        return [
            m for m in pool if m.name != now.name and self.expected_cost_nanos(m, prompt_tokens, output_tokens) < limit
        ]

    def prefers_cheapest(self, spent_pct: float) -> bool:
        """Budget rule: above this share of the budget spent (0-100), prefer the cheapest candidate."""
        threshold = self.budget.prefer_cheapest_above_pct
        return threshold is not None and spent_pct > threshold

    def effective(self) -> dict[str, Any]:
        """The policy with every default filled in, as plain data (what `gateway policy show` prints)."""
        return self.model_dump(mode="json")
