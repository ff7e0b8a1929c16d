"""Routing policies: declarative YAML files (`policies/NAME.yaml`), their schema, loading, validation and reload.

A team names its policy (`default` unless it names another). A policy says which
models the team may use, in which regions, in what order of preference, what to
do when a prompt does not fit a model's window or the budget runs low, what to
do with a request that names a model the policy forbids, and when to retry and
fall back. `policies/README.md` documents every field.

This module only describes and checks policies; the routing pipeline applies
them. What it gives the pipeline is pure: `Policy.candidates`, `Policy.fits`,
`Policy.cheapest`, `Policy.downgrades` read nothing but their arguments.
`PolicyWatcher` keeps the last good `PolicySet` and swaps in a new one only
when the whole directory validates, so a broken edit never replaces a working
version (in-flight requests keep the `Policy` object they started with).

Problems name the file and the field path, as `gateway.config` does for the
catalog: `policies/x.yaml: prefer[1]: unknown model 'gpt-5' (known: ...) (line 7)`.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Callable, Collection, Iterable, Iterator, Literal, Sequence, get_args

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StrictBool,
    StrictInt,
    ValidationError,
)

from gateway.config import Capability, Catalog, ConfigError, ModelConfig, _loc
from gateway.management import POLICY_PATTERN

log = logging.getLogger("gateway.policy")

DEFAULT_POLICY = "default"
POLICIES_DIR_ENV = "GATEWAY_POLICIES_DIR"
CAPABILITIES: tuple[str, ...] = get_args(Capability)
FAILURE_KINDS = ("connect", "timeout", "429", "5xx")  # or one status from 500 to 599
NamedModel = Literal["honour", "reroute", "refuse"]
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
Number = Annotated[float, BeforeValidator(_number), PlainSerializer(lambda v: int(v) if float(v).is_integer() else float(v))]
Percent = Annotated[Number, Field(ge=0, le=100)]
Millis = Annotated[StrictInt, Field(ge=0, le=300_000)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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

    # -- helpers for the routing pipeline (pure) ------------------------------------------------

    def allows(self, catalog: Catalog, model: ModelConfig) -> bool:
        """In this policy's models and regions (teams, keys and headers may narrow further)."""
        if self.models is not None and model.name not in self.models:
            return False
        return self.regions is None or catalog.provider_of(model).region in self.regions

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
        from gateway.spend.pricing import estimate_nanos

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
        pool = [m for m in self.cheapest(catalog, candidates, prompt_tokens, output_tokens) if allowed is None or m.name in allowed]
        if current is None:
            return pool
        now = current if isinstance(current, ModelConfig) else catalog.models[current]
        limit = self.expected_cost_nanos(now, prompt_tokens, output_tokens)
        return [m for m in pool if m.name != now.name and self.expected_cost_nanos(m, prompt_tokens, output_tokens) < limit]

    def prefers_cheapest(self, spent_pct: float) -> bool:
        """Budget rule: above this share of the budget spent (0-100), prefer the cheapest candidate."""
        threshold = self.budget.prefer_cheapest_above_pct
        return threshold is not None and spent_pct > threshold

    def effective(self) -> dict[str, Any]:
        """The policy with every default filled in, as plain data (what `gateway policy show` prints)."""
        return self.model_dump(mode="json")


# -- problems ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding about one file: an error (the file is not used) or a warning (it is, but look)."""

    source: str
    field: str
    message: str
    warning: bool = False
    line: int | None = None

    @property
    def detail(self) -> str:
        """Without the file name: `prefer[1]: unknown model 'x' (known: ...) (line 7)`."""
        where = f" (line {self.line})" if self.line else ""
        return f"{'warning: ' if self.warning else ''}{self.field}: {self.message}{where}"

    def __str__(self) -> str:
        return f"{self.source}: {self.detail}"


class PolicyError(ConfigError):
    """A policy file that cannot be used; `str()` has one line per problem, each naming the file and the field."""

    def __init__(self, source: str, problems: Sequence[Problem]) -> None:
        self.findings = list(problems)
        errors = [p for p in problems if not p.warning]
        # Like ConfigError: `problems` are relative to `source`; those of other files (a directory's) keep their file.
        self.source = source
        self.problems = [p.detail if p.source == source else str(p) for p in errors]
        Exception.__init__(self, "\n".join(str(p) for p in errors))


