"""The policies a replay runs with: the current set with one policy file added or replaced, or a whole directory.

Both are validated exactly as the gateway validates policies (`gateway.policy.checks`), against the catalog in use:
a policy with any error is refused with `PolicyError`, whose problems name the file and the field.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from gateway.catalog import YAML_ERRORS, Catalog
from gateway.policy import PolicyError, PolicySet, Problem, check_policy_text, load_policies
from gateway.policy.checks import policy_name


def _stem(name_hint: str, text: str) -> str:
    """The policy's name: the hint (a file name or a policy name), else the text's own `name:` field."""
    stem = Path(name_hint.strip()).name.removesuffix(".yaml").removesuffix(".yml") if name_hint.strip() else ""
    if stem:
        return stem
    try:
        raw = yaml.safe_load(text)
    except YAML_ERRORS:
        return "pasted"  # (not YAML: check_policy_text says what is wrong with it, under this name)
    named = raw.get("name") if isinstance(raw, dict) else None
    if isinstance(named, str) and named.strip():
        return named.strip()
    raise PolicyError(
        "(pasted policy)",
        [Problem("(pasted policy)", "name", "a policy given without a file name needs its `name:` field")],
    )


def policy_set_from_text(name_hint: str, text: str, catalog: Catalog, current: PolicySet) -> PolicySet:
    """`current` with the policy in `text` added, or replacing the policy of the same name. `name_hint`: the file
    name (`eu-only.yaml`) or policy name it stands for ('' : the text's `name:`). Raises PolicyError naming each
    field in error (`eu-only.yaml: models[0]: unknown model 'gpt-5' (known: ...) (line 3)`)."""
    stem = _stem(name_hint, text)
    source = f"{stem}.yaml"
    policy, problems = check_policy_text(text, source, stem, catalog)
    if policy is None:
        raise PolicyError(source, problems)
    policies = {**current, policy.name: policy}
    warnings = [p for p in problems if p.warning]
    return PolicySet(f"{current.directory} with {source}", policies, [*current.warnings, *warnings])


def load_replay_policies(path: Path, catalog: Catalog, current: PolicySet) -> PolicySet:
    """FILE_OR_DIR of `gateway replay --policy`: a file replaces (or adds) that one policy in `current`; a directory
    replaces the whole set (it must validate as the gateway's own would, `default.yaml` included)."""
    path = Path(path)
    if path.is_dir():
        loaded = load_policies(path, catalog)
        if not loaded.ok:
            raise PolicyError(str(path), loaded.errors)
        return loaded
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError, ValueError) as exc:  # (ValueError: a NUL in the path)
        raise PolicyError(str(path), [Problem(str(path), "(top level)", f"cannot read file: {exc}")]) from exc
    return policy_set_from_text(policy_name(path), text, catalog, current)
