"""Choose the model for a request.

This is the gateway-core version: a named model is looked up (by public name,
then by upstream id), `auto` takes the first configured model that has every
capability the request needs. Policy routing (residency, context fit, budget)
replaces `choose` with its pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.config import AUTO_MODEL, Catalog, ModelConfig, Provider
from gateway.errors import GatewayError, invalid_request


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

    def refusal(self, model: ModelConfig, region: str) -> str | None:
        if self.models is not None and model.name not in self.models:
            return f"model '{model.name}' is not in the models allowed for this key or team"
        if self.regions is not None and region not in self.regions:
            return f"model '{model.name}' runs in region '{region}', outside the regions allowed ({', '.join(sorted(self.regions))})"
        return None


def choose(catalog: Catalog, requested: str, endpoint: str, needs: set[str], allowed: Allowed = Allowed()) -> Route:
    """`endpoint` is the capability of the endpoint itself: chat, fim or embeddings."""
    wanted = {endpoint, *needs}
    if requested == AUTO_MODEL:
        for model in catalog.models.values():
            provider = catalog.provider_of(model)
            if wanted <= model.capabilities and allowed.refusal(model, provider.region) is None:
                return Route(model, provider, "preferred")
        raise GatewayError(
            400,
            f"No model allowed for this key has the capabilities this request needs: {', '.join(sorted(wanted))}.",
            "invalid_request_error",
            "no_route",
        )
    model = lookup(catalog, requested)
    if model is None:
        raise GatewayError(
            404,
            f"The model '{requested}' does not exist or you do not have access to it.",
            "invalid_request_error",
            "model_not_found",
            "model",
        )
    missing = wanted - model.capabilities
    if missing:
        capability = sorted(missing)[0]
        param = {"tools": "tools", "vision": "messages", "fim": "suffix"}.get(capability, "model")
        raise invalid_request(
            f"Model '{model.name}' does not support {capability}"
            f" (it supports: {', '.join(sorted(model.capabilities))}).",
            param=param,
            code="unsupported_capability",
        )
    provider = catalog.provider_of(model)
    refusal = allowed.refusal(model, provider.region)
    if refusal is not None:
        raise GatewayError(403, refusal[0].upper() + refusal[1:] + ".", "invalid_request_error", "model_not_allowed", "model")
    return Route(model, provider, "pinned")


def check_limits(model: ModelConfig, n: int, max_output: int | None, param: str = "max_tokens") -> None:
    if model.max_n is not None and n > model.max_n:
        raise invalid_request(f"Model '{model.name}' allows n up to {model.max_n}.", param="n", code="unsupported_parameter")
    if max_output is not None and model.max_output_tokens and max_output > model.max_output_tokens:
        raise invalid_request(
            f"'{param}' is {max_output}, more than model '{model.name}' can produce ({model.max_output_tokens}).",
            param=param,
            code="invalid_value",
        )
