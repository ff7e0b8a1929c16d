"""Model-name aliases in `decide`: a name that is neither `auto` nor a catalog model is mapped by the policy's
`aliases` (first match wins) and routed as if the client had named the target; never wider than the target.

The catalog is the built-in one: mistral-medium-3.5 ($1.50/$7.50, eu, chat+tools+vision), kimi-k2.6 ($0.60/$1.80,
cn, chat+tools+vision), codestral ($0.30/$0.90, eu, chat+fim), mistral-embed (eu, embeddings).
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest

from gateway.catalog import AUTO_MODEL, load_catalog
from gateway.metrics.labels import Bounds
from gateway.policy import CLAUDE_CODE_ALIASES, Alias, Policy, builtin_policies, load_policies
from gateway.routing import REASON_CODES, Allowed, DecisionRequest, RouteDecision, decide
from tests.support import ROOT

CATALOG = load_catalog(None, {})
SHIPPED = load_policies(ROOT / "policies", CATALOG)
ANY = Allowed()
EU_TEAM = Allowed(regions=frozenset({"eu"}))
CHAT, TOOLS = frozenset({"chat"}), frozenset({"chat", "tools"})
HAIKU, SONNET, OPUS, OLD_HAIKU = (
    "claude-haiku-4-5-20251001",
    "claude-sonnet-4-5-20250929",
    "claude-opus-4-1",
    "claude-3-5-haiku-20241022",
)


def policy(*aliases: tuple[str, str], **fields: Any) -> Policy:
    return Policy(name="p", aliases=tuple(Alias(match=m, to=t) for m, t in aliases), **fields)


def run(
    p: Policy,
    requested: str,
    capabilities: frozenset[str] = CHAT,
    allowed: Allowed = ANY,
    prompt: int = 50,
    residency: frozenset[str] | None = None,
) -> RouteDecision:
    return decide(DecisionRequest(CATALOG, p, allowed, requested, capabilities, prompt, 1024, residency))


def order(d: RouteDecision) -> list[str]:
    return [m.name for m in d.candidates]


# -- matching ------------------------------------------------------------------------------------------------


def test_first_matching_entry_wins_in_list_order() -> None:
    haiku_first = policy(("claude-*haiku*", "cheapest"), ("claude-*", "auto"))
    d = run(haiku_first, HAIKU)
    assert d.alias is not None and (d.alias.index, d.alias.alias.to) == (0, "cheapest")
    assert order(d)[0] == "codestral"  # cheapest chat model
    assert run(haiku_first, OLD_HAIKU).alias.alias.match == "claude-*haiku*"  # type: ignore[union-attr]
    sonnet = run(haiku_first, SONNET)
    assert sonnet.alias is not None and sonnet.alias.index == 1 and order(sonnet)[0] == "mistral-medium-3.5"
    # The catch-all first: it takes the haiku ids too.
    catch_all_first = policy(("claude-*", "auto"), ("claude-*haiku*", "cheapest"))
    d = run(catch_all_first, HAIKU)
    assert d.alias is not None and d.alias.index == 0 and order(d)[0] == "mistral-medium-3.5"


def test_matching_is_case_sensitive_and_on_the_whole_name() -> None:
    p = policy(("claude-*", "auto"))
    assert run(p, "Claude-Opus-4-1").error is not None  # fnmatchcase: not Claude Code's id
    assert run(p, "anthropic/claude-opus-4-1").error is not None  # the glob matches the whole name
    assert run(p, OPUS).ok
    p = policy(("claude-?-5-*", "cheapest"), ("claude-[hs]*", "auto"))
    assert run(p, OLD_HAIKU).alias.index == 0  # type: ignore[union-attr]
    assert run(p, SONNET).alias.index == 1 and run(p, HAIKU).alias.index == 1  # type: ignore[union-attr]
    assert run(p, OPUS).error is not None


def test_a_catalog_name_auto_and_an_upstream_id_never_go_through_aliases() -> None:
    """Byte-identical decisions for every name that is not aliased, even under a catch-all alias."""
    catch_all = policy(("*", "cheapest"), named_model="reroute")
    plain = Policy(name="p", named_model="reroute")
    upstreams = {m.upstream_model for m in CATALOG.models.values()}
    names = [AUTO_MODEL, *CATALOG.models, *sorted(upstreams)]
    teams = [ANY, EU_TEAM, Allowed(models=frozenset({"kimi-k2.6", "codestral"}))]
    needs = [CHAT, TOOLS, frozenset({"fim"}), frozenset({"embeddings"})]
    for name, team, capabilities, prompt in itertools.product(names, teams, needs, (50, 300_000)):
        with_aliases = run(catch_all, name, capabilities, team, prompt)
        without = run(plain, name, capabilities, team, prompt)
        assert with_aliases.alias is None
        assert json.dumps(with_aliases.explain(CATALOG, catch_all)) == json.dumps(without.explain(CATALOG, plain))
        assert (with_aliases.reason, with_aliases.pinned, with_aliases.rerouted) == (
            without.reason,
            without.pinned,
            without.rerouted,
        )


# -- each kind of target ---------------------------------------------------------------------------------------


def test_to_auto_is_auto_with_the_alias_reason_and_the_entry_in_explain() -> None:
    p = policy(("claude-*", "auto"), prefer=("kimi-k2.6",))
    aliased, auto = run(p, SONNET, TOOLS), run(p, AUTO_MODEL, TOOLS)
    assert order(aliased) == order(auto) == ["kimi-k2.6", "mistral-medium-3.5"]
    assert (aliased.reason, auto.reason) == ("alias", "preferred")
    assert not aliased.pinned and not aliased.rerouted
    assert [s.as_json() for s in aliased.steps] == [s.as_json() for s in auto.steps]
    explained = aliased.explain(CATALOG, p)
    assert explained["requested_model"] == SONNET  # the client's name: the ledger's requested_model
    assert explained["alias"] == {"requested": SONNET, "entry": "aliases[0]", "match": "claude-*", "to": "auto"}
    assert explained["model"] == "kimi-k2.6" and explained["reason"] == "alias"
    assert auto.explain(CATALOG, p)["alias"] is None
    # The more specific reasons still win: a prompt over Mistral's window.
    assert run(policy(("claude-*", "auto")), SONNET, prompt=300_000).reason == "context>262144"


def test_to_cheapest_orders_every_passing_model_by_expected_cost() -> None:
    p = policy(("claude-*haiku*", "cheapest"))
    d = run(p, HAIKU)
    assert order(d) == ["codestral", "kimi-k2.6", "mistral-medium-3.5"] and d.reason == "alias"
    assert next(s for s in d.steps if s.name == "preference").note.startswith("cheapest first: ")
    assert order(run(p, HAIKU, TOOLS)) == ["kimi-k2.6", "mistral-medium-3.5"]  # codestral lacks tools
    assert order(run(p, HAIKU, frozenset({"embeddings"}))) == ["mistral-embed"]
    # The team narrows, the context step still removes: the cheapest of what is left.
    assert order(run(p, HAIKU, allowed=Allowed(models=frozenset({"mistral-medium-3.5", "kimi-k2.6"})))) == [
        "kimi-k2.6",
        "mistral-medium-3.5",
    ]
    big = run(p, HAIKU, prompt=300_000)
    assert order(big) == ["kimi-k2.6"] and big.reason == "context>262144"
    # The budget rules have nothing to move: already cheapest first.
    spent = decide(DecisionRequest(CATALOG, SHIPPED["default"], ANY, HAIKU, TOOLS, 50, 1024, spent_fraction=0.95))
    assert order(spent) == ["kimi-k2.6", "mistral-medium-3.5"] and spent.reason == "alias"


def test_to_a_model_is_exactly_naming_it() -> None:
    p = policy(("claude-*", "kimi-k2.6"), named_model="refuse")
    aliased, named = run(p, OPUS, TOOLS), run(p, "kimi-k2.6", TOOLS)
    assert aliased.pinned and order(aliased) == order(named) == ["kimi-k2.6"]
    assert (aliased.reason, named.reason) == ("alias", "pinned")
    assert [s.as_json() for s in aliased.steps] == [s.as_json() for s in named.steps]
    # A capability the target lacks: the named model's 400, saying which alias chose it.
    code = run(policy(("claude-*", "codestral")), OPUS, TOOLS)
    assert code.error is not None and (code.error.status, code.error.code) == (400, "unsupported_capability")
    assert "Model 'codestral' (requested as 'claude-opus-4-1', mapped by aliases[0] 'claude-*')" in code.error.message
    # when_pinned: the named model, then what auto would choose.
    fallbacks = run(
        Policy(name="p", aliases=(Alias(match="claude-*", to="codestral"),), fallbacks={"when_pinned": True}),  # type: ignore[arg-type]
        OPUS,
    )
    assert order(fallbacks) == ["codestral", "mistral-medium-3.5", "kimi-k2.6"]


# -- never wider than naming the target ---------------------------------------------------------------------


def test_a_target_the_team_may_not_use_follows_named_model() -> None:
    team = Allowed(models=frozenset({"mistral-medium-3.5", "codestral"}))
    refused = run(policy(("claude-*", "kimi-k2.6"), named_model="refuse"), OPUS, allowed=team)
    assert refused.error is not None and (refused.error.status, refused.error.code) == (403, "model_not_allowed")
    assert refused.error.message.startswith(
        "Model 'kimi-k2.6' (requested as 'claude-opus-4-1', mapped by aliases[0] 'claude-*') is not in the models "
        "allowed for this team or key"
    )
    rerouted = run(policy(("claude-*", "kimi-k2.6"), named_model="reroute"), OPUS, allowed=team)
    assert rerouted.rerouted and rerouted.reason == "rerouted"
    assert order(rerouted) == ["mistral-medium-3.5", "codestral"]  # as auto, inside the team's models
    # honour lets through what only the policy's models exclude, never what the team excludes.
    honour = policy(("claude-*", "kimi-k2.6"), models=("mistral-medium-3.5",), named_model="honour")
    assert run(honour, OPUS).pinned and order(run(honour, OPUS)) == ["kimi-k2.6"]
    assert run(honour, OPUS, allowed=team).error is not None
    # The policy's own models, under refuse.
    narrow = policy(("claude-*", "kimi-k2.6"), models=("mistral-medium-3.5", "codestral"))
    assert run(narrow, OPUS).error.code == "model_not_allowed"  # type: ignore[union-attr]


def test_residency_still_fails_closed_for_an_aliased_model() -> None:
    to_kimi = policy(("claude-*", "kimi-k2.6"), named_model="refuse")
    refused = run(to_kimi, OPUS, allowed=EU_TEAM)
    assert refused.error is not None and refused.error.code == "model_not_allowed"
    assert "is excluded by residency eu (it runs in cn)" in refused.error.message
    assert run(to_kimi, OPUS, residency=frozenset({"eu"})).error is not None  # the header as well
    rerouted = run(policy(("claude-*", "kimi-k2.6"), named_model="reroute"), OPUS, TOOLS, allowed=EU_TEAM)
    assert order(rerouted) == ["mistral-medium-3.5"] and rerouted.reason == "rerouted"
    # cheapest and auto: never outside the regions; the reason says residency removed a cheaper model.
    cheapest = run(policy(("claude-*", "cheapest")), HAIKU, TOOLS, allowed=EU_TEAM)
    assert order(cheapest) == ["mistral-medium-3.5"] and cheapest.reason == "residency:eu"
    auto = run(policy(("claude-*", "auto"), prefer=("kimi-k2.6",)), SONNET, residency=frozenset({"eu"}))
    assert {CATALOG.provider_of(m).region for m in auto.candidates} == {"eu"} and auto.reason == "residency:eu"
    # Nothing left in the region: no_route, not a model outside it.
    none = run(
        policy(("claude-*", "cheapest")), HAIKU, TOOLS, allowed=Allowed(regions=frozenset({"cn"})), prompt=2_000_000
    )
    assert none.error is not None and none.error.code == "no_route" and none.candidates == []


# -- unmapped ------------------------------------------------------------------------------------------------


def test_an_unmapped_name_is_a_404_saying_how_to_map_it() -> None:
    eu_only = SHIPPED["eu-only"]
    d = run(eu_only, "gpt-4o")
    assert d.error is not None and (d.error.status, d.error.code, d.error.param) == (404, "model_not_found", "model")
    assert d.error.message == (
        "The model 'gpt-4o' does not exist or you do not have access to it: it is not a model of the catalog and "
        "no alias of policy 'eu-only' maps it. Name one of: auto, mistral-medium-3.5, codestral, mistral-embed; or "
        'map this name with `aliases` in policies/eu-only.yaml (e.g. `- {match: "gpt-4o", to: auto}`; see '
        "policies/README.md)."
    )
    assert d.alias is None and d.explain(CATALOG, eu_only)["error"]["code"] == "model_not_found"
    # A policy without aliases: Claude Code's ids are unmapped; the names listed are the team's.
    plain = run(Policy(name="mine"), OPUS, allowed=Allowed(models=frozenset({"kimi-k2.6"})))
    assert plain.error is not None and "'claude-opus-4-1'" in plain.error.message
    assert "policy 'mine'" in plain.error.message and "Name one of: auto, kimi-k2.6;" in plain.error.message
    # A very long name is cut in the message.
    long = run(Policy(name="mine"), "x" * 5000)
    assert long.error is not None and "x" * 120 + "..." in long.error.message and len(long.error.message) < 600


def test_a_target_missing_from_the_catalog_is_a_404_naming_the_entry() -> None:
    """`gateway policy check` refuses it; a policy built in code may still hold one."""
    d = run(policy(("claude-*", "auto"), ("gpt-*", "gpt-5")), "gpt-4o")
    assert d.error is not None and (d.error.status, d.error.code) == (404, "model_not_found")
    assert "fix aliases[1] of policy 'p'" in d.error.message


# -- the shipped and built-in policies ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["default", "cost-saver", "eu-only"])
def test_shipped_policies_map_claude_code_ids(name: str) -> None:
    p = SHIPPED[name]
    assert p.aliases == CLAUDE_CODE_ALIASES
    for requested in (HAIKU, OLD_HAIKU, SONNET, OPUS, "claude-sonnet-5-20260101"):
        d = run(p, requested, TOOLS)
        assert d.ok and d.reason == "alias", (requested, d.error)
    haiku, auto = run(p, HAIKU, TOOLS), run(p, AUTO_MODEL, TOOLS)
    assert order(haiku) == [m.name for m in p.cheapest(CATALOG, auto.candidates, 50, 1024)]
    assert order(run(p, SONNET, TOOLS)) == order(auto)


def test_the_builtin_default_policy_maps_claude_code_ids() -> None:
    builtin = builtin_policies()["default"]
    assert builtin.aliases == CLAUDE_CODE_ALIASES
    assert order(run(builtin, HAIKU)) == ["codestral", "kimi-k2.6", "mistral-medium-3.5"]
    assert order(run(builtin, SONNET)) == ["mistral-medium-3.5", "kimi-k2.6", "codestral"]


def test_the_alias_reason_is_a_bounded_metric_label() -> None:
    assert "alias" in REASON_CODES
    assert Bounds(CATALOG).reason("alias") == "alias"
