"""The OpenAI-compatible routes: chat, completions, FIM, embeddings, models."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route as HttpRoute

from gateway.auth.principal import Principal
from gateway.budget.accounting import Charged, Ticket
from gateway.catalog import AUTO_MODEL, ModelConfig
from gateway.errors import GatewayError
from gateway.http.body import read_json_object
from gateway.http.disconnect import DisconnectWatch
from gateway.http.legacy import as_text_completion, prompt_as_chat
from gateway.http.record import REQUEST_ID_HEADER, RequestIds, RequestLog, RequestRecord
from gateway.http.responses import EventStreamResponse, error_response, json_bytes
from gateway.money import usd_text
from gateway.pipeline.plan import admit, allowed_for, plan, predict_admission
from gateway.pipeline.validation import Request as RequestParams
from gateway.pipeline.validation import check_chat, check_completion, check_embeddings
from gateway.providers import Adapter, Reply, StreamOutcome, StreamReply
from gateway.providers.sse import gateway_error_event
from gateway.providers.upstream_errors import quota_exhausted
from gateway.routing import Route, check_limits
from gateway.routing.circuits import deployment
from gateway.routing.counting import PromptCounts
from gateway.routing.failover import Failover, account_exhausted, failure_kind, upstream_error_kind
from gateway.state import Gateway
from gateway.types import Usage

Handler = Callable[[Request], Awaitable[Response]]
log = logging.getLogger("gateway")


def _route_headers(route: Route) -> dict[str, str]:
    return {
        "x-gateway-model": route.model.name,
        "x-gateway-provider": route.provider.name,
        "x-gateway-region": route.provider.region,
        "x-gateway-route-reason": route.reason,
    }


# Each attempt gets its own shallow copy of the body: adapters rewrite top-level fields in place.
Call = Callable[[Adapter, Route, dict[str, Any]], Awaitable[Reply | StreamReply]]


def _content(request_body: dict[str, Any], response: Any) -> str:
    """What the ledger stores when GATEWAY_LEDGER_CONTENT is on: the request and the answer."""
    return orjson.dumps({"request": request_body, "response": response}).decode()


def _observe(gateway: Gateway, route: Route, counts: PromptCounts, usage: Usage | None) -> None:
    """Our prompt count against the provider's: calibration and per-model error statistics."""
    counted = counts.by_model.get(route.model.name)
    if counted is not None and usage is not None and usage.prompt_tokens > 0:
        gateway.tokens.observe(route.model.name, counted, usage.prompt_tokens)
        gateway.metrics.estimate_ratio(route.model.name, counted.tokens, usage.prompt_tokens)


def shutting_down() -> GatewayError:
    return GatewayError(
        503,
        "The gateway is shutting down and its drain time is over; retry the request (another node will take it).",
        "server_error",
        "gateway_shutting_down",
        headers={"Retry-After": "1"},
    )


SHUTTING_DOWN_EVENT = gateway_error_event(shutting_down())

_STREAM_ERROR_KINDS = {
    "stream_cut": "stream_cut",
    "timeout": "timeout",
    "upstream_error": "status_5xx",
    "malformed": "malformed",
}


async def _serve(
    gateway: Gateway,
    request: Request,
    principal: Principal,
    params: RequestParams,
    body: dict[str, Any],
    size: int,
    endpoint: str,
    call: Call,
) -> Response:
    """Route (policy pipeline), reserve budget, call the provider, settle; the same for every endpoint."""
    record: RequestRecord = request.state.record
    record.requested_model, record.stream = params.model, params.stream
    # The body is read: watch for the client leaving, and for the end of the drain time at shutdown.
    request.state.disconnect = watch = DisconnectWatch(request.receive, gateway.drain_over)
    try:
        return await _serve_watched(gateway, request, record, principal, params, body, size, endpoint, call)
    finally:
        watch.stop()  # a streaming response watches on its own from here


