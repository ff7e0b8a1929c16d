"""The `gateway` command: serve, check, models, emulate.

Exit codes: 0 success, 1 a check found problems, 2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from gateway import __version__
from gateway.catalog import DEMO_UPSTREAMS_ENV, ConfigError, load_catalog, needs_demo
from gateway.cli.admin import add_admin_commands
from gateway.cli.batch import add_batch_commands
from gateway.cli.common import config_path
from gateway.cli.policy import add_policy_commands
from gateway.cli.replay import add_replay_command
from gateway.cli.route import add_route_commands
from gateway.settings import Settings
from gateway.store import storage_problem

if TYPE_CHECKING:
    from gateway.emulators import EmulatorServer


def _add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", type=Path, default=None, help="catalog file (YAML); default: $GATEWAY_CONFIG or built-in defaults"
    )


SHUTDOWN_GRACE_SECONDS = 5


def limits_home(settings: Settings) -> str:
    """Where the limits' state lives, in words (the Redis URL without its password)."""
    if settings.redis_url is not None:
        url = urllib.parse.urlsplit(settings.redis_url.get_secret_value())
        where = f"{url.scheme}://{url.hostname}:{url.port or 6379}{url.path}"
        return f"shared by every node in Redis at {where} ({settings.redis_failure} when it cannot be reached)"
    if settings.workers > 1:
        return f"shared by this node's {settings.workers} workers in {settings.data_dir / 'limits.db'}"
    return "in this process's memory (set GATEWAY_REDIS_URL to share them between nodes)"


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    path = config_path(args)
    overrides = {"GATEWAY_HOST": args.host, "GATEWAY_PORT": args.port, "GATEWAY_WORKERS": args.workers}
    for key, value in overrides.items():
        if value is not None:
            os.environ[key] = str(value)
    if path is not None:
        os.environ["GATEWAY_CONFIG"] = str(path)
    try:
        settings = Settings()
        # The database is checked before anything is announced: a gateway that cannot use it says so in one line
        # (the URL without its password) and exits 2, as any configuration error.
        problem = storage_problem(settings.resolved_database_url())
        if problem is not None:
            print(f"gateway: {problem}", file=sys.stderr)
            return 2
        kinds = needs_demo(path, os.environ)
        emulators = _start_demo(kinds) if kinds else []
        catalog = load_catalog(path)
    except ConfigError as exc:
        print(f"gateway: configuration error\n{exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # pydantic ValidationError of the environment settings
        print(f"gateway: invalid GATEWAY_* setting\n{exc}", file=sys.stderr)
        return 2
    say = lambda text: print(f"gateway: {text}", file=sys.stderr, flush=True)  # noqa: E731
    say(f"model-gateway {__version__}; catalog: {catalog.source}; models: {', '.join(catalog.models)}")
    if emulators:
        say("DEMO MODE: no provider API keys are set (MISTRAL_API_KEY, MOONSHOT_API_KEY).")
        for kind, server in emulators:
            say(f"  {kind} requests go to the built-in {kind} emulator at {server.url}/v1, not the real API")
        say("  set the provider keys to talk to the real APIs.")
    if settings.master_key is None:
        say(f"OPEN: GATEWAY_MASTER_KEY is not set; anyone who can reach {settings.host}:{settings.port} can use /v1.")
    say(f"rate limits and provider capacity: {limits_home(settings)}")
    say(f"listening on http://{settings.host}:{settings.port}/v1 with {settings.workers} worker(s)")
    metrics_dir = _metrics_across_workers(settings.workers)
    from gateway.http.servers import server_options  # keep-alive, header and body deadlines, connection cap

    try:
        uvicorn.run(
            "gateway.http.app:app_from_environment",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            log_level=settings.log_level,
            access_log=False,
            proxy_headers=False,
            server_header=False,
            # The drain time, and a few seconds for the streams it ends to send their last event and settle.
            timeout_graceful_shutdown=int(settings.shutdown_drain_seconds) + SHUTDOWN_GRACE_SECONDS,
            **server_options(settings),
        )
    finally:
        for _, server in emulators:
            server.stop()
        if metrics_dir is not None:
            metrics_dir.cleanup()
    return 0


def _metrics_across_workers(workers: int) -> tempfile.TemporaryDirectory[str] | None:
    """With several workers, /metrics must sum over all of them: prometheus-client's multiprocess mode,
    switched on by an empty directory in PROMETHEUS_MULTIPROC_DIR before any worker starts."""
    from gateway.metrics.families import MULTIPROC_ENV  # (not prometheus_client: it reads the variable at import)

    if workers <= 1:
        return None
    directory = tempfile.TemporaryDirectory(prefix="gateway-metrics-")
    os.environ[MULTIPROC_ENV] = directory.name
    return directory


def _start_demo(kinds: list[str]) -> list[tuple[str, EmulatorServer]]:
    from gateway.emulators import EmulatorOptions, start_emulator

    started: list[tuple[str, EmulatorServer]] = []
    upstreams = {}
    for kind in kinds:
        options = EmulatorOptions()
        server = start_emulator(kind, options)
        started.append((kind, server))
        upstreams[kind] = {"url": f"{server.url}/v1", "key": options.api_key or f"demo-key-{kind}"}
    # Worker processes read this to point their providers at the emulators.
    os.environ[DEMO_UPSTREAMS_ENV] = orjson.dumps(upstreams).decode()
    return started


def cmd_check(args: argparse.Namespace) -> int:
    path = config_path(args)
    try:
        catalog = load_catalog(path)
        Settings()
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"invalid GATEWAY_* setting\n{exc}", file=sys.stderr)
        return 1
    print(f"{catalog.source}: OK ({len(catalog.providers)} providers, {len(catalog.models)} models)")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from gateway.cli.tables import render_models
    from gateway.providers.litellm_catalog import compare

    try:
        catalog = load_catalog(config_path(args))
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    differences = compare(catalog)
    if args.format == "json":
        from gateway.providers.litellm_catalog import as_json

        print(as_json(catalog, differences))
    else:
        print(render_models(catalog, differences))
    return 0


