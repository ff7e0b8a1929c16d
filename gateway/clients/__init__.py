"""`gateway clients TOOL`: ready configuration for coding tools that talk to the gateway.

One module a tool (aider, continue_dev, opencode, vibe, kimi, codex, claude_code) turns a `Setup` (the gateway's
URL, the key, the chosen model and the models the gateway lists) into the files that tool reads; common.py has the
rest.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the writers are imported when the command runs, so `gateway` starts as fast as before
    from gateway.clients.common import ClientConfig, Setup

# tool: (module with `configure(setup)`, default directory)
TOOLS: dict[str, tuple[str, str]] = {
    "aider": ("aider", "."),  # the project (or git root): Aider looks there, in the cwd and in ~
    "continue": ("continue_dev", "~/.continue"),
    "opencode": ("opencode", "."),  # the project: OpenCode reads ./opencode.json
    "vibe": ("vibe", "~/.vibe"),  # VIBE_HOME
    "kimi": ("kimi", "~/.kimi"),
    "codex": ("codex", "~/.codex"),  # CODEX_HOME
    "claude-code": ("claude_code", "."),  # the project: Claude Code reads ./.claude/settings.json (or ~/.claude/)
}


def generate(tool: str, setup: Setup) -> ClientConfig:
    return importlib.import_module(f"gateway.clients.{TOOLS[tool][0]}").configure(setup)


def cmd_clients(args: argparse.Namespace) -> int:
    from gateway.clients.common import ClientsError, build_setup, render, write

    try:
        setup = build_setup(args.model, args.url, args.key, getattr(args, "config", None))
        config = generate(args.tool, setup)
        if args.print:
            sys.stdout.write(render(config, setup, None))
            return 0
        directory = Path(args.dir or TOOLS[args.tool][1]).expanduser()
        sys.stdout.write(render(config, setup, write(config, directory, args.force)))
        return 0
    except ClientsError as exc:
        print(f"gateway clients: {exc}", file=sys.stderr)
        return exc.exit_code


def add_clients_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "clients",
        help="write ready configuration for Aider, Continue, OpenCode, Mistral Vibe, Kimi CLI, Codex CLI or Claude Code",
    )
    parser.add_argument("tool", choices=tuple(TOOLS))
    parser.add_argument("--model", default="auto", help="the model the tool uses by default (default: auto)")
    parser.add_argument(
        "--url",
        default=None,
        help="the gateway (default http://127.0.0.1:4000); when given, "
        "the models and windows are read from its /v1/models",
    )
    parser.add_argument("--key", default=None, help="the gateway key to write (default: $GATEWAY_API_KEY, or none)")
    parser.add_argument("--config", type=Path, default=None, help="catalog file when not reading --url")
    parser.add_argument(
        "--dir",
        default=None,
        help="where to write (default: ., or the tool's own directory: ~/.continue, ~/.vibe, ~/.kimi, ~/.codex)",
    )
    parser.add_argument("--print", action="store_true", help="print the files instead of writing them")
    parser.add_argument("--force", action="store_true", help="replace existing files that differ")
    parser.set_defaults(func=cmd_clients)