class _Loader(yaml.SafeLoader):
    """Safe YAML that refuses a key given twice in one mapping (PyYAML keeps the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)  # type: ignore[no-untyped-call]
            if not isinstance(key, (str, int, float, bool)) and key is not None:
                continue  # unhashable keys: the base class reports them
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"field {key!r} is given twice in this mapping", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _line_of(node: yaml.Node | None, loc: Sequence[Any]) -> int | None:
    """The line (1-based) of the YAML node at `loc`, or of its nearest existing parent."""
    if node is None:
        return None
    for part in loc:
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            found = next((v for k, v in node.value if getattr(k, "value", None) == part), None)
            if found is None:  # a missing field: the mapping that lacks it
                break
            node = found
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            node = node.value[part]
        elif isinstance(part, str) and part.startswith(("function-", "literal_", "value_")):
            continue
        else:
            break
    return node.start_mark.line + 1


def _fields_at(loc: Sequence[Any]) -> list[str]:
    """The field names allowed in the mapping an `extra_forbidden` error points into."""
    cls: type[BaseModel] = Policy
    for part in loc[:-1]:
        info = cls.model_fields.get(part) if isinstance(part, str) else None
        annotation = getattr(info, "annotation", None)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            cls = annotation
        else:
            return []
    return list(cls.model_fields)


def _schema_problems(exc: ValidationError) -> list[tuple[tuple[Any, ...], str]]:
    out = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        if err["type"] == "extra_forbidden":
            msg = f"unknown field (allowed here: {', '.join(_fields_at(loc))})"
        else:
            msg = err["msg"].removeprefix("Value error, ")
        out.append((loc, msg))
    return out


# -- validation against the catalog ------------------------------------------------------------


def _could_be_cheaper(a: ModelConfig, b: ModelConfig) -> bool:
    """Some request (a mix of prompt and output tokens) costs less on `a` than on `b`."""
    return a.price.input < b.price.input or a.price.output < b.price.output


def _semantic_problems(policy: Policy, stem: str, catalog: Catalog) -> list[tuple[tuple[Any, ...], str, bool]]:
    """(loc, message, is_warning) for what the schema alone cannot see."""
    found: list[tuple[tuple[Any, ...], str, bool]] = []

    def error(loc: tuple[Any, ...], message: str) -> None:
        found.append((loc, message, False))

    def warn(loc: tuple[Any, ...], message: str) -> None:
        found.append((loc, message, True))

    known_models = list(catalog.models)
    known_regions = sorted({p.region for p in catalog.providers.values()})
    region_of = {m.name: catalog.provider_of(m).region for m in catalog.models.values()}
    regions_text = ", ".join(policy.regions or ())

    if policy.name != stem:
        error(("name",), f"is {policy.name!r} but the file is {stem}.yaml: a policy's name must be its file name")

    def duplicates(loc: tuple[Any, ...], values: Sequence[str] | None) -> None:
        for index, value in enumerate(values or ()):
            first = list(values or ()).index(value)
            if first != index:
                error((*loc, index), f"{value!r} is listed twice (first at {_loc((*loc, first))})")

    for loc, values in (
        (("models",), policy.models),
        (("regions",), policy.regions),
        (("prefer",), policy.prefer),
        (("budget", "downgrade_to"), policy.budget.downgrade_to),
        (("budget", "on_reservation_too_large"), policy.budget.on_reservation_too_large),
        (("fallbacks", "on_failure"), policy.fallbacks.on_failure),
    ):
        duplicates(loc, values)

    for index, region in enumerate(policy.regions or ()):
        if region not in known_regions:
            error(("regions", index), f"unknown region {region!r} (the catalog's providers run in: {', '.join(known_regions)})")

    def outside(name: str) -> bool:
        return policy.regions is not None and region_of[name] not in policy.regions

    def unreachable(name: str) -> str:
        return f"model {name!r} runs in region {region_of[name]!r}, outside this policy's regions ({regions_text}): unreachable"

    for index, name in enumerate(policy.models or ()):
        if name not in catalog.models:
            error(("models", index), f"unknown model {name!r} (known: {', '.join(known_models)})")
        elif outside(name):
            error(("models", index), unreachable(name))

    def must_be_allowed(loc: tuple[Any, ...], name: str) -> None:
        if name not in catalog.models:
            error(loc, f"unknown model {name!r} (known: {', '.join(known_models)})")
        elif policy.models is not None and name not in policy.models:
            error(loc, f"model {name!r} is not in this policy's models ({', '.join(policy.models)}): unreachable")
        elif policy.models is None and outside(name):
            error(loc, unreachable(name))

    for index, name in enumerate(policy.prefer):
        must_be_allowed(("prefer", index), name)
    for index, name in enumerate(policy.budget.downgrade_to or ()):
        must_be_allowed(("budget", "downgrade_to", index), name)

    allowed = policy.allowed(catalog)
    if not any("chat" in m.capabilities for m in allowed):
        where = ("models",) if policy.models is not None else ("regions",)
        error(where, "no chat model is reachable: the models allowed, within the regions allowed, must include one with 'chat'")

    # Budget rules that move a request to another model need a cheaper model to move to.
    budget = policy.budget
    switching = budget.prefer_cheapest_above_pct is not None or "cheaper_model" in budget.on_reservation_too_large
    if switching and allowed:
        pool = [m for m in allowed if budget.downgrade_to is None or m.name in budget.downgrade_to]
        reachable = any(
            a.name != b.name and a.capabilities & b.capabilities and _could_be_cheaper(a, b) for a in pool for b in allowed
        )
        if not reachable:
            if budget.prefer_cheapest_above_pct is not None:
                loc: tuple[Any, ...] = ("budget", "prefer_cheapest_above_pct")
            else:
                loc = ("budget", "on_reservation_too_large", budget.on_reservation_too_large.index("cheaper_model"))
            error(
                loc,
                "unreachable: no model the budget rules may move to (budget.downgrade_to, or every allowed model) "
                "is cheaper than another allowed model with a capability in common",
            )
    if budget.downgrade_to is not None and not switching:
        warn(
            ("budget", "downgrade_to"),
            "unused: no budget rule moves requests to another model "
            "(set prefer_cheapest_above_pct, or cheaper_model in on_reservation_too_large)",
        )
    if "max_tokens_floor" in budget.model_fields_set and "lower_max_tokens" not in budget.on_reservation_too_large:
        warn(("budget", "max_tokens_floor"), "unused: on_reservation_too_large does not include lower_max_tokens")

    if "safety_margin_pct" in policy.context.model_fields_set and not policy.context.skip_if_over_window:
        warn(("context", "safety_margin_pct"), "unused: skip_if_over_window is false")

    fallbacks = policy.fallbacks
    if fallbacks.max_backoff_ms < fallbacks.backoff_ms:
        error(("fallbacks", "max_backoff_ms"), f"is {fallbacks.max_backoff_ms}, less than backoff_ms ({fallbacks.backoff_ms})")
    if fallbacks.when_pinned and not fallbacks.to_next_candidate:
        error(("fallbacks", "when_pinned"), "unreachable: to_next_candidate is false, so no request moves to another model")
    if "5xx" in fallbacks.on_failure:
        for index, kind in enumerate(fallbacks.on_failure):
            if kind.isdigit() and kind.startswith("5"):
                warn(("fallbacks", "on_failure", index), f"{kind!r} is already covered by '5xx'")
    if not fallbacks.on_failure:
        for name in ("retries", "to_next_candidate", "when_pinned", "backoff_ms", "max_backoff_ms", "retry_after_max_ms"):
            if name in fallbacks.model_fields_set:
                warn(("fallbacks", name), "unused: on_failure is empty, so no failure triggers a retry or a fallback")

    if policy.named_model == "honour" and policy.models is None:
        warn(
            ("named_model",),
            "'honour' only lets a request name a model outside this policy's models, and models is null (every model); "
            "a named model that the team, key or regions forbid is refused",
        )
    return found


# -- loading -----------------------------------------------------------------------------------


def check_policy_text(text: str, source: str, stem: str, catalog: Catalog) -> tuple[Policy | None, list[Problem]]:
    """Parse and validate one policy; the policy is None when there is any error."""
    problems: list[Problem] = []

    def add(loc: Sequence[Any], message: str, warning: bool = False, node: yaml.Node | None = None) -> None:
        problems.append(Problem(source, _loc(tuple(loc)), message, warning, _line_of(node, loc)))

    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        raw = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problems.append(Problem(source, "(top level)", f"not valid YAML: {getattr(exc, 'problem', None) or exc}",
                                line=mark.line + 1 if mark else None))  # fmt: skip
        return None, problems
    finally:
        loader.dispose()
    if not isinstance(raw, dict):
        add((), "a policy is a mapping of fields (at least `name: " + stem + "`)", node=node)
        return None, problems
    raw.setdefault("name", stem)
    try:
        policy = Policy.model_validate(raw)
    except ValidationError as exc:
        schema = _schema_problems(exc)
        for loc, message in schema:
            add(loc, message, node=node)
        # Still check the fields that are well-formed against the catalog, so one run shows every problem.
        broken = {loc[0] for loc, _ in schema if loc}
        rest = {k: v for k, v in raw.items() if k not in broken} | ({"name": stem} if "name" in broken else {})
        try:
            partial = Policy.model_validate(rest)
        except ValidationError:
            return None, problems
        for loc, message, warning in _semantic_problems(partial, stem, catalog):
            if loc and loc[0] not in broken:
                add(loc, message, warning, node=node)
        return None, _by_line(problems)
    for loc, message, warning in _semantic_problems(policy, stem, catalog):
        add(loc, message, warning, node=node)
    return (None if any(not p.warning for p in problems) else policy), _by_line(problems)


def _by_line(problems: list[Problem]) -> list[Problem]:
    return sorted(problems, key=lambda p: p.line or 0)


def check_policy_file(path: Path, catalog: Catalog) -> tuple[Policy | None, list[Problem]]:
    path = Path(path)
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return None, [Problem(str(path), "(top level)", f"cannot read file: {exc}")]
    return check_policy_text(text, str(path), _stem(path), catalog)


def load_policy_file(path: Path, catalog: Catalog) -> Policy:
    """One validated policy, or `PolicyError` naming the file and each field in error (warnings are logged)."""
    policy, problems = check_policy_file(path, catalog)
    for problem in problems:
        if problem.warning:
            log.warning("%s", problem)
    if policy is None:
        raise PolicyError(str(path), problems)
    return policy


def _stem(path: Path) -> str:
    return path.name.removesuffix(".yaml")


def policy_files(directory: Path) -> list[Path]:
    """`*.yaml` files in the directory, without hidden ones (editors' swap and temporary files)."""
    return sorted(p for p in Path(directory).glob("*.yaml") if not p.name.startswith(".") and p.is_file())


class PolicySet(Mapping[str, Policy]):
    """The valid policies of one directory, by name, and every problem found while loading it."""

    def __init__(
        self, directory: str, policies: Mapping[str, Policy], problems: Sequence[Problem] = (), digest: str = ""
    ) -> None:
        self.directory = directory
        self._policies = dict(policies)
        self.problems: tuple[Problem, ...] = tuple(problems)
        self.digest = digest

    def __getitem__(self, name: str) -> Policy:
        return self._policies[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._policies)

    def __len__(self) -> int:
        return len(self._policies)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if not p.warning]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.warning]

    @property
    def ok(self) -> bool:
        return not self.errors

    def __repr__(self) -> str:
        return f"PolicySet({self.directory!r}, {sorted(self._policies)}, {len(self.errors)} errors, {len(self.warnings)} warnings)"


