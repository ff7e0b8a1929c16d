"""Claude Code (npm `@anthropic-ai/claude-code`): `.claude/settings.json` whose `env` block points it at the gateway's
Anthropic Messages door, and `.claude/gateway.env` with the same variables for a shell.

Claude Code reads `env` from ~/.claude/settings.json, then the project's `.claude/settings.json` and
`.claude/settings.local.json` (merged key by key; seen in 2.1.197's `--debug-file` log and tried), and applies it
before it reads its own variables. It appends `/v1/messages` to ANTHROPIC_BASE_URL, so the URL is the gateway's
root, without `/v1`; ANTHROPIC_AUTH_TOKEN is sent as `Authorization: Bearer` (ANTHROPIC_API_KEY would be sent as
`x-api-key`; the gateway takes either). Captured from 2.1.197 `-p`: `POST /v1/messages?beta=true`, nothing else.

The model variables are those 2.1.197 reads (strings of the binary, and its requests): ANTHROPIC_MODEL (the main
model), ANTHROPIC_SMALL_FAST_MODEL and ANTHROPIC_DEFAULT_HAIKU_MODEL (background work), ANTHROPIC_DEFAULT_SONNET_MODEL
and ANTHROPIC_DEFAULT_OPUS_MODEL (what `/model sonnet|opus` and sub-agents naming those families use). Without them
it sends its own `claude-...` ids, which only a policy with `aliases` maps to models.
"""

from __future__ import annotations

import json
import shlex

from gateway.clients.common import AUTO, KEY_ENV, ClientConfig, ClientModel, GeneratedFile, Setup

SETTINGS = ".claude/settings.json"
ENV_FILE = ".claude/gateway.env"
CLAUDE_CODE_VERSION = "2.1.197"

# Claude Code's switches for traffic other than the model's requests (environment variables 2.1.197 reads): usage
# telemetry, error reports, the self-updater, the rest of its non-essential traffic (feature flags, release notes,
# the bootstrap), and the official plugin marketplace, which the interactive TUI otherwise fetches at start from
# github.com and downloads.claude.ai even with the other four set (seen through a recording proxy). With these five,
# neither `claude -p` nor the TUI connects to anything but the gateway (tests/clients/test_claude_code.py).
QUIET = {
    "DISABLE_TELEMETRY": "1",
    "DISABLE_ERROR_REPORTING": "1",
    "DISABLE_AUTOUPDATER": "1",
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "CLAUDE_CODE_DISABLE_OFFICIAL_MARKETPLACE_AUTOINSTALL": "1",
}


def usable(setup: Setup) -> list[ClientModel]:
    """The chat models (not `auto`) the key may use: with `--url`, those the gateway's `auto` card says the team's
    policy, models and regions leave (its listing names every catalog model); else every chat model listed."""
    reaches = setup.models[AUTO].reaches
    return [m for m in setup.chat_models() if m.name != AUTO and (not reaches or m.name in reaches)]


def small_model(setup: Setup) -> ClientModel:
    """For Claude Code's background requests (titles, summaries, quick checks): the cheapest usable chat model with
    tools, else the chosen model."""
    priced = [m for m in usable(setup) if "tools" in m.capabilities and m.input_per_million is not None]
    if not priced:
        return setup.chosen()
    return min(priced, key=lambda m: (m.output_per_million or 0, m.input_per_million or 0, m.name))


def max_output_tokens(setup: Setup) -> int | None:
    """The smallest output limit among the usable chat models: Claude Code sets `max_tokens` from its own idea of the
    model (32000 for a name it does not know, 64000 for its own `claude-opus-4-8`) and plans its context window with
    it; the Messages door lowers a larger one to the served model's limit, but Claude Code's own planning is right
    only when it asks for what the models produce (`auto` and an alias may serve any of them)."""
    limits = [m.max_output_tokens for m in usable(setup) if m.max_output_tokens > 0]
    return min(limits) if limits else None


def environment(setup: Setup) -> dict[str, str]:
    small = small_model(setup).name
    env = {"ANTHROPIC_BASE_URL": setup.url.rstrip("/")}
    if setup.key:
        env["ANTHROPIC_AUTH_TOKEN"] = setup.key
    env.update(
        {
            "ANTHROPIC_MODEL": setup.model,
            "ANTHROPIC_DEFAULT_OPUS_MODEL": setup.model,
            "ANTHROPIC_DEFAULT_SONNET_MODEL": setup.model,
            "ANTHROPIC_DEFAULT_HAIKU_MODEL": small,
            "ANTHROPIC_SMALL_FAST_MODEL": small,  # older name of the HAIKU one; 2.1.197 still reads it first
        }
    )
    limit = max_output_tokens(setup)
    if limit:
        env["CLAUDE_CODE_MAX_OUTPUT_TOKENS"] = str(limit)
    env.update(QUIET)
    return env


def configure(setup: Setup) -> ClientConfig:
    env = environment(setup)
    settings = {"$schema": "https://json.schemastore.org/claude-code-settings.json", "env": env}
    shell = ["# Written by `gateway clients claude-code`: `source .claude/gateway.env`, then run `claude`."]
    shell += [f"export {name}={shlex.quote(value)}" for name, value in env.items()]
    if not setup.key:
        shell.append(f'export ANTHROPIC_AUTH_TOKEN="${KEY_ENV}"  # the gateway key, from your shell')
    secret = bool(setup.key)
    files = [
        GeneratedFile(SETTINGS, json.dumps(settings, indent=2) + "\n", secret=secret),
        GeneratedFile(ENV_FILE, "\n".join(shell) + "\n", secret=secret),
    ]
    run = [
        f"npm install -g @anthropic-ai/claude-code@{CLAUDE_CODE_VERSION}   # tested version",
        "claude                                      # interactive, in the directory holding .claude/",
        'claude -p "Explain this repository"         # headless',
        "claude --model kimi-k2.6                    # another model the gateway lists",
    ]
    notes = [
        f"background requests use {env['ANTHROPIC_SMALL_FAST_MODEL']} (the cheapest chat model listed); "
        "change ANTHROPIC_SMALL_FAST_MODEL and ANTHROPIC_DEFAULT_HAIKU_MODEL to taste.",
    ]
    if setup.key:
        notes.append(
            f"{SETTINGS} holds the key (mode 0600): keep it out of version control, or write it without --key "
            f"and export ANTHROPIC_AUTH_TOKEN=${KEY_ENV} in your shell."
        )
    else:
        notes.append(
            f"no key written: export ANTHROPIC_AUTH_TOKEN=gw-... (or `source {ENV_FILE}` with {KEY_ENV} set); "
            "without a key Claude Code answers 'Not logged in'."
        )
    return ClientConfig("Claude Code", files, run, notes)
