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
        ("providers: 2026-13-45\n", "not valid YAML: month must be in 1..12"),
        ("providers: !!int abc\n", "not valid YAML: invalid literal for int()"),
        ("providers: " + "[" * 5000 + "]" * 5000 + "\n", "not valid YAML: maximum recursion depth"),
        ("providers: \x00\n", "not valid YAML: unacceptable character #x0000"),
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


LIMITED = """
providers:
  - {name: p, kind: mistral, region: eu, base_url: 'http://x', limits: {concurrency: 2, rpm: 60, tpm: 500000}}
  - {name: q, kind: mistral, region: eu, base_url: 'http://y'}
models:
  - {name: m, provider: p, upstream_model: u, context_window: 10, max_output_tokens: 1, price: {input: 1, output: 1},
     limits: {concurrency: 1, max_wait_seconds: 0}}
  - {name: n, provider: q, upstream_model: u, context_window: 10, max_output_tokens: 1, price: {input: 1, output: 1}}
"""


def test_limits_reach_the_provider_and_the_model(tmp_path: Path) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text(LIMITED)
    catalog = load_catalog(path, {})
    account, unlimited = catalog.providers["p"].limits, catalog.providers["q"].limits
    assert account is not None and (account.concurrency, account.rpm, account.tpm) == (2, 60, 500_000)
    assert account.max_wait_seconds is None and unlimited is None
    deployment = catalog.models["m"].limits
    assert deployment is not None and (deployment.concurrency, deployment.rpm, deployment.tpm) == (1, None, None)
    assert deployment.max_wait_seconds == 0 and catalog.models["n"].limits is None


def test_changed_limits_make_another_catalog(tmp_path: Path) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text(LIMITED)
    before = load_catalog(path, {})
    assert load_catalog(path, {}).same_as(before)
    path.write_text(LIMITED.replace("concurrency: 2", "concurrency: 3"))
    assert not load_catalog(path, {}).same_as(before)


def test_the_built_in_catalog_and_the_example_declare_no_limits() -> None:
    example = Path(__file__).resolve().parents[1] / "config" / "catalog.example.yaml"
    for catalog in (load_catalog(None, {}), load_catalog(example, {})):
        assert all(p.limits is None for p in catalog.providers.values())
        assert all(m.limits is None for m in catalog.models.values())


@pytest.mark.parametrize(
    ("limits", "problem"),
    [
        ("{concurrency: 0}", "providers[0].limits.concurrency: Input should be greater than or equal to 1"),
        ("{rpm: -5}", "providers[0].limits.rpm: Input should be greater than or equal to 1"),
        ("{tpm: lots}", "providers[0].limits.tpm: Input should be a valid integer"),
        ("{rpm: 1.5}", "providers[0].limits.rpm: Input should be a valid integer"),
        ("{max_wait_seconds: -1}", "providers[0].limits.max_wait_seconds: Input should be greater than or equal to 0"),
        ("{requests: 3}", "providers[0].limits.requests: Extra inputs are not permitted"),
        ("60", "providers[0].limits: Input should be a valid dictionary"),
    ],
)
def test_bad_provider_limits_name_the_problem(tmp_path: Path, limits: str, problem: str) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text(LIMITED.replace("limits: {concurrency: 2, rpm: 60, tpm: 500000}", f"limits: {limits}"))
    with pytest.raises(ConfigError) as error:
        load_catalog(path, {})
    assert problem in str(error.value)


def test_bad_model_limits_name_the_problem(tmp_path: Path) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text(LIMITED.replace("limits: {concurrency: 1, max_wait_seconds: 0}", "limits: {tpm: 0, burst: 2}"))
    with pytest.raises(ConfigError) as error:
        load_catalog(path, {})
    assert "models[0].limits.tpm: Input should be greater than or equal to 1" in str(error.value)
    assert "models[0].limits.burst: Extra inputs are not permitted" in str(error.value)
