"""Configuration: defaults, environment, and errors that name the file, the path and the problem."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import orjson
import pytest

from gateway.catalog import ConfigError, load_catalog, needs_demo
from gateway.settings import Settings


def test_built_in_defaults() -> None:
    catalog = load_catalog(None, {})
    medium, kimi = catalog.models["mistral-medium-3.5"], catalog.models["kimi-k2.6"]
    assert (medium.context_window, medium.price.input, medium.price.output, medium.price.cached_input) == (
        262_144,
        Decimal("1.50"),
        Decimal("7.50"),
        Decimal("0.15"),
    )
    assert (kimi.context_window, kimi.price.input, kimi.price.output, kimi.price.cached_input) == (
        1_048_576,
        Decimal("0.60"),
        Decimal("1.80"),
        Decimal("0.15"),
    )
    assert "embeddings" in catalog.models["mistral-embed"].capabilities
    assert catalog.providers["mistral"].region == "eu" and catalog.providers["moonshot"].region == "cn"
    assert catalog.providers["mistral"].base_url == "https://api.mistral.ai/v1"
    assert catalog.providers["moonshot"].base_url == "https://api.moonshot.ai/v1"
    assert catalog.providers["mistral"].api_key is None and not catalog.demo


def test_environment_sets_keys_and_endpoints() -> None:
    catalog = load_catalog(None, {"MISTRAL_API_KEY": "k1", "MOONSHOT_API_BASE": "https://api.moonshot.cn/v1/"})
    assert catalog.providers["mistral"].api_key.get_secret_value() == "k1"
    assert "k1" not in repr(catalog.providers["mistral"])
    assert catalog.providers["moonshot"].base_url == "https://api.moonshot.cn/v1"


def test_demo_needed_only_without_any_key() -> None:
    assert needs_demo(None, {}) == ["mistral", "moonshot"]
    assert needs_demo(None, {"MOONSHOT_API_KEY": "k"}) == []
    env = {"GATEWAY_DEMO_UPSTREAMS": orjson.dumps({"mistral": {"url": "http://127.0.0.1:1/v1", "key": "dk"}}).decode()}
    catalog = load_catalog(None, env)
    assert (
        catalog.demo
        and catalog.providers["mistral"].demo
        and catalog.providers["mistral"].base_url == "http://127.0.0.1:1/v1"
    )
    assert not catalog.providers["moonshot"].demo


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("providers: [\n", "not valid YAML"),
        ("- a\n- b\n", "(top level): must be a mapping"),
        ("providers: []\nmodels: []\n", "providers: List should have at least 1 item"),
        (
            "providers:\n  - {name: p, kind: bogus, region: eu, base_url: 'http://x'}\nmodels: []\n",
            "providers[0].kind: Input should be",
        ),
        (
            "providers:\n  - {name: p, kind: mistral, region: eu, base_url: 'ftp://x'}\nmodels: []\n",
            "providers[0].base_url: must start with http",
        ),
        (
            "providers:\n  - {name: p, kind: litellm, region: eu}\nmodels: [{name: m, provider: p, upstream_model: u, context_window: 1, max_output_tokens: 1, price: {input: 1, output: 1}}]\n",
            "needs litellm_provider",
        ),
        (
            "providers:\n  - {name: p, kind: mistral, region: eu, base_url: 'http://x'}\nmodels: [{name: m, provider: q, upstream_model: u, context_window: 1, max_output_tokens: 1, price: {input: 1, output: 1}}]\n",
            "models[0].provider: unknown provider 'q'",
        ),
        (
            "providers:\n  - {name: p, kind: mistral, region: eu, base_url: 'http://x'}\nmodels: [{name: auto, provider: p, upstream_model: u, context_window: 1, max_output_tokens: 1, price: {input: 1, output: 1}}]\n",
            "models[0].name: 'auto' is reserved",
        ),
        (
            "providers:\n  - {name: p, kind: mistral, region: eu, base_url: 'http://x'}\nmodels: [{name: m, provider: p, upstream_model: u, context_window: 1, max_output_tokens: 1, price: {input: -1, output: 1}}]\n",
            "models[0].price.input: Input should be greater than or equal to 0",
        ),
        (
            "providers:\n  - {name: p, kind: mistral, region: eu, base_url: 'http://x'}\nmodels: [{name: m, provider: p, upstream_model: u, context_window: 1, max_output_tokens: 1, price: {input: 1, output: 1}, capabilities: [teleport]}]\n",
            "models[0].capabilities[0]: Input should be",
        ),
        (
            "providers:\n  - {name: p, kind: mistral, region: eu, base_url: 'http://x'}\nmodels:\n  - {name: m, provider: p, upstream_model: u, context_window: 1, max_output_tokens: 1, price: {input: 1, output: 1}}\n  - {name: m, provider: p, upstream_model: v, context_window: 1, max_output_tokens: 1, price: {input: 1, output: 1}}\n",
            "models[1].name: duplicate model 'm'",
        ),
    ],
)
def test_bad_files_name_the_problem(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        load_catalog(path, {})
    assert str(path) in str(error.value) and problem in str(error.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read file"):
        load_catalog(tmp_path / "nope.yaml", {})


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_PORT", "4100")
    monkeypatch.setenv("GATEWAY_MAX_BODY_BYTES", "65536")
    monkeypatch.setenv("GATEWAY_MASTER_KEY", "mk")
    settings = Settings()
    assert settings.port == 4100 and settings.max_body_bytes == 65536 and settings.host == "127.0.0.1"
    assert settings.master_key.get_secret_value() == "mk" and "mk" not in repr(settings)