async def _serve_watched(
    gateway: Gateway,
    request: Request,
    record: RequestRecord,
    principal: Principal,
    params: RequestParams,
    body: dict[str, Any],
    size: int,
    endpoint: str,
    call: Call,
) -> Response:
    found = await plan(gateway, principal, params, body, size, endpoint, request.headers)
    if found.decision.pinned and found.decision.considered:
        check_limits(found.decision.considered[0], params.n, params.max_output, params.max_output_param)
    route = found.decision.route(found.catalog)
    check_limits(route.model, params.n, params.max_output, params.max_output_param)
    ticket, route = await admit(gateway, principal, params, body, route, found)
    accounting, metrics = gateway.accounting, gateway.metrics
    keep_content = gateway.settings.ledger_content
    request_body = dict(body) if keep_content else {}
    failover = Failover(found.decision, found.catalog, found.policy.fallbacks)

    def settler(ticket: Ticket, route: Route) -> Callable[..., Awaitable[Charged]]:
        """Settlement of `ticket` as served by `route` (one ledger row for the request, and its metrics)."""

        async def settle(**outcome: Any) -> Charged:
            charged = await accounting.settle(
                ticket,
                provider=route.provider.name,
                region=route.provider.region,
                route_reason=route.reason,
                stream=params.stream,
                **outcome,
            )
            metrics.settled(
                route.model.name, route.provider.name, principal.team.name, charged.usage, charged.cost_nanos
            )
            record.settled(charged)
            return charged

        return settle

    def upstream_done(route: Route, started: float) -> None:
        seconds = time.monotonic() - started
        metrics.upstream_ended(route.provider.name, seconds)
        record.waited_for(seconds)

    def moved(previous: Route, following: Route) -> None:
        if following.model.name != previous.model.name:
            metrics.fallback(previous.model.name, following.model.name, following.reason)

    while True:
        record.routed(route)
        circuit = deployment(route.provider.name, route.model.name)
        if not gateway.circuits.allows(circuit):
            following = failover.skip(route)
            if following is None:
                error = (
                    quota_exhausted(route.provider.name)
                    if gateway.circuits.held(circuit)
                    else GatewayError(
                        503,
                        f"{route.model.name} at {route.provider.name} is failing (circuit open); try again shortly.",
                        "upstream_error",
                        "circuit_open",
                    )
                )
                await settler(ticket, route)(status=503, usage=None)
                raise error
            await accounting.release(ticket)
            moved(route, following)
            ticket, route = await admit(gateway, principal, params, body, following, found)
            continue
        record.attempts += 1
        started = time.monotonic()
        metrics.upstream_started(route.provider.name)
        try:
            reply = await call(gateway.adapter_for(route.model), route, dict(body))
            gateway.circuits.succeeded(circuit)
            break
        except GatewayError as error:
            upstream_done(route, started)
            kind = upstream_error_kind(error)
            if kind is not None:
                metrics.upstream_error(route.provider.name, kind)
            # Every way an attempt ends moves its circuit (a half-open probe included): the provider failing
            # opens it, the provider answering (a client error is an answer) closes it, and a request refused
            # before it reached the provider gives the probe back to the next request.
            if account_exhausted(error):  # every model of this provider fails alike until the account is topped up
                provider = route.provider.name
                held = [deployment(provider, m.name) for m in found.catalog.models.values() if m.provider == provider]
                gateway.circuits.hold(held or [circuit], gateway.settings.quota_cooldown_seconds)
            elif failure_kind(error) is not None:
                gateway.circuits.failed(circuit)
            elif error.upstream_status is not None:
                gateway.circuits.succeeded(circuit)
            else:
                gateway.circuits.unprobed(circuit)
            step = failover.next(route, error)
            if step is None:
                await settler(ticket, route)(status=error.status, usage=None)
                raise
            await accounting.release(ticket)
            following, wait = step
            moved(route, following)
            if wait:
                await asyncio.sleep(wait)  # the policy's backoff (or the provider's Retry-After) before retrying
                record.waited_for(wait)
            ticket, route = await admit(gateway, principal, params, body, following, found)
        except BaseException as error:
            # The client left (cancelled) or the gateway failed while the provider had the request: its outcome
            # is unknown, so a probe reopens the circuit (another probe follows the cool-down). A client that
            # left has sent its prompt to the provider, which bills it: one ledger row, estimated, status 499.
            upstream_done(route, started)
            gateway.circuits.abandoned(circuit)
            left = isinstance(error, asyncio.CancelledError)
            status = (503 if request.state.disconnect.shut_down else 499) if left else 500
            gateway.in_background(settler(ticket, route)(status=status, usage=None, prompt_sent=left))
            raise
    found.counts.done()  # the answer has started: the prompt's collected text is no longer needed
    record.routed(route)
    settle = settler(ticket, route)
    headers = _route_headers(route)
    if isinstance(reply, Reply):
        upstream_done(route, started)
        content = _content(request_body, orjson.loads(reply.body)) if keep_content else None
        charged = await settle(status=200, usage=reply.usage, content=content)
        _observe(gateway, route, found.counts, reply.usage)
        headers["x-gateway-cost-usd"] = usd_text(charged.cost_nanos)
        return json_bytes(reply.body, headers=headers)

    outcome = reply.outcome
    if keep_content:
        outcome.transcript = []

    def streamed_content() -> str | None:
        return _content(request_body, "".join(outcome.transcript)) if outcome.transcript is not None else None

    async def on_finish(done: StreamOutcome) -> dict[str, object]:
        charged = await settle(status=200, usage=done.usage, ttft=done.first_chunk_at, content=streamed_content())
        _observe(gateway, route, found.counts, done.usage)
        return charged.x_gateway(route.model.name, route.provider.name, route.reason)

    outcome.on_finish = on_finish

    async def settle_cut() -> None:
        try:
            await settle(
                status=200,
                usage=outcome.usage,
                completion_chars=outcome.completion_chars,
                ttft=outcome.first_chunk_at,
                content=streamed_content(),
            )
        finally:
            record.release()

    async def events() -> AsyncIterator[bytes]:
        try:
            async for chunk in reply.events:
                yield chunk
        finally:
            upstream_done(route, started)
            record.first_token_at = outcome.first_chunk_at
            if outcome.malformed_chunks:
                metrics.upstream_error(route.provider.name, "malformed")
            kind = _STREAM_ERROR_KINDS.get(outcome.error or "")
            if kind is not None and kind != "malformed":
                metrics.upstream_error(route.provider.name, kind)
            if not ticket.settled:
                # Cut or abandoned: bill what was relayed (estimated if the provider never sent usage).
                record.hold()
                gateway.in_background(settle_cut())

    return EventStreamResponse(events(), headers=headers, stop=gateway.drain_over, farewell=SHUTTING_DOWN_EVENT)


