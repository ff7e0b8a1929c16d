"""The `aliases` field of a policy: its schema, what `gateway policy check` refuses or warns about, and reload."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from gateway.catalog import load_catalog
from gateway.policy import CLAUDE_CODE_ALIASES, Alias, Policy, PolicyError, PolicyWatcher, check_policy_file
from gateway.policy.checks import load_policy_file
from gateway.routing import Allowed, DecisionRequest, decide
from tests.support import ROOT

SHIPPED = ROOT / "policies"
CATALOG = load_catalog(None, {})


def check(tmp_path: Path, text: str) -> tuple[Policy | None, list[str]]:
    path = tmp_path / "x.yaml"
    path.write_text(text)
    policy, problems = check_policy_file(path, CATALOG)
    return policy, [str(p) for p in problems]


def test_the_field_reads_an_ordered_list_of_match_and_to(tmp_path: Path) -> None:
    policy, problems = check(
        tmp_path,
        'aliases:\n  - {match: "claude-*haiku*", to: cheapest}\n  - match: "claude-*"\n    to: auto\n'
        '  - {match: "gpt-4o", to: kimi-k2.6}\n',
    )
    assert problems == [] and policy is not None
    assert [(a.match, a.to) for a in policy.aliases] == [
        ("claude-*haiku*", "cheapest"),
        ("claude-*", "auto"),
        ("gpt-4o", "kimi-k2.6"),
    ]
    assert policy.alias_for("claude-3-5-haiku-20241022") == (0, policy.aliases[0])
    assert policy.alias_for("claude-opus-4-1") == (1, policy.aliases[1])
    assert policy.alias_for("gpt-4o-mini") is None  # the whole name
    assert Policy.model_validate(policy.effective()) == policy  # `gateway policy show` round-trips
    assert policy.effective()["aliases"][0] == {"match": "claude-*haiku*", "to": "cheapest"}
    assert Policy(name="x").aliases == ()  # no aliases unless a policy has some


BAD = [
    pytest.param(
        "aliases:\n  - {match: claude-*, to: gpt-5}\n",
        "aliases[0].to: unknown target 'gpt-5': an alias maps to 'auto', 'cheapest' or a catalog model "
        "(known: mistral-medium-3.5, kimi-k2.6, codestral, mistral-embed) (line 2)",
        id="unknown-target",
    ),
    pytest.param(
        'aliases:\n  - {match: "claude-[", to: auto}\n',
        "aliases[0].match: 'claude-[': '[' at position 7 is not closed by ']' (line 2)",
        id="unclosed-bracket",
    ),
    pytest.param('aliases:\n  - {match: "", to: auto}\n', "aliases[0].match: an empty pattern", id="empty-glob"),
    pytest.param(
        'aliases:\n  - {match: "claude *", to: auto}\n',
        "aliases[0].match: 'claude *' holds a space or a control character",
        id="space-in-glob",
    ),
    pytest.param(
        'aliases:\n  - {match: "claude-*", to: ""}\n', "aliases[0].to: String should have at least 1", id="empty-target"
    ),
    pytest.param(
        'aliases:\n  - {match: "claude-*", to: auto, model: x}\n',
        "aliases[0].model: unknown field (allowed here: match, to)",
        id="unknown-field",
    ),
    pytest.param("aliases:\n  - {to: auto}\n", "aliases[0].match: Field required", id="missing-match"),
    pytest.param("aliases: {match: x, to: auto}\n", "aliases: Input should be a valid", id="not-a-list"),
    pytest.param(
        'aliases:\n  - {match: "claude-*", to: auto}\n  - {match: "claude-*", to: cheapest}\n',
        "aliases[1].match: 'claude-*' is listed twice (first at aliases[0]) (line 3)",
        id="listed-twice",
    ),
    pytest.param(
        'aliases:\n  - {match: "*", to: auto}\n  - {match: "claude-*", to: cheapest}\n',
        "aliases[1].match: unreachable: aliases[0] matches every name first ('*')",
        id="after-catch-all",
    ),
    pytest.param(
        'aliases:\n  - {match: "kimi-k2.6", to: cheapest}\n',
        "aliases[0].match: 'kimi-k2.6' is 'auto', a catalog model or an upstream id, which always means itself",
        id="catalog-name",
    ),
    pytest.param(
        'aliases:\n  - {match: "codestral-latest", to: kimi-k2.6}\n',
        "aliases[0].match: 'codestral-latest' is 'auto', a catalog model or an upstream id",
        id="upstream-id",
    ),
    pytest.param(
        'aliases:\n  - {match: "auto", to: cheapest}\n',
        "aliases[0].match: 'auto' is 'auto', a catalog model or an upstream id",
        id="auto",
    ),
    pytest.param(
        'regions: [eu]\naliases:\n  - {match: "claude-*", to: kimi-k2.6}\n',
        "aliases[0].to: unreachable: model 'kimi-k2.6' runs in region 'cn', outside this policy's regions, so every "
        "request it maps is refused (named_model) (line 3)",
        id="target-outside-regions-refused",
    ),
    pytest.param(
        'models: [mistral-medium-3.5]\nnamed_model: refuse\naliases:\n  - {match: "claude-*", to: codestral}\n',
        "aliases[0].to: unreachable: model 'codestral' is not in this policy's models",
        id="target-outside-models-refused",
    ),
]


@pytest.mark.parametrize(("text", "problem"), BAD)
def test_policy_check_refuses_bad_aliases(tmp_path: Path, text: str, problem: str) -> None:
    policy, problems = check(tmp_path, text)
    assert policy is None
    assert f"{tmp_path / 'x.yaml'}: {problem}" in "\n".join(problems), problems
    with pytest.raises(PolicyError):
        load_policy_file(tmp_path / "x.yaml", CATALOG)


def test_targets_the_policy_would_reroute_or_honour(tmp_path: Path) -> None:
    """A target outside the policy's models: a warning under `reroute` (it is `auto` in effect), nothing under
    `honour` (which lets it through), an error under `refuse` (above)."""
    policy, problems = check(
        tmp_path,
        'models: [mistral-medium-3.5]\nnamed_model: reroute\naliases:\n  - {match: "claude-*", to: kimi-k2.6}\n',
    )
    assert policy is not None and problems == [
        f"{tmp_path / 'x.yaml'}: warning: aliases[0].to: model 'kimi-k2.6' is not in this policy's models: every "
        "request it maps is rerouted as 'auto' (write `to: auto`) (line 4)"
    ]
    policy, problems = check(
        tmp_path,
        'models: [mistral-medium-3.5]\nnamed_model: honour\naliases:\n  - {match: "claude-*", to: kimi-k2.6}\n',
    )
    assert policy is not None and problems == []
    # honour never overrides the regions.
    policy, problems = check(
        tmp_path, 'regions: [eu]\nnamed_model: honour\naliases:\n  - {match: "claude-*", to: kimi-k2.6}\n'
    )
    assert policy is None and any("unreachable: model 'kimi-k2.6' runs in region 'cn'" in p for p in problems)


def test_globs_that_fnmatch_reads_as_sets() -> None:
    for glob in ("claude-[hs]*", "claude-[!o]*", "x[]]y", "x[!]]y", "claude-?-5-*", "*"):
        assert Alias(match=glob, to="auto").match == glob
    assert Alias(match="x[]]y", to="auto").matches("x]y")
    assert not Alias(match="claude-*", to="auto").matches("CLAUDE-opus")


def test_shipped_policies_hold_the_claude_code_aliases() -> None:
    for name in ("default", "cost-saver", "eu-only"):
        assert load_policy_file(SHIPPED / f"{name}.yaml", CATALOG).aliases == CLAUDE_CODE_ALIASES


def test_a_reloaded_policys_aliases_apply(tmp_path: Path) -> None:
    directory = tmp_path / "p"
    shutil.copytree(SHIPPED, directory)
    watcher = PolicyWatcher(directory, CATALOG)

    def routed(name: str) -> list[str] | str:
        d = decide(DecisionRequest(CATALOG, watcher.get("default"), Allowed(), name, {"chat"}, 50, 1024))  # type: ignore[arg-type]
        return d.error.code if d.error is not None else [m.name for m in d.candidates]

    assert routed("claude-haiku-4-5-20251001")[0] == "codestral"
    assert routed("gpt-4o") == "model_not_found"
    default = directory / "default.yaml"
    text = default.read_text()
    edited = text.replace('{match: "claude-*haiku*", to: cheapest}', '{match: "claude-*haiku*", to: kimi-k2.6}')
    default.write_text(
        edited.replace(
            '  - {match: "claude-*", to: auto}', '  - {match: "claude-*", to: auto}\n  - {match: "gpt-*", to: cheapest}'
        )
    )
    result = watcher.reload()
    assert result.ok and result.changed and watcher.version == 2, str(result)
    assert routed("claude-haiku-4-5-20251001") == ["kimi-k2.6"]
    assert routed("gpt-4o") == ["codestral", "kimi-k2.6", "mistral-medium-3.5"]
    # A broken alias keeps the previous version, aliases included.
    default.write_text(text.replace("to: cheapest", "to: gpt-5"))
    assert not watcher.reload().ok
    assert routed("claude-haiku-4-5-20251001") == ["kimi-k2.6"]
