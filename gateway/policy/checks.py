"""Loading and validating one policy file: YAML with line numbers, the schema, then checks against the catalog.

Problems name the file and the field path, as `gateway.catalog` does for the
catalog: `policies/x.yaml: prefer[1]: unknown model 'gpt-5' (known: ...) (line 7)`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from gateway.catalog import AUTO_MODEL, Catalog, ConfigError, ModelConfig, field_path
from gateway.policy.schema import ALIAS_KEYWORDS, Policy

log = logging.getLogger("gateway.policy")


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
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int, float, bool)) and key is not None:
                continue  # unhashable keys: the base class reports them
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"field {key!r} is given twice in this mapping", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        # PyYAML's own constructors raise plain ValueErrors for a scalar their tag cannot hold (a date that does
        # not exist, `!!int abc`, `!!float x`): reported as the YAML problem they are, at the scalar's line.
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, TypeError, OverflowError) as exc:
            tag = str(node.tag).rsplit(":", 1)[-1]
            raise yaml.constructor.ConstructorError(
                None, None, f"{node.value!r} is not a valid {tag}: {exc}", node.start_mark
            ) from exc


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
        if isinstance(part, int):  # an entry of a list of mappings (`aliases[0]`): the entry's type, found below
            continue
        info = cls.model_fields.get(part)
        annotation = getattr(info, "annotation", None)
        element = get_args(annotation)[0] if get_origin(annotation) is tuple else annotation  # tuple[Alias, ...]
        if isinstance(element, type) and issubclass(element, BaseModel):
            cls = element
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
    known_regions = catalog.regions
    region_of = {m.name: catalog.provider_of(m).region for m in catalog.models.values()}
    regions_text = ", ".join(policy.regions or ())

    if policy.name != stem:
        error(("name",), f"is {policy.name!r} but the file is {stem}.yaml: a policy's name must be its file name")

    def duplicates(loc: tuple[Any, ...], values: Sequence[str] | None) -> None:
        for index, value in enumerate(values or ()):
            first = list(values or ()).index(value)
            if first != index:
                error((*loc, index), f"{value!r} is listed twice (first at {field_path((*loc, first))})")

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
            error(
                ("regions", index),
                f"unknown region {region!r} (the catalog's providers run in: {', '.join(known_regions)})",
            )

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
        error(
            where,
            "no chat model is reachable: the models allowed, within the regions allowed, must include one with 'chat'",
        )

    # Budget rules that move a request to another model need a cheaper model to move to.
    budget = policy.budget
    switching = budget.prefer_cheapest_above_pct is not None or "cheaper_model" in budget.on_reservation_too_large
    if switching and allowed:
        pool = [m for m in allowed if budget.downgrade_to is None or m.name in budget.downgrade_to]
        reachable = any(
            a.name != b.name and a.capabilities & b.capabilities and _could_be_cheaper(a, b)
            for a in pool
            for b in allowed
        )
        if not reachable:
            if budget.prefer_cheapest_above_pct is not None:
                rule: tuple[Any, ...] = ("budget", "prefer_cheapest_above_pct")
            else:
                rule = ("budget", "on_reservation_too_large", budget.on_reservation_too_large.index("cheaper_model"))
            error(
                rule,
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
        error(
            ("fallbacks", "max_backoff_ms"),
            f"is {fallbacks.max_backoff_ms}, less than backoff_ms ({fallbacks.backoff_ms})",
        )
    if fallbacks.when_pinned and not fallbacks.to_next_candidate:
        error(
            ("fallbacks", "when_pinned"),
            "unreachable: to_next_candidate is false, so no request moves to another model",
        )
    if "5xx" in fallbacks.on_failure:
        for index, kind in enumerate(fallbacks.on_failure):
            if kind.isdigit() and kind.startswith("5"):
                warn(("fallbacks", "on_failure", index), f"{kind!r} is already covered by '5xx'")
    if not fallbacks.on_failure:
        for name in (
            "retries",
            "to_next_candidate",
            "when_pinned",
            "backoff_ms",
            "max_backoff_ms",
            "retry_after_max_ms",
        ):
            if name in fallbacks.model_fields_set:
                warn(("fallbacks", name), "unused: on_failure is empty, so no failure triggers a retry or a fallback")

    found.extend(_alias_problems(policy, catalog))

    if policy.named_model == "honour" and policy.models is None:
        warn(
            ("named_model",),
            "'honour' only lets a request name a model outside this policy's models, and models is null (every model); "
            "a named model that the team, key or regions forbid is refused",
        )
    return found


def _alias_problems(policy: Policy, catalog: Catalog) -> list[tuple[tuple[Any, ...], str, bool]]:
    """`aliases`: targets the catalog knows, patterns that can match a name aliases are asked about, entries an
    earlier one does not shadow, and targets this policy lets through (`named_model` decides for the others)."""
    found: list[tuple[tuple[Any, ...], str, bool]] = []
    known = ", ".join(catalog.models)
    # What a name never looked up in `aliases` can be: `auto`, a catalog name or an upstream id (`route.lookup`).
    meaning_itself = {AUTO_MODEL, *catalog.models, *(m.upstream_model for m in catalog.models.values())}
    seen: dict[str, int] = {}
    catch_all: int | None = None
    for index, alias in enumerate(policy.aliases):
        at = ("aliases", index)
        if catch_all is not None:
            found.append(((*at, "match"), f"unreachable: aliases[{catch_all}] matches every name first ('*')", False))
        elif alias.match in seen:
            found.append(
                ((*at, "match"), f"{alias.match!r} is listed twice (first at aliases[{seen[alias.match]}])", False)
            )
        elif not any(c in alias.match for c in "*?[") and alias.match in meaning_itself:
            found.append(
                (
                    (*at, "match"),
                    f"{alias.match!r} is 'auto', a catalog model or an upstream id, which always means itself: "
                    "aliases apply only to other names",
                    False,
                )
            )
        seen.setdefault(alias.match, index)
        if alias.match.strip("*") == "" and catch_all is None:
            catch_all = index
        target = alias.to
        if target in ALIAS_KEYWORDS:
            continue
        model = catalog.models.get(target)
        if model is None:
            found.append(
                (
                    (*at, "to"),
                    f"unknown target {target!r}: an alias maps to 'auto', 'cheapest' or a catalog model (known: {known})",
                    False,
                )
            )
            continue
        if policy.allows(catalog, model):
            continue
        honoured = policy.named_model == "honour" and (
            policy.regions is None or catalog.provider_of(model).region in policy.regions
        )
        if honoured:
            continue
        why = (
            f"model {target!r} is not in this policy's models"
            if policy.models is not None and target not in policy.models
            else f"model {target!r} runs in region {catalog.provider_of(model).region!r}, outside this policy's regions"
        )
        if policy.named_model == "reroute":
            found.append(((*at, "to"), f"{why}: every request it maps is rerouted as 'auto' (write `to: auto`)", True))
        else:
            found.append(((*at, "to"), f"unreachable: {why}, so every request it maps is refused (named_model)", False))
    return found


# -- loading -----------------------------------------------------------------------------------


def _not_yaml(source: str, exc: yaml.YAMLError, text: str) -> Problem:
    if isinstance(exc, yaml.reader.ReaderError):  # a character YAML does not allow (NUL, other controls)
        line = text.count("\n", 0, exc.position) + 1
        return Problem(
            source, "(top level)", f"not valid YAML: unacceptable character #x{exc.character:04x}", line=line
        )
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or exc
    return Problem(source, "(top level)", f"not valid YAML: {problem}", line=mark.line + 1 if mark else None)


def check_policy_text(text: str, source: str, stem: str, catalog: Catalog) -> tuple[Policy | None, list[Problem]]:
    """Parse and validate one policy; the policy is None when there is any error."""
    problems: list[Problem] = []

    def add(loc: Sequence[Any], message: str, warning: bool = False, node: yaml.Node | None = None) -> None:
        problems.append(Problem(source, field_path(tuple(loc)), message, warning, _line_of(node, loc)))

    try:
        loader = _Loader(text)  # (its reader refuses control characters, NUL included, at once)
    except yaml.YAMLError as exc:
        return None, [_not_yaml(source, exc, text)]
    try:
        node = loader.get_single_node()
        raw = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        problems.append(_not_yaml(source, exc, text))
        return None, problems
    except RecursionError:  # (PyYAML recurses once per level of nesting)
        problems.append(Problem(source, "(top level)", "not valid YAML: nested too deeply"))
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
    return check_policy_text(text, str(path), policy_name(path), catalog)


def load_policy_file(path: Path, catalog: Catalog) -> Policy:
    """One validated policy, or `PolicyError` naming the file and each field in error (warnings are logged)."""
    policy, problems = check_policy_file(path, catalog)
    for problem in problems:
        if problem.warning:
            log.warning("%s", problem)
    if policy is None:
        raise PolicyError(str(path), problems)
    return policy


def policy_name(path: Path) -> str:
    """A policy file's policy name: its file name without `.yaml`."""
    return path.name.removesuffix(".yaml")


def policy_files(directory: Path) -> list[Path]:
    """`*.yaml` files in the directory, without hidden ones (editors' swap and temporary files)."""
    return sorted(p for p in Path(directory).glob("*.yaml") if not p.name.startswith(".") and p.is_file())
