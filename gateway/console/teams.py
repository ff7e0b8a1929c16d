"""`/ui/teams`: teams (create, edit, delete) and their keys (create, shown once; revoke), each team's spend over
time by model and by provider. Every change goes through `gateway.admin.service`, the admin API's own logic: the
same validation, the same errors (shown on the form, with what was typed)."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

import orjson
from starlette.responses import Response

from gateway.admin import service as management
from gateway.console import charts, data
from gateway.console.formats import day
from gateway.console.web import Form, View
from gateway.errors import GatewayError
from gateway.money import usd_text
from gateway.state import Gateway

RATE_FIELDS = management.RATE_FIELDS
SPEND_DAYS = 30
DAY = 86400


# -- form -> the admin service's body ------------------------------------------------------------


def _number(text: str) -> int | str | None:
    """A whole number typed in a form; empty is None; anything else is passed on as typed, so the service refuses
    it with its own message (no thousands separators: `1,5` would be read differently in half the world)."""
    cleaned = text.strip()
    if not cleaned:
        return None
    return int(cleaned) if cleaned.isdigit() else cleaned


def _choices(form: Form, name: str) -> list[str] | None:
    """Ticked boxes; none ticked: no restriction (None)."""
    ticked = [value for value in form.all(name) if value.strip()]
    return ticked or None


def _model_limits(text: str, current: dict[str, Any] | None) -> Any:
    """The `model_limits` textarea: a JSON object {MODEL: {rpm, tpm, max_concurrent}} that replaces the team's (a
    model left out loses its limits), as a patch for the service."""
    cleaned = text.strip()
    try:
        wanted = orjson.loads(cleaned) if cleaned else {}
    except orjson.JSONDecodeError as exc:
        raise GatewayError(
            400,
            'Invalid \'model_limits\': not JSON (write an object such as {"kimi-k2.6": {"rpm": 60}}).',
            "invalid_request_error",
            "invalid_value",
            "model_limits",
        ) from exc
    if not isinstance(wanted, dict):
        return wanted  # the service says what it must be
    patch: dict[str, Any] = {model: None for model in current or {} if model not in wanted}
    patch.update(wanted)
    return patch or None


def team_body(form: Form, creating: bool, current: dict[str, Any] | None = None) -> dict[str, Any]:
    """The admin API's body from the team form: only the fields the form has (a POST with just `name`,
    `budget_usd` and `period` creates a team); on an edit an emptied field clears its limit."""
    body: dict[str, Any] = {}
    if creating:
        body["name"] = form.get("name").strip()
    if "budget_usd" in form:
        body["budget_usd"] = form.get("budget_usd").strip() or None
    for name in ("period", "policy"):
        if form.get(name).strip():
            body[name] = form.get(name).strip()
    for name in ("soft_limit_pct", *RATE_FIELDS):
        if name in form:
            body[name] = _number(form.get(name))
    for name in ("regions", "models"):
        if name in form:  # (the form always sends an empty value of each, so "none ticked" is seen)
            body[name] = _choices(form, name)
    if "model_limits" in form:
        limits = _model_limits(form.get("model_limits"), (current or {}).get("model_limits"))
        if limits is not None or not creating:
            body["model_limits"] = limits
    if creating:
        body = {k: v for k, v in body.items() if v is not None}
    return body


def key_values(form: Form | None) -> dict[str, Any]:
    fields = ("name", "budget_usd", "expires_at", *RATE_FIELDS)
    if form is None:
        return {**{name: "" for name in fields}, "models": []}
    return {**{name: form.get(name) for name in fields}, "models": _choices(form, "models") or []}


def key_body(form: Form, team: str) -> dict[str, Any]:
    body: dict[str, Any] = {"team": team, "name": form.get("name").strip()}
    if form.get("budget_usd").strip():
        body["budget_usd"] = form.get("budget_usd").strip()
    models = _choices(form, "models")
    if models is not None:
        body["models"] = models
    if form.get("expires_at").strip():
        body["expires_at"] = form.get("expires_at").strip()
    for name in RATE_FIELDS:
        value = _number(form.get(name))
        if value is not None:
            body[name] = value
    return body


def typed_values(form: Form) -> dict[str, Any]:
    """What was typed in a team form, to show it again next to the service's error."""
    values: dict[str, Any] = {
        name: form.get(name) for name in ("name", "budget_usd", "period", "soft_limit_pct", "policy")
    }
    values.update({name: form.get(name) for name in (*RATE_FIELDS, "model_limits")})
    values.update({name: _choices(form, name) or [] for name in ("regions", "models")})
    return values


def team_values(team: dict[str, Any]) -> dict[str, Any]:
    """A team (the admin service's view) as the edit form shows it."""

    def text(value: Any) -> str:
        return "" if value is None else str(value)

    budget = team["budget_nanos"]
    return {
        "name": team["name"],
        "budget_usd": usd_text(budget).rstrip("0").rstrip(".") if budget is not None else "",
        "period": team["period"],
        "soft_limit_pct": text(team["soft_limit_pct"]),
        "policy": team["policy"],
        **{name: text(team[name]) for name in RATE_FIELDS},
        "regions": team["regions"] or [],
        "models": team["models"] or [],
        "model_limits": orjson.dumps(team["model_limits"], option=orjson.OPT_INDENT_2).decode()
        if team["model_limits"]
        else "",
    }


EMPTY_TEAM: dict[str, Any] = {
    **{name: "" for name in ("name", "budget_usd", "soft_limit_pct", "policy", *RATE_FIELDS, "model_limits")},
    "period": "monthly",
    "regions": [],
    "models": [],
}


# -- pages ---------------------------------------------------------------------------------------


