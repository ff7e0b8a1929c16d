"""`gateway route explain`: the routing decision for a request file, as a table (or JSON), without calling a provider.

Direct mode (default) loads the team from the database (`--database-url`, default GATEWAY_DATABASE_URL) and the
policies from GATEWAY_POLICIES_DIR (or ./policies); `--url` asks a running gateway's `POST /v1/route/explain`
with the master key from GATEWAY_MASTER_KEY. Exit codes: 0 a model was chosen, 1 refused (no route, not
allowed, unknown team), 2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import orjson

from gateway.cli.tables import table


def render_explain(data: dict[str, Any]) -> str:
    lines = [
        f"team {data.get('team')}  policy {data['policy']}  requested {data['requested_model']}  "
        f"needs {','.join(data['capabilities'])}  prompt {data['prompt_tokens']:,} tokens  "
        f"expected output {data['expected_output_tokens']:,}  regions {','.join(data['regions']) if data['regions'] is not None else 'any'}",
        "",
    ]
    header = ("#", "model", "provider", "region", "window", "usable", "est. cost $", "result")
    rows = []
    for c in data["candidates"]:
        result = "kept" if c["kept"] else f"removed by {c['removed_by']}: {c['reason']}"
        rows.append(
            (
                str(c["rank"] or "-"),
                c["model"],
                c["provider"],
                c["region"],
                f"{c['context_window']:,}",
                f"{c['usable_window']:,}",
                c["estimated_cost_usd"],
                result,
            )
        )
    lines.append(table(header, rows))
    lines.append("")
    alias = data.get("alias")
    if alias:
        lines.append(f"alias: {alias['requested']} matches {alias['entry']} {alias['match']!r} -> {alias['to']}")
    for step in data["steps"]:
        if step["note"]:
            lines.append(f"{step['step']}: {step['note']}")
    if data["error"] is None:
        lines.append(
            f"-> {data['model']} ({data['provider']}, {data['region']}), reason {data['reason']}, "
            f"estimated ${data['estimated_cost_usd']}"
        )
    else:
        e = data["error"]
        lines.append(f"-> refused: {e['status']} {e['code']}: {e['message']}")
    admission = data.get("admission")
    if admission is not None and not admission["admitted"]:
        lines.append(f"-> admission now: refused, {admission['status']} {admission['code']}: {admission['message']}")
    elif admission is not None and (admission["model"] != data["model"] or admission["max_tokens_lowered"]):
        lines.append(
            f"-> admission now: {admission['model']} ({admission['provider']}, {admission['region']}), reason "
            f"{admission['reason']}, max_tokens {admission['max_tokens']}, reserves ${admission['reservation_usd']}"
        )
    limits = data.get("rate_limits")
    if limits is not None and not limits.get("reachable", True):
        lines.append(f"-> rate limits now: unknown (the limit store cannot be reached; {limits['on_failure']})")
    elif limits is not None:
        full = [item for item in limits["limits"] if not item["fits"]]
        words = "; ".join(
            f"{item['scope']} {item['limit']} {item['amount']}: {item['remaining']} left, needs {item['takes']}, "
            f"whole in {item['reset_seconds']:g} s"
            for item in full
        )
        lines.append(f"-> rate limits now: {'refused by ' + words if full else 'fit'}")
    return "\n".join(lines)


def _headers(values: list[str]) -> dict[str, str]:
    out = {}
    for value in values:
        name, sep, rest = value.partition("=")
        if not sep:
            name, sep, rest = value.partition(":")
        if not sep or not name.strip():
            raise SystemExit(f"gateway: --header wants NAME=VALUE, not {value!r}")
        out[name.strip().lower()] = rest.strip()
    return out


# --door: how the request file is read, as the gateway's door of that name reads it (`?format=` of the endpoint).
DOORS = ("chat", "messages", "responses")


def canonical_body(door: str, body: dict[str, Any]) -> dict[str, Any]:
    """The chat request a door makes of a body (Anthropic Messages, OpenAI Responses), or the chat body itself."""
    if door == "messages":
        from gateway.translate.anthropic import translate_request as messages_request

        return messages_request(body).body
    if door == "responses":
        from gateway.translate.responses import translate_request as responses_request

        return responses_request(body).chat
    return body


def _via_http(url: str, team: str, raw: bytes, headers: dict[str, str], door: str = "chat") -> dict[str, Any]:
    key = os.environ.get("GATEWAY_MASTER_KEY")
    if not key:
        raise RuntimeError("--url needs the master key in the environment variable GATEWAY_MASTER_KEY")
    request = urllib.request.Request(
        url.rstrip("/") + "/v1/route/explain?" + urllib.parse.urlencode({"team": team, "format": door}),
        data=raw,
        method="POST",
        headers={"authorization": f"Bearer {key}", "content-type": "application/json", **headers},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return orjson.loads(response.read())
    except urllib.error.HTTPError as exc:
        error = orjson.loads(exc.read()).get("error", {})
        raise RuntimeError(f"{exc.code} {error.get('code')}: {error.get('message')}") from exc


def _direct(args: argparse.Namespace, raw: bytes, headers: dict[str, str]) -> dict[str, Any]:
    from gateway.auth.principal import Principal
    from gateway.catalog import load_catalog
    from gateway.cli.common import config_path
    from gateway.http.body import read_json_object  # noqa: F401  (same parsing rules as the endpoint below)
    from gateway.pipeline.admit import predict_admission
    from gateway.pipeline.plan import Planner, plan
    from gateway.pipeline.request import InferenceRequest
    from gateway.pipeline.validation import check_chat
    from gateway.settings import Settings
    from gateway.state import Gateway

    settings = Settings()
    if args.database_url:
        settings = settings.model_copy(update={"database_url": args.database_url})
    gateway = Gateway(settings, load_catalog(config_path(args)))
    body = orjson.loads(raw)
    if not isinstance(body, dict):
        raise RuntimeError(f"the request file must hold a JSON object (a {args.door} request)")
    body = canonical_body(args.door, body)
    params = check_chat(body)

    async def run() -> dict[str, Any]:
        await gateway.store.open()
        try:
            team = await gateway.store.get_team(args.team)
            if team is None:
                raise RuntimeError(f"no team {args.team!r}")
            principal = Principal(team, None, False)
            request = InferenceRequest(principal, "chat", params, body, len(raw), headers)
            found = await plan(Planner.of(gateway), request)
            data = found.decision.explain(gateway.catalog, found.policy)
            data["team"] = team.name
            data["admission"] = await predict_admission(gateway, request, found)
            return data
        finally:
            await gateway.store.close()

    return asyncio.run(run())


def cmd_route_explain(args: argparse.Namespace) -> int:
    from gateway.catalog import ConfigError
    from gateway.errors import GatewayError

    try:
        raw = Path(args.file).read_bytes() if args.file != "-" else sys.stdin.buffer.read()
        headers = _headers(args.header)
        if args.url:
            data = _via_http(args.url, args.team, raw, headers, args.door)
        else:
            data = _direct(args, raw, headers)
    except (OSError, ConfigError, orjson.JSONDecodeError, ValueError) as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 2
    except GatewayError as exc:
        print(f"gateway: {exc.status} {exc.code}: {exc.message}", file=sys.stderr)
        return 1
    except RuntimeError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 1
    print(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() if args.format == "json" else render_explain(data))
    return 0 if data["error"] is None else 1


def add_route_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    route = commands.add_parser("route", help="explain routing decisions")
    actions = route.add_subparsers(dest="route_command", required=True, metavar="ACTION")
    explain = actions.add_parser(
        "explain", help="the routing decision for a request file, as a table (no provider is called)"
    )
    explain.add_argument("--team", required=True, help="the team whose policy, models and regions apply")
    explain.add_argument("--file", required=True, help="a request body (JSON); '-' reads stdin")
    explain.add_argument(
        "--door",
        choices=DOORS,
        default="chat",
        help="how to read the file: a chat completions body (default), an Anthropic Messages body (Claude Code) or an "
        "OpenAI Responses body (Codex)",
    )
    explain.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a request header, e.g. x-gateway-residency=eu (repeatable)",
    )
    where = explain.add_mutually_exclusive_group()
    where.add_argument("--url", default=None, help="a running gateway (master key from GATEWAY_MASTER_KEY)")
    where.add_argument("--database-url", default=None, help="the database (default: GATEWAY_DATABASE_URL)")
    explain.add_argument("--config", type=Path, default=None, help="catalog file (direct mode)")
    explain.add_argument("--format", choices=("table", "json"), default="table")
    explain.set_defaults(func=cmd_route_explain)
