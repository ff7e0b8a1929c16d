"""(stub: being written)"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route as HttpRoute

from gateway.auth.principal import Principal
from gateway.errors import GatewayError, invalid_request
from gateway.http.doors import Renderer
from gateway.http.guard import Guard
from gateway.http.responses import error_response as openai_error_response
from gateway.pipeline.request import InferenceRequest
from gateway.types import Json

PATH = "/v1/messages"


def parse_request(http: Request, body: Json, size: int, principal: Principal) -> tuple[InferenceRequest, Renderer]:
    raise invalid_request("not yet")


def error_response(error: GatewayError) -> Response:
    return openai_error_response(error)


def routes(guard: Guard) -> list[HttpRoute]:
    return []
