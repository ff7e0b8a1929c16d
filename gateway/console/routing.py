"""`/ui/routing`: the policies as loaded (and why a broken edit was refused), the explain playground (the API's own
`POST /v1/route/explain`, run in-process for a chosen team, door and headers) and the replay page (a pasted policy
file over the ledger, side by side with what happened, as a table, a chart, CSV and JSON)."""

from __future__ import annotations

import re
import time
from typing import Any
from urllib.parse import urlencode

import orjson
import yaml
from starlette.requests import Request
from starlette.responses import Response

from gateway.console import charts
from gateway.console.formats import money
from gateway.console.moments import moment
from gateway.console.web import View
from gateway.errors import GatewayError
from gateway.policy import PolicyError
from gateway.replay import policy_set_from_text, replay
from gateway.state import Gateway

FORMATS = ("chat", "messages", "responses")
EXAMPLE_BODY = '{\n  "model": "auto",\n  "messages": [{"role": "user", "content": "Summarise this contract in French."}],\n  "max_tokens": 512\n}'
HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,100}$")
MAX_HEADERS = 20
# Headers the playground sets itself: the body's type and length, and no way to authenticate as someone else.
RESERVED_HEADERS = frozenset(
    {"content-type", "content-length", "transfer-encoding", "authorization", "x-api-key", "host"}
)
DEFAULT_SINCE = "30d"
CHART_MODELS = 12  # the replay chart's rows: the models with most requests before or after


# -- the policies as loaded ----------------------------------------------------------------------


def loaded_policies(gateway: Gateway) -> list[dict[str, Any]]:
    """Each policy in use, as YAML (what the gateway understood of its file, defaults filled in)."""
    policies = gateway.policy_set()
    return [
        {
            "name": name,
            "description": policies[name].description,
            "yaml": yaml.safe_dump(
                policies[name].model_dump(mode="json", exclude={"description"}), sort_keys=False, allow_unicode=True
            ),
        }
        for name in sorted(policies)
    ]


async def _team_names(gateway: Gateway) -> list[str]:
    return [team.name for team in await gateway.store.list_teams()]


async def _render(view: View, status: int = 200, **sections: Any) -> Response:
    gateway = view.gateway
    form = view.form
    context: dict[str, Any] = {
        "explain": None,
        "explain_error": "",
        "replay": None,
        "replay_error": "",
        "replay_chart": None,
        "cost_chart": None,
        "download": None,
    }
    context.update(sections)
    return view.render(
        "routing.html",
        status=status,
        title="Routing",
        section="routing",
        status_info=gateway.policy_status(),
        problems=[str(p) for p in gateway.policy_set().problems],
        policies=loaded_policies(gateway),
        teams=await _team_names(gateway),
        formats=FORMATS,
        typed={
            "body": form.get("body", EXAMPLE_BODY),
            "team": form.get("team"),
            "format": form.get("format", "chat"),
            "headers": form.get("headers"),
            "policy": form.get("policy"),
            "policy_name": form.get("policy_name"),
            "replay_team": form.get("replay_team"),
            "since": form.get("since", DEFAULT_SINCE),
            "until": form.get("until"),
        },
        **context,
    )


async def routing_page(view: View) -> Response:
    return await _render(view)


# -- explain ---------------------------------------------------------------------------------------


def parse_headers(text: str) -> list[tuple[bytes, bytes]]:
    """`Name: value` lines (blank lines ignored) as ASGI headers; a 400 for a line that is not a header."""
    headers: list[tuple[bytes, bytes]] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        name, colon, value = line.partition(":")
        name, value = name.strip(), value.strip()
        if not colon or not HEADER_NAME.match(name) or any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise GatewayError(
                400,
                f"Headers, line {number}: write 'Name: value'.",
                "invalid_request_error",
                "invalid_value",
                "headers",
            )
        if name.lower() in RESERVED_HEADERS:
            raise GatewayError(
                400,
                f"Headers, line {number}: {name} is set by the playground itself.",
                "invalid_request_error",
                "invalid_value",
                "headers",
            )
        headers.append((name.lower().encode("latin-1"), value.encode("utf-8")))
    if len(headers) > MAX_HEADERS:
        raise GatewayError(400, f"At most {MAX_HEADERS} headers.", "invalid_request_error", "invalid_value", "headers")
    return headers


def explain_request(view: View, body: bytes, door: str, team: str, headers: list[tuple[bytes, bytes]]) -> Request:
    """The request the API's explain endpoint reads: the pasted body, the chosen door and team, the headers given."""
    query = {"format": door, **({"team": team} if team else {})}
    scope: dict[str, Any] = {
        "type": "http",
        "method": "POST",
        "path": "/v1/route/explain",
        "raw_path": b"/v1/route/explain",
        "query_string": urlencode(query).encode(),
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers],
        "app": view.request.scope.get("app"),
        "state": {},
        "scheme": "http",
        "server": view.request.scope.get("server"),
        "client": view.request.scope.get("client"),
        "http_version": "1.1",
        "root_path": "",
    }
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return Request(scope, receive)