def finish_request(gateway: Gateway, request_log: RequestLog, record: RequestRecord) -> None:
    """The request is over (response sent, ledger written): its metrics and its log line."""
    if record.inference:
        gateway.metrics.request_finished(
            model=record.model or record.requested_model,
            provider=record.provider,
            team=record.team,
            status=record.status,
            stream=record.stream,
            seconds=record.seconds,
            ttft=record.ttft,
            waited=record.waited,
            reason=record.reason,
        )
    request_log.write(record)


def _guarded(
    gateway: Gateway,
    handler: Callable[[Gateway, Request, Principal], Awaitable[Response]],
    inference: bool,
    request_log: RequestLog,
    ids: RequestIds,
) -> Handler:
    """Authenticate, then turn every GatewayError into an OpenAI-style response; keep the request's record."""
    finish = partial(finish_request, gateway, request_log)

    async def endpoint(request: Request) -> Response:
        record = RequestRecord(ids(request.headers), request.scope["path"], inference)
        record.on_close = finish
        request.state.record = record
        try:
            principal = await gateway.auth.principal(request)
            record.identify(principal)
            response = await handler(gateway, request, principal)
        except GatewayError as error:
            record.failed(error.status, error.code)
            if error.code == "storage_unavailable":
                gateway.metrics.storage_event("request", gateway.accounting.journal.pending)
            response = error_response(error)
        except asyncio.CancelledError:
            watch: DisconnectWatch | None = getattr(request.state, "disconnect", None)
            if watch is None or not watch.absorb():
                raise
            if watch.shut_down and not watch.gone:
                record.failed(503, "gateway_shutting_down")
                response = error_response(shutting_down())
            else:
                record.failed(499, "client_closed_request")  # nginx's code; nobody receives this response
                response = error_response(
                    GatewayError(
                        499, "The client closed the request.", "invalid_request_error", "client_closed_request"
                    )
                )
        except Exception:
            log.exception("unhandled error on %s %s (request %s)", request.method, request.url.path, record.id)
            record.failed(500, "internal_error")
            response = error_response(GatewayError(500, "Internal gateway error.", "server_error", "internal_error"))
        response.headers[REQUEST_ID_HEADER] = record.id
        if isinstance(response, EventStreamResponse):
            response.on_close = record.response_sent
        else:
            record.response_sent()
        return response

    return endpoint


