"""OpenCode (npm `opencode-ai`): an `opencode.json` with the gateway as a custom OpenAI-compatible provider.

OpenCode reads `opencode.json` from the project directory (and ~/.config/opencode/opencode.json). The provider
uses the AI SDK's `@ai-sdk/openai-compatible` package (bundled with OpenCode) on the gateway's `/v1`.
"""

from __future__ import annotations

import json

from gateway.clients.common import KEY_ENV, ClientConfig, ClientModel, GeneratedFile, Setup

CONFIG = "opencode.json"
PROVIDER = "gateway"


def _model(model: ClientModel) -> dict:
    entry: dict = {
        "name": f"{model.name} (model-gateway)",
        "tool_call": "tools" in model.capabilities,
        "attachment": "vision" in model.capabilities,
        "limit": {"context": model.context_window, "output": model.max_output_tokens},
    }
    if model.input_per_million is not None and model.output_per_million is not None:
        cost: dict = {"input": float(model.input_per_million), "output": float(model.output_per_million)}
        if model.cached_input_per_million is not None:
            cost["cache_read"] = float(model.cached_input_per_million)
        entry["cost"] = cost
    if model.fixed_sampling:
        entry["temperature"] = False  # Kimi K2.6's sampling is fixed
    return entry


def configure(setup: Setup) -> ClientConfig:
    models = {m.name: _model(m) for m in setup.chat_models()}
    config = {
        "$schema": "https://opencode.ai/config.json",
        "provider": {
            PROVIDER: {
                "npm": "@ai-sdk/openai-compatible",
                "name": "model-gateway",
                "options": {"baseURL": setup.base_url, "apiKey": setup.key or f"{{env:{KEY_ENV}}}"},
                "models": models,
            }
        },
        "model": f"{PROVIDER}/{setup.model}",
        "small_model": f"{PROVIDER}/{setup.model}",  # session titles: through the gateway too
        "autoupdate": False,
        "share": "disabled",
    }
    files = [GeneratedFile(CONFIG, json.dumps(config, indent=2) + "\n", secret=bool(setup.key))]
    key = "" if setup.key else f"{KEY_ENV}=gw-... "
    run = [
        f"{key}opencode                       # interactive, in the directory holding {CONFIG}",
        f'{key}opencode run "Explain this repository"   # headless',
        f'{key}opencode run -m {PROVIDER}/kimi-k2.6 "..."  # another model the gateway lists',
    ]
    notes = ["OpenCode also asks the small model for a session title: that is one more (small) request in the ledger."]
    return ClientConfig("OpenCode", files, run, notes)