async def explain_page(view: View) -> Response:
    gateway = view.gateway
    form = view.form
    door = form.get("format", "chat")
    try:
        if door not in FORMATS:
            raise GatewayError(400, f"Unknown format {door!r} (known: {', '.join(FORMATS)}).")
        headers = parse_headers(form.get("headers"))
        request = explain_request(view, form.get("body").encode(), door, form.get("team").strip(), headers)
        # The master key may explain for any team; the console's session is the master key's.
        response = await view.console.explain(gateway, request, gateway.auth.admin)
    except GatewayError as error:
        if error.status >= 500 and error.code not in ("policy_not_found", "storage_unavailable"):
            raise
        return await _render(view, error.status, explain_error=error.message)
    explained = orjson.loads(bytes(response.body))
    return await _render(view, explain=explained)


# -- replay ----------------------------------------------------------------------------------------


async def _replay(view: View) -> tuple[dict[str, Any], str]:
    """The replay report of the form's policy file, team and window (JSON-ready), and its CSV."""
    gateway = view.gateway
    form = view.form
    text = form.get("policy")
    if not text.strip():
        raise GatewayError(
            400, "Paste a policy file (YAML) to replay.", "invalid_request_error", "invalid_value", "policy"
        )
    now = time.time()
    since = moment(form.get("since").strip() or DEFAULT_SINCE, now, "since")  # (blank: the default window)
    until = moment(form.get("until"), now, "until")
    assert since is not None
    if until is not None and until <= since:
        raise GatewayError(
            400, "Invalid 'until': it must be after 'since'.", "invalid_request_error", "invalid_value", "until"
        )
    try:
        policies = policy_set_from_text(form.get("policy_name").strip(), text, gateway.catalog, gateway.policy_set())
    except PolicyError as exc:
        raise GatewayError(
            400, f"The policy file does not validate:\n{exc}", "invalid_request_error", "invalid_policy", "policy"
        ) from exc
    report = await replay(
        gateway.store,
        gateway.catalog,
        policies,
        team=form.get("replay_team").strip() or None,
        since=since,
        until=until,
        default_expected_output=gateway.settings.default_expected_output_tokens,
        timezone=gateway.settings.budget_timezone,
    )
    return report.as_dict(), report.as_csv()


def replay_charts(report: dict[str, Any]) -> tuple[charts.Chart, charts.Chart]:
    """Requests and cost per model, as they happened and under the replayed policy."""
    models = sorted(
        report["models"], key=lambda m: (-max(m["requests_before"], m["requests_after"]), m["model"], m["provider"])
    )[:CHART_MODELS]
    names = [f"{m['model']} ({m['region']})" for m in models]
    requests = charts.hbars(
        "chart-replay-requests",
        "Requests per model: as they happened, and under the replayed policy",
        [(name, [m["requests_before"], m["requests_after"]]) for name, m in zip(names, models, strict=True)],
        ["happened", "replayed"],
    )
    cost = charts.hbars(
        "chart-replay-cost",
        "Cost per model: as it happened, and at the replayed routing (same tokens, new models' prices)",
        [(name, [m["cost_before_nanos"], m["cost_after_nanos"]]) for name, m in zip(names, models, strict=True)],
        ["happened", "replayed"],
        value_text=lambda v: money(int(v)),
    )
    return requests, cost


async def replay_page(view: View) -> Response:
    try:
        report, _ = await _replay(view)
    except GatewayError as error:
        if error.status >= 500 and error.code != "storage_unavailable":
            raise
        return await _render(view, error.status, replay_error=error.message)
    requests_chart, cost_chart = replay_charts(report)
    return await _render(view, replay=report, replay_chart=requests_chart, cost_chart=cost_chart)


async def replay_download(view: View) -> Response:
    """The replay's report as a file (`format`: csv or json), from the same form (the policy text is too large for
    a link, and nothing of a replay is kept on the server)."""
    kind = view.form.get("format")
    if kind not in ("csv", "json"):
        raise GatewayError(
            400, "Invalid 'format': use csv or json.", "invalid_request_error", "invalid_value", "format"
        )
    report, csv_text = await _replay(view)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    if kind == "csv":
        body, media = csv_text.encode(), "text/csv; charset=utf-8"
    else:
        body, media = orjson.dumps(report, option=orjson.OPT_INDENT_2), "application/json"
    return Response(
        body,
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="policy-replay-{stamp}.{kind}"'},
    )