def cmd_emulate(args: argparse.Namespace) -> int:
    import uvicorn

    from gateway.emulators import EmulatorOptions, create_app

    options = EmulatorOptions(
        api_key=args.api_key,
        seed=args.seed,
        latency_ms=args.latency_ms,
        first_token_ms=args.first_token_ms,
        chunk_delay_ms=args.chunk_delay_ms,
        fault=args.fault,
    )
    print(f"gateway: {args.kind} emulator on http://{args.host}:{args.port}/v1 (not the real API)", file=sys.stderr)
    uvicorn.run(create_app(args.kind, options), host=args.host, port=args.port, log_level="info", access_log=False)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description="model-gateway: an OpenAI-compatible LLM gateway")
    parser.add_argument("--version", action="version", version=f"model-gateway {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the gateway (demo mode on emulators when no provider keys are set)")
    _add_config(serve)
    serve.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="port (default 4000)")
    serve.add_argument("--workers", type=int, default=None, help="worker processes (default 1)")
    serve.set_defaults(func=cmd_serve)

    check = commands.add_parser("check", help="validate the configuration without starting; exit 1 on any problem")
    _add_config(check)
    check.set_defaults(func=cmd_check)

    models = commands.add_parser("models", help="print the model catalog, marking differences from litellm's")
    _add_config(models)
    models.add_argument("--format", choices=("table", "json"), default="table")
    models.set_defaults(func=cmd_models)

    emulate = commands.add_parser("emulate", help="run a provider emulator (mistral or moonshot)")
    emulate.add_argument("kind", choices=("mistral", "moonshot"))
    emulate.add_argument("--host", default="127.0.0.1")
    emulate.add_argument("--port", type=int, default=8001)
    emulate.add_argument("--api-key", default=None, help="key the emulator accepts (default demo-key-KIND)")
    emulate.add_argument("--seed", type=int, default=0)
    emulate.add_argument("--latency-ms", type=float, default=0.0)
    emulate.add_argument("--first-token-ms", type=float, default=0.0)
    emulate.add_argument("--chunk-delay-ms", type=float, default=0.0)
    emulate.add_argument("--fault", default=None, help="server-wide fault, e.g. 'status=503' or 'cut=3'")
    emulate.set_defaults(func=cmd_emulate)

    add_admin_commands(commands)
    add_policy_commands(commands)
    add_route_commands(commands)
    add_replay_command(commands)
    add_batch_commands(commands)
    from gateway.clients import add_clients_command  # `gateway clients TOOL`

    add_clients_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
