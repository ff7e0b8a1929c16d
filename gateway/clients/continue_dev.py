"""Continue (VS Code / JetBrains extension and the `cn` command-line client): a `config.yaml`.

Chat, edit and apply go to the gateway's `/v1/chat/completions` with Continue's `openai` provider (Continue's
`stream_options` is stripped for Mistral by the gateway; its agent mode sends tools). Autocomplete uses
Continue's `mistral` provider pointed at the gateway, which posts fill-in-the-middle requests (`prompt` and
`suffix`) to `/v1/fim/completions` on `codestral`; embeddings go to `/v1/embeddings` on `mistral-embed`.
"""

from __future__ import annotations

from gateway.clients.common import KEY_ENV, OPEN_GATEWAY_KEY, ClientConfig, ClientModel, GeneratedFile, Setup, yaml_dump

CONFIG = "config.yaml"


def _chat(model: ClientModel, setup: Setup, key: str) -> dict:
    entry: dict = {
        "name": f"{model.name} (gateway)",
        "provider": "openai",
        "model": model.name,
        "apiBase": setup.base_url,
        "apiKey": key,
        "roles": ["chat", "edit", "apply"],
        "defaultCompletionOptions": {
            "contextLength": model.context_window,
            "maxTokens": min(model.max_output_tokens, 8192),
        },
    }
    capabilities = [
        c for c, needed in (("tool_use", "tools"), ("image_input", "vision")) if needed in model.capabilities
    ]
    if capabilities:
        entry["capabilities"] = capabilities  # Continue cannot guess them from a name such as `auto`
    return entry


def configure(setup: Setup) -> ClientConfig:
    key = setup.key_or(OPEN_GATEWAY_KEY)
    chat = setup.chat_models()
    ordered = [setup.chosen()] + [m for m in chat if m.name != setup.model]  # the first chat model is the default
    models = [_chat(m, setup, key) for m in ordered]
    notes: list[str] = []
    fim = setup.fim_model()
    if fim is not None:
        models.append(
            {
                "name": f"{fim.name} autocomplete (gateway)",
                "provider": "mistral",  # posts {model, prompt, suffix, ...} to {apiBase}fim/completions
                "model": fim.name,
                "apiBase": setup.base_url + "/",
                "apiKey": key,
                "roles": ["autocomplete"],
            }
        )
    else:
        notes.append("No model with the `fim` capability in the catalog: autocomplete is not configured.")
    embed = setup.embedding_model()
    if embed is not None:
        models.append(
            {
                "name": f"{embed.name} (gateway)",
                "provider": "openai",
                "model": embed.name,
                "apiBase": setup.base_url,
                "apiKey": key,
                "roles": ["embed"],
            }
        )
    config = {"name": "model-gateway", "version": "1.0.0", "schema": "v1", "models": models}
    header = "# Written by `gateway clients continue`. Continue reads ~/.continue/config.yaml; `cn --config FILE`.\n"
    files = [GeneratedFile(CONFIG, header + yaml_dump(config), secret=bool(setup.key))]
    run = [
        "cn --config config.yaml                 # interactive (the VS Code extension reads ~/.continue/config.yaml)",
        'cn --config config.yaml -p "Explain this repository"   # headless',
    ]
    if not setup.key:
        notes.append(
            f"apiKey is '{OPEN_GATEWAY_KEY}', which only an open gateway (no master key) accepts: pass "
            f"--key gw-... (or set {KEY_ENV}) to write your gateway key."
        )
    notes.append(
        "Autocomplete uses Continue's `mistral` provider on the gateway: fill-in-the-middle on codestral, "
        "through /v1/fim/completions (the same FIM route as /v1/completions with `suffix`)."
    )
    return ClientConfig("Continue", files, run, notes)
