"""Aider (`aider-chat`): model metadata, model settings and a `.aider.conf.yml` for the gateway.

Aider reads `.aider.model.metadata.json` and `.aider.model.settings.yml` from the home directory, the git
root and the current directory. With a metadata entry for `openai/NAME` it knows the model's window and
prices, so it neither warns about an unknown model nor tries to download litellm's price map.
"""

from __future__ import annotations

import json

from gateway.clients.common import KEY_ENV, ClientConfig, ClientModel, GeneratedFile, Setup, yaml_dump

METADATA = ".aider.model.metadata.json"
SETTINGS = ".aider.model.settings.yml"
CONF = ".aider.conf.yml"
EDIT_FORMAT = "diff"  # SEARCH/REPLACE blocks: what capable models do best, and cheap on tokens


def aider_name(model: str) -> str:
    return f"openai/{model}"


def _metadata(model: ClientModel) -> dict:
    entry: dict = {
        "max_input_tokens": model.context_window,
        "max_tokens": model.max_output_tokens,
        "max_output_tokens": model.max_output_tokens,
        "litellm_provider": "openai",
        "mode": "chat",
        "supports_function_calling": "tools" in model.capabilities,
        "supports_vision": "vision" in model.capabilities,
    }
    for key, price in (
        ("input_cost_per_token", model.input_per_million),
        ("output_cost_per_token", model.output_per_million),
        ("cache_read_input_token_cost", model.cached_input_per_million),
    ):
        if price is not None:
            entry[key] = model.per_token(price)
    return entry


def _settings(model: ClientModel) -> dict:
    return {
        "name": aider_name(model.name),
        "edit_format": EDIT_FORMAT,
        "weak_model_name": aider_name(model.name),  # commit messages and summaries: the same route
        "use_repo_map": True,
        "examples_as_sys_msg": True,
        # Kimi K2.6's sampling is fixed: do not send Aider's temperature 0 (the gateway would drop it anyway).
        "use_temperature": not model.fixed_sampling,
        "streaming": True,
    }


def configure(setup: Setup) -> ClientConfig:
    chat = setup.chat_models()
    metadata = {aider_name(m.name): _metadata(m) for m in chat}
    settings = [_settings(m) for m in chat]
    conf: dict = {
        "openai-api-base": setup.base_url,
        "model": aider_name(setup.model),
        "model-metadata-file": METADATA,
        "model-settings-file": SETTINGS,
        "analytics-disable": True,
        "check-update": False,
        "show-release-notes": False,
    }
    if setup.key:
        conf["openai-api-key"] = setup.key
    files = [
        GeneratedFile(METADATA, json.dumps(metadata, indent=2) + "\n"),
        GeneratedFile(SETTINGS, yaml_dump(settings)),
        GeneratedFile(CONF, "# Written by `gateway clients aider`.\n" + yaml_dump(conf), secret=bool(setup.key)),
    ]
    key = "" if setup.key else f"OPENAI_API_KEY=${KEY_ENV} "
    run = [
        f"{key}aider                      # uses {CONF}: model {aider_name(setup.model)} at {setup.base_url}",
        f"{key}aider --model {aider_name('kimi-k2.6')}   # any model the gateway lists, with the openai/ prefix",
    ]
    notes = [
        f"Aider sends the model name without 'openai/'; 'auto' lets the team's policy choose "
        f"(window {setup.models['auto'].context_window:,} tokens; its prices in {METADATA} are the highest of the "
        "chat models, so Aider's cost estimate is an upper bound: the ledger has the real cost).",
        "Edit format: SEARCH/REPLACE blocks (diff).",
    ]
    if not setup.key:
        notes.append(
            f"Set OPENAI_API_KEY (or {KEY_ENV}) to your gateway key (gw-...); any value works when the "
            "gateway has no master key."
        )
    return ClientConfig("Aider", files, run, notes)
