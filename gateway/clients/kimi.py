"""Kimi CLI (PyPI `kimi-cli`): a `config.toml` with the gateway as an `openai_legacy` provider.

kimi-cli reads ~/.kimi/config.toml, or the file given with `--config-file`. Its last release (1.52.0) only
prints a deprecation notice (and, run without arguments, downloads its successor's installer): use 1.51.0.
Its successor, Kimi Code CLI (npm `@moonshot-ai/kimi-code`), needs Node.js 24.15 or newer and reads
~/.kimi-code/config.toml with the same `providers` / `models` tables (`type = "openai"`).
"""

from __future__ import annotations

from gateway.clients.common import KEY_ENV, OPEN_GATEWAY_KEY, ClientConfig, GeneratedFile, Setup, toml_string

CONFIG = "config.toml"
KIMI_CLI_VERSION = "1.51.0"


def configure(setup: Setup) -> ClientConfig:
    lines = [
        "# Written by `gateway clients kimi`: kimi-cli reads ~/.kimi/config.toml, or `kimi --config-file FILE`.",
        f"default_model = {toml_string(setup.model)}",
        "default_thinking = false",
        "telemetry = false",
        "",
        "[providers.gateway]",
        'type = "openai_legacy"',
        f"base_url = {toml_string(setup.base_url)}",
        f"api_key = {toml_string(setup.key_or(OPEN_GATEWAY_KEY))}",
    ]
    for model in setup.chat_models():
        lines += [
            "",
            f"[models.{toml_string(model.name)}]",
            'provider = "gateway"',
            f"model = {toml_string(model.name)}",
            f"max_context_size = {model.context_window}",
        ]
        capabilities = ['"image_in"'] if "vision" in model.capabilities else []
        lines.append(f"capabilities = [{', '.join(capabilities)}]")
    files = [GeneratedFile(CONFIG, "\n".join(lines) + "\n", secret=bool(setup.key))]
    run = [
        f"pip install kimi-cli=={KIMI_CLI_VERSION}   # Python 3.12+; 1.52.0 is only a deprecation notice",
        "kimi --config-file config.toml                       # interactive",
        'kimi --config-file config.toml --print -c "Explain this repository"   # headless',
    ]
    notes = []
    if not setup.key:
        notes.append(
            f"api_key is '{OPEN_GATEWAY_KEY}', which only an open gateway accepts: pass --key gw-... "
            f"(or set {KEY_ENV})."
        )
    limitations = [
        "kimi-cli is archived; its successor Kimi Code CLI (npm @moonshot-ai/kimi-code) needs Node.js "
        ">= 24.15. Point its ~/.kimi-code/config.toml at the gateway the same way ([providers.gateway] "
        'type = "openai", base_url, api_key; [models.NAME] provider, model, max_context_size).'
    ]
    return ClientConfig("Kimi CLI", files, run, notes, limitations)
