"""The OpenAI-compatible routes: chat, completions, FIM, embeddings, models."""

from __future__ import annotations

from typing import Any, Awaitable, Callable

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route as HttpRoute

from gateway.config import AUTO_MODEL, ModelConfig
from gateway.core import Gateway
from gateway.errors import GatewayError
from gateway.http.body import read_json_object
from gateway.http.responses import EventStreamResponse, error_response, json_bytes
from gateway.legacy import as_text_completion, prompt_as_chat
from gateway.providers import Reply, StreamReply
from gateway.routing import Route, check_limits, choose
from gateway.validation import check_chat, check_completion, check_embeddings

Handler = Callable[[Request], Awaitable[Response]]


def _route_headers(route: Route) -> dict[str, str]:
    return {
        "x-gateway-model": route.model.name,
        "x-gateway-provider": route.provider.name,
        "x-gateway-region": route.provider.region,
        "x-gateway-route-reason": route.reason,
    }


def _respond(reply: Reply | StreamReply, route: Route) -> Response:
    headers = _route_headers(route)
    if isinstance(reply, StreamReply):
        return EventStreamResponse(reply.events, headers=headers)
    return json_bytes(reply.body, headers=headers)


def _guarded(gateway: Gateway, handler: Callable[[Gateway, Request], Awaitable[Response]]) -> Handler:
    """Authenticate, then turn every GatewayError into an OpenAI-style response."""

    async def endpoint(request: Request) -> Response:
        try:
            gateway.auth.check(request)
            return await handler(gateway, request)
        except GatewayError as error:
            return error_response(error)

    return endpoint


async def chat_completions(gateway: Gateway, request: Request) -> Response:
    body = await read_json_object(request, gateway.settings.max_body_bytes)
    params = check_chat(body)
    route = choose(gateway.catalog, params.model, "chat", params.needs)
    param = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
    check_limits(route.model, params.n, params.max_output, param)
    adapter = gateway.adapter_for(route.model)
    reply = await adapter.chat(body, route.model, stream=params.stream, include_usage=params.include_usage)
    return _respond(reply, route)


async def completions(gateway: Gateway, request: Request) -> Response:
    """Legacy completions: with `suffix` it is fill-in-the-middle, else a chat turn."""
    body = await read_json_object(request, gateway.settings.max_body_bytes)
    params = check_completion(body)
    endpoint = "fim" if "fim" in params.needs else "chat"
    route = choose(gateway.catalog, params.model, endpoint, set())
    check_limits(route.model, params.n, params.max_output)
    adapter = gateway.adapter_for(route.model)
    options = {"stream": params.stream, "include_usage": params.include_usage, "reshape": as_text_completion}
    if endpoint == "fim":
        reply = await adapter.fim(body, route.model, **options)
    else:
        reply = await adapter.chat(prompt_as_chat(body), route.model, **options)
    return _respond(reply, route)


async def fim_completions(gateway: Gateway, request: Request) -> Response:
    """Mistral's FIM endpoint, passed through (Continue's Mistral provider posts here)."""
    body = await read_json_object(request, gateway.settings.max_body_bytes)
    params = check_completion(body)
    route = choose(gateway.catalog, params.model, "fim", set())
    check_limits(route.model, params.n, params.max_output)
    adapter = gateway.adapter_for(route.model)
    reply = await adapter.fim(body, route.model, stream=params.stream, include_usage=params.include_usage)
    return _respond(reply, route)


async def embeddings(gateway: Gateway, request: Request) -> Response:
    body = await read_json_object(request, gateway.settings.max_body_bytes)
    params = check_embeddings(body)
    route = choose(gateway.catalog, params.model, "embeddings", set())
    reply = await gateway.adapter_for(route.model).embeddings(body, route.model)
    return _respond(reply, route)


def model_card(gateway: Gateway, model: ModelConfig | None) -> dict[str, Any]:
    """A model as OpenAI lists it, plus the window and limits clients such as Aider and Continue read."""
    created = 1_700_000_000
    if model is None:
        chat = [m for m in gateway.catalog.models.values() if "chat" in m.capabilities]
        window = max((m.context_window for m in chat), default=0)
        output = max((m.max_output_tokens for m in chat), default=0)
        capabilities = sorted(set().union(*(m.capabilities for m in chat))) if chat else []
        return {
            "id": AUTO_MODEL, "object": "model", "created": created, "owned_by": "model-gateway",
            "context_window": window, "context_length": window, "max_context_length": window,
            "max_input_tokens": window, "max_output_tokens": output, "capabilities": capabilities,
            "regions": sorted({gateway.catalog.provider_of(m).region for m in chat}),
        }  # fmt: skip
    provider = gateway.catalog.provider_of(model)
    return {
        "id": model.name, "object": "model", "created": created, "owned_by": provider.name,
        "context_window": model.context_window, "context_length": model.context_window,
        "max_context_length": model.context_window, "max_input_tokens": model.context_window,
        "max_output_tokens": model.max_output_tokens, "capabilities": sorted(model.capabilities),
        "region": provider.region,
        "pricing": {
            "input_per_million": str(model.price.input), "output_per_million": str(model.price.output),
            "cached_input_per_million": str(model.price.cached_input) if model.price.cached_input is not None else None,
        },
    }  # fmt: skip


async def list_models(gateway: Gateway, request: Request) -> Response:
    cards = [model_card(gateway, None)] + [model_card(gateway, m) for m in gateway.catalog.models.values()]
    return json_bytes(orjson.dumps({"object": "list", "data": cards}))


async def get_model(gateway: Gateway, request: Request) -> Response:
    name = request.path_params["model_id"]
    if name == AUTO_MODEL:
        return json_bytes(orjson.dumps(model_card(gateway, None)))
    model = gateway.catalog.model(name)
    if model is None:
        raise GatewayError(
            404, f"The model '{name}' does not exist.", "invalid_request_error", "model_not_found", "model"
        )
    return json_bytes(orjson.dumps(model_card(gateway, model)))


def routes(gateway: Gateway) -> list[HttpRoute]:
    def route(path: str, handler: Callable[[Gateway, Request], Awaitable[Response]], method: str) -> HttpRoute:
        return HttpRoute(path, _guarded(gateway, handler), methods=[method])

    return [
        route("/v1/chat/completions", chat_completions, "POST"),
        route("/v1/completions", completions, "POST"),
        route("/v1/fim/completions", fim_completions, "POST"),
        route("/v1/embeddings", embeddings, "POST"),
        route("/v1/models", list_models, "GET"),
        route("/v1/models/{model_id:path}", get_model, "GET"),
    ]

