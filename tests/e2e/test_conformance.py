"""OpenAPI conformance: schemathesis generates requests from OpenAI's published schema (the project's subset in
../shared/reference/openai-openapi-subset.yaml, plus the operations the gateway serves beyond it) and sends them
to a real gateway on 127.0.0.1 in front of every provider kind: Mistral and Moonshot (the emulators), an
OpenAI-compatible server and a litellm provider (the Moonshot emulator playing both).

Positive mode sends schema-valid bodies, negative mode bodies that break the schema. Every answer must be a
non-5xx, and every JSON answer must match the operation's response schema: OpenAI's CreateChatCompletionResponse,
CreateCompletionResponse, CreateEmbeddingResponse, the models, and ErrorResponse for every 4xx. Example counts are
bounded and generation is derandomised, so a run is repeatable and short.
"""

from __future__ import annotations

import collections
import copy
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from gateway.http.servers import ThreadedServer
from tests.support import ROOT
from tests.support.gateways import GatewayFactory

SPEC = ROOT.parent / "shared" / "reference" / "openai-openapi-subset.yaml"

# One model per provider kind for chat; FIM and embeddings exist only at Mistral (the others refuse them with a
# 400, which is checked too: a refusal must be ErrorResponse-shaped).
CHAT_MODELS = ["auto", "mistral-medium-3.5", "kimi-k2.6", "kimi-compatible", "kimi-via-litellm"]
COMPLETION_MODELS = ["codestral", "mistral-medium-3.5", "kimi-compatible"]
EMBEDDING_MODELS = ["mistral-embed", "kimi-k2.6"]

CATALOG = """
providers:
  - {name: mistral, kind: mistral, region: eu, api_key_env: MISTRAL_API_KEY, base_url_env: MISTRAL_API_BASE,
     base_url: "https://api.mistral.ai/v1"}
  - {name: moonshot, kind: moonshot, region: cn, api_key_env: MOONSHOT_API_KEY, base_url_env: MOONSHOT_API_BASE,
     base_url: "https://api.moonshot.ai/v1"}
  - {name: compatible, kind: openai-compatible, region: onprem, base_url_env: COMPATIBLE_API_BASE,
     base_url: "http://127.0.0.1:9/v1", api_key_env: MOONSHOT_API_KEY}
  - {name: via-litellm, kind: litellm, litellm_provider: openai, region: cn, base_url: "{moonshot}/v1",
     api_key_env: MOONSHOT_API_KEY}
models:
  - {name: mistral-medium-3.5, provider: mistral, upstream_model: mistral-medium-3.5, context_window: 262144,
     max_output_tokens: 32768, capabilities: [chat, tools, vision], price: {input: "1.50", output: "7.50"}}
  - {name: kimi-k2.6, provider: moonshot, upstream_model: kimi-k2.6, context_window: 1048576,
     max_output_tokens: 32768, capabilities: [chat, tools, vision], fixed_sampling: true, max_n: 1,
     price: {input: "0.60", output: "1.80"}}
  - {name: codestral, provider: mistral, upstream_model: codestral-latest, context_window: 262144,
     max_output_tokens: 32768, capabilities: [chat, fim], price: {input: "0.30", output: "0.90"}}
  - {name: mistral-embed, provider: mistral, upstream_model: mistral-embed, context_window: 8192,
     max_output_tokens: 0, capabilities: [embeddings], price: {input: "0.10", output: "0"}}
  - {name: kimi-compatible, provider: compatible, upstream_model: kimi-k2-turbo-preview, context_window: 262144,
     max_output_tokens: 8192, capabilities: [chat, tools], price: {input: "0.60", output: "2.50"}}
  - {name: kimi-via-litellm, provider: via-litellm, upstream_model: kimi-k2-turbo-preview, context_window: 262144,
     max_output_tokens: 8192, capabilities: [chat, tools], price: {input: "0.60", output: "2.50"}}
"""

ERROR = {"$ref": "#/components/schemas/ErrorResponse"}
ANY_OBJECT = {"type": "object"}

# (path, method, positive examples, negative examples). Chat has the largest schema and the most provider code
# behind it, so it gets the most examples; the bounds keep the whole module well under a minute.
OPERATIONS = [
    ("/v1/chat/completions", "POST", 45, 30),
    ("/v1/completions", "POST", 25, 15),
    ("/v1/fim/completions", "POST", 15, 10),
    ("/v1/embeddings", "POST", 15, 10),
    ("/v1/models", "GET", 3, 3),
    ("/v1/models/{model}", "GET", 8, 6),
    ("/v1/route/explain", "POST", 10, 8),
    ("/healthz", "GET", 2, 2),
    ("/readyz", "GET", 2, 2),
]