def load_policies(directory: Path, catalog: Catalog) -> PolicySet:
    """Every `*.yaml` file of `directory` (name = file stem). Files with errors are left out of the mapping and
    their problems listed; the directory must hold `default.yaml` (teams use it unless they name another)."""
    directory = Path(directory)
    source = str(directory)
    if not directory.is_dir():
        return PolicySet(source, {}, [Problem(source, "(directory)", "not a directory")])
    policies: dict[str, Policy] = {}
    problems: list[Problem] = []
    digest = hashlib.sha256()
    for path in policy_files(directory):
        try:
            data = path.read_bytes()
            text = data.decode("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(Problem(str(path), "(top level)", f"cannot read file: {exc}"))
            continue
        digest.update(path.name.encode() + b"\0" + data + b"\0")
        policy, found = check_policy_text(text, str(path), _stem(path), catalog)
        problems.extend(found)
        if policy is not None:
            policies[policy.name] = policy
    for stray in sorted(directory.glob("*.yml")):
        problems.append(Problem(str(stray), "(file name)", "ignored: policy files end in .yaml", warning=True))
    if not (directory / f"{DEFAULT_POLICY}.yaml").is_file():
        problems.append(
            Problem(source, "(directory)", f"no {DEFAULT_POLICY}.yaml: teams use the policy '{DEFAULT_POLICY}' unless they name another")
        )
    return PolicySet(source, policies, problems, digest.hexdigest()[:12])


# -- reloading ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReloadResult:
    ok: bool  # the new version is in use (or nothing changed)
    changed: bool  # a new version was swapped in
    version: int  # the version in use after this attempt (0: none yet)
    problems: tuple[Problem, ...] = ()

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)


