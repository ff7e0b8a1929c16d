"""The Starlette application over a `Gateway`."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.batches.service import Batches
from gateway.catalog import load_catalog
from gateway.console import routes as console_routes
from gateway.errors import GatewayError, internal_error
from gateway.http import admin, anthropic, batches, explain, health, metrics, openai, responses_api
from gateway.http.guard import Guard
from gateway.http.record import RequestIds, RequestLog
from gateway.http.response_store import ResponseStore
from gateway.http.responses import error_response
from gateway.settings import Settings
from gateway.state import Gateway

log = logging.getLogger("gateway")


class TrailingSlash:
    """Serve `/v1/chat/completions/` as `/v1/chat/completions` (and so on for every path), in place.

    Starlette's own answer to such a path is a redirect whose `Location` it builds from the request's `Host`
    header: anyone who can make a client send a forged Host (a cache, a proxy, a link) could send it elsewhere,
    with its body and key. So the router never redirects (`redirect_slashes` off) and this strips the slashes
    before routing: no Location is ever derived from a header."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and len(path) > 1 and path.endswith("/"):
            scope = {**scope, "path": path.rstrip("/") or "/"}
        await self.app(scope, receive, send)


Endpoint = Callable[[Request], Awaitable[Response]]


class GatewayApp(Starlette):
    """Starlette, with the gateway's exact paths (the front doors, admin, health) dispatched by method and path
    before its middleware stack and router: each of those layers wraps `send` and routes by regular expression,
    about 20 µs of CPU per request in the benchmark's profile, and the one guard already turns every outcome
    into a response. Any other path or method (a trailing slash, a path parameter, a 404 or 405) goes through
    Starlette as before."""

    exact: dict[tuple[str, str], Endpoint]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            endpoint = self.exact.get((scope["method"], scope["path"]))
            if endpoint is not None:
                scope["app"] = self
                try:
                    response = await endpoint(Request(scope, receive, send))
                except Exception:  # the guard answers every error: this is a failure of the guard itself
                    log.exception("unhandled error on %s %s", scope["method"], scope["path"])
                    response = error_response(internal_error())
                await response(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def exact_routes(routes: Iterable[BaseRoute]) -> dict[tuple[str, str], Endpoint]:
    """(method, path) -> endpoint for every route whose path has no parameter (HEAD only where Starlette adds it)."""
    exact: dict[tuple[str, str], Endpoint] = {}
    for route in routes:
        if isinstance(route, Route) and "{" not in route.path and route.methods:
            for method in route.methods:
                exact.setdefault((method, route.path), route.endpoint)
    return exact


def allowed_methods(routes: Iterable[BaseRoute], scope: Scope) -> str:
    """The `Allow` header for a path: the methods of every route whose path matches it."""
    methods: set[str] = set()
    for route in routes:
        match, _ = route.matches({**scope, "method": ""})  # no method matches: a path match is PARTIAL
        if match is not Match.NONE:
            methods.update(getattr(route, "methods", None) or ())
    return ", ".join(sorted(methods))


def create_app(gateway: Gateway) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await gateway.start()
        app.state.batches.start()  # (after the store: batches advance from what the database holds)
        settings = gateway.settings
        port = None
        if settings.metrics_port is not None:
            port = await metrics.serve_metrics_port(gateway, settings.host, settings.metrics_port)
        try:
            yield
        finally:
            if port is not None:
                port.close()
            await app.state.batches.close()
            await gateway.close()
            gateway.metrics.close()

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        message = {404: f"Unknown path {request.url.path}.", 405: f"Method {request.method} is not allowed here."}
        text = message.get(exc.status_code, str(exc.detail))
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            # RFC 9110 requires Allow on a 405. Starlette's own lists only the first route matching the path, and
            # several routes share a path (GET, PATCH and DELETE /admin/teams/{name}): list them all.
            headers["Allow"] = allowed_methods(request.app.router.routes, request.scope)
        error = GatewayError(exc.status_code, text, "invalid_request_error", code, headers=headers)
        if request.url.path.startswith(anthropic.PATH):  # Anthropic's clients read Anthropic's error shape
            return anthropic.error_response(error)
        return error_response(error)

    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(internal_error())

    request_log = RequestLog(sys.stdout.buffer if gateway.settings.request_log else None)
    guard = Guard(gateway, request_log, RequestIds())  # every route of the API goes through it
    app = GatewayApp(
        routes=[
            *openai.routes(guard),
            Route("/v1/route/explain", guard(explain.route_explain), methods=["POST"]),
            *anthropic.routes(guard),
            *responses_api.routes(guard),
            *batches.routes(guard),
            *admin.routes(guard),
            *health.routes(gateway),
            *metrics.routes(gateway),
            # The web console for the people who run the gateway, after every API route (its exact paths are
            # looked up like the API's, its others are matched only once no API route did).
            *console_routes(gateway, explain=explain.route_explain),
        ],
        lifespan=lifespan,
        exception_handlers={HTTPException: http_error, Exception: unexpected},
        middleware=[Middleware(TrailingSlash)],
    )
    app.router.redirect_slashes = False  # (its Location would come from the Host header; see TrailingSlash)
    app.exact = exact_routes(app.router.routes)
    app.state.gateway = gateway
    app.state.batches = Batches(gateway)
    app.state.responses = ResponseStore(gateway.settings.responses_kept, gateway.settings.responses_kept_bytes)
    app.state.request_log = request_log
    return app


def app_from_environment() -> Starlette:
    """uvicorn factory for `gateway serve` (each worker process builds its own Gateway)."""
    from gateway.http.tuning import tune_process

    settings = Settings()
    app = create_app(Gateway(settings, load_catalog(settings.config)))
    tune_process()
    return app
