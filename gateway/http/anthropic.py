"""The Anthropic Messages front door: `POST /v1/messages` and `POST /v1/messages/count_tokens`.

A thin door: gateway/translate/anthropic.py turns the body into the canonical OpenAI chat request, the one pipeline
serves it (routing, residency, budgets, attempts, ledger with endpoint "messages"), and gateway/translate/
anthropic_render.py renders the answer, each stream event and every error in Anthropic's shape. Authentication is the
guard's: `x-api-key` (Anthropic's SDKs, Claude Code's ANTHROPIC_API_KEY) or `Authorization: Bearer` (Claude Code's
ANTHROPIC_AUTH_TOKEN). The `anthropic-version` and `anthropic-beta` headers and Claude Code's `?beta=true` are
accepted and not read: the betas Claude Code names switch on Anthropic server features (context management,
interleaved thinking, fine-grained tool streaming, ...) that the body's fields already carry or that no provider here
has.
"""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route as HttpRoute

from gateway.auth.principal import Principal
from gateway.errors import GatewayError
from gateway.http.body import read_json_object
from gateway.http.doors import Renderer, translated_door
from gateway.http.guard import Guard
from gateway.http.responses import json_bytes
from gateway.pipeline.plan import Planner, plan
from gateway.pipeline.request import InferenceRequest, route_headers
from gateway.pipeline.validation import check_chat
from gateway.state import Gateway
from gateway.translate.anthropic import Translated, translate_request
from gateway.translate.anthropic_render import AnthropicRenderer, error_headers, gateway_error
from gateway.types import Json

PATH = "/v1/messages"
COUNT_TOKENS_PATH = PATH + "/count_tokens"


def _request(
    http: Request, body: Json, size: int, principal: Principal, counting: bool
) -> tuple[InferenceRequest, Translated]:
    translated = translate_request(body, counting=counting)
    params = check_chat(translated.body)  # the same checks as the chat door (types, forbidden fields, needs)
    request = InferenceRequest(
        principal, "chat", params, translated.body, size, http.headers, endpoint="messages", output_ceiling=True
    )
    return request, translated


def parse_request(http: Request, body: Json, size: int, principal: Principal) -> tuple[InferenceRequest, Renderer]:
    """`POST /v1/messages` (and explain's `?format=messages`): the pipeline's request and the renderer of its answer."""
    request, translated = _request(http, body, size, principal, counting=False)
    return request, AnthropicRenderer(translated)


def error_response(error: GatewayError) -> Response:
    """A GatewayError in Anthropic's shape, with its status and headers (Retry-After stays)."""
    return json_bytes(orjson.dumps(gateway_error(error)), error.status, error_headers(error))


async def count_tokens(gateway: Gateway, http: Request, principal: Principal) -> Response:
    """`POST /v1/messages/count_tokens`: the prompt's tokens for the model the team's policy would choose, counted by
    the gateway (its tokenizer where it has the model's: Tekken for Mistral; else its calibrated estimate). The same
    decision as a request (aliases, residency, allowed models: a refusal is the same error), no provider call, nothing
    reserved."""
    body, size = await read_json_object(http, gateway.settings.max_body_bytes)
    request, _ = _request(http, body, size, principal, counting=True)
    found = await plan(Planner.of(gateway), request)
    try:
        route = found.decision.route(found.catalog)
        await found.counts.refine([route.model.name])
        count = found.counts.by_model.get(route.model.name) or found.decision.count_for(route.model)
    finally:
        found.counts.done()
    return json_bytes(orjson.dumps({"input_tokens": count.tokens}), headers=route_headers(route))


def routes(guard: Guard) -> list[HttpRoute]:
    return [
        HttpRoute(PATH, guard(translated_door(parse_request), inference=True, errors=error_response), methods=["POST"]),
        HttpRoute(COUNT_TOKENS_PATH, guard(count_tokens, errors=error_response), methods=["POST"]),
    ]