def load_spec() -> dict[str, Any]:
    if not SPEC.is_file():
        pytest.fail(
            f"OpenAI's OpenAPI subset is not at {SPEC}: the conformance tests read it from the shared reference "
            "folder beside the repository (../shared/reference/openai-openapi-subset.yaml). Put that folder back.",
            pytrace=False,
        )
    return yaml.safe_load(SPEC.read_text())


def _model_choice(names: list[str]) -> dict[str, Any]:
    return {"type": "string", "enum": names}


def gateway_schema(spec: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's schema as this gateway serves it: the same request and response schemas, at the gateway's
    paths, with the gateway's model names, and its own operations beyond OpenAI's."""
    spec = copy.deepcopy(spec)
    schemas = spec["components"]["schemas"]
    # Models: OpenAI's names (gpt-...) would only ever reach the 404 branch; ours reach every provider kind.
    chat_parts = schemas["CreateChatCompletionRequest"]["allOf"]
    next(p for p in chat_parts if "properties" in p and "model" in p["properties"])["properties"]["model"] = (
        _model_choice(CHAT_MODELS)
    )
    schemas["CreateCompletionRequest"]["properties"]["model"] = _model_choice(COMPLETION_MODELS)
    schemas["CreateEmbeddingRequest"]["properties"]["model"] = _model_choice(EMBEDDING_MODELS)
    # The gateway serves one prompt per request, a string (README, Errors: `prompt` mistyped is a 400); OpenAI's
    # null (meaning its "<|endoftext|>"), token arrays and prompt lists would all be refusals here.
    schemas["CreateCompletionRequest"]["properties"]["prompt"] = {"type": "string"}
    # With `encoding_format: base64` OpenAI's API (and so the gateway) answers the vector as a base64 string;
    # OpenAI's published Embedding schema lists only the float array.
    embedding = schemas["Embedding"]["properties"]["embedding"]
    schemas["Embedding"]["properties"]["embedding"] = {"anyOf": [embedding, {"type": "string"}]}
    # Mistral's FIM endpoint (Continue's Mistral provider), as providers.md documents it; its answer is a chat
    # completion.
    schemas["MistralFimRequest"] = {
        "type": "object",
        "required": ["model", "prompt"],
        "properties": {
            "model": _model_choice(["codestral"]),
            "prompt": {"type": "string"},
            "suffix": {"anyOf": [{"type": "string"}, {"type": "null"}]},
            "max_tokens": {"type": "integer", "minimum": 1, "maximum": 256},
            "min_tokens": {"type": "integer", "minimum": 0, "maximum": 8},
            "temperature": {"type": "number", "minimum": 0, "maximum": 1.5},
            "top_p": {"type": "number", "minimum": 0, "maximum": 1},
            "stream": {"type": "boolean"},
            "stop": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
            "random_seed": {"type": "integer", "minimum": 0},
        },
    }
    paths = {"/v1" + path: item for path, item in spec["paths"].items()}
    # Legacy completions stream too (`stream: true`), each event a text_completion whose `finish_reason` is null
    # until the last, as OpenAI's API sends them; the published schema documents JSON only and a non-null reason.
    schemas["CreateCompletionChunk"] = chunk = copy.deepcopy(schemas["CreateCompletionResponse"])
    reason = chunk["properties"]["choices"]["items"]["properties"]["finish_reason"]
    chunk["properties"]["choices"]["items"]["properties"]["finish_reason"] = {"anyOf": [reason, {"type": "null"}]}
    paths["/v1/completions"]["post"]["responses"]["200"]["content"]["text/event-stream"] = {
        "schema": {"$ref": "#/components/schemas/CreateCompletionChunk"}
    }
    paths["/v1/fim/completions"] = _post(
        "MistralFimRequest",
        {
            "application/json": {"schema": {"$ref": "#/components/schemas/CreateChatCompletionResponse"}},
            "text/event-stream": {"schema": {"$ref": "#/components/schemas/CreateChatCompletionStreamResponse"}},
        },
    )
    paths["/v1/route/explain"] = _post(
        "CreateChatCompletionRequest",
        {"application/json": {"schema": {"type": "object", "required": ["team", "admission"]}}},
    )
    for health in ("/healthz", "/readyz"):
        paths[health] = {
            "get": {
                "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": ANY_OBJECT}}}}
            }
        }
    for item in paths.values():
        for operation in item.values():
            if isinstance(operation, dict) and "responses" in operation:
                # The gateway's refusals: every 4xx is OpenAI's ErrorResponse (README, Errors).
                operation["responses"]["4XX"] = {
                    "description": "refused",
                    "content": {"application/json": {"schema": ERROR}},
                }
                for response in operation["responses"].values():
                    stream = response.get("content", {}).get("text/event-stream")
                    if stream is not None:
                        stream["schema"] = sse_event(stream["schema"])
    spec["paths"] = paths
    spec["servers"] = [{"url": "http://127.0.0.1"}]
    return spec


def sse_event(chunk: dict[str, Any]) -> dict[str, Any]:
    """One server-sent event of an OpenAI stream, as OpenAPI 3.1 describes an event (`schema` of
    text/event-stream is one event: its `data` field): a JSON chunk, an error event (ErrorResponse, the
    gateway's mid-stream failure), or the final `[DONE]`. OpenAI's spec puts the chunk schema there, which
    would describe the event object itself, not its data."""
    json_data = {"contentMediaType": "application/json", "contentSchema": {"anyOf": [chunk, ERROR]}}
    return {
        "type": "object",
        "required": ["data"],
        "properties": {"data": {"anyOf": [{"const": "[DONE]"}, {"not": {"const": "[DONE]"}, **json_data}]}},
    }


def _post(request_schema: str, content: dict[str, Any]) -> dict[str, Any]:
    return {
        "post": {
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{request_schema}"}}},
            },
            "responses": {"200": {"description": "OK", "content": content}},
        }
    }


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    return load_spec()


@pytest.fixture(scope="module")
def schema(spec: dict[str, Any]) -> Any:
    return schemathesis.openapi.from_dict(gateway_schema(spec))


@pytest.fixture(scope="module")
def url(start_gateway: GatewayFactory, moonshot: ThreadedServer, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("conformance") / "catalog.yaml"
    path.write_text(CATALOG.replace("{moonshot}", moonshot.url))
    return start_gateway(
        config=path, env={"COMPATIBLE_API_BASE": moonshot.url + "/v1"}, master_key=None, request_log=False
    ).url


@pytest.fixture(scope="module")
def session() -> Iterator[requests.Session]:
    with requests.Session() as http:
        yield http


@pytest.mark.slow
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["positive", "negative"])
@pytest.mark.parametrize(
    ("path", "method", "positive", "negative"), OPERATIONS, ids=[f"{m} {p}" for p, m, _, _ in OPERATIONS]
)
def test_operation_conforms(
    schema: Any,
    url: str,
    session: requests.Session,
    path: str,
    method: str,
    positive: int,
    negative: int,
    mode: GenerationMode,
) -> None:
    operation = schema[path][method]
    examples = positive if mode is GenerationMode.POSITIVE else negative
    checks = [not_a_server_error, content_type_conformance, response_schema_conformance]

    @settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        response = case.call(base_url=url, session=session, timeout=30)
        statuses.append(response.status_code)
        case.validate_response(response, checks=checks)

    statuses: list[int] = []
    run()
    # Every kind of answer was seen, not only refusals: a generator that never got past validation would
    # check nothing but ErrorResponse.
    assert (
        mode is GenerationMode.NEGATIVE
        or any(200 <= status < 300 for status in statuses)
        or path.startswith("/v1/models/")
    ), collections.Counter(statuses)


# Explicit defaults and nulls (OpenAI's documented defaults; null for optional fields) that a provider kind
# lacks: each must be accepted and dropped, and the answer must still match OpenAI's schema.
DEFAULTS_CHAT = {
    "logit_bias": None,
    "n": 1,
    "logprobs": False,
    "top_logprobs": None,
    "presence_penalty": 0,
    "frequency_penalty": 0,
    "parallel_tool_calls": True,
    "service_tier": "auto",
    "store": False,
    "stop": None,
    "seed": None,
    "user": None,
    "metadata": None,
    "audio": None,
    "tools": None,
    "tool_choice": None,
    "response_format": None,
    "stream_options": None,
    "verbosity": "medium",
    "prediction": None,
    "modalities": None,
    "web_search_options": None,
}
DEFAULTS_COMPLETION = {
    "n": 1,
    "best_of": 1,
    "echo": False,
    "logprobs": None,
    "logit_bias": None,
    "presence_penalty": 0,
    "frequency_penalty": 0,
    "stop": None,
    "seed": None,
    "user": None,
    "stream_options": None,
}
DEFAULTS_EMBEDDINGS = {"encoding_format": None, "dimensions": None, "user": None}
HELLO = [{"role": "user", "content": "Say hello", "name": None}]


def _call_and_validate(schema: Any, url: str, session: requests.Session, path: str, body: dict[str, Any]) -> Any:
    case = schema[path]["POST"].Case(body=body, media_type="application/json")
    response = case.call(base_url=url, session=session, timeout=30)
    assert response.status_code == 200, (path, body.get("model"), response.text[:500])
    case.validate_response(response, checks=[not_a_server_error, content_type_conformance, response_schema_conformance])
    return response


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
@pytest.mark.parametrize("model", CHAT_MODELS[1:])
@pytest.mark.slow
def test_every_kind_takes_explicit_defaults_and_answers_in_openai_shape(
    schema: Any, url: str, session: requests.Session, model: str, stream: bool
) -> None:
    body = {**DEFAULTS_CHAT, "model": model, "messages": HELLO, "stream": stream}
    _call_and_validate(schema, url, session, "/v1/chat/completions", body)


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
@pytest.mark.parametrize(
    ("path", "model", "suffix"),
    [
        ("/v1/completions", "codestral", "\n    return a"),
        ("/v1/completions", "mistral-medium-3.5", None),
        ("/v1/completions", "kimi-compatible", None),
        ("/v1/fim/completions", "codestral", "\n    return a"),
    ],
)
@pytest.mark.slow
def test_completions_take_explicit_defaults(
    schema: Any, url: str, session: requests.Session, path: str, model: str, suffix: str | None, stream: bool
) -> None:
    body = {"model": model, "prompt": "def add(a, b):", "suffix": suffix, "stream": stream}
    if path == "/v1/completions":
        body.update(DEFAULTS_COMPLETION)
    else:
        body.update({k: DEFAULTS_COMPLETION[k] for k in ("n", "best_of", "echo", "logprobs", "logit_bias")})
    _call_and_validate(schema, url, session, path, body)


@pytest.mark.slow
def test_embeddings_take_explicit_defaults(schema: Any, url: str, session: requests.Session) -> None:
    body = {**DEFAULTS_EMBEDDINGS, "model": "mistral-embed", "input": ["one", "two"]}
    data = _call_and_validate(schema, url, session, "/v1/embeddings", body).json()["data"]
    assert [item["index"] for item in data] == [0, 1] and all(isinstance(v, float) for v in data[0]["embedding"])


@pytest.mark.parametrize(
    ("model", "field", "value"),
    [
        ("mistral-medium-3.5", "logit_bias", {"42": 5}),
        ("mistral-medium-3.5", "n", True),
        ("kimi-k2.6", "logit_bias", {"42": 5}),
        ("mistral-medium-3.5", "verbosity", "high"),
        ("mistral-medium-3.5", "not_an_openai_field", None),
    ],
)
@pytest.mark.slow
def test_values_other_than_the_default_are_still_refused(
    url: str, session: requests.Session, model: str, field: str, value: Any
) -> None:
    # `n: true` is not `n: 1`, `logprobs: 0` not `false`; an unknown field is refused even when null.
    answer = session.post(url + "/v1/chat/completions", json={"model": model, "messages": HELLO, field: value})
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"] in (field, "n"), answer.text


@pytest.mark.slow
def test_405_lists_every_method_of_the_path(url: str, session: requests.Session) -> None:
    for path, allowed in [
        ("/v1/chat/completions", "POST"),
        ("/v1/models", "GET, HEAD"),
        ("/v1/models/kimi-k2.6", "GET, HEAD"),
        ("/admin/teams/web", "DELETE, GET, HEAD, PATCH"),
        ("/admin/keys", "GET, HEAD, POST"),
        ("/healthz", "GET, HEAD"),
    ]:
        answer = session.put(url + path, json={})
        assert answer.status_code == 405, (path, answer.text)
        assert answer.headers.get("allow") == allowed, path
        assert answer.json()["error"]["code"] == "method_not_allowed"


def test_spec_absence_fails_with_a_clear_message(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(sys.modules[__name__], "SPEC", tmp_path / "reference" / "openai-openapi-subset.yaml")
    with pytest.raises(pytest.fail.Exception, match="shared reference folder"):
        load_spec()
