"""Mistral Vibe (PyPI `mistral-vibe`): a `config.toml` with the gateway as an OpenAI-style provider.

Vibe reads `$VIBE_HOME/config.toml` (default ~/.vibe/config.toml) and the key from the environment variable
the provider names (or `$VIBE_HOME/.env`). Every model the gateway lists gets an alias `gateway-NAME`.
"""

from __future__ import annotations

from gateway.clients.common import KEY_ENV, ClientConfig, GeneratedFile, Setup, toml_string

CONFIG = "config.toml"
ENV_FILE = ".env"


def alias(model: str) -> str:
    return f"gateway-{model}"


def configure(setup: Setup) -> ClientConfig:
    lines = [
        "# Written by `gateway clients vibe`: Vibe reads $VIBE_HOME/config.toml (default ~/.vibe/config.toml).",
        f"active_model = {toml_string(alias(setup.model))}",
        "enable_telemetry = false",
        "enable_update_checks = false",
        "enable_auto_update = false",
        "",
        "[[providers]]",
        'name = "gateway"',
        f"api_base = {toml_string(setup.base_url)}",
        f"api_key_env_var = {toml_string(KEY_ENV)}",
        'api_style = "openai"',
        'backend = "generic"',
    ]
    for model in setup.chat_models():
        lines += [
            "",
            "[[models]]",
            f"name = {toml_string(model.name)}",
            'provider = "gateway"',
            f"alias = {toml_string(alias(model.name))}",
            f"max_context_length = {model.context_window}",
        ]
        if model.input_per_million is not None and model.output_per_million is not None:
            lines += [
                f"input_price = {float(model.input_per_million)}",
                f"output_price = {float(model.output_per_million)}",
            ]
        if model.cached_input_per_million is not None:
            lines.append(f"cached_input_price = {float(model.cached_input_per_million)}")
        if model.fixed_sampling:
            lines.append("temperature = 0.6  # Kimi K2.6 accepts only its fixed value")
        lines.append("supports_images = true" if "vision" in model.capabilities else "supports_images = false")
    files = [GeneratedFile(CONFIG, "\n".join(lines) + "\n")]
    if setup.key:
        files.append(GeneratedFile(ENV_FILE, f"{KEY_ENV}={setup.key}\n", secret=True))
    run = [
        f"VIBE_HOME=DIR {'' if setup.key else KEY_ENV + '=gw-... '}vibe                 # interactive",
        'VIBE_HOME=DIR vibe -p "Explain this repository" --max-turns 5   # headless',
        f"in a session, /model switches between {', '.join(alias(m.name) for m in setup.chat_models())}",
    ]
    notes = [
        f"DIR is the directory these files were written to (VIBE_HOME); the key comes from ${KEY_ENV}"
        + (f" or {ENV_FILE} there." if setup.key else ".")
    ]
    return ClientConfig("Mistral Vibe", files, run, notes)
