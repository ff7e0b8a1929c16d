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


def choose(catalog: Catalog, requested: str, endpoint: str, needs: set[str]) -> Route:
    """`endpoint` is the capability of the endpoint itself: chat, fim or embeddings."""
    wanted = {endpoint, *needs}
    if requested == AUTO_MODEL:
        for model in catalog.models.values():
            if wanted <= model.capabilities:
                return Route(model, catalog.provider_of(model), "preferred")
        raise GatewayError(
            400,
            f"No configured model has the capabilities this request needs: {', '.join(sorted(wanted))}.",
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
    return Route(model, catalog.provider_of(model), "pinned")


def check_limits(model: ModelConfig, n: int, max_output: int | None, param: str = "max_tokens") -> None:
    if model.max_n is not None and n > model.max_n:
        raise invalid_request(f"Model '{model.name}' allows n up to {model.max_n}.", param="n", code="unsupported_parameter")
    if max_output is not None and model.max_output_tokens and max_output > model.max_output_tokens:
        raise invalid_request(
            f"'{param}' is {max_output}, more than model '{model.name}' can produce ({model.max_output_tokens}).",
            param=param,
            code="invalid_value",
        )