@dataclass
class PolicyWatcher:
    """Holds the policies in use, and replaces them only with a directory that validates completely.

    Call `reload()` on SIGHUP and `poll()` every few seconds (it reloads when a file changed); both are
    cheap when nothing changed. A failed reload keeps the previous version, logs why, sets `last_error`
    and counts `failures` (for a metric); `on_reload` is called with every result. Requests should take
    `watcher.current` once and keep that `PolicySet` to the end.
    """

    directory: Path
    catalog: Catalog
    strict: bool = True  # the first load must succeed (raise PolicyError), as a bad catalog stops start-up
    on_reload: Callable[[ReloadResult], None] | None = None
    clock: Callable[[], float] = time.time
    version: int = field(default=0, init=False)
    loaded_at: float | None = field(default=None, init=False)
    checked_at: float | None = field(default=None, init=False)
    last_error: str | None = field(default=None, init=False)
    failures: int = field(default=0, init=False)
    _current: PolicySet | None = field(default=None, init=False, repr=False)
    _seen: tuple[Any, ...] | None = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        self.directory = Path(self.directory)
        result = self.reload()
        if self.strict and not result.ok:
            raise PolicyError(str(self.directory), [p for p in result.problems if not p.warning])

    @property
    def current(self) -> PolicySet:
        """The policies in use (an empty set if none ever loaded)."""
        return self._current if self._current is not None else PolicySet(str(self.directory), {})

    def get(self, name: str) -> Policy | None:
        return self.current.get(name)

    def fingerprint(self) -> tuple[Any, ...]:
        """Names, sizes and modification times of the policy files: changes when a file is edited, added or removed."""
        try:
            stats = [(p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in policy_files(self.directory)]
        except OSError:
            stats = [("?", time.monotonic_ns(), 0)]  # a file vanished while listing: look again next time
        return tuple(stats)

    def poll(self) -> ReloadResult | None:
        """Reload if the files changed since the last attempt (good or bad); None if nothing changed."""
        if self.fingerprint() == self._seen:
            return None
        return self.reload()

    def reload(self, catalog: Catalog | None = None) -> ReloadResult:
        """Load the directory again (against `catalog`, if a new one is given); swap it in only if it has no errors."""
        with self._lock:
            self._seen = self.fingerprint()
            use = catalog if catalog is not None else self.catalog
            loaded = load_policies(self.directory, use)
            self.checked_at = self.clock()
            if not loaded.ok:
                self.failures += 1
                self.last_error = "\n".join(str(p) for p in loaded.errors)
                kept = f"keeping version {self.version}" if self._current is not None else "no policies loaded"
                log.error("policies in %s not reloaded (%s):\n%s", self.directory, kept, self.last_error)
                result = ReloadResult(False, False, self.version, loaded.problems)
            else:
                changed = (
                    self._current is None
                    or loaded.digest != self._current.digest
                    or (catalog is not None and catalog is not self.catalog)
                )
                if changed:
                    self._current = loaded
                    self.catalog = use
                    self.version += 1
                    self.loaded_at = self.checked_at
                    log.info(
                        "policies version %d loaded from %s (%s; sha256 %s)",
                        self.version, self.directory, ", ".join(sorted(loaded)), loaded.digest,
                    )  # fmt: skip
                    for problem in loaded.warnings:
                        log.warning("%s", problem)
                self.last_error = None
                result = ReloadResult(True, changed, self.version, loaded.problems)
        if self.on_reload is not None:
            self.on_reload(result)
        return result


# -- command line: `gateway policy check|show` ---------------------------------------------------


def default_policies_dir() -> Path:
    return Path(os.environ.get(POLICIES_DIR_ENV) or "policies")


def _catalog_for(args: argparse.Namespace) -> Catalog | None:
    from gateway.cli import _config_path
    from gateway.config import load_catalog

    try:
        return load_catalog(_config_path(args))
    except ConfigError as exc:
        print(f"gateway: configuration error\n{exc}", file=sys.stderr)
        return None


def _summary(policy: Policy, catalog: Catalog) -> str:
    chat = [m.name for m in policy.candidates(catalog, "chat")]
    return f"chat: {' > '.join(chat)}; named model: {policy.named_model}"


def cmd_policy_check(args: argparse.Namespace) -> int:
    catalog = _catalog_for(args)
    if catalog is None:
        return 2
    paths = args.paths or [default_policies_dir()]
    problems: list[Problem] = []
    checked = 0
    for path in paths:
        if path.is_dir():
            loaded = load_policies(path, catalog)
            problems.extend(loaded.problems)
            checked += len(policy_files(path))
            for name in sorted(loaded):
                print(f"{path / (name + '.yaml')}: OK ({_summary(loaded[name], catalog)})")
        elif path.is_file():
            policy, found = check_policy_file(path, catalog)
            problems.extend(found)
            checked += 1
            if policy is not None:
                print(f"{path}: OK ({_summary(policy, catalog)})")
        else:
            problems.append(Problem(str(path), "(path)", "no such file or directory"))
    for problem in problems:
        print(problem, file=sys.stderr)
    errors = [p for p in problems if not p.warning or args.strict]
    if errors:
        print(f"gateway: {len(errors)} problem(s) in {checked} policy file(s), checked against {catalog.source}", file=sys.stderr)
        return 1
    return 0


def cmd_policy_show(args: argparse.Namespace) -> int:
    catalog = _catalog_for(args)
    if catalog is None:
        return 2
    name: str = args.name
    if name.endswith(".yaml") or os.sep in name or "/" in name:
        path = Path(name)
    else:
        path = (args.dir or default_policies_dir()) / f"{name}.yaml"
    if not path.is_file():
        directory = path.parent
        have = ", ".join(_stem(p) for p in policy_files(directory)) if directory.is_dir() else "none"
        print(f"gateway: no policy file {path} (policies in {directory}: {have or 'none'})", file=sys.stderr)
        return 1
    policy, problems = check_policy_file(path, catalog)
    for problem in problems:
        print(problem, file=sys.stderr)
    if policy is None:
        return 1
    lines = [f"# {path}: effective policy (defaults filled in), checked against {catalog.source}"]
    for capability in CAPABILITIES:
        names = [m.name for m in policy.candidates(catalog, capability)]
        lines.append(f"#   {capability}: {', '.join(names) if names else '(no model: refused)'}")
    print("\n".join(lines))
    print(yaml.safe_dump(policy.effective(), sort_keys=False, allow_unicode=True, width=100, default_flow_style=None), end="")
    return 0


def add_policy_commands(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `policy check` and `policy show` to the `gateway` command's subcommands."""

    def config_option(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--config", type=Path, default=None,
            help="catalog file the policies are checked against (default: $GATEWAY_CONFIG or built-in defaults)",
        )  # fmt: skip

    where = f"${POLICIES_DIR_ENV} or policies/"
    policy = commands.add_parser("policy", help="check and show routing policies (policies/*.yaml)")
    actions = policy.add_subparsers(dest="policy_command", required=True, metavar="ACTION")
    check = actions.add_parser(
        "check",
        help="validate policy files against the catalog; exit 1 on any error",
        description="Validate policy files (unknown fields, models or regions, unreachable rules). Prints an OK line "
        "per valid file on stdout, and each problem as FILE: FIELD: MESSAGE on stderr. Exit 0 when no file has an "
        "error (warnings do not count unless --strict), 1 otherwise, 2 when the catalog itself is broken.",
    )
    check.add_argument("paths", nargs="*", type=Path, metavar="PATH", help=f"policy files or directories (default: {where})")
    config_option(check)
    check.add_argument("--strict", action="store_true", help="count warnings as problems (exit 1)")
    check.set_defaults(func=cmd_policy_check)
    show = actions.add_parser(
        "show",
        help="print a policy with every default filled in, as YAML",
        description="Print the effective policy (every default filled in) as YAML, after the models it allows for "
        "each capability in preference order. Exit 1 if it is missing or invalid.",
    )
    show.add_argument("name", metavar="NAME", help="a policy name (NAME.yaml in --dir) or a path to a policy file")
    show.add_argument("--dir", type=Path, default=None, help=f"the policies directory (default: {where})")
    config_option(show)
    show.set_defaults(func=cmd_policy_show)
