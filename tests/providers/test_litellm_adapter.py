"""The `litellm` provider kind, for real: litellm's OpenAI client against the Moonshot emulator."""

from __future__ import annotations

import openai
import pytest

from gateway.http.servers import ThreadedServer
from tests.support.emulators import MOONSHOT_KEY, EmulatorControl
from tests.support.gateways import GatewayFactory

pytestmark = pytest.mark.slow

HELLO = [{"role": "user", "content": "Say hello"}]


@pytest.fixture(scope="module")
def url(start_gateway: GatewayFactory, moonshot: ThreadedServer, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("litellm") / "catalog.yaml"
    path.write_text(
        "providers:\n"
        f"  - {{name: via-litellm, kind: litellm, litellm_provider: openai, region: cn, base_url: '{moonshot.url}/v1',"
        " api_key_env: LITELLM_TEST_KEY}\n"
        "models:\n"
        "  - {name: kimi-via-litellm, provider: via-litellm, upstream_model: kimi-k2.6, context_window: 1048576,"
        " max_output_tokens: 8192, price: {input: '0.6', output: '1.8'}, capabilities: [chat, tools]}\n"
    )
    return start_gateway(config=path, env={"LITELLM_TEST_KEY": MOONSHOT_KEY}).url


def test_litellm_kind_non_streaming_and_streaming(url: str, moonshot_log: EmulatorControl) -> None:
    client = openai.OpenAI(base_url=url + "/v1", api_key="client", max_retries=0)
    whole = client.chat.completions.create(model="kimi-via-litellm", messages=HELLO, max_tokens=10)
    assert whole.choices[0].message.content and whole.usage.prompt_tokens > 0
    sent = moonshot_log.last()
    assert sent["path"] == "/v1/chat/completions" and sent["body"]["model"] == "kimi-k2.6"
    assert sent["headers"]["authorization"] == f"Bearer {MOONSHOT_KEY}"
    chunks = list(
        client.chat.completions.create(
            model="kimi-via-litellm", messages=HELLO, max_tokens=10, stream=True, stream_options={"include_usage": True}
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_litellm_kind_maps_provider_errors(url: str, moonshot_log: EmulatorControl) -> None:
    moonshot_log.fault("status=429", count=2)  # the first attempt and its one retry
    client = openai.OpenAI(base_url=url + "/v1", api_key="client", max_retries=0)
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="kimi-via-litellm", messages=HELLO)
