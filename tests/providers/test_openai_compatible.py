"""Self-hosted vLLM and OpenRouter (kind `openai-compatible`) through the same engine, with an emulator as the server."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest

from gateway.http.servers import ThreadedServer
from tests.support import ROOT
from tests.support.emulators import MOONSHOT_KEY, EmulatorControl
from tests.support.gateways import GatewayFactory

EXAMPLE = ROOT / "config" / "catalog.self-hosted-and-openrouter.example.yaml"


@pytest.fixture(scope="module")
def url(start_gateway: GatewayFactory, moonshot: ThreadedServer, tmp_path_factory: pytest.TempPathFactory) -> str:
    # The shipped example, with the upstream ids the emulator serves (it plays both vLLM and OpenRouter).
    text = EXAMPLE.read_text()
    text = text.replace("mistralai/Mistral-Medium-3.5", "kimi-k2-0905-preview").replace(
        "moonshotai/kimi-k2.6", "kimi-k2-turbo-preview"
    )
    text = text.replace('base_url: "https://openrouter.ai/api/v1"', "base_url_env: OPENROUTER_API_BASE")
    path = tmp_path_factory.mktemp("example") / "catalog.yaml"
    path.write_text(text)
    env = {
        "VLLM_API_BASE": moonshot.url + "/v1",
        "VLLM_API_KEY": MOONSHOT_KEY,
        "OPENROUTER_API_BASE": moonshot.url + "/v1",
        "OPENROUTER_API_KEY": MOONSHOT_KEY,
    }
    return start_gateway(config=path, env=env).url


@pytest.mark.parametrize(
    ("model", "region"), [("mistral-medium-3.5-onprem", "onprem"), ("kimi-k2.6-openrouter", "global")]
)
@pytest.mark.slow
def test_openai_compatible_provider_streams_and_bills(
    url: str, moonshot_log: EmulatorControl, model: str, region: str
) -> None:
    client = openai.OpenAI(base_url=url + "/v1", api_key="client", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(model=model, messages=[{"role": "user", "content": "hi"}])
    assert raw.headers["x-gateway-region"] == region and raw.parse().usage.prompt_tokens > 0
    plain = list(client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}], stream=True))
    assert all(c.usage is None for c in plain)
    # Usage is always asked of an OpenAI-compatible server, so streams are billed even when the client did not ask.
    assert moonshot_log.last()["body"]["stream_options"] == {"include_usage": True}
    asked = list(
        client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert [c for c in asked if c.usage is not None] == [asked[-1]] and asked[-1].choices == []


@pytest.mark.slow
def test_onprem_residency_keeps_requests_on_the_own_server(url: str, moonshot_log: EmulatorControl) -> None:
    client = openai.OpenAI(base_url=url + "/v1", api_key="client", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "hi"}], extra_headers={"x-gateway-residency": "onprem"}
    )
    assert raw.headers["x-gateway-model"] == "mistral-medium-3.5-onprem"
    assert moonshot_log.last()["body"]["model"] == "kimi-k2-0905-preview"


@pytest.mark.slow
def test_extra_fields_are_forwarded_only_where_the_catalog_names_them(url: str, moonshot_log: EmulatorControl) -> None:
    client = openai.OpenAI(base_url=url + "/v1", api_key="client", max_retries=0)
    hello = [{"role": "user", "content": "hi"}]
    client.chat.completions.create(model="mistral-medium-3.5-onprem", messages=hello, extra_body={"top_k": 20})
    assert moonshot_log.last()["body"]["top_k"] == 20  # vLLM's own parameter, named in the example catalog
    moonshot_log.reset()
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="kimi-k2.6-openrouter", messages=hello, extra_body={"top_k": 20})
    assert refused.value.body["param"] == "top_k" and moonshot_log.requests() == []


@pytest.mark.parametrize("field", ["api_base", "headers", "litellm_params", "model", "Top-K"])
def test_extra_fields_cannot_name_a_control_field(tmp_path: Path, field: str) -> None:
    from gateway.catalog import ConfigError, load_catalog

    text = EXAMPLE.read_text().replace("extra_fields: [top_k, min_p, repetition_penalty]", f"extra_fields: [{field!r}]")
    path = tmp_path / "catalog.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        load_catalog(path, {})
    assert "extra_fields" in str(error.value)
