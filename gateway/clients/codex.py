"""Codex CLI (npm `@openai/codex`): `config.toml` for $CODEX_HOME with the gateway as a Responses provider.

Codex speaks only OpenAI's Responses API (`wire_api = "responses"`, the one value 0.171 accepts) and reads
$CODEX_HOME/config.toml (default ~/.codex) at start. A custom provider takes its key from the environment variable
named by `env_key`, never from config.toml, so the key goes in `gateway.env` beside it (0600), to `source`.

Every setting below was checked against Codex 0.171.0 on a capture server (issue 14's capture; requests in
tests/clients/fixtures/codex_0.171_request*.json): with these keys `codex exec` reaches nothing but the gateway.
"""

from __future__ import annotations

import shlex

from gateway.clients.common import KEY_ENV, OPEN_GATEWAY_KEY, ClientConfig, GeneratedFile, Setup, toml_string

CONFIG = "config.toml"
ENV_FILE = "gateway.env"
PROVIDER = "gateway"
CODEX_VERSION = "0.171.0"  # the version tests/clients/test_codex.py runs
# Codex's own retries come on top of the gateway's (which retries and falls back across providers itself): 0.171
# retries a 5xx, 401 or 403 answer 4 times and a stream without `response.completed` (or with `response.failed`)
# 5 times, each a new request; one retry each is enough for a gateway that restarts (503 with Retry-After).
RETRIES = 1


def configure(setup: Setup) -> ClientConfig:
    model = setup.chosen()
    lines = [
        "# Written by `gateway clients codex`: Codex reads $CODEX_HOME/config.toml (default ~/.codex/config.toml).",
        f"# The key is not in this file: Codex reads ${KEY_ENV} (env_key below); `source {ENV_FILE}` sets it.",
        f"model = {toml_string(setup.model)}",
        f"model_provider = {toml_string(PROVIDER)}",
        # Codex knows the windows of OpenAI's models only (it warns "Model metadata for ... not found" and uses
        # fallback metadata for any other name): the gateway's window for the model tells it when to compact.
        f"model_context_window = {model.context_window}",
        "check_for_update_on_startup = false",
        "",
        f"[model_providers.{PROVIDER}]",
        'name = "model-gateway"',
        f"base_url = {toml_string(setup.base_url)}",
        f"env_key = {toml_string(KEY_ENV)}",
        f"env_key_instructions = {toml_string(f'source {ENV_FILE} from your CODEX_HOME (~/.codex), or export {KEY_ENV}=gw-...')}",
        'wire_api = "responses"',
        f"request_max_retries = {RETRIES}",
        f"stream_max_retries = {RETRIES}",
        "",
        "[analytics]",
        "enabled = false  # otherwise Codex posts usage events to ab.chatgpt.com",
        "",
        "[feedback]",
        "enabled = false",
        "",
        "[otel]",
        'exporter = "none"',
        "",
        "[features]",
        "plugins = false  # otherwise Codex syncs its plugin marketplace from github.com and chatgpt.com at start",
    ]
    # Without --key the file keeps a key already exported, and sends the open gateway's placeholder otherwise.
    key = shlex.quote(setup.key) if setup.key else f'"${{{KEY_ENV}:-{OPEN_GATEWAY_KEY}}}"'
    env = [
        f"# Written by `gateway clients codex`: the gateway key for Codex (config.toml names {KEY_ENV} in env_key).",
        f"export {KEY_ENV}={key}",
    ]
    files = [
        GeneratedFile(CONFIG, "\n".join(lines) + "\n"),
        GeneratedFile(ENV_FILE, "\n".join(env) + "\n", secret=bool(setup.key)),
    ]
    run = [
        f"npm install -g @openai/codex@{CODEX_VERSION}",
        f"source ~/.codex/{ENV_FILE}   # sets {KEY_ENV}",
        'codex                         # interactive; headless: codex exec "Explain this repository"',
        'codex exec --sandbox workspace-write "Fix the failing test"   # headless, may edit the project',
    ]
    notes = [
        "Written with --dir elsewhere than ~/.codex: export CODEX_HOME=that directory before running codex "
        "(Codex reads config.toml only from $CODEX_HOME). An existing config.toml is replaced only with --force; "
        "a separate CODEX_HOME keeps your own.",
    ]
    if not setup.key:
        notes.append(
            f"{ENV_FILE} keeps ${KEY_ENV} if it is set, else sends '{OPEN_GATEWAY_KEY}', which only an open gateway "
            "accepts: pass --key gw-... to write the key there."
        )
    limitations = [
        "Codex sends its built-in web_search tool with every request; no provider behind the gateway runs OpenAI's "
        "hosted search, so the gateway leaves it out of the provider call and names it in the response header "
        'x-gateway-dropped-tools. Add `web_search = "disabled"` to config.toml to stop Codex offering it.',
        "Codex has no metadata for the gateway's model names: it warns once and offers its shell tool (exec_command) "
        "but no apply_patch tool; it still applies patches, through `apply_patch` run in that shell.",
        "A budget refusal (429 insufficient_quota) shows as Codex's own text 'Quota exceeded. Check your plan and "
        "billing details.', without the gateway's message: `gateway teams show TEAM` has the limit and the spend.",
    ]
    return ClientConfig("Codex CLI", files, run, notes, limitations)
