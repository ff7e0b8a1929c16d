"""Building blocks of routing: a route, what a team may use, model lookup, per-model limits.

The decision itself is `decision.decide`.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.catalog import Catalog, ModelConfig, Provider
from gateway.errors import invalid_request


@dataclass(frozen=True, slots=True)
class Route:
    model: ModelConfig
    provider: Provider
    reason: str


def lookup(catalog: Catalog, name: str) -> ModelConfig | None:
    model = catalog.model(name)
    if model is not None:
        return model
    for candidate in catalog.models.values():
        if candidate.upstream_model == name:
            return candidate
    return None


@dataclass(frozen=True, slots=True)
class Allowed:
    """What a team (and its key) may use; None means no restriction."""

    models: frozenset[str] | None = None
    regions: frozenset[str] | None = None


def check_limits(model: ModelConfig, n: int, max_output: int | None, param: str = "max_tokens") -> None:
    if n > model.max_n:
        raise invalid_request(
            f"Model '{model.name}' allows n (or best_of) up to {model.max_n}.", param="n", code="unsupported_parameter"
        )
    if max_output is not None and model.max_output_tokens and max_output > model.max_output_tokens:
        raise invalid_request(
            f"'{param}' is {max_output}, more than model '{model.name}' can produce ({model.max_output_tokens}).",
            param=param,
            code="invalid_value",
        )
