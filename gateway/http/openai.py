"""The OpenAI-compatible front doors: chat, completions, FIM and embeddings; explain; models.

Each front door parses its wire format into the pipeline's `InferenceRequest` and renders what the pipeline
returns; everything between (routing, budgets, attempts, settlement) is `gateway.pipeline.serve`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route as HttpRoute

from gateway.auth.principal import Principal
from gateway.catalog import AUTO_MODEL, ModelConfig
from gateway.errors import GatewayError, shutting_down
from gateway.http.body import read_json_object
from gateway.http.disconnect import DisconnectWatch
from gateway.http.guard import Guard, Handler
from gateway.http.legacy import as_text_completion, prompt_as_chat
from gateway.http.record import RequestRecord
from gateway.http.responses import EventStreamResponse, json_bytes
from gateway.pipeline.admit import predict_admission
from gateway.pipeline.plan import Planner, allowed_for, plan
from gateway.pipeline.request import Answer, Context, InferenceRequest
from gateway.pipeline.serve import serve
from gateway.pipeline.validation import check_chat, check_completion, check_embeddings
from gateway.providers.sse import gateway_error_event
from gateway.state import Gateway
from gateway.types import Json

SHUTTING_DOWN_EVENT = gateway_error_event(shutting_down())

# A front door's parser: the HTTP request, its JSON body and size, the caller -> the pipeline's request.
Parse = Callable[[Request, Json, int, Principal], InferenceRequest]


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
        return InferenceRequest(principal, "fim", params, body, size, http.headers, reshape=as_text_completion)
    return InferenceRequest(
        principal, "chat", params, prompt_as_chat(body), size, http.headers, reshape=as_text_completion
    )


def fim_request(http: Request, body: Json, size: int, principal: Principal) -> InferenceRequest:
    """`POST /v1/fim/completions`: Mistral's FIM endpoint, passed through (Continue's Mistral provider posts here)."""
    params = check_completion(body)
    params.needs.discard("fim")
    return InferenceRequest(principal, "fim", params, body, size, http.headers)


def embeddings_request(http: Request, body: Json, size: int, principal: Principal) -> InferenceRequest:
    params = check_embeddings(body)
    if _mistral_client(http):
        body.pop("encoding_format", None)  # floats, as Mistral's API answers its SDK (gateway/emulators/README.md)
    return InferenceRequest(principal, "embeddings", params, body, size, http.headers)


def front_door(parse: Parse) -> Handler:
    """A handler that reads the body, parses it with `parse`, serves it through the pipeline and renders the answer."""

    async def handler(gateway: Gateway, http: Request, principal: Principal) -> Response:
        body, size = await read_json_object(http, gateway.settings.max_body_bytes)
        return await serve_http(gateway, http, parse(http, body, size, principal))

    return handler


async def serve_http(gateway: Gateway, http: Request, request: InferenceRequest) -> Response:
    """Run the pipeline for an HTTP request, watching for the client leaving and for the end of the drain time at
    shutdown; an answer as JSON, a stream as server-sent events (which watches on its own from then on)."""
    record: RequestRecord = http.state.record
    record.requested_model, record.stream = request.params.model, request.params.stream
    http.state.disconnect = watch = DisconnectWatch(http.receive, gateway.drain_over, http.scope)
    try:
        answer = await serve(gateway, request, Context(record, lambda: watch.shut_down))
    finally:
        watch.stop()
    if isinstance(answer, Answer):
        return json_bytes(answer.body, headers=answer.headers)
    return EventStreamResponse(
        answer.events, headers=answer.headers, stop=gateway.drain_over, farewell=SHUTTING_DOWN_EVENT
    )


async def route_explain(gateway: Gateway, http: Request, principal: Principal) -> Response:
    """`POST /v1/route/explain`: the full routing decision for a chat request body, without calling a provider
    or reserving anything. The master key may explain for a team with `?team=NAME`."""
    body, size = await read_json_object(http, gateway.settings.max_body_bytes)
    params = check_chat(body)
    team_name = http.query_params.get("team")
    if team_name:
        if not principal.is_admin:
            raise GatewayError(
                403,
                "Only the master key may explain for another team ('team').",
                "invalid_request_error",
                "forbidden",
                "team",
            )
        team = await gateway.store.get_team(team_name)
        if team is None:
            raise GatewayError(404, f"No team {team_name!r}.", "invalid_request_error", "team_not_found", "team")
        principal = Principal(team, None, False)
    request = InferenceRequest(principal, "chat", params, body, size, http.headers)
    found = await plan(Planner.of(gateway), request)
    explained = found.decision.explain(found.catalog, found.policy)
    explained["team"] = principal.team.name
    explained["admission"] = await predict_admission(gateway, request, found)
    return json_bytes(orjson.dumps(explained))


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
        HttpRoute("/v1/route/explain", guard(route_explain), methods=["POST"]),
        HttpRoute("/v1/models", guard(list_models), methods=["GET"]),
        HttpRoute("/v1/models/{model_id:path}", guard(get_model), methods=["GET"]),
    ]
