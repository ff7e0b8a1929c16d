"""Routing policies: the shipped files, validation messages naming file and field, helpers, reload, and the CLI."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from gateway.catalog import ConfigError, load_catalog
from gateway.policy import (
    Policy,
    PolicyError,
    PolicyWatcher,
    ReloadResult,
    check_policy_file,
    load_policies,
    load_policy_file,
)
from tests.support import ROOT
from tests.support.gateways import bare_env, run_cli

SHIPPED = ROOT / "policies"
CATALOG = load_catalog(None, {})


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text)
    return path


def names(models: list) -> list[str]:
    return [m.name for m in models]


# -- the shipped policies -------------------------------------------------------------------------


def test_shipped_policies_validate_without_warnings() -> None:
    loaded = load_policies(SHIPPED, CATALOG)
    assert loaded.problems == (), "\n".join(map(str, loaded.problems))
    assert sorted(loaded) == ["cost-saver", "default", "eu-only"]
    assert loaded.ok and len(loaded.digest) == 12


def test_default_prefers_mistral_then_kimi_and_moves_to_kimi_near_budget() -> None:
    policy = load_policy_file(SHIPPED / "default.yaml", CATALOG)
    chat = policy.candidates(CATALOG, "chat")
    assert names(chat) == ["mistral-medium-3.5", "kimi-k2.6", "codestral"]
    assert names(policy.candidates(CATALOG, {"chat", "tools"})) == ["mistral-medium-3.5", "kimi-k2.6"]
    assert names(policy.candidates(CATALOG, "fim")) == ["codestral"]
    assert names(policy.candidates(CATALOG, "embeddings")) == ["mistral-embed"]
    medium, kimi = CATALOG.models["mistral-medium-3.5"], CATALOG.models["kimi-k2.6"]
    # A prompt that does not fit Mistral's window (less the 2% margin) goes to Kimi.
    assert policy.fits(medium, 250_000, 1024) and not policy.fits(medium, 260_000, 1024)
    assert [m.name for m in chat if policy.fits(m, 300_000, 4096)] == ["kimi-k2.6"]
    # Near the budget: the budget rules move to Kimi only (never to codestral, a code model).
    assert not policy.prefers_cheapest(80) and policy.prefers_cheapest(80.5)
    assert names(policy.downgrades(CATALOG, chat, 10_000, 1000, current=medium)) == ["kimi-k2.6"]
    assert policy.budget.on_reservation_too_large == ("cheaper_model", "lower_max_tokens")
    # Teams limited to eu never leave Mistral, and the budget rules find nothing to move to.
    eu = policy.candidates(CATALOG, "chat", regions={"eu"})
    assert names(eu) == ["mistral-medium-3.5", "codestral"]
    assert all(CATALOG.provider_of(m).region == "eu" for m in eu)
    assert policy.downgrades(CATALOG, eu, 10_000, 1000, current=medium) == []
    assert policy.named_model == "reroute" and kimi in policy.allowed(CATALOG)


def test_cost_saver_prefers_kimi_and_uses_mistral_where_required() -> None:
    policy = load_policy_file(SHIPPED / "cost-saver.yaml", CATALOG)
    assert names(policy.candidates(CATALOG, {"chat", "tools"})) == ["kimi-k2.6", "mistral-medium-3.5"]
    assert names(policy.candidates(CATALOG, {"chat", "tools"}, regions={"eu"})) == ["mistral-medium-3.5"]
    assert names(policy.candidates(CATALOG, "fim")) == ["codestral"]
    assert names(policy.candidates(CATALOG, "embeddings")) == ["mistral-embed"]


def test_eu_only_never_leaves_the_eu_and_refuses_named_kimi() -> None:
    policy = load_policy_file(SHIPPED / "eu-only.yaml", CATALOG)
    assert policy.regions == ("eu",) and policy.named_model == "refuse"
    assert not policy.allows(CATALOG, CATALOG.models["kimi-k2.6"])
    for capability in ("chat", "tools", "vision", "fim", "embeddings"):
        assert all(CATALOG.provider_of(m).region == "eu" for m in policy.candidates(CATALOG, capability))
    assert names(policy.candidates(CATALOG, "chat")) == ["mistral-medium-3.5", "codestral"]


# -- validation -----------------------------------------------------------------------------------

BAD = [
    pytest.param(
        "name: x\nbudget: {prefer_cheapest_above: 80}\n",
        "budget.prefer_cheapest_above: unknown field (allowed here: prefer_cheapest_above_pct",
        id="unknown-field",
    ),
    pytest.param(
        "name: x\nroutes: []\n",
        "routes: unknown field (allowed here: name, description, models",
        id="unknown-top-field",
    ),
    pytest.param(
        "name: x\nmodels: [mistral-medium-3.5, gpt-5]\n",
        "models[1]: unknown model 'gpt-5' (known: mistral-medium-3.5, kimi-k2.6, codestral, mistral-embed) (line 2)",
        id="unknown-model",
    ),
    pytest.param(
        "name: x\nprefer: [mistral-medium-3.5, gpt-5]\n",
        "prefer[1]: unknown model 'gpt-5' (known: ",
        id="unknown-preferred-model",
    ),
    pytest.param(
        "name: x\nregions: [eu, mars]\n",
        "regions[1]: unknown region 'mars' (the catalog's providers run in: cn, eu)",
        id="unknown-region",
    ),
    pytest.param(
        "name: x\nmodels: [mistral-medium-3.5]\nprefer: [kimi-k2.6]\n",
        "prefer[0]: model 'kimi-k2.6' is not in this policy's models (mistral-medium-3.5): unreachable",
        id="prefer-not-subset",
    ),
    pytest.param(
        "name: x\nmodels: [mistral-medium-3.5, kimi-k2.6]\nregions: [eu]\n",
        "models[1]: model 'kimi-k2.6' runs in region 'cn', outside this policy's regions (eu): unreachable",
        id="unreachable-by-region",
    ),
    pytest.param(
        "name: x\nregions: [eu]\nprefer: [kimi-k2.6]\n",
        "prefer[0]: model 'kimi-k2.6' runs in region 'cn'",
        id="preferred-unreachable-by-region",
    ),
    pytest.param("name: x\nmodels: []\n", "models: no chat model is reachable", id="empty-allowed-set"),
    pytest.param("name: x\nmodels: [mistral-embed]\n", "models: no chat model is reachable", id="no-chat-model"),
    pytest.param(
        "name: x\nbudget: {prefer_cheapest_above_pct: 120}\n",
        "budget.prefer_cheapest_above_pct: Input should be less than or equal to 100",
        id="percent-over-100",
    ),
    pytest.param(
        "name: x\ncontext: {safety_margin_pct: -1}\n",
        "context.safety_margin_pct: Input should be greater than or equal to 0",
        id="negative-margin",
    ),
    pytest.param(
        "name: x\nbudget: {prefer_cheapest_above_pct: yes}\n",
        "budget.prefer_cheapest_above_pct: must be a number, not True",
        id="percent-not-a-number",
    ),
    pytest.param("name: y\n", "name: is 'y' but the file is x.yaml", id="name-not-stem"),
    pytest.param("name: X Y\n", "name: String should match pattern", id="bad-name"),
    pytest.param(
        "name: x\nnamed_model: ignore\n",
        "named_model: Input should be 'honour', 'reroute' or 'refuse'",
        id="named-model",
    ),
    pytest.param(
        "name: x\nfallbacks: {on_failure: [connect, 404]}\n",
        "fallbacks.on_failure[1]: unknown failure kind '404' (known: connect, timeout, 429, 5xx",
        id="unknown-failure-kind",
    ),
    pytest.param(
        "name: x\nbudget: {on_reservation_too_large: [pray]}\n",
        "budget.on_reservation_too_large[0]: Input should be 'cheaper_model' or 'lower_max_tokens'",
        id="unknown-downgrade",
    ),
    pytest.param(
        "name: x\nfallbacks: {to_next_candidate: false, when_pinned: true}\n",
        "fallbacks.when_pinned: unreachable: to_next_candidate is false",
        id="when-pinned-unreachable",
    ),
    pytest.param(
        "name: x\nfallbacks: {backoff_ms: 500, max_backoff_ms: 100}\n",
        "fallbacks.max_backoff_ms: is 100, less than backoff_ms (500)",
        id="backoff-order",
    ),
    pytest.param(
        "name: x\nmodels: [kimi-k2.6]\nbudget: {prefer_cheapest_above_pct: 80}\n",
        "budget.prefer_cheapest_above_pct: unreachable: no model the budget rules may move to",
        id="budget-rule-unreachable",
    ),
    pytest.param(
        "name: x\nbudget: {on_reservation_too_large: [cheaper_model], downgrade_to: [mistral-medium-3.5]}\n",
        "budget.on_reservation_too_large[0]: unreachable",
        id="downgrade-never-cheaper",
    ),
    pytest.param(
        "name: x\nmodels: [mistral-medium-3.5]\nbudget: {prefer_cheapest_above_pct: 80, downgrade_to: [kimi-k2.6]}\n",
        "budget.downgrade_to[0]: model 'kimi-k2.6' is not in this policy's models",
        id="downgrade-not-allowed",
    ),
    pytest.param(
        "name: x\nprefer: [kimi-k2.6, kimi-k2.6]\n",
        "prefer[1]: 'kimi-k2.6' is listed twice (first at prefer[0])",
        id="duplicate-entry",
    ),
    pytest.param(
        "name: x\nprefer: []\nprefer: [kimi-k2.6]\n",
        "(top level): not valid YAML: field 'prefer' is given twice in this mapping (line 3)",
        id="duplicate-key",
    ),
    pytest.param("name: [\n", "(top level): not valid YAML", id="bad-yaml"),
    pytest.param("name: x\x00\n", "(top level): not valid YAML: unacceptable character #x0000 (line 1)", id="nul"),
    pytest.param(
        "name: x\nregions: [eu]\x07\n", "(top level): not valid YAML: unacceptable character #x0007 (line 2)", id="bel"
    ),
    pytest.param("- a\n", "(top level): a policy is a mapping of fields", id="not-a-mapping"),
    pytest.param(
        "name: x\nregions: [2026-13-45]\n",
        "(top level): not valid YAML: '2026-13-45' is not a valid timestamp: month must be in 1..12 (line 2)",
        id="no-such-date",
    ),
    pytest.param(
        "name: x\nregions: !!int abc\n", "(top level): not valid YAML: 'abc' is not a valid int", id="bad-int"
    ),
    pytest.param(
        "name: x\nregions: " + "[" * 5000 + "]" * 5000, "(top level): not valid YAML: nested too deeply", id="deep"
    ),
]


@pytest.mark.parametrize(("text", "problem"), BAD)
def test_bad_files_name_the_file_and_the_field(tmp_path: Path, text: str, problem: str) -> None:
    path = write(tmp_path, "x.yaml", text)
    with pytest.raises(PolicyError) as caught:
        load_policy_file(path, CATALOG)
    assert isinstance(caught.value, ConfigError)
    message = str(caught.value)
    assert f"{path}: {problem}" in message, message
    # The directory loader leaves the file out and reports the same problem.
    loaded = load_policies(tmp_path, CATALOG)
    assert "x" not in loaded and not loaded.ok
    assert any(f"{path}: {problem}" in str(p) for p in loaded.errors)


def test_schema_and_catalog_problems_are_reported_together(tmp_path: Path) -> None:
    path = write(tmp_path, "x.yaml", "models: [gpt-5, mistral-medium-3.5]\ncontext: {margin: 2}\n")
    policy, problems = check_policy_file(path, CATALOG)
    assert policy is None
    assert [(p.field, p.line) for p in problems] == [("models[0]", 1), ("context.margin", 2)]


def test_warnings_do_not_reject_a_policy(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "x.yaml",
        "budget: {max_tokens_floor: 256}\ncontext: {skip_if_over_window: false, safety_margin_pct: 5}\n"
        "fallbacks: {on_failure: [5xx, 503]}\nnamed_model: honour\n",
    )
    policy, problems = check_policy_file(path, CATALOG)
    assert policy is not None and policy.name == "x"  # the name defaults to the file's
    assert all(p.warning for p in problems)
    assert {p.field for p in problems} == {
        "budget.max_tokens_floor",
        "context.safety_margin_pct",
        "fallbacks.on_failure[1]",
        "named_model",
    }
    assert str(problems[0]).startswith(f"{path}: warning: ")


def test_minimal_policy_has_every_default(tmp_path: Path) -> None:
    policy = load_policy_file(write(tmp_path, "tiny.yaml", "{}\n"), CATALOG)
    assert policy.name == "tiny" and policy.models is None and policy.regions is None and policy.prefer == ()
    assert policy.named_model == "refuse" and policy.budget.on_reservation_too_large == ()
    assert names(policy.candidates(CATALOG, "chat")) == [
        "mistral-medium-3.5",
        "kimi-k2.6",
        "codestral",
    ]  # catalog order
    assert policy.fallbacks.on_failure == ("connect", "timeout", "429", "5xx")
    assert Policy.model_validate(policy.effective()) == policy


def test_a_directory_needs_default_and_ignores_yml(tmp_path: Path) -> None:
    write(tmp_path, "team.yaml", "name: team\n")
    write(tmp_path, "other.yml", "name: other\n")
    write(tmp_path, ".team.yaml.swp.yaml", "garbage: [\n")  # editors' hidden files are not policies
    loaded = load_policies(tmp_path, CATALOG)
    assert list(loaded) == ["team"]
    assert [str(p) for p in loaded.errors] == [
        f"{tmp_path}: (directory): no default.yaml: teams use the policy 'default' unless they name another"
    ]
    assert [p.field for p in loaded.warnings] == ["(file name)"]


# -- helpers for the pipeline -----------------------------------------------------------------------


def test_candidates_prefer_first_then_catalog_order_and_narrowing(tmp_path: Path) -> None:
    policy = load_policy_file(write(tmp_path, "p.yaml", "prefer: [codestral, kimi-k2.6]\n"), CATALOG)
    assert names(policy.candidates(CATALOG, "chat")) == ["codestral", "kimi-k2.6", "mistral-medium-3.5"]
    assert names(policy.candidates(CATALOG, "chat", models={"mistral-medium-3.5", "kimi-k2.6"})) == [
        "kimi-k2.6",
        "mistral-medium-3.5",
    ]
    assert names(policy.candidates(CATALOG, ["chat", "vision"], regions={"eu"})) == ["mistral-medium-3.5"]
    assert policy.candidates(CATALOG, "embeddings", regions={"cn"}) == []


def test_cheapest_orders_by_expected_cost() -> None:
    policy = load_policy_file(SHIPPED / "default.yaml", CATALOG)
    chat = policy.candidates(CATALOG, "chat")
    # Prompt-heavy: codestral (0.30 in) < kimi (0.60) < medium (1.50).
    assert names(policy.cheapest(CATALOG, chat, 100_000, 100)) == ["codestral", "kimi-k2.6", "mistral-medium-3.5"]
    # Names work as well as models; equal costs keep the given order.
    assert names(policy.cheapest(CATALOG, ["mistral-medium-3.5", "kimi-k2.6"], 0, 0)) == [
        "mistral-medium-3.5",
        "kimi-k2.6",
    ]
    everything = Policy(name="p")
    assert names(everything.downgrades(CATALOG, chat, 1000, 1000, current="kimi-k2.6")) == ["codestral"]


def test_fallback_timing() -> None:
    fallbacks = load_policy_file(SHIPPED / "default.yaml", CATALOG).fallbacks
    assert fallbacks.handles("503") and fallbacks.handles("429") and fallbacks.handles("connect")
    assert not fallbacks.handles("404")
    assert fallbacks.backoff_s(1) == 0.2 and fallbacks.backoff_s(2) is None  # one retry
    assert fallbacks.backoff_s(1, retry_after_s=3) == 3 and fallbacks.backoff_s(1, retry_after_s=30) is None
    many = fallbacks.model_copy(update={"retries": 5})
    assert [many.backoff_s(n) for n in range(1, 6)] == [0.2, 0.4, 0.8, 1.6, 2.0]


# -- reload -----------------------------------------------------------------------------------------


def test_reload_keeps_the_previous_version_on_a_broken_file(tmp_path: Path) -> None:
    shutil.copytree(SHIPPED, tmp_path / "p")
    directory = tmp_path / "p"
    seen: list[ReloadResult] = []
    ticks = iter(range(100, 200))
    watcher = PolicyWatcher(directory, CATALOG, on_reload=seen.append, clock=lambda: float(next(ticks)))
    assert watcher.version == 1 and watcher.loaded_at == 100.0 and watcher.last_error is None
    before = watcher.current
    assert watcher.poll() is None  # nothing changed
    assert watcher.reload().changed is False and watcher.version == 1

    # A broken edit: the previous version stays, and the reason is kept.
    write(directory, "default.yaml", (SHIPPED / "default.yaml").read_text().replace("prefer: [", "prefer: [gpt-5, "))
    result = watcher.poll()
    assert result is not None and not result.ok and result.version == 1
    assert watcher.current is before and watcher.get("default").prefer[0] == "mistral-medium-3.5"
    assert watcher.failures == 1 and "default.yaml: prefer[0]: unknown model 'gpt-5'" in (watcher.last_error or "")
    assert watcher.loaded_at == 100.0
    assert watcher.poll() is None  # the same broken files are not reloaded again and again

    # Fixed: the new version is picked up.
    write(
        directory,
        "default.yaml",
        (SHIPPED / "default.yaml")
        .read_text()
        .replace("prefer: [mistral-medium-3.5, kimi-k2.6]", "prefer: [kimi-k2.6]"),
    )
    result = watcher.poll()
    assert result is not None and result.ok and result.changed and watcher.version == 2
    assert watcher.get("default").prefer == ("kimi-k2.6",) and watcher.last_error is None
    assert watcher.loaded_at is not None and watcher.loaded_at > 100.0
    assert [r.ok for r in seen] == [True, True, False, True]

    # A new catalog that the policies do not fit is refused as a whole.
    smaller = load_catalog(None, {})
    smaller = type(smaller)(
        smaller.source, smaller.providers, {"mistral-medium-3.5": smaller.models["mistral-medium-3.5"]}, False
    )
    assert not watcher.reload(smaller).ok and watcher.catalog is CATALOG and watcher.version == 2


def test_watcher_refuses_to_start_on_a_broken_directory(tmp_path: Path) -> None:
    write(tmp_path, "default.yaml", "prefer: [gpt-5]\n")
    with pytest.raises(PolicyError, match=r"default\.yaml: prefer\[0\]: unknown model 'gpt-5'"):
        PolicyWatcher(tmp_path, CATALOG)
    lenient = PolicyWatcher(tmp_path, CATALOG, strict=False)
    assert lenient.version == 0 and len(lenient.current) == 0 and lenient.last_error


# -- command line -----------------------------------------------------------------------------------


def gateway(*args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, env=bare_env(), cwd=ROOT)


@pytest.mark.slow
def test_cli_check_and_show(tmp_path: Path) -> None:
    ok = gateway("policy", "check", "policies/")
    assert ok.returncode == 0, ok.stderr
    assert "policies/default.yaml: OK" in ok.stdout and "policies/eu-only.yaml: OK" in ok.stdout
    assert gateway("policy", "check").returncode == 0  # policies/ by default

    bad = write(tmp_path, "bad.yaml", "name: bad\nmodels: [mistral-medium-3.5]\nprefer: [gpt-5]\n")
    failed = gateway("policy", "check", str(bad), "policies/default.yaml")
    assert failed.returncode == 1
    assert f"{bad}: prefer[0]: unknown model 'gpt-5'" in failed.stderr
    assert "policies/default.yaml: OK" in failed.stdout

    shown = gateway("policy", "show", "eu-only")
    assert shown.returncode == 0, shown.stderr
    assert "#   chat: mistral-medium-3.5, codestral" in shown.stdout
    effective = yaml.safe_load(shown.stdout)
    assert effective["fallbacks"]["retries"] == 1 and effective["named_model"] == "refuse"
    assert Policy.model_validate(effective) == load_policy_file(SHIPPED / "eu-only.yaml", CATALOG)
    missing = gateway("policy", "show", "nope")
    assert missing.returncode == 1 and "cost-saver, default, eu-only" in missing.stderr

    for command in (("policy",), ("policy", "check"), ("policy", "show")):
        helped = gateway(*command, "--help")
        assert helped.returncode == 0 and "usage: gateway policy" in helped.stdout
