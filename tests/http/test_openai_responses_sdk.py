"""The `openai` SDK's Responses API (`client.responses.create` / `.stream`) against a real gateway under uvicorn,
with the provider emulators behind it: plain answers, streams, function tools with their outputs, a namespace
tool, a built-in tool left out, Kimi's reasoning replayed, a mid-stream failure, and the ledger's rows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.translate.responses import KNOWN_FIELDS
from tests.support.emulators import Script
from tests.support.gateways import GatewayFactory
from tests.support.http import request
from tests.support.store import ledger, make_key, make_team
from tests.support.team_gateway import TeamGateway, start_team_gateway

pytestmark = pytest.mark.slow

MODELS = ["mistral-medium-3.5", "kimi-k2.6", "auto"]
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather for a city",
    "strict": False,
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
FILES = {
    "type": "namespace",
    "name": "files",
    "description": "Tools for the workspace's files",
    "tools": [
        {
            "type": "function",
            "name": "read_file",
            "description": "Read a file",
            "strict": False,
            "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
        }
    ],
}


class Gateway(TeamGateway):
    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + "/v1", api_key=self.key, max_retries=0)


@pytest.fixture(scope="module")
def gateway(start_gateway: GatewayFactory, tmp_path_factory: pytest.TempPathFactory) -> Gateway:
    db = f"sqlite:///{tmp_path_factory.mktemp('responses') / 'ledger.db'}"
    server, key = start_team_gateway(start_gateway, db, "master-key-for-responses-tests")
    return Gateway(server.url, key, db)


def queue(scripts: dict[str, Script], *replies: dict[str, Any]) -> None:
    """The same replies on both emulators (`auto` may route to either)."""
    for script in scripts.values():
        script.queue(*replies)


def sent(scripts: dict[str, Script]) -> list[dict[str, Any]]:
    return scripts["mistral"].chats() + scripts["moonshot"].chats()


@pytest.mark.parametrize("model", MODELS)
def test_create_answers_a_response_and_writes_a_ledger_row(gateway: Gateway, model: str) -> None:
    before = len(ledger(gateway.db))
    raw = gateway.client().responses.with_raw_response.create(
        model=model, instructions="You are terse.", input="Say hello to the gateway.", max_output_tokens=40
    )
    response = raw.parse()
    assert response.object == "response" and response.status == "completed" and response.id.startswith("resp_")
    assert response.output_text
    assert response.usage is not None and response.usage.input_tokens > 0 and response.usage.output_tokens > 0
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens
    served = raw.headers["x-gateway-model"]
    assert served == model or (model == "auto" and raw.headers["x-gateway-route-reason"] == "preferred")
    rows = gateway.rows(before + 1)
    row = rows[-1]
    assert (row.endpoint, row.model, row.requested_model, row.status) == ("responses", served, model, 200)
    assert row.prompt_tokens == response.usage.input_tokens and row.completion_tokens == response.usage.output_tokens


@pytest.mark.parametrize("model", MODELS)
def test_a_stream_read_by_the_sdk_helper_completes_with_usage(gateway: Gateway, model: str) -> None:
    before = len(ledger(gateway.db))
    with gateway.client().responses.stream(model=model, input="Tell me about the sea.", max_output_tokens=60) as stream:
        events = list(stream)
        final = stream.get_final_response()
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text and text == final.output_text
    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    assert final.usage is not None and final.usage.output_tokens > 0
    if model == "kimi-k2.6":  # Kimi thinks by default: its reasoning is a reasoning item, streamed as a summary
        summary = "".join(e.delta for e in events if e.type == "response.reasoning_summary_text.delta")
        assert summary and final.output[0].type == "reasoning" and final.output[0].summary[0].text == summary
    row = gateway.rows(before + 1)[-1]
    assert row.endpoint == "responses" and row.stream and row.completion_tokens == final.usage.output_tokens


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("streaming", [False, True])
def test_a_function_tool_round_trip(gateway: Gateway, scripts: dict[str, Script], model: str, streaming: bool) -> None:
    queue(
        scripts,
        {"content": "", "tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}], "after_tool": False},
        {"content": "It is sunny in Paris.", "after_tool": True},
    )
    client = gateway.client()
    question = [{"role": "user", "content": "What is the weather in Paris?"}]
    asked: dict[str, Any] = {
        "model": model,
        "input": question,
        "tools": [WEATHER],
        "include": ["reasoning.encrypted_content"],
        "store": False,
    }
    if streaming:
        with client.responses.stream(**asked) as stream:
            first = stream.get_final_response()
    else:
        first = client.responses.create(**asked)
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather" and json.loads(calls[0].arguments) == {"city": "Paris"}
    history = question + [item.model_dump(exclude_none=True) for item in first.output]
    history.append({"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny, 24 C"})
    second = client.responses.create(**{**asked, "input": history})
    assert second.output_text == "It is sunny in Paris."
    replayed = sent(scripts)[-1]["messages"]
    turn = next(m for m in replayed if m.get("tool_calls"))
    result = next(m for m in replayed if m["role"] == "tool")
    assert turn["tool_calls"][0]["function"]["name"] == "get_weather"
    assert result["content"] == "sunny, 24 C" and result["tool_call_id"] == turn["tool_calls"][0]["id"]
    if model == "kimi-k2.6":  # Kimi in thinking mode: the reasoning came back from the reasoning item
        reasoning = next(item for item in first.output if item.type == "reasoning")
        assert turn["reasoning_content"] == reasoning.summary[0].text
        assert sent(scripts)[-1].get("thinking", {"type": "enabled"}) == {"type": "enabled"}  # kept thinking


@pytest.mark.parametrize("model", MODELS)
def test_a_namespace_tool_round_trip_keeps_codex_names(
    gateway: Gateway, scripts: dict[str, Script], model: str
) -> None:
    queue(
        scripts,
        {
            "content": "",
            "tool_calls": [{"name": "files__read_file", "arguments": {"path": "notes.txt"}}],
            "after_tool": False,
        },
        {"content": "The notes say hello.", "after_tool": True},
    )
    client = gateway.client()
    question = [{"role": "user", "content": "What do my notes say?"}]
    first = client.responses.create(model=model, input=question, tools=[FILES, WEATHER])
    call = next(item for item in first.output if item.type == "function_call")
    assert (call.name, call.namespace) == ("read_file", "files")  # as Codex's ToolName::new(namespace, name)
    offered = sent(scripts)[-1]["tools"]
    assert {t["function"]["name"] for t in offered} == {"files__read_file", "get_weather"}
    history = question + [item.model_dump(exclude_none=True) for item in first.output]
    history.append({"type": "function_call_output", "call_id": call.call_id, "output": "hello"})
    second = client.responses.create(model=model, input=history, tools=[FILES, WEATHER])
    assert second.output_text == "The notes say hello."
    turn = next(m for m in sent(scripts)[-1]["messages"] if m.get("tool_calls"))
    assert turn["tool_calls"][0]["function"]["name"] == "files__read_file"


@pytest.mark.parametrize("model", MODELS)
def test_web_search_is_left_out_and_named_in_a_header(gateway: Gateway, scripts: dict[str, Script], model: str) -> None:
    raw = gateway.client().responses.with_raw_response.create(
        model=model, input="Any news?", tools=[WEATHER, {"type": "web_search"}]
    )
    assert raw.headers["x-gateway-dropped-tools"] == "web_search"
    assert raw.parse().output_text
    assert [t["function"]["name"] for t in sent(scripts)[-1]["tools"]] == ["get_weather"]
    with pytest.raises(openai.BadRequestError) as forced:
        gateway.client().responses.create(
            model=model, input="Any news?", tools=[{"type": "web_search"}], tool_choice={"type": "web_search"}
        )
    assert forced.value.body["param"] == "tool_choice"


@pytest.mark.parametrize("model", MODELS)
def test_a_custom_tool_round_trip(gateway: Gateway, scripts: dict[str, Script], model: str) -> None:
    patch = "*** Begin Patch\n*** Update File: notes.txt\n-4711\n+4712\n*** End Patch"
    queue(
        scripts,
        {"content": "", "tool_calls": [{"name": "apply_patch", "arguments": {"input": patch}}], "after_tool": False},
        {"content": "Patched.", "after_tool": True},
    )
    tool = {"type": "custom", "name": "apply_patch", "description": "Edit files with a patch."}
    client = gateway.client()
    question = [{"role": "user", "content": "Change 4711 to 4712 in notes.txt"}]
    first = client.responses.create(model=model, input=question, tools=[tool])
    call = next(item for item in first.output if item.type == "custom_tool_call")
    assert (call.name, call.input) == ("apply_patch", patch)
    history = question + [item.model_dump(exclude_none=True) for item in first.output]
    history.append({"type": "custom_tool_call_output", "call_id": call.call_id, "output": "Done"})
    second = client.responses.create(model=model, input=history, tools=[tool])
    assert second.output_text == "Patched."
    turn = next(m for m in sent(scripts)[-1]["messages"] if m.get("tool_calls"))
    assert json.loads(turn["tool_calls"][0]["function"]["arguments"]) == {"input": patch}


def test_refusals_are_openai_errors(gateway: Gateway) -> None:
    client = gateway.client()
    with pytest.raises(openai.NotFoundError) as chained:
        client.responses.create(model="auto", input="x", previous_response_id="resp_123")
    assert chained.value.body["code"] == "previous_response_not_found"
    with pytest.raises(openai.BadRequestError) as file_image:
        client.responses.create(
            model="auto",
            input=[{"role": "user", "content": [{"type": "input_image", "file_id": "file_1", "detail": "auto"}]}],
        )
    assert "file_id" in file_image.value.body["message"]
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="no-such-model", input="x")


def test_a_mid_stream_failure_is_response_failed(gateway: Gateway, scripts: dict[str, Script]) -> None:
    scripts["moonshot"].fault("stream_error=2")
    client = gateway.client()
    with client.responses.stream(model="kimi-k2.6", input="Tell me a long story.") as stream:
        events = list(stream)
    assert events[0].type == "response.created"
    assert events[-1].type == "response.failed"
    error = events[-1].response.error
    assert error is not None and error.message


def test_the_codex_capture_is_served(gateway: Gateway) -> None:
    body = json.loads(
        (Path(__file__).resolve().parents[1] / "clients" / "fixtures" / "codex_0.171_request.json").read_text()
    )
    extra = {"client_metadata": body.pop("client_metadata")}  # Codex's own field: not among the SDK's arguments
    raw = gateway.client().responses.with_raw_response.create(**body, extra_body=extra)
    assert raw.headers["x-gateway-dropped-tools"] == "web_search"
    events = list(raw.parse())
    assert events[-1].type == "response.completed"
    assert any(e.type == "response.output_item.done" for e in events)


@pytest.mark.parametrize("model", MODELS)
def test_previous_response_id_continues_a_kept_response(
    gateway: Gateway, scripts: dict[str, Script], model: str
) -> None:
    client = gateway.client()
    first = client.responses.create(model=model, input="My name is Ada.")
    with client.responses.stream(model=model, input="What is my name?", previous_response_id=first.id) as stream:
        second = stream.get_final_response()
    assert second.previous_response_id == first.id and second.output_text
    messages = sent(scripts)[-1]["messages"]
    assert messages[0] == {"role": "user", "content": "My name is Ada."}
    assert messages[1]["role"] == "assistant" and messages[1]["content"] == first.output_text
    assert messages[-1] == {"role": "user", "content": "What is my name?"}
    other = make_key(gateway.db, make_team(gateway.db, f"others-{model}", "5.00").name)[0]
    stranger = openai.OpenAI(base_url=gateway.url + "/v1", api_key=other, max_retries=0)
    with pytest.raises(openai.NotFoundError):
        stranger.responses.create(model=model, input="And mine?", previous_response_id=second.id)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
ITEM = st.fixed_dictionaries(
    {"type": st.sampled_from(["message", "function_call", "function_call_output", "reasoning", "mcp_call"])},
    optional={
        "role": st.sampled_from(["user", "assistant", "developer", "system", "tool"]) | JSON,
        "content": st.text(max_size=6)
        | st.lists(
            st.fixed_dictionaries({"type": st.text(max_size=12)}, optional={"text": JSON, "image_url": JSON}),
            max_size=2,
        ),
        "call_id": JSON,
        "name": st.sampled_from(["get_weather", "read_file"]) | JSON,
        "namespace": st.just("files") | JSON,
        "arguments": JSON,
        "output": JSON,
        "summary": JSON,
        "encrypted_content": JSON,
    },
)
# Every top-level field the door reads (its own table: the fuzz reaches each one the door learns), `model` drawn
# on its own.
FIELDS = sorted(KNOWN_FIELDS - {"model"})


@settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    model=st.sampled_from(MODELS),
    items=st.lists(ITEM, max_size=4),
    fields=st.dictionaries(st.sampled_from(FIELDS), JSON, max_size=3),
    tools=st.lists(st.sampled_from([WEATHER, FILES, {"type": "web_search"}]), max_size=3),
)
def test_no_responses_body_gets_a_5xx(
    gateway: Gateway, model: str, items: list[Any], fields: dict[str, Any], tools: list[Any]
) -> None:
    body = {"model": model, "input": items or "hi", "tools": tools, "max_output_tokens": 16, **fields}
    answer = request(
        gateway.url,
        "POST",
        "/v1/responses",
        json.dumps(body).encode(),
        {"content-type": "application/json", "authorization": f"Bearer {gateway.key}"},
    )
    assert answer.status < 500, (answer.status, body, answer.body[:300])
    if answer.status >= 400:
        assert answer.error["message"], body  # OpenAI's error shape
    elif body.get("stream") is True:
        last = [line for line in answer.body.decode().split("\n") if line.startswith("event: ")][-1]
        assert last in ("event: response.completed", "event: response.incomplete", "event: response.failed")
    else:
        assert json.loads(answer.body)["object"] == "response"
