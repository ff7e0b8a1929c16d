"""`POST /v1/route/explain`: the full routing decision for a request body, without calling a provider or reserving
anything. The body is read as the door named by `?format=` reads it: `chat` (the default: an OpenAI chat
request), `messages` (Anthropic Messages) or `responses` (OpenAI Responses); the master key may explain for a team
with `?team=NAME`."""

from __future__ import annotations

from collections.abc import Mapping

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gateway.auth.principal import Principal
from gateway.errors import GatewayError, invalid_request
from gateway.http import anthropic, openai, responses_api
from gateway.http.body import read_json_object
from gateway.http.doors import Parse
from gateway.http.responses import json_bytes
from gateway.pipeline.admit import predict_admission
from gateway.pipeline.limits import predict_limits, reserved_tokens
from gateway.pipeline.plan import Planner, plan
from gateway.state import Gateway

# ?format= -> the door's parser (translating doors: their request without the renderer).
FORMATS: Mapping[str, Parse] = {
    "chat": openai.chat_request,
    "messages": lambda http, body, size, principal: anthropic.parse_request(http, body, size, principal)[0],
    "responses": lambda http, body, size, principal: responses_api.parse_request(http, body, size, principal)[0],
}


async def route_explain(gateway: Gateway, http: Request, principal: Principal) -> Response:
    name = http.query_params.get("format") or "chat"
    parse = FORMATS.get(name)
    if parse is None:
        raise invalid_request(
            f"Unknown format {name!r} (known: {', '.join(FORMATS)}).", param="format", code="invalid_value"
        )
    body, size = await read_json_object(http, gateway.settings.max_body_bytes)
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
    request = parse(http, body, size, principal)
    found = await plan(Planner.of(gateway), request)
    explained = found.decision.explain(found.catalog, found.policy)
    explained["team"] = principal.team.name
    explained["format"] = name
    explained["admission"] = await predict_admission(gateway, request, found)
    route = found.decision.route(found.catalog) if found.decision.ok else None
    explained["rate_limits"] = await predict_limits(gateway, request, reserved_tokens(found, request), route)
    return json_bytes(orjson.dumps(explained))
