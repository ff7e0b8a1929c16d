"""(stub: being written)"""

from __future__ import annotations

from starlette.requests import Request
from starlette.routing import Route as HttpRoute

from gateway.auth.principal import Principal
from gateway.errors import invalid_request
from gateway.http.doors import Renderer
from gateway.http.guard import Guard
from gateway.pipeline.request import InferenceRequest
from gateway.types import Json


def parse_request(http: Request, body: Json, size: int, principal: Principal) -> tuple[InferenceRequest, Renderer]:
    raise invalid_request("not yet")


def routes(guard: Guard) -> list[HttpRoute]:
    return []
