"""`gateway teams|keys|spend`: administer teams, keys and spend from the command line.

Two backends give the same results and the same output: `DirectBackend` works
on the database itself (GATEWAY_DATABASE_URL, or `--database-url`) through the
service layer the admin API uses, and `HttpBackend` talks to a running gateway
(`--url`, with the master key from GATEWAY_MASTER_KEY).

Exit codes: 0 success, 1 not found or refused (or unreachable), 2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

import orjson

from gateway.admin import service as management
from gateway.cli.tables import render_keys, render_new_key, render_spend, render_team, render_teams
from gateway.errors import GatewayError, StorageUnavailable
from gateway.store import redacted
from gateway.store.base import GROUPS

T = TypeVar("T")
NULL_WORDS = ("none", "null", "any")  # option values that mean "no limit / no restriction"
DURATION = re.compile(r"^(\d+)([smhdw])$")
DURATION_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class CliError(Exception):
    """A problem to print, with the exit code to leave with."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# -- backends ------------------------------------------------------------------------------------


class Backend(Protocol):
    def create_team(self, body: dict[str, Any]) -> dict[str, Any]: ...
    def list_teams(self) -> list[dict[str, Any]]: ...
    def show_team(self, name: str) -> dict[str, Any]: ...
    def update_team(self, name: str, body: dict[str, Any]) -> dict[str, Any]: ...
    def delete_team(self, name: str) -> dict[str, Any]: ...
    def create_key(self, body: dict[str, Any]) -> dict[str, Any]: ...
    def list_keys(self, team: str | None) -> list[dict[str, Any]]: ...
    def revoke_key(self, key_id: str) -> dict[str, Any]: ...
    def spend(self, params: dict[str, Any]) -> dict[str, Any]: ...


