"""Random routing scenarios (hypothesis): one call of `decide` each, over random policies, teams, keys, headers,
requested models, capabilities, prompt sizes at and around the windows, per-model counts, expected output and
spend, on three catalogs (the self-hosted example, the built-in one and `TINY`). Drawn by the routing property
tests (tests/routing/test_properties.py, test_alias_properties.py).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from gateway.catalog import AUTO_MODEL, Catalog, CatalogFile, ModelConfig, Provider, load_catalog
from gateway.policy import Policy
from gateway.policy.schema import FAILURE_KINDS
from gateway.routing import Allowed, DecisionRequest, RouteDecision, decide
from gateway.tokens import Count
from tests.support import ROOT

# -- catalogs ------------------------------------------------------------------------------------------------


def _catalog(source: str, spec: dict[str, Any]) -> Catalog:
    """A catalog from a dict, validated like a catalog file (no environment: nothing is called)."""
    parsed = CatalogFile.model_validate(spec)
    providers = {
        p.name: Provider(
            p.name,
            p.kind,
            p.region,
            p.base_url or "http://127.0.0.1:9",
            None,
            p.litellm_provider,
            p.max_connections,
            p.timeouts,
        )
        for p in parsed.providers
    }
    return Catalog(source, providers, {m.name: m for m in parsed.models}, False)


def _m(
    name: str, provider: str, window: int, caps: list[str], price: tuple[str, str], upstream: str | None = None
) -> dict:
    return {
        "name": name,
        "provider": provider,
        "upstream_model": upstream or name,
        "context_window": window,
        "max_output_tokens": 32768,
        "capabilities": caps,
        "price": {"input": price[0], "output": price[1]},
    }


# Four regions, windows from 512 tokens (small prompts hit them) to 1M, equal prices (ties), an upstream id
# shared by two models (a request naming it gets the first in catalog order).
TINY = _catalog(
    "tiny",
    {
        "providers": [
            {"name": "mistral", "kind": "mistral", "region": "eu", "base_url": "http://127.0.0.1:9"},
            {"name": "moonshot", "kind": "moonshot", "region": "cn", "base_url": "http://127.0.0.1:9"},
            {"name": "vllm", "kind": "openai-compatible", "region": "onprem", "base_url": "http://127.0.0.1:9"},
            {"name": "router", "kind": "openai-compatible", "region": "global", "base_url": "http://127.0.0.1:9"},
        ],
        "models": [
            _m("eu-large", "mistral", 262_144, ["chat", "tools", "vision"], ("1.50", "7.50")),
            _m("eu-small", "mistral", 4_096, ["chat", "tools"], ("0.20", "0.60"), "shared-upstream"),
            _m("eu-code", "mistral", 8_192, ["chat", "fim"], ("0.30", "0.90")),
            _m("eu-embed", "mistral", 8_192, ["embeddings"], ("0.10", "0")),
            _m("cn-huge", "moonshot", 1_048_576, ["chat", "tools", "vision"], ("0.60", "1.80")),
            _m("cn-small", "moonshot", 2_048, ["chat"], ("0.10", "0.30")),
            _m("op-medium", "vllm", 32_768, ["chat", "tools"], ("0", "0")),
            _m("op-tiny", "vllm", 512, ["chat", "fim"], ("0", "0")),
            _m("gl-mid", "router", 131_072, ["chat", "tools", "vision"], ("0.95", "4.00")),
            _m("gl-twin", "router", 16_384, ["chat"], ("0.20", "0.60"), "shared-upstream"),
        ],
    },
)
CATALOGS: dict[str, Catalog] = {
    "example": load_catalog(ROOT / "config" / "catalog.self-hosted-and-openrouter.example.yaml", {}),
    "builtin": load_catalog(None, {}),
    "tiny": TINY,
}
UNKNOWN_MODELS = ("gpt-9", "mistral-large-9")
METHODS = ("estimate", "estimate", "estimate", "tekken", "o200k", "given")


def region_of(catalog: Catalog, model: ModelConfig) -> str:
    return catalog.provider_of(model).region


def names(models: list[ModelConfig]) -> list[str]:
    return [m.name for m in models]


# -- strategies ----------------------------------------------------------------------------------------------
# Built once per catalog and reused (hypothesis validates a strategy on first use: building them inside each
# example would cost more than the tests themselves).


@functools.cache
def subsets(items: tuple[str, ...], min_size: int = 0) -> st.SearchStrategy[list[str]]:
    if not items:
        return st.just([])
    return st.lists(st.sampled_from(items), unique=True, min_size=min_size, max_size=len(items))


@functools.cache
def maybe_subsets(items: tuple[str, ...]) -> st.SearchStrategy[list[str] | None]:
    return st.none() | st.none() | subsets(items)  # None (no restriction) two times in three


SKIP_OVER_WINDOW = st.booleans() | st.just(True)
SAFETY_MARGIN = st.sampled_from([0, 2, 2.5, 10, 50]) | st.floats(0, 50)
PREFER_CHEAPEST = st.none() | st.sampled_from([0, 50, 80, 100]) | st.floats(0, 100)
ON_TOO_LARGE = subsets(("cheaper_model", "lower_max_tokens"))
ON_FAILURE = subsets((*FAILURE_KINDS, "500", "502", "503"))
NAMED_MODEL = st.sampled_from(["honour", "reroute", "refuse"])
ENDPOINT = st.sampled_from(["chat", "chat", "chat", "chat", "fim", "embeddings"])
NEEDS = subsets(("tools", "vision"))
EXPECTED = st.sampled_from([0, 1, 64, 1024, 4096, 32_768]) | st.integers(0, 40_000)
SPENT = st.none() | st.floats(0, 1.5) | st.sampled_from([0.0, 0.8, 0.85, 1.0])
# One model's count relative to the request's base figure: (same as base?, jitter, method, margin %, below %,
# refinable). An estimate has a band (straddling limits near the base), a tokenizer count a narrow one or none.
COUNT_SHAPE = st.tuples(
    st.booleans(), st.integers(-40, 40), st.sampled_from(METHODS), st.integers(0, 25), st.integers(0, 20), st.booleans()
)
COUNT_MODE = st.sampled_from(["none", "full", "full", "full"])
ANCHOR = st.tuples(st.integers(0, 1000), st.integers(-64, 64))
BASE = st.integers(0, 1_300_000) | st.sampled_from([0, 1, 50, 5_000])


def count_from(shape: tuple, base: int) -> Count:
    same, jitter, method, margin_pct, below_pct, refinable = shape
    tokens = base if same else max(0, base + jitter)
    if method == "estimate":
        return Count(
            tokens,
            False,
            "estimate",
            tokens * margin_pct // 100 + 1,
            below=tokens * below_pct // 100,
            refinable=refinable,
        )
    if method == "o200k":
        return Count(tokens, False, "o200k", tokens * margin_pct // 250, below=tokens * below_pct // 200)
    return Count(tokens, True, method, 0)


@functools.cache
def _strategies(catalog_name: str) -> dict[str, st.SearchStrategy[Any]]:
    catalog = CATALOGS[catalog_name]
    models = tuple(catalog.models)
    regions = catalog.regions
    upstreams = sorted({m.upstream_model for m in catalog.models.values()} - set(models))
    return {
        "order": st.permutations(models),
        "cut": st.integers(0, len(models)),
        "models": maybe_subsets(models),
        "regions": maybe_subsets(regions),
        "allowed_models": maybe_subsets((*models, "ghost-model")),
        "allowed_regions": maybe_subsets((*regions, "mars")),
        "header": st.none() | subsets(regions, 1).map(frozenset),
        # auto half the time, else a catalog name, an upstream id or (rarely) an unknown name
        "requested": st.sampled_from(
            (AUTO_MODEL,) * (len(models) + len(upstreams)) + models + tuple(upstreams) + UNKNOWN_MODELS[:1]
        ),
    }


@st.composite
def policies(draw: st.DrawFn, catalog_name: str) -> Policy:
    """Any policy the schema accepts over this catalog's models and regions (the semantic checks of
    `gateway policy check` are not applied: `decide` must hold for every policy object)."""
    s = _strategies(catalog_name)
    spec: dict[str, Any] = {
        "name": "prop",
        "models": draw(s["models"]),
        "regions": draw(s["regions"]),
        "prefer": draw(s["order"])[: draw(s["cut"])],
        "context": {"skip_if_over_window": draw(SKIP_OVER_WINDOW), "safety_margin_pct": draw(SAFETY_MARGIN)},
        "budget": {
            "prefer_cheapest_above_pct": draw(PREFER_CHEAPEST),
            "downgrade_to": draw(s["models"]),
            "on_reservation_too_large": draw(ON_TOO_LARGE),
            "max_tokens_floor": draw(st.integers(1, 4096)),
        },
        "named_model": draw(NAMED_MODEL),
        "fallbacks": {
            "on_failure": draw(ON_FAILURE),
            "retries": draw(st.integers(0, 3)),
            "backoff_ms": draw(st.integers(0, 500)),
            "max_backoff_ms": draw(st.integers(0, 3000)),
            "retry_after_max_ms": draw(st.sampled_from([0, 1000, 5000, 300_000])),
            "to_next_candidate": draw(st.booleans()),
            "when_pinned": draw(st.booleans()),
        },
    }
    return Policy.model_validate(spec)


@dataclass
class Scenario:
    """One call of `decide`; the catalog is named (its repr would drown a failing example)."""

    catalog_name: str
    policy: Policy
    allowed: Allowed
    requested: str
    capabilities: frozenset[str]
    prompt_tokens: int
    expected: int
    header: frozenset[str] | None
    spent: float | None
    counts: dict[str, Count] | None

    @property
    def catalog(self) -> Catalog:
        return CATALOGS[self.catalog_name]

    def decide(self, counts: Mapping[str, Count] | None | str = "own") -> RouteDecision:
        return decide(
            DecisionRequest(
                self.catalog,
                self.policy,
                self.allowed,
                self.requested,
                self.capabilities,
                self.prompt_tokens,
                self.expected,
                self.header,
                self.spent,
                self.counts if counts == "own" else counts,  # type: ignore[arg-type]
            )
        )


PURE_CATALOGS = ("example", "builtin", "tiny")


@st.composite
def scenarios(draw: st.DrawFn, servable: bool = False, near: bool = False) -> Scenario:
    """Random policies, teams and keys (None: any; empty: none; names the catalog lacks), headers, requested
    models (auto, allowed, forbidden, by upstream id, unknown), capabilities, prompt sizes at and around every
    model's window and usable limit, per-model counts with their bands, expected output and spend.
    `servable`: fewer restrictions, so that most decisions have candidates (for the failover test); `near`:
    always per-model counts, at a limit of some model (for the tokenizer-count test)."""
    catalog_name = draw(st.sampled_from(PURE_CATALOGS))
    catalog = CATALOGS[catalog_name]
    models = list(catalog.models.values())
    s = _strategies(catalog_name)
    policy = draw(policies(catalog_name))
    if (servable or near) and draw(st.booleans()):
        allowed, header = Allowed(), None
    else:
        team_models, team_regions = draw(s["allowed_models"]), draw(s["allowed_regions"])
        allowed = Allowed(
            frozenset(team_models) if team_models is not None else None,
            frozenset(team_regions) if team_regions is not None else None,
        )
        header = draw(s["header"])
    endpoint = "chat" if servable else draw(ENDPOINT)
    needs = draw(NEEDS) if endpoint == "chat" and not servable else []
    requested = draw(s["requested"])
    expected = 0 if endpoint == "embeddings" else draw(EXPECTED)
    # Prompt sizes anywhere, and right at a window or a usable limit of some model (both sides of it); `near`:
    # at the limit of a model that can reach the context step (capable; the window of a named one).
    anchors = sorted({m.context_window for m in models} | {max(0, policy.usable_window(m) - expected) for m in models})
    anchored: ModelConfig | None = None
    if servable:
        base = draw(st.sampled_from([0, 10, 2_000]))
    elif near:
        index, offset = draw(ANCHOR)
        named = lookup_model(catalog, requested) if requested != AUTO_MODEL else None
        if named is not None and draw(st.booleans()):
            anchored, limit = named, named.context_window
        else:
            capable = [m for m in models if {endpoint, *needs} <= m.capabilities] or models
            anchored = capable[index % len(capable)]
            limit = policy.usable_window(anchored) - expected
        base = max(0, limit + offset)
    elif draw(st.booleans()):
        index, offset = draw(ANCHOR)
        base = max(0, anchors[index % len(anchors)] + offset)
    else:
        base = draw(BASE)
    counts: dict[str, Count] | None = None
    if not servable and (near or draw(COUNT_MODE) == "full"):
        counts = {}
        for model in models:
            if model is anchored and draw(st.integers(0, 3)):
                # Mostly an estimate whose band holds the limit, which a tokenizer can count better.
                extra_below, extra_above = draw(st.tuples(st.integers(0, 300), st.integers(0, 300)))
                counts[model.name] = Count(
                    base,
                    False,
                    "estimate",
                    max(0, limit - base) + 1 + extra_above,
                    below=min(base, max(0, base - limit) + extra_below),
                    refinable=True,
                )
            else:
                counts[model.name] = count_from(draw(COUNT_SHAPE), base)
    spent = draw(SPENT)
    return Scenario(
        catalog_name, policy, allowed, requested, frozenset({endpoint, *needs}), base, expected, header, spent, counts
    )


def lookup_model(catalog: Catalog, requested: str) -> ModelConfig | None:
    if requested in catalog.models:
        return catalog.models[requested]
    return next((m for m in catalog.models.values() if m.upstream_model == requested), None)
