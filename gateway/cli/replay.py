"""`gateway replay`: what other routing policies would have done to the traffic in the ledger (issue 17).

    gateway replay --policy policies-next/eu-only.yaml --team web --since 30d
    gateway replay --policy policies-next/ --format csv > replay.csv
    gateway replay --policy eu-only.yaml --url http://127.0.0.1:4000

A file replaces (or adds) that one policy in the policies in use; a directory replaces them all; without
`--policy` the policies in use are replayed (what they would do now, next to what happened). Direct mode (default)
reads the database (`--database-url`, default GATEWAY_DATABASE_URL), the catalog (`--config`, GATEWAY_CONFIG) and
the policies in use (GATEWAY_POLICIES_DIR or ./policies); `--url` asks a running gateway's `POST /admin/replay`
with the master key from GATEWAY_MASTER_KEY, sending the policy files' text. Either way the ledger is only read.

Exit codes: 0 the report; 1 the database or the gateway cannot be reached; 2 bad usage or a policy that does not
validate (its problems are printed, each naming the file and the field).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson

from gateway.cli.admin import CliError, _as_gateway_error, _is_database_error
from gateway.cli.common import config_path
from gateway.cli.tables import render_replay
from gateway.errors import GatewayError, StorageUnavailable

FORMATS = ("table", "csv", "json")


def request_body(args: argparse.Namespace) -> dict[str, Any]:
    """The JSON body of `POST /admin/replay` for these options (the policy files' text, read here)."""
    body: dict[str, Any] = {"team": args.team, "since": args.since, "until": args.until}
    if args.policy is not None:
        path = Path(args.policy)
        try:
            if path.is_dir():
                files = sorted(p for p in path.glob("*.yaml") if not p.name.startswith(".") and p.is_file())
                body["policy_files"] = {p.name: p.read_text("utf-8") for p in files}
            else:
                body["policy_yaml"] = path.read_text("utf-8")
                body["policy_name"] = path.name
        except (OSError, UnicodeDecodeError) as exc:
            raise CliError(f"cannot read {path}: {exc}") from exc
    return {name: value for name, value in body.items() if value is not None}


def _via_http(url: str, body: dict[str, Any]) -> dict[str, Any]:
    key = os.environ.get("GATEWAY_MASTER_KEY")
    if not key:
        raise CliError("--url needs the master key in the environment variable GATEWAY_MASTER_KEY")
    request = urllib.request.Request(
        url.rstrip("/") + "/admin/replay",
        data=orjson.dumps(body),
        method="POST",
        headers={"authorization": f"Bearer {key}", "content-type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=600) as response:  # a month of traffic takes a while
            report: dict[str, Any] = orjson.loads(response.read())
            return report
    except urllib.error.HTTPError as exc:
        raise _as_gateway_error(exc.code, exc.read()) from None
    except (urllib.error.URLError, OSError) as exc:
        raise CliError(f"cannot reach the gateway at {url}: {getattr(exc, 'reason', exc)}", 1) from None


def _direct(args: argparse.Namespace) -> dict[str, Any]:
    from gateway.catalog import ConfigError, load_catalog
    from gateway.policy import PolicyError, policies_for_settings
    from gateway.replay.policies import load_replay_policies
    from gateway.replay.service import invalid_policy, replay_request
    from gateway.settings import Settings
    from gateway.store import open_store, redacted

    try:
        settings = Settings()
        catalog = load_catalog(config_path(args))
        policies = policies_for_settings(settings, catalog)
    except PolicyError as exc:
        raise CliError(f"the routing policies in use do not validate\n{exc}") from exc
    except ConfigError as exc:
        raise CliError(f"configuration error\n{exc}") from exc
    except ValueError as exc:  # pydantic ValidationError of the GATEWAY_* environment
        raise CliError(f"invalid GATEWAY_* setting\n{exc}") from exc
    body = request_body(args)
    if args.policy is not None:  # read from this machine's files (the body's texts are for --url)
        for name in ("policy_yaml", "policy_name", "policy_files"):
            body.pop(name, None)
        try:
            policies = load_replay_policies(Path(args.policy), catalog, policies)
        except PolicyError as exc:
            raise invalid_policy(exc) from exc
    database_url = args.database_url or settings.resolved_database_url()
    try:
        store = open_store(database_url)
    except ValueError as exc:
        raise CliError(str(exc)) from exc

    async def run() -> dict[str, Any]:
        await store.open()
        try:
            return await replay_request(
                store,
                catalog,
                policies,
                body,
                default_expected_output=settings.default_expected_output_tokens,
                timezone=settings.budget_timezone,
            )
        finally:
            await store.close()

    try:
        return asyncio.run(run())
    except StorageUnavailable as exc:
        raise CliError(f"cannot use the database {redacted(database_url)}: {exc.detail}", 1) from exc
    except GatewayError:
        raise
    except Exception as exc:
        if _is_database_error(exc):
            raise CliError(f"cannot use the database {redacted(database_url)}: {exc}", 1) from exc
        raise


def cmd_replay(args: argparse.Namespace) -> int:
    from gateway.replay.report import report_csv

    try:
        report = _via_http(args.url, request_body(args)) if args.url else _direct(args)
    except GatewayError as error:
        print(f"gateway: error: {error.message}", file=sys.stderr)
        return 2 if error.status in (400, 404, 413, 415, 422) else 1
    except CliError as error:
        print(f"gateway: {error}", file=sys.stderr)
        return error.exit_code
    if args.format == "json":
        print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    elif args.format == "csv":
        sys.stdout.write(report_csv(report))
    else:
        print(render_replay(report))
    return 0


def add_replay_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    replay = commands.add_parser(
        "replay",
        help="what other routing policies would have done to the ledger's traffic (no provider called, nothing written)",
    )
    replay.add_argument(
        "--policy",
        default=None,
        metavar="FILE_OR_DIR",
        help="a policy file (replaces or adds that policy in the policies in use) or a directory (replaces them all); "
        "default: the policies in use",
    )
    replay.add_argument("--team", default=None, help="only this team's requests (default: every team)")
    replay.add_argument(
        "--since", default="30d", help="from: a duration back from now (30d, 12h, 2w), ISO-8601 or Unix seconds"
    )
    replay.add_argument("--until", default=None, help="to (exclusive), as --since; default: now")
    replay.add_argument("--format", choices=FORMATS, default="table")
    where = replay.add_mutually_exclusive_group()
    where.add_argument("--url", default=None, help="a running gateway (master key from GATEWAY_MASTER_KEY)")
    where.add_argument("--database-url", default=None, help="the database (default: GATEWAY_DATABASE_URL)")
    replay.add_argument("--config", type=Path, default=None, help="catalog file (direct mode)")
    replay.set_defaults(func=cmd_replay)