def _mistral_client(request: Request) -> bool:
    """Mistral's own SDK (`mistralai`), pointed at the gateway: it reads Mistral's API, not OpenAI's, so it never asks
    for a stream's usage and cannot parse base64 embeddings (Mistral answers floats whatever is asked)."""
    return request.headers.get("user-agent", "").startswith("mistral-client-")


async def chat_completions(gateway: Gateway, request: Request, principal: Principal) -> Response:
    body, size = await read_json_object(request, gateway.settings.max_body_bytes)
    params = check_chat(body)
    if params.stream and _mistral_client(request):
        params.include_usage = True  # Mistral streams always carry usage; its SDK reads it from the last chunks

    async def call(adapter: Adapter, route: Route, attempt: dict[str, Any]) -> Reply | StreamReply:
        return await adapter.chat(attempt, route.model, stream=params.stream, include_usage=params.include_usage)

    return await _serve(gateway, request, principal, params, body, size, "chat", call)


async def completions(gateway: Gateway, request: Request, principal: Principal) -> Response:
    """Legacy completions: with `suffix` it is fill-in-the-middle, else a chat turn."""
    body, size = await read_json_object(request, gateway.settings.max_body_bytes)
    params = check_completion(body)
    fim = "fim" in params.needs
    params.needs.discard("fim")

    async def call(adapter: Adapter, route: Route, attempt: dict[str, Any]) -> Reply | StreamReply:
        options = {"stream": params.stream, "include_usage": params.include_usage, "reshape": as_text_completion}
        if fim:
            return await adapter.fim(attempt, route.model, **options)
        return await adapter.chat(prompt_as_chat(attempt), route.model, **options)

    return await _serve(gateway, request, principal, params, body, size, "fim" if fim else "chat", call)


async def fim_completions(gateway: Gateway, request: Request, principal: Principal) -> Response:
    """Mistral's FIM endpoint, passed through (Continue's Mistral provider posts here)."""
    body, size = await read_json_object(request, gateway.settings.max_body_bytes)
    params = check_completion(body)
    params.needs.discard("fim")

    async def call(adapter: Adapter, route: Route, attempt: dict[str, Any]) -> Reply | StreamReply:
        return await adapter.fim(attempt, route.model, stream=params.stream, include_usage=params.include_usage)

    return await _serve(gateway, request, principal, params, body, size, "fim", call)


async def embeddings(gateway: Gateway, request: Request, principal: Principal) -> Response:
    body, size = await read_json_object(request, gateway.settings.max_body_bytes)
    params = check_embeddings(body)
    if _mistral_client(request):
        body.pop("encoding_format", None)  # floats, as Mistral's API answers its SDK (gateway/emulators/README.md)

    async def call(adapter: Adapter, route: Route, attempt: dict[str, Any]) -> Reply:
        return await adapter.embeddings(attempt, route.model)

    return await _serve(gateway, request, principal, params, body, size, "embeddings", call)


async def route_explain(gateway: Gateway, request: Request, principal: Principal) -> Response:
    """`POST /v1/route/explain`: the full routing decision for a chat request body, without calling a provider
    or reserving anything. The master key may explain for a team with `?team=NAME`."""
    body, size = await read_json_object(request, gateway.settings.max_body_bytes)
    params = check_chat(body)
    team_name = request.query_params.get("team")
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
    found = await plan(gateway, principal, params, body, size, "chat", request.headers)
    explained = found.decision.explain(found.catalog, found.policy)
    explained["team"] = principal.team.name
    explained["admission"] = await predict_admission(gateway, principal, params, body, found)
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


def routes(gateway: Gateway, request_log: RequestLog, ids: RequestIds) -> list[HttpRoute]:
    def route(
        path: str,
        handler: Callable[[Gateway, Request, Principal], Awaitable[Response]],
        method: str,
        inference: bool = False,
    ) -> HttpRoute:
        return HttpRoute(path, _guarded(gateway, handler, inference, request_log, ids), methods=[method])

    return [
        route("/v1/chat/completions", chat_completions, "POST", inference=True),
        route("/v1/completions", completions, "POST", inference=True),
        route("/v1/fim/completions", fim_completions, "POST", inference=True),
        route("/v1/embeddings", embeddings, "POST", inference=True),
        route("/v1/route/explain", route_explain, "POST"),
        route("/v1/models", list_models, "GET"),
        route("/v1/models/{model_id:path}", get_model, "GET"),
    ]