class DirectBackend:
    """The database itself, through `gateway.admin.service` (one short-lived store per command)."""

    def __init__(self, database_url: str, timezone: str, catalog_path: Path | None) -> None:
        from gateway.store import open_store

        self.store = open_store(database_url)  # raises ValueError for an unsupported URL
        self.database_url = database_url
        self.tz = timezone
        self.catalog_path = catalog_path

    def _catalog(self) -> Any:
        """The catalog the gateway would load, to check model and region names (only when needed)."""
        from gateway.catalog import ConfigError, load_catalog

        try:
            return load_catalog(self.catalog_path)
        except ConfigError as exc:
            raise CliError(f"configuration error\n{exc}") from exc

    def _policies(self, catalog: Any) -> list[str]:
        """The policy names a gateway with this environment's settings would have (GATEWAY_POLICIES_DIR or
        ./policies, validated against `catalog`), to refuse a team policy that does not exist."""
        from gateway.policy import PolicyError, policies_for_settings
        from gateway.settings import Settings

        try:
            return sorted(policies_for_settings(Settings(), catalog))
        except PolicyError as exc:
            raise CliError(f"the routing policies do not validate\n{exc}") from exc

    def _run(self, fn: Callable[[Any], Awaitable[T]]) -> T:
        async def run() -> T:
            await self.store.open()
            try:
                return await fn(self.store)
            finally:
                await self.store.close()

        try:
            return asyncio.run(run())
        except StorageUnavailable as exc:  # a GatewayError too, but here it means "cannot use the database"
            cause = exc.__cause__ or exc
            raise CliError(f"cannot use the database {redacted(self.database_url)}: {exc.detail}: {cause}", 1) from exc
        except GatewayError:
            raise
        except Exception as exc:
            if _is_database_error(exc):
                raise CliError(f"cannot use the database {redacted(self.database_url)}: {exc}", 1) from exc
            raise

    def create_team(self, body: dict[str, Any]) -> dict[str, Any]:
        catalog = self._catalog()
        policies = self._policies(catalog)
        return self._run(lambda s: management.create_team(s, body, self.tz, catalog, policies=policies))

    def list_teams(self) -> list[dict[str, Any]]:
        return self._run(lambda s: management.list_teams(s, self.tz))

    def show_team(self, name: str) -> dict[str, Any]:
        return self._run(lambda s: management.get_team(s, name, self.tz))

    def update_team(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        catalog = self._catalog()
        policies = self._policies(catalog) if body.get("policy") is not None else None
        return self._run(lambda s: management.update_team(s, name, body, self.tz, catalog, policies=policies))

    def delete_team(self, name: str) -> dict[str, Any]:
        return self._run(lambda s: management.delete_team(s, name))

    def create_key(self, body: dict[str, Any]) -> dict[str, Any]:
        catalog = self._catalog()
        return self._run(lambda s: management.create_key(s, body, catalog))

    def list_keys(self, team: str | None) -> list[dict[str, Any]]:
        return self._run(lambda s: management.list_keys(s, self.tz, team))

    def revoke_key(self, key_id: str) -> dict[str, Any]:
        return self._run(lambda s: management.revoke_key(s, key_id))

    def spend(self, params: dict[str, Any]) -> dict[str, Any]:
        return self._run(lambda s: management.spend_report(s, params))


def _is_database_error(exc: BaseException) -> bool:
    import sqlite3

    if isinstance(exc, sqlite3.Error):
        return True
    try:
        import psycopg
    except ImportError:  # psycopg is a dependency, but SQLite users need not care
        return False
    return isinstance(exc, psycopg.Error)


class HttpBackend:
    """A running gateway's admin API, with the master key."""

    def __init__(self, url: str, master_key: str, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.master_key = master_key
        self.timeout = timeout

    def _call(self, method: str, path: str, body: Any = None, query: Mapping[str, Any] | None = None) -> Any:
        target = self.url + path
        if query:
            target += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
        request = urllib.request.Request(target, method=method, data=orjson.dumps(body) if body is not None else None)
        request.add_header("authorization", f"Bearer {self.master_key}")
        if body is not None:
            request.add_header("content-type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return orjson.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise _as_gateway_error(exc.code, exc.read()) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise CliError(f"cannot reach the gateway at {self.url}: {reason}", 1) from None

    def create_team(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", "/admin/teams", body)

    def list_teams(self) -> list[dict[str, Any]]:
        return self._call("GET", "/admin/teams")["data"]

    def show_team(self, name: str) -> dict[str, Any]:
        return self._call("GET", f"/admin/teams/{_segment(name)}")

    def update_team(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._call("PATCH", f"/admin/teams/{_segment(name)}", body)

    def delete_team(self, name: str) -> dict[str, Any]:
        return self._call("DELETE", f"/admin/teams/{_segment(name)}")

    def create_key(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", "/admin/keys", body)

    def list_keys(self, team: str | None) -> list[dict[str, Any]]:
        return self._call("GET", "/admin/keys", query={"team": team})["data"]

    def revoke_key(self, key_id: str) -> dict[str, Any]:
        return self._call("DELETE", f"/admin/keys/{_segment(key_id)}")

    def spend(self, params: dict[str, Any]) -> dict[str, Any]:
        return self._call("GET", "/admin/spend", query=params)


def _segment(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def _as_gateway_error(status: int, raw: bytes) -> GatewayError:
    try:
        error = orjson.loads(raw)["error"]
        return GatewayError(status, error["message"], error.get("type") or "", error.get("code"), error.get("param"))
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return GatewayError(status, f"HTTP {status}: {raw[:200].decode(errors='replace')}", "server_error")


def backend_for(args: argparse.Namespace) -> Backend:
    if args.url:
        master_key = os.environ.get("GATEWAY_MASTER_KEY")
        if not master_key:
            raise CliError("--url needs the master key in the environment variable GATEWAY_MASTER_KEY")
        return HttpBackend(args.url, master_key)
    from gateway.settings import Settings

    try:
        settings = Settings()
    except ValueError as exc:  # pydantic ValidationError of the GATEWAY_* environment
        raise CliError(f"invalid GATEWAY_* setting\n{exc}") from exc
    config = args.config if args.config is not None else settings.config
    try:
        return DirectBackend(args.database_url or settings.resolved_database_url(), settings.budget_timezone, config)
    except ValueError as exc:
        raise CliError(str(exc)) from exc


# -- option values -------------------------------------------------------------------------------


def _nullable(value: str) -> str | None:
    return None if value.strip().lower() in NULL_WORDS else value


def _budget(value: str) -> str | None:
    return _nullable(value)  # the service parses it exactly, and names the field if it is wrong


def _name_list(value: str) -> list[str] | None:
    if value.strip().lower() in NULL_WORDS:
        return None
    return [item.strip() for item in value.split(",") if item.strip()]


def _whole(value: str) -> int | str | None:
    """A whole number, or None for 'none'; anything else is passed on as it is, for the service to refuse with a
    message naming its field (soft_limit_pct, rpm, ...)."""
    text = _nullable(value)
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        return text


MODEL_LIMIT_SYNTAX = "use MODEL:rpm=N,tpm=N,max_concurrent=N (N a whole number or 'none'), MODEL:none, or none"


def _model_limits(values: list[str]) -> dict[str, Any] | None:
    """`--model-limit` options as the API's `model_limits`: `MODEL:rpm=N,...` sets (on update, merges into) that
    model's limits, `MODEL:none` removes them, a lone `none` removes every model's. Limit names are checked by
    the service, which names the field."""
    if any(value.strip().lower() in NULL_WORDS for value in values):
        if len(values) > 1:
            raise CliError("--model-limit none removes every model's limits: give it alone")
        return None
    out: dict[str, Any] = {}
    for value in values:
        model, colon, spec = value.partition(":")
        model, spec = model.strip(), spec.strip()
        if not colon or not model or not spec:
            raise CliError(f"--model-limit {value!r}: {MODEL_LIMIT_SYNTAX}")
        if spec.lower() in NULL_WORDS:
            out[model] = None
            continue
        entry = out.get(model) or {}
        for pair in spec.split(","):
            name, equals, amount = pair.partition("=")
            if not equals or not name.strip():
                raise CliError(f"--model-limit {value!r}: {MODEL_LIMIT_SYNTAX}")
            entry[name.strip().replace("-", "_")] = _whole(amount.strip())
        out[model] = entry
    return out


def _expiry(value: str) -> int | str | None:
    """ISO-8601, Unix seconds, or a duration from now such as 30d, 12h, 90m, 2w."""
    text = _nullable(value)
    if text is None:
        return None
    match = DURATION.match(text.strip())
    if match:
        return int(time.time()) + int(match.group(1)) * DURATION_SECONDS[match.group(2)]
    return text


TEAM_FIELDS = (
    ("budget", "budget_usd", _budget),
    ("period", "period", str),
    ("soft_limit", "soft_limit_pct", _whole),
    ("regions", "regions", _name_list),
    ("models", "models", _name_list),
    ("policy", "policy", str),
    ("rpm", "rpm", _whole),
    ("tpm", "tpm", _whole),
    ("max_concurrent", "max_concurrent", _whole),
)
RATE_OPTIONS = (("rpm", "rpm"), ("tpm", "tpm"), ("max_concurrent", "max_concurrent"))


def _team_body(args: argparse.Namespace) -> dict[str, Any]:
    """Only the options given: for `update`, an absent option leaves the field as it is."""
    body: dict[str, Any] = {
        field: convert(getattr(args, dest)) for dest, field, convert in TEAM_FIELDS if getattr(args, dest) is not None
    }
    if args.model_limit:
        body["model_limits"] = _model_limits(args.model_limit)
    return body


def _print_json(value: Any) -> None:
    print(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode())


# -- commands ------------------------------------------------------------------------------------


def _show(args: argparse.Namespace, value: Any, render: Callable[[Any], str]) -> int:
    if args.format == "json":
        _print_json(value)
    else:
        print(render(value))
    return 0


def cmd_teams_create(args: argparse.Namespace) -> int:
    body = {"name": args.name, **_team_body(args)}
    return _show(args, backend_for(args).create_team(body), render_team)


def cmd_teams_list(args: argparse.Namespace) -> int:
    return _show(args, backend_for(args).list_teams(), render_teams)


def cmd_teams_show(args: argparse.Namespace) -> int:
    return _show(args, backend_for(args).show_team(args.name), render_team)


def cmd_teams_update(args: argparse.Namespace) -> int:
    body = _team_body(args)
    if not body:
        raise CliError(
            "nothing to update: give at least one of --budget, --period, --soft-limit, --regions, --models, --policy,"
            " --rpm, --tpm, --max-concurrent, --model-limit"
        )
    return _show(args, backend_for(args).update_team(args.name, body), render_team)


def cmd_teams_delete(args: argparse.Namespace) -> int:
    result = backend_for(args).delete_team(args.name)
    return _show(args, result, lambda r: f"deleted team {r['name']} and its {r['keys_deleted']} key(s)")


def cmd_keys_create(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"team": args.team}
    if args.name is not None:
        body["name"] = args.name
    if args.budget is not None:
        body["budget_usd"] = _budget(args.budget)
    if args.models is not None:
        body["models"] = _name_list(args.models)
    if args.expires is not None:
        body["expires_at"] = _expiry(args.expires)
    for dest, field in RATE_OPTIONS:
        if getattr(args, dest) is not None:
            body[field] = _whole(getattr(args, dest))
    return _show(args, backend_for(args).create_key(body), render_new_key)


def cmd_keys_list(args: argparse.Namespace) -> int:
    return _show(args, backend_for(args).list_keys(args.team), render_keys)


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    result = backend_for(args).revoke_key(args.id)
    return _show(
        args, result, lambda k: f"revoked key {k['id']} ({k['prefix']}...) of team {k['team']} at {k['revoked_at']}"
    )


def cmd_spend(args: argparse.Namespace) -> int:
    params = {
        "team": args.team,
        "key": args.key,
        "model": args.model,
        "provider": args.provider,
        "since": args.since,
        "until": args.until,
        "batch": args.batch,
        "group_by": args.group_by,
    }
    report = backend_for(args).spend({k: v for k, v in params.items() if v is not None})
    if args.format == "csv":
        sys.stdout.write(management.spend_csv(report))
        return 0
    return _show(args, report, render_spend)


def _guarded(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Errors become one readable message and the documented exit code."""

    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except GatewayError as error:
            named = error.param is None or f"'{error.param}'" in error.message
            print(f"gateway: error: {error.message}" + ("" if named else f" (field: {error.param})"), file=sys.stderr)
            return 2 if error.status in (400, 413, 415, 422) else 1
        except CliError as error:
            print(f"gateway: {error}", file=sys.stderr)
            return error.exit_code

    return run


# -- parser --------------------------------------------------------------------------------------


def _common(formats: Sequence[str] = ("table", "json")) -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    where = parent.add_mutually_exclusive_group()
    where.add_argument("--url", default=None, help="a running gateway (master key from $GATEWAY_MASTER_KEY)")
    where.add_argument(
        "--database-url",
        default=None,
        help="the database itself (default: $GATEWAY_DATABASE_URL or the data dir's SQLite)",
    )
    parent.add_argument(
        "--config", type=Path, default=None, help="catalog file for model and region names (default: $GATEWAY_CONFIG)"
    )
    parent.add_argument("--format", choices=formats, default=formats[0])
    return parent


def _team_options(parser: argparse.ArgumentParser, creating: bool) -> None:
    parser.add_argument("--budget", default=None, help="budget in USD per period ('none': no limit)")
    parser.add_argument("--period", default="monthly" if creating else None, help="daily, weekly, monthly or total")
    parser.add_argument(
        "--soft-limit", dest="soft_limit", default=None, help="warn at this percent of the budget (1-100, 'none')"
    )
    parser.add_argument("--regions", default=None, help="comma-separated allowed regions ('any': no restriction)")
    parser.add_argument("--models", default=None, help="comma-separated allowed models ('any': no restriction)")
    parser.add_argument("--policy", default="default" if creating else None, help="routing policy name")
    _rate_options(parser, "the team's")
    parser.add_argument(
        "--model-limit",
        dest="model_limit",
        action="append",
        default=None,
        metavar="MODEL:rpm=N,tpm=N,max_concurrent=N",
        help="the team's limits on one model (repeatable; 'MODEL:none' removes that model's, 'none' every model's;"
        + (" on update, limits not named are kept)" if not creating else ")"),
    )


def _rate_options(parser: argparse.ArgumentParser, whose: str) -> None:
    parser.add_argument("--rpm", default=None, help=f"{whose} requests per minute ('none': no limit)")
    parser.add_argument("--tpm", default=None, help=f"{whose} tokens per minute, prompt and output ('none': no limit)")
    parser.add_argument(
        "--max-concurrent", dest="max_concurrent", default=None, help=f"{whose} concurrent requests ('none': no limit)"
    )


def add_admin_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `teams`, `keys` and `spend` to the `gateway` command's subcommands."""
    common = _common()

    teams = commands.add_parser("teams", help="create, list, show, update and delete teams")
    team_commands = teams.add_subparsers(dest="teams_command", required=True, metavar="ACTION")
    create = team_commands.add_parser("create", parents=[common], help="create a team")
    create.add_argument("name")
    _team_options(create, creating=True)
    create.set_defaults(func=_guarded(cmd_teams_create))
    listing = team_commands.add_parser("list", parents=[common], help="list teams with their spend this period")
    listing.set_defaults(func=_guarded(cmd_teams_list))
    show = team_commands.add_parser(
        "show", parents=[common], help="a team, its spend, reservations and remaining budget"
    )
    show.add_argument("name")
    show.set_defaults(func=_guarded(cmd_teams_show))
    update = team_commands.add_parser("update", parents=[common], help="change some of a team's settings")
    update.add_argument("name")
    _team_options(update, creating=False)
    update.set_defaults(func=_guarded(cmd_teams_update))
    delete = team_commands.add_parser("delete", parents=[common], help="delete a team and its keys (the ledger stays)")
    delete.add_argument("name")
    delete.set_defaults(func=_guarded(cmd_teams_delete))

    keys = commands.add_parser("keys", help="create, list and revoke gateway keys")
    key_commands = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    create_key = key_commands.add_parser("create", parents=[common], help="create a key (printed once, never again)")
    create_key.add_argument("--team", required=True)
    create_key.add_argument("--name", default=None)
    create_key.add_argument("--budget", default=None, help="the key's own budget in USD per team period")
    create_key.add_argument("--models", default=None, help="comma-separated models this key may use")
    create_key.add_argument("--expires", default=None, help="ISO-8601, Unix seconds, or a duration such as 30d or 12h")
    _rate_options(create_key, "the key's own")
    create_key.set_defaults(func=_guarded(cmd_keys_create))
    list_keys = key_commands.add_parser("list", parents=[common], help="list keys (prefixes only)")
    list_keys.add_argument("--team", default=None)
    list_keys.set_defaults(func=_guarded(cmd_keys_list))
    revoke = key_commands.add_parser("revoke", parents=[common], help="revoke a key at once")
    revoke.add_argument("id")
    revoke.set_defaults(func=_guarded(cmd_keys_revoke))

    spend = commands.add_parser(
        "spend", parents=[_common(("table", "csv", "json"))], help="spend report from the ledger"
    )
    for option in ("team", "key", "model", "provider"):
        spend.add_argument(
            f"--{option}", default=None, help=f"only this {option}" + (" (id or prefix)" if option == "key" else "")
        )
    spend.add_argument("--since", default=None, help="from this time (ISO-8601 or Unix seconds), inclusive")
    spend.add_argument("--until", default=None, help="up to this time (ISO-8601 or Unix seconds), exclusive")
    spend.add_argument("--batch", default=None, help="only the lines of this batch (its id)")
    spend.add_argument("--group-by", dest="group_by", choices=GROUPS, default=None)
    spend.set_defaults(func=_guarded(cmd_spend))
