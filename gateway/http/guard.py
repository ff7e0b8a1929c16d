"""The one guard every route of the gateway goes through.

It opens the request's record (id, log line, metrics), authenticates (a gateway key, or the master key only),
runs the handler, and turns every outcome into a response: a GatewayError into its OpenAI-style error, a
client that left into 499 (nginx's code; nobody receives it), the end of the drain time at shutdown into 503,
and anything unexpected into a 500 that says nothing about the gateway's insides (the traceback goes to the
log, with the request id).
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

from gateway.auth.principal import Principal
from gateway.errors import GatewayError, internal_error, shutting_down
from gateway.http.disconnect import DisconnectWatch
from gateway.http.record import REQUEST_ID_HEADER, RequestIds, RequestLog, RequestRecord
from gateway.http.responses import EventStreamResponse, error_response
from gateway.state import Gateway

log = logging.getLogger("gateway")

Handler = Callable[[Gateway, Request, Principal], Awaitable[Response]]
Endpoint = Callable[[Request], Awaitable[Response]]
# How a route's errors look: OpenAI's `{"error": {...}}` by default; a door with its own format (Anthropic's
# Messages) gives its own, with the same status.
ErrorRender = Callable[[GatewayError], Response]


class Access(enum.Enum):
    KEY = "key"  # a gateway key (or the master key; anyone in open mode)
    MASTER = "master"  # the master key and nothing else (admin routes)


class Guard:
    """Builds the guarded endpoint of each route; holds what they share (the request log and ids)."""

    def __init__(self, gateway: Gateway, request_log: RequestLog, ids: RequestIds) -> None:
        self.gateway, self.request_log, self.ids = gateway, request_log, ids

    def __call__(
        self,
        handler: Handler,
        access: Access = Access.KEY,
        inference: bool = False,
        errors: ErrorRender = error_response,
    ) -> Endpoint:
        gateway = self.gateway

        async def endpoint(request: Request) -> Response:
            record = RequestRecord(self.ids(request.headers), request.scope["path"], inference)
            record.on_close = self._finish
            request.state.record = record
            try:
                principal = await self._authenticate(request, access)
                record.identify(principal)
                response = await handler(gateway, request, principal)
            except GatewayError as error:
                record.failed(error.status, error.code)
                if error.code == "storage_unavailable":
                    gateway.metrics.storage_event("request", gateway.accounting.journal.pending)
                response = errors(error)
            except asyncio.CancelledError:
                watch: DisconnectWatch | None = getattr(request.state, "disconnect", None)
                if watch is None or not watch.absorb():
                    raise
                if watch.shut_down and not watch.gone:
                    record.failed(503, "gateway_shutting_down")
                    response = errors(shutting_down())
                else:
                    record.failed(499, "client_closed_request")  # nobody receives this response
                    response = errors(
                        GatewayError(
                            499, "The client closed the request.", "invalid_request_error", "client_closed_request"
                        )
                    )
            except Exception:
                log.exception("unhandled error on %s %s (request %s)", request.method, request.url.path, record.id)
                record.failed(500, "internal_error")
                response = errors(internal_error())
            response.headers[REQUEST_ID_HEADER] = record.id
            if isinstance(response, EventStreamResponse):
                response.on_close = record.response_sent
            else:
                record.response_sent()
            return response

        return endpoint

    async def _authenticate(self, request: Request, access: Access) -> Principal:
        auth = self.gateway.auth
        if access is Access.MASTER:
            auth.check_master(request)
            return auth.admin
        return await auth.principal(request)

    def _finish(self, record: RequestRecord) -> None:
        """The request is over (response sent, ledger written): its metrics and its log line."""
        if record.inference:
            self.gateway.metrics.request_finished(
                model=record.model or record.requested_model,
                provider=record.provider,
                team=record.team,
                status=record.status,
                stream=record.stream,
                seconds=record.seconds,
                ttft=record.ttft,
                waited=record.waited,
                reason=record.reason,
                endpoint=record.endpoint,
            )
        self.request_log.write(record)
