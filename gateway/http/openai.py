"""The OpenAI-compatible front doors: chat, completions, FIM and embeddings; explain; models.

Each front door parses its wire format into the pipeline's `InferenceRequest` and renders what the pipeline
returns; everything between (routing, budgets, attempts, settlement) is `gateway.pipeline.serve`.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route as HttpRoute

from gateway.auth.principal import Principal
from gateway.catalog import AUTO_MODEL, ModelConfig
from gateway.errors import GatewayError
from gateway.http.doors import front_door
from gateway.http.guard import Guard
from gateway.http.legacy import as_text_completion, prompt_as_chat
from gateway.http.responses import json_bytes
from gateway.pipeline.plan import allowed_for
from gateway.pipeline.request import InferenceRequest
from gateway.pipeline.validation import check_chat, check_completion, check_embeddings
from gateway.state import Gateway
from gateway.types import Json


def _mistral_client(request: Request) -> bool:
    """Mistral's own SDK (`mistralai`), pointed at the gateway: it reads Mistral's API, not OpenAI's, so it never asks
    for a stream's usage and cannot parse base64 embeddings (Mistral answers floats whatever is asked)."""
    return request.headers.get("user-agent", "").startswith("mistral-client-")


def chat_request(http: Request, body: Json, size: int, principal: Principal) -> InferenceRequest:
    """`POST /v1/chat/completions`: the canonical shape itself."""
    params = check_chat(body)
    if params.stream and _mistral_client(http):
        params.include_usage = True  # Mistral streams always carry usage; its SDK reads it from the last chunks
    return InferenceRequest(principal, "chat", params, body, size, http.headers)


def completion_request(http: Request, body: Json, size: int, principal: Principal) -> InferenceRequest:
    """`POST /v1/completions`: with `suffix` it is fill-in-the-middle, else a chat turn; answers are reshaped into
    text completions."""
    params = check_completion(body)
    if "fim" in params.needs:
        params.needs.discard("fim")
        return InferenceRequest(
            principal, "fim", params, body, size, http.headers, reshape=as_text_completion, endpoint="completions"
        )
    return InferenceRequest(
        principal,
        "chat",
        params,
        prompt_as_chat(body),
        size,
        http.headers,
        reshape=as_text_completion,
        endpoint="completions",
    )


def fim_request(http: Request, body: Json, size: int, principal: Principal) -> InferenceRequest:
    """`POST /v1/fim/completions`: Mistral's FIM endpoint, passed through (Continue's Mistral provider posts here)."""
    params = check_completion(body)
    params.needs.discard("fim")
    return InferenceRequest(principal, "fim", params, body, size, http.headers, endpoint="fim")


def embeddings_request(http: Request, body: Json, size: int, principal: Principal) -> InferenceRequest:
    params = check_embeddings(body)
    if _mistral_client(http):
        body.pop("encoding_format", None)  # floats, as Mistral's API answers its SDK (gateway/emulators/README.md)
    return InferenceRequest(principal, "embeddings", params, body, size, http.headers, endpoint="embeddings")


def model_card(gateway: Gateway, model: ModelConfig | None, principal: Principal) -> dict[str, Any]:
    """A model as OpenAI lists it, plus the window and limits clients such as Aider and Continue read. For
    `auto`: what the caller's policy lets it reach (the largest window among its allowed chat models)."""
    created = 1_700_000_000
    if model is None:
        policy = gateway.policy_for(gateway.policy_set(), principal.team.policy)
        allowed = allowed_for(principal)
        chat = policy.candidates(gateway.catalog, "chat", regions=allowed.regions, models=allowed.models)
        window = max((m.context_window for m in chat), default=0)
        output = max((m.max_output_tokens for m in chat), default=0)
        capabilities = sorted(set().union(*(m.capabilities for m in chat))) if chat else []
        return {
            "id": AUTO_MODEL,
            "object": "model",
            "created": created,
            "owned_by": "model-gateway",
            "context_window": window,
            "context_length": window,
            "max_context_length": window,
            "max_input_tokens": window,
            "max_output_tokens": output,
            "capabilities": capabilities,
            "regions": sorted({gateway.catalog.provider_of(m).region for m in chat}),
            "models": [m.name for m in chat],
        }
    provider = gateway.catalog.provider_of(model)
    return {
        "id": model.name,
        "object": "model",
        "created": created,
        "owned_by": provider.name,
        "context_window": model.context_window,
        "context_length": model.context_window,
        "max_context_length": model.context_window,
        "max_input_tokens": model.context_window,
        "max_output_tokens": model.max_output_tokens,
        "capabilities": sorted(model.capabilities),
        "region": provider.region,
        "fixed_sampling": model.fixed_sampling,
        "pricing": {
            "input_per_million": str(model.price.input),
            "output_per_million": str(model.price.output),
            "cached_input_per_million": str(model.price.cached_input) if model.price.cached_input is not None else None,
        },
    }


async def list_models(gateway: Gateway, request: Request, principal: Principal) -> Response:
    cards = [model_card(gateway, None, principal)] + [
        model_card(gateway, m, principal) for m in gateway.catalog.models.values()
    ]
    return json_bytes(orjson.dumps({"object": "list", "data": cards}))


async def get_model(gateway: Gateway, request: Request, principal: Principal) -> Response:
    name = request.path_params["model_id"]
    if name == AUTO_MODEL:
        return json_bytes(orjson.dumps(model_card(gateway, None, principal)))
    model = gateway.catalog.model(name)
    if model is None:
        raise GatewayError(
            404, f"The model '{name}' does not exist.", "invalid_request_error", "model_not_found", "model"
        )
    return json_bytes(orjson.dumps(model_card(gateway, model, principal)))


def routes(guard: Guard) -> list[HttpRoute]:
    return [
        HttpRoute("/v1/chat/completions", guard(front_door(chat_request), inference=True), methods=["POST"]),
        HttpRoute("/v1/completions", guard(front_door(completion_request), inference=True), methods=["POST"]),
        HttpRoute("/v1/fim/completions", guard(front_door(fim_request), inference=True), methods=["POST"]),
        HttpRoute("/v1/embeddings", guard(front_door(embeddings_request), inference=True), methods=["POST"]),
        HttpRoute("/v1/models", guard(list_models), methods=["GET"]),
        HttpRoute("/v1/models/{model_id:path}", guard(get_model), methods=["GET"]),
    ]