def _peek(gateway: Gateway) -> management.Peek | None:
    limit_store = getattr(gateway, "limit_store", None)
    return limit_store.peek if limit_store is not None else None


def _choices_context(gateway: Gateway) -> dict[str, Any]:
    catalog = gateway.catalog
    return {
        "all_regions": list(catalog.regions),
        "all_models": list(catalog.models),
        "all_policies": sorted(gateway.policy_set()),
    }


async def _teams(view: View, status: int = 200, error: str = "", typed: Form | None = None) -> Response:
    gateway = view.gateway
    teams = await management.list_teams(gateway.store, gateway.settings.budget_timezone, peek=_peek(gateway))
    return view.render(
        "teams.html",
        status=status,
        title="Teams and keys",
        section="teams",
        teams=teams,
        error=error,
        values=typed_values(typed) if typed is not None else {**EMPTY_TEAM, "policy": "default"},
        deleted=view.request.query_params.get("deleted", ""),
        **_choices_context(gateway),
    )


async def teams_page(view: View) -> Response:
    return await _teams(view)


async def create_team(view: View) -> Response:
    gateway = view.gateway
    try:
        team = await management.create_team(
            gateway.store,
            team_body(view.form, creating=True),
            gateway.settings.budget_timezone,
            gateway.catalog,
            policies=gateway.policy_set(),
        )
    except GatewayError as error:
        if error.status >= 500:
            raise
        return await _teams(view, error.status, error.message, view.form)
    gateway.auth.changed()
    return view.redirect(f"/ui/teams/{quote(team['name'], safe='')}?created=1")


def spend_chart(chart_id: str, title: str, cells: dict[tuple[str, str], int], now: float) -> charts.Chart:
    days = [day(now - (SPEND_DAYS - 1 - i) * DAY) for i in range(SPEND_DAYS)]
    return charts.columns(chart_id, title, days, cells)


def spend_table(cells: dict[tuple[str, str], int]) -> list[tuple[str, int]]:
    """Each series' total over the chart's days, largest first."""
    totals: dict[str, int] = {}
    for (_, name), nanos in cells.items():
        totals[name] = totals.get(name, 0) + nanos
    return sorted(totals.items(), key=lambda item: (-item[1], item[0]))


async def _team(
    view: View,
    name: str,
    status: int = 200,
    error: str = "",
    typed: Form | None = None,
    key_error: str = "",
    key_typed: Form | None = None,
) -> Response:
    gateway = view.gateway
    tz = gateway.settings.budget_timezone
    team = await management.get_team(gateway.store, name, tz, peek=_peek(gateway))
    keys = await management.list_keys(gateway.store, tz, name)
    now = time.time()
    since = now - SPEND_DAYS * DAY
    by_model = await data.daily_cells(gateway.store, name, since, "model")
    by_provider = await data.daily_cells(gateway.store, name, since, "provider")
    return view.render(
        "team.html",
        status=status,
        title=f"Team {name}",
        section="teams",
        team=team,
        keys=keys,
        error=error,
        values={**typed_values(typed), "name": name} if typed is not None else team_values(team),
        key_error=key_error,
        key_values=key_values(key_typed),
        by_model=spend_chart("chart-spend-model", f"Spend per day by model, last {SPEND_DAYS} days", by_model, now),
        by_model_totals=spend_table(by_model),
        by_provider=spend_chart(
            "chart-spend-provider", f"Spend per day by provider, last {SPEND_DAYS} days", by_provider, now
        ),
        by_provider_totals=spend_table(by_provider),
        created=view.request.query_params.get("created", ""),
        updated=view.request.query_params.get("updated", ""),
        revoked=view.request.query_params.get("revoked", ""),
        **_choices_context(gateway),
    )


async def team_page(view: View) -> Response:
    return await _team(view, view.request.path_params["name"])


async def update_team(view: View) -> Response:
    gateway = view.gateway
    name = view.request.path_params["name"]
    tz = gateway.settings.budget_timezone
    try:
        current = await management.get_team(gateway.store, name, tz)
        await management.update_team(
            gateway.store,
            name,
            team_body(view.form, creating=False, current=current),
            tz,
            gateway.catalog,
            policies=gateway.policy_set(),
        )
    except GatewayError as error:
        if error.status >= 500 or error.code == "team_not_found":
            raise
        return await _team(view, name, error.status, error.message, view.form)
    gateway.auth.changed()
    return view.redirect(f"/ui/teams/{quote(name, safe='')}?updated=1")


async def delete_team(view: View) -> Response:
    gateway = view.gateway
    name = view.request.path_params["name"]
    if view.form.get("confirm") != "yes":
        raise GatewayError(400, "Tick the box to confirm that the team and all its keys are deleted.")
    await management.delete_team(gateway.store, name)
    gateway.auth.changed()
    return view.redirect(f"/ui/teams?deleted={quote(name, safe='')}")


async def create_key(view: View) -> Response:
    gateway = view.gateway
    name = view.request.path_params["name"]
    try:
        created = await management.create_key(gateway.store, key_body(view.form, name), gateway.catalog)
    except GatewayError as error:
        if error.status >= 500 or error.code == "team_not_found":
            raise
        return await _team(view, name, error.status, key_error=error.message, key_typed=view.form)
    gateway.auth.changed()
    # The key is on this page and nowhere else, ever: answered directly (no redirect that would need to carry it),
    # and `Cache-Control: no-store` keeps it out of the browser's cache.
    return view.render("key_created.html", title="Key created", section="teams", key=created)


async def revoke_key(view: View) -> Response:
    gateway = view.gateway
    key = await management.revoke_key(gateway.store, view.request.path_params["key_id"])
    gateway.auth.changed()
    return view.redirect(f"/ui/teams/{quote(key['team'], safe='')}?revoked={quote(key['prefix'], safe='')}#keys")
