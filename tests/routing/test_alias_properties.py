"""Aliases never change what a decision may do (hypothesis, over the random scenarios of
tests/support/routing_scenarios.py).

For any policy, team, key, header, request size and counts: a name mapped to a catalog model or `auto` decides
exactly as naming that target does (same candidates, refusal, pinned/rerouted, steps; only the reason `pinned` or
`preferred` reads `alias`), and `cheapest` keeps exactly the models `auto` keeps (so the regions, the team's
models and the windows hold), ordered by expected cost. Reproducible: `derandomize=True`, no example database.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from gateway.catalog import AUTO_MODEL
from gateway.policy import Alias, Policy
from gateway.routing import DecisionRequest, RouteDecision, decide
from tests.support.routing_scenarios import Scenario, names, scenarios

ALIASES = settings(
    max_examples=400, suppress_health_check=[HealthCheck.too_slow], derandomize=True, database=None, deadline=None
)
REQUESTED = "claude-opus-4-1"


def with_alias(policy: Policy, target: str) -> Policy:
    return policy.model_copy(update={"aliases": (Alias(match="claude-*", to=target),)})


def run(sc: Scenario, policy: Policy, requested: str) -> RouteDecision:
    return decide(
        DecisionRequest(
            sc.catalog,
            policy,
            sc.allowed,
            requested,
            sc.capabilities,
            sc.prompt_tokens,
            sc.expected,
            sc.header,
            sc.spent,
            sc.counts,
        )
    )


def outcome(d: RouteDecision) -> tuple[object, ...]:
    error = (d.error.status, d.error.code) if d.error is not None else None
    return names(d.candidates), error, d.pinned, d.rerouted, sorted(d.uncertain)


@ALIASES
@given(sc=scenarios(), data=st.data())
def test_an_alias_decides_as_naming_its_target(sc: Scenario, data: st.DataObject) -> None:
    target = data.draw(st.sampled_from((AUTO_MODEL, *sc.catalog.models)), label="target")
    policy = with_alias(sc.policy, target)
    aliased, direct = run(sc, policy, REQUESTED), run(sc, policy, target)
    note(f"aliased: {outcome(aliased)} {aliased.reason!r}; direct: {outcome(direct)} {direct.reason!r}")
    assert aliased.alias is not None and aliased.alias.alias.to == target and aliased.requested == REQUESTED
    assert outcome(aliased) == outcome(direct)
    assert [s.as_json() for s in aliased.steps] == [s.as_json() for s in direct.steps]
    if direct.ok:
        assert aliased.reason == ("alias" if direct.reason in ("pinned", "preferred") else direct.reason)


@ALIASES
@given(sc=scenarios())
def test_cheapest_keeps_what_auto_keeps_cheapest_first(sc: Scenario) -> None:
    policy = with_alias(sc.policy, "cheapest")
    cheapest, auto = run(sc, policy, REQUESTED), run(sc, policy, AUTO_MODEL)
    note(f"cheapest: {outcome(cheapest)}; auto: {outcome(auto)}")
    assert sorted(names(cheapest.candidates)) == sorted(names(auto.candidates))
    assert (cheapest.error is None) == (auto.error is None)
    if auto.error is not None and cheapest.error is not None:
        assert (cheapest.error.status, cheapest.error.code) == (auto.error.status, auto.error.code)
    assert not cheapest.pinned and not cheapest.rerouted and set(cheapest.uncertain) == set(auto.uncertain)
    costs = [Policy.expected_cost_nanos(m, sc.prompt_tokens, sc.expected) for m in cheapest.candidates]
    assert costs == sorted(costs)
    if cheapest.ok:
        assert cheapest.reason == "alias" or cheapest.reason.startswith(("residency:", "context>"))
