"""Admin API (master key only): teams, keys, spend, policy replay.

Thin handlers over `gateway.admin.service`, which the CLI's direct-database mode
uses too, so both give the same answers and the same errors.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.admin import service as management
from gateway.auth.principal import Principal
from gateway.errors import GatewayError
from gateway.http.body import read_json_object
from gateway.http.guard import Access, Guard
from gateway.http.responses import json_bytes
from gateway.replay.service import replay_request
from gateway.state import Gateway

Handler = Callable[[Gateway, Request], Awaitable[Response]]


def _json(value: Any, status: int = 200) -> Response:
    return json_bytes(orjson.dumps(value), status)


def _query(request: Request, allowed: tuple[str, ...]) -> dict[str, str]:
    """Query parameters, refusing unknown ones (a typo would otherwise silently widen a report)."""
    for name in request.query_params:
        if name not in allowed:
            raise GatewayError(
                400,
                f"Unknown query parameter '{name}' (known: {', '.join(allowed)}).",
                "invalid_request_error",
                "unknown_parameter",
                name,
            )
    return dict(request.query_params)


async def _body(gateway: Gateway, request: Request) -> dict[str, Any]:
    body, _ = await read_json_object(request, gateway.settings.max_body_bytes)
    return body


def _peek(gateway: Gateway) -> management.Peek | None:
    """The limit store's `peek`, for the rate limits' current use in team views (None: not known here)."""
    limit_store = getattr(gateway, "limit_store", None)
    return limit_store.peek if limit_store is not None else None


def _changed(gateway: Gateway, value: Any, status: int = 200) -> Response:
    """A team or key was changed: what this process has cached of teams and keys is forgotten first, so the
    answer is not out before the change applies here (other nodes learn it from the database's notifications)."""
    gateway.auth.changed()
    return _json(value, status)


async def create_team(gateway: Gateway, request: Request) -> Response:
    body = await _body(gateway, request)
    team = await management.create_team(
        gateway.store,
        body,
        gateway.settings.budget_timezone,
        gateway.catalog,
        policies=gateway.policy_set(),
        peek=_peek(gateway),
    )
    return _changed(gateway, team, 201)


async def list_teams(gateway: Gateway, request: Request) -> Response:
    _query(request, ())
    teams = await management.list_teams(gateway.store, gateway.settings.budget_timezone, peek=_peek(gateway))
    return _json({"object": "list", "data": teams})


async def get_team(gateway: Gateway, request: Request) -> Response:
    name = request.path_params["name"]
    return _json(await management.get_team(gateway.store, name, gateway.settings.budget_timezone, peek=_peek(gateway)))


async def update_team(gateway: Gateway, request: Request) -> Response:
    name = request.path_params["name"]
    body = await _body(gateway, request)
    team = await management.update_team(
        gateway.store,
        name,
        body,
        gateway.settings.budget_timezone,
        gateway.catalog,
        policies=gateway.policy_set(),
        peek=_peek(gateway),
    )
    return _changed(gateway, team)


async def delete_team(gateway: Gateway, request: Request) -> Response:
    return _changed(gateway, await management.delete_team(gateway.store, request.path_params["name"]))


async def create_key(gateway: Gateway, request: Request) -> Response:
    body = await _body(gateway, request)
    return _changed(gateway, await management.create_key(gateway.store, body, gateway.catalog), 201)


async def list_keys(gateway: Gateway, request: Request) -> Response:
    team = _query(request, ("team",)).get("team") or None
    keys = await management.list_keys(gateway.store, gateway.settings.budget_timezone, team)
    return _json({"object": "list", "data": keys})


async def get_key(gateway: Gateway, request: Request) -> Response:
    key_id = request.path_params["key_id"]
    return _json(await management.get_key(gateway.store, key_id, gateway.settings.budget_timezone))


async def revoke_key(gateway: Gateway, request: Request) -> Response:
    return _changed(gateway, await management.revoke_key(gateway.store, request.path_params["key_id"]))


async def spend(gateway: Gateway, request: Request) -> Response:
    query = management.parse_spend_query(_query(request, tuple(management.SpendQuery.model_fields)))
    report = await management.spend_report(gateway.store, query)
    if query.format == "csv":
        return Response(management.spend_csv(report), media_type="text/csv; charset=utf-8")
    return _json(report)


async def reload(gateway: Gateway, request: Request) -> Response:
    """`POST /admin/reload`: re-read the catalog file and the policy files now, as SIGHUP does. 200 when the
    new version is in use (or nothing changed), 422 with the reason when it was rejected (the previous
    catalog and policies stay in use)."""
    result = await gateway.reload()
    if not result.attempted:
        return _json({"ok": False, "reloaded": False, "reason": result.error, "reloads": gateway.config_reloads})
    policies = gateway.policy_status()
    return _json(
        {
            "ok": result.ok,
            "changed": result.changed,
            "version": policies["version"],  # (the policies' version)
            "error": result.error,
            "problems": list(result.problems),
            "catalog": {**gateway.catalog_status(), "changed": result.catalog_changed},
            "policies": policies,
            "reloads": gateway.config_reloads,
        },
        200 if result.ok else 422,
    )


async def policy_replay(gateway: Gateway, request: Request) -> Response:
    """`POST /admin/replay`: what other policies would have done to the ledger's traffic (gateway/replay/service.py
    says what the body holds); reads the ledger, never writes it, calls no provider."""
    report = await replay_request(
        gateway.store,
        gateway.catalog,
        gateway.policy_set(),
        await _body(gateway, request),
        default_expected_output=gateway.settings.default_expected_output_tokens,
        timezone=gateway.settings.budget_timezone,
    )
    return _json(report)


def _master_only(handler: Handler) -> Callable[[Gateway, Request, Principal], Awaitable[Response]]:
    async def endpoint(gateway: Gateway, request: Request, principal: Principal) -> Response:
        return await handler(gateway, request)

    return endpoint


def routes(guard: Guard) -> list[Route]:
    """Every admin route: the master key and nothing else (the one guard, `Access.MASTER`)."""

    def route(path: str, handler: Handler, method: str) -> Route:
        return Route(path, guard(_master_only(handler), Access.MASTER), methods=[method])

    return [
        route("/admin/teams", create_team, "POST"),
        route("/admin/teams", list_teams, "GET"),
        route("/admin/teams/{name}", get_team, "GET"),
        route("/admin/teams/{name}", update_team, "PATCH"),
        route("/admin/teams/{name}", delete_team, "DELETE"),
        route("/admin/keys", create_key, "POST"),
        route("/admin/keys", list_keys, "GET"),
        route("/admin/keys/{key_id}", get_key, "GET"),
        route("/admin/keys/{key_id}", revoke_key, "DELETE"),
        route("/admin/spend", spend, "GET"),
        route("/admin/reload", reload, "POST"),
        route("/admin/replay", policy_replay, "POST"),
    ]
