"""The Responses translation in both directions, without a gateway: request bodies -> the canonical chat body,
chat answers and streams -> the response object and events (read back with the `openai` SDK's own parsers)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.catalog import load_catalog
from gateway.errors import GatewayError
from gateway.pipeline.validation import check_chat
from gateway.providers.mistral import MistralAdapter
from gateway.providers.moonshot import MoonshotAdapter
from gateway.translate.responses import KNOWN_FIELDS, translate_request
from gateway.translate.responses_items import decode_reasoning, encode_reasoning
from gateway.translate.responses_reply import ReplyContext, ResponseStream, response_from_chat
from gateway.translate.responses_tools import ToolNames
from tests.support.sse import frames

FIXTURES = Path(__file__).resolve().parents[1] / "clients" / "fixtures"  # captured from Codex CLI 0.171 `exec`
SHELL = {
    "type": "function",
    "name": "shell",
    "description": "Run a command",
    "strict": False,
    "parameters": {"type": "object", "properties": {"command": {"type": "string"}}},
}
FILES = {
    "type": "namespace",
    "name": "files",
    "description": "File tools",
    "tools": [{"type": "function", "name": "read", "description": "Read a file", "parameters": {"type": "object"}}],
}


def chat_of(**body: Any) -> dict[str, Any]:
    translated = translate_request({"model": "auto", **body})
    check_chat(translated.chat)  # every translation is a valid chat request
    return translated.chat


def refused(body: dict[str, Any]) -> GatewayError:
    with pytest.raises(GatewayError) as error:
        translate_request({"model": "auto", **body})
    assert error.value.status == 400
    return error.value


# --- requests --------------------------------------------------------------------------------------------------


def test_a_string_input_and_instructions() -> None:
    chat = chat_of(input="Hello", instructions="Be terse.", max_output_tokens=50, temperature=0.2, top_p=0.9)
    assert chat["messages"] == [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Hello"}]
    assert (chat["max_tokens"], chat["temperature"], chat["top_p"]) == (50, 0.2, 0.9)


def test_developer_and_system_messages_are_system_and_parts_keep_their_order() -> None:
    chat = chat_of(
        input=[
            {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "Rules."}]},
            {"role": "system", "content": "More rules."},
            {
                "type": "message",
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "Look:"},
                    {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "low"},
                ],
            },
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "A square."}]},
        ]
    )
    assert chat["messages"] == [
        {"role": "system", "content": "Rules."},
        {"role": "system", "content": "More rules."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Look:"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}},
            ],
        },
        {"role": "assistant", "content": "A square."},
    ]


def test_calls_merge_into_one_assistant_turn_with_their_reasoning_and_results_follow() -> None:
    reasoning = {
        "type": "reasoning",
        "id": "rs_1",
        "summary": [{"type": "summary_text", "text": "Two reads."}],
        "encrypted_content": encode_reasoning("Two reads, raw."),
    }
    chat = chat_of(
        tools=[SHELL, FILES],
        input=[
            {"role": "user", "content": "Read a and b"},
            reasoning,
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Reading."}]},
            {"type": "function_call", "call_id": "c1", "name": "read", "namespace": "files", "arguments": '{"p":"a"}'},
            {"type": "function_call", "call_id": "c2", "name": "shell", "arguments": '{"command":"cat b"}'},
            {"type": "function_call_output", "call_id": "c1", "output": "A"},
            {
                "type": "function_call_output",
                "call_id": "c2",
                "output": [{"type": "input_text", "text": "B"}, {"type": "input_image", "image_url": "http://x/i.png"}],
            },
            {"role": "user", "content": "Thanks"},
        ],
    )
    assert chat["messages"][1:] == [
        {
            "role": "assistant",
            "content": "Reading.",
            "reasoning_content": "Two reads, raw.",  # our own encrypted_content wins over the summary
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "files__read", "arguments": '{"p":"a"}'}},
                {"id": "c2", "type": "function", "function": {"name": "shell", "arguments": '{"command":"cat b"}'}},
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "A"},
        {"role": "tool", "tool_call_id": "c2", "content": "B"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "(Images returned by the tool calls above.)"},
                {"type": "image_url", "image_url": {"url": "http://x/i.png"}},
            ],
        },
        {"role": "user", "content": "Thanks"},
    ]


def test_a_reasoning_summary_restores_reasoning_when_no_encrypted_content_is_ours() -> None:
    chat = chat_of(
        input=[
            {"role": "user", "content": "Hi"},
            {
                "type": "reasoning",
                "summary": [{"type": "summary_text", "text": "Greet."}],
                "encrypted_content": "gAAAA-openai-opaque",
            },
            {"type": "function_call", "call_id": "c1", "name": "shell", "arguments": "{}"},
        ],
        tools=[SHELL],
    )
    assert chat["messages"][1]["reasoning_content"] == "Greet."
    assert chat["messages"][1]["content"] is None


def test_the_kept_turns_of_previous_response_id_come_first_and_errors_name_the_new_items() -> None:
    history = [
        {"role": "user", "content": "Hi"},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Hello!"}]},
    ]
    translated = translate_request({"model": "auto", "input": "And now?", "previous_response_id": "resp_1"}, history)
    assert translated.chat["messages"] == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "And now?"},
    ]
    assert translated.conversation == [*history, {"role": "user", "content": "And now?"}]
    assert translated.echo["previous_response_id"] == "resp_1"
    assert translate_request({"model": "auto", "input": [], "previous_response_id": "r"}, history).chat["messages"]
    with pytest.raises(GatewayError) as error:
        translate_request({"model": "auto", "input": [{"type": "bogus"}], "previous_response_id": "r"}, history)
    assert error.value.param == "input[0].type"


def test_tools_namespaces_and_built_ins() -> None:
    translated = translate_request(
        {
            "model": "auto",
            "input": "x",
            "tools": [SHELL, FILES, {"type": "web_search"}, {"type": "file_search", "vector_store_ids": []}],
            "tool_choice": {"type": "function", "name": "read", "namespace": "files"},
            "parallel_tool_calls": True,
        }
    )
    assert translated.chat["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "shell",
                "description": "Run a command",
                "parameters": SHELL["parameters"],
                "strict": False,
            },
        },
        {
            "type": "function",
            "function": {"name": "files__read", "description": "Read a file", "parameters": {"type": "object"}},
        },
    ]
    assert translated.chat["tool_choice"] == {"type": "function", "function": {"name": "files__read"}}
    assert translated.dropped_tools == ["web_search", "file_search"]
    assert translated.names.from_chat("files__read") == ("files", "read")
    assert translated.names.from_chat("shell") == (None, "shell")


PATCH_TOOL = {
    "type": "custom",
    "name": "apply_patch",
    "description": "Edit files.",
    "format": {"type": "grammar", "syntax": "lark", "definition": "start: /.+/"},
}


def test_a_custom_tool_is_a_function_of_one_string_and_its_calls_replay_as_that() -> None:
    translated = translate_request(
        {
            "model": "auto",
            "tools": [PATCH_TOOL],
            "tool_choice": {"type": "custom", "name": "apply_patch"},
            "input": [
                {"role": "user", "content": "Fix it"},
                {"type": "custom_tool_call", "call_id": "c1", "name": "apply_patch", "input": "*** Begin Patch"},
                {"type": "custom_tool_call_output", "call_id": "c1", "output": "Done"},
            ],
        }
    )
    function = translated.chat["tools"][0]["function"]
    assert function["name"] == "apply_patch" and function["parameters"]["required"] == ["input"]
    assert "lark grammar" in function["description"] and "start: /.+/" in function["description"]
    assert translated.chat["tool_choice"] == {"type": "function", "function": {"name": "apply_patch"}}
    assert translated.chat["messages"][1]["tool_calls"][0]["function"] == {
        "name": "apply_patch",
        "arguments": '{"input":"*** Begin Patch"}',
    }
    assert translated.chat["messages"][2] == {"role": "tool", "tool_call_id": "c1", "content": "Done"}
    assert translated.dropped_tools == [] and "apply_patch" in translated.names.custom


def test_allowed_tools_narrow_the_tools_sent() -> None:
    chat = chat_of(
        input="x",
        tools=[SHELL, FILES],
        tool_choice={"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "shell"}]},
    )
    assert [t["function"]["name"] for t in chat["tools"]] == ["shell"] and chat["tool_choice"] == "required"


def test_reasoning_text_format_and_hints() -> None:
    chat = chat_of(
        input="x",
        reasoning={"effort": "high", "summary": "auto"},
        text={"format": {"type": "json_schema", "name": "out", "schema": {"type": "object"}, "strict": True}},
        include=["reasoning.encrypted_content"],
        prompt_cache_key="k",
        client_metadata={"a": "b"},
        metadata={"team": "x"},
        store=False,
        truncation="disabled",
        user="u",
        safety_identifier="s",
        service_tier="auto",
        stream=True,
        stream_options={"include_obfuscation": False},
    )
    assert chat["reasoning_effort"] == "high"
    assert chat["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "out", "schema": {"type": "object"}, "strict": True},
    }
    assert chat["prompt_cache_key"] == "k" and chat["metadata"] == {"team": "x"} and chat["stream"] is True
    assert chat["user"] == "u" and "safety_identifier" not in chat
    assert chat_of(input="x", safety_identifier="s")["user"] == "s"
    for absent in ("include", "client_metadata", "store", "truncation", "stream_options", "reasoning", "text"):
        assert absent not in chat


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "x", "previous_response_id": 7}, "previous_response_id"),
        ({"input": "x", "base_url": "http://evil"}, "base_url"),
        ({"input": "x", "extra_headers": {"a": "b"}}, "extra_headers"),
        ({"input": "x", "litellm_params": {}}, "litellm_params"),
        ({"input": "x", "novel": 1}, "novel"),
        ({"input": [{"role": "user", "content": "x", "api_base": "http://evil"}]}, "input[0].api_base"),
        ({"input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}", "x": 1}]}, "input[0].x"),
        ({"input": [{"type": "computer_call_output", "call_id": "c"}]}, "input[0].type"),
        ({"input": [{"type": "local_shell_call", "call_id": "c"}]}, "input[0].type"),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0].type"),
        ({"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file_1"}]}]}, None),
        ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "file_1"}]}]}, None),
        ({"input": [{"role": "user", "content": [{"type": "input_audio"}]}]}, None),
        ({"input": [{"role": "tool", "content": "x"}]}, "input[0].role"),
        ({"input": "x", "metadata": {"a": 1}}, "metadata"),
        ({"input": "x", "tools": [{"type": "hologram"}]}, "tools[0].type"),
        ({"input": "x", "tools": [{"type": "function", "name": "bad name!"}]}, "tools[0].name"),
        ({"input": "x", "tools": [SHELL, SHELL]}, "tools"),
        (
            {"input": "x", "tools": [{**FILES, "name": "n" * 60}]},
            "tools[0].tools[0].name",
        ),  # flattened name over 64 characters
        ({"input": "x", "tools": [{"type": "web_search"}], "tool_choice": {"type": "web_search"}}, "tool_choice"),
        ({"input": "x", "tool_choice": {"type": "function", "name": "nope"}}, "tool_choice"),
        ({"input": "x", "reasoning": {"effort": "maximal"}}, "reasoning.effort"),
        ({"input": "x", "text": {"format": {"type": "xml"}}}, "text.format.type"),
        ({"input": "x", "background": True}, "background"),
        ({"input": "x", "conversation": "conv_1"}, "conversation"),
        ({"input": "x", "truncation": "sometimes"}, "truncation"),
        ({}, "input"),
    ],
)
def test_what_cannot_be_translated_is_a_400_naming_it(body: dict[str, Any], param: str | None) -> None:
    error = refused(body)
    if param is not None:
        assert error.param == param, error.message
    else:
        assert error.code == "unsupported_content" and "input[0].content[0]" in error.message


def test_encrypted_reasoning_round_trips_and_foreign_values_are_opaque() -> None:
    assert decode_reasoning(encode_reasoning("déjà vu")) == "déjà vu"
    for foreign in ("gAAAAB...", "gwr1.!!!", "gwr1." + "eyJ4IjoxfQ==", None, 5):
        assert decode_reasoning(foreign) is None


@pytest.mark.parametrize("name", ["codex_0.171_request.json", "codex_0.171_request_tool_rounds.json"])
def test_the_captured_codex_requests_translate(name: str) -> None:
    body = json.loads((FIXTURES / name).read_text())
    translated = translate_request(body)
    check_chat(translated.chat)
    chat = translated.chat
    assert translated.dropped_tools == ["web_search"]
    names = [tool["function"]["name"] for tool in chat["tools"]]
    assert "exec_command" in names and "multi_agent_v1__spawn_agent" in names and len(names) == 12
    assert translated.names.from_chat("multi_agent_v1__spawn_agent") == ("multi_agent_v1", "spawn_agent")
    assert [m["role"] for m in chat["messages"][:4]] == ["system", "system", "user", "user"]
    assert chat["prompt_cache_key"] == body["prompt_cache_key"] and chat["stream"] is True
    for absent in ("client_metadata", "include", "store", "reasoning"):
        assert absent not in chat
    rounds = [(m["role"], m.get("tool_calls", [{}])[0].get("id"), m.get("tool_call_id")) for m in chat["messages"][4:]]
    if "tool_rounds" in name:
        assert rounds == [
            ("assistant", "call_0", None),
            ("tool", None, "call_0"),
            ("assistant", "call_1", None),
            ("tool", None, "call_1"),
        ]
    else:
        assert rounds == []


# --- answers ---------------------------------------------------------------------------------------------------


def context(encrypted: bool = False, names: ToolNames | None = None) -> ReplyContext:
    if names is None:
        names = ToolNames()
        names.add("files", "read", "tools")
    echo = {
        "tools": [SHELL, FILES],
        "tool_choice": "auto",
        "parallel_tool_calls": True,
        "instructions": None,
        "metadata": None,
        "temperature": None,
        "top_p": None,
        "max_output_tokens": None,
        "reasoning": None,
        "text": {"format": {"type": "text"}},
        "truncation": "disabled",
    }
    return ReplyContext("resp_abc", 1_700_000_000, "auto", names, echo, encrypted)


USAGE = {
    "prompt_tokens": 30,
    "completion_tokens": 12,
    "total_tokens": 42,
    "prompt_tokens_details": {"cached_tokens": 10},
    "completion_tokens_details": {"reasoning_tokens": 5},
}
CALLS = [
    {"id": "call_1", "type": "function", "function": {"name": "files__read", "arguments": '{"p":"a"}'}},
    {"id": "call_2", "type": "function", "function": {"name": "shell", "arguments": '{"command":"ls"}'}},
]
COMPLETE = {
    "id": "x",
    "object": "chat.completion",
    "created": 1,
    "model": "upstream",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "Let me look.",
                "reasoning_content": "Need files.",
                "tool_calls": CALLS,
            },
            "finish_reason": "tool_calls",
        }
    ],
    "usage": USAGE,
}


def delta(finish: str | None = None, **fields: Any) -> dict[str, Any]:
    return {"id": "x", "choices": [{"index": 0, "delta": fields, "finish_reason": finish}]}


# The same answer as COMPLETE, streamed: reasoning in pieces, text, one call in pieces, one whole (Mistral's way).
STREAMED = [
    delta(role="assistant", content=""),
    delta(reasoning_content="Need "),
    delta(reasoning_content="files."),
    delta(content="Let me "),
    delta(content="look."),
    delta(tool_calls=[{"index": 0, "id": "call_1", "type": "function", "function": {"name": "files__read"}}]),
    delta(tool_calls=[{"index": 0, "function": {"arguments": '{"p":'}}]),
    delta(tool_calls=[{"index": 0, "function": {"arguments": '"a"}'}}]),
    delta(finish="tool_calls", tool_calls=[{"index": 1, **CALLS[1]}]),
    {"id": "x", "choices": [], "usage": USAGE, "x_gateway": {"cost_usd": 0.0001}},
]


def sse_of(stream: ResponseStream, chunks: list[dict[str, Any]]) -> bytes:
    return b"".join(stream.chunk(c) for c in chunks) + stream.end()


def sdk_client(answer: bytes, streaming: bool) -> openai.OpenAI:
    def handler(request: httpx.Request) -> httpx.Response:
        kind = "text/event-stream" if streaming else "application/json"
        return httpx.Response(200, content=answer, headers={"content-type": kind})

    http = httpx.Client(transport=httpx.MockTransport(handler))
    return openai.OpenAI(api_key="k", base_url="http://gateway/v1", http_client=http, max_retries=0)


def test_the_sdk_reads_the_complete_answer() -> None:
    body = response_from_chat(COMPLETE, context())
    response = sdk_client(orjson.dumps(body), False).responses.create(model="auto", input="x")
    assert response.output_text == "Let me look."
    assert [item.type for item in response.output] == ["reasoning", "message", "function_call", "function_call"]
    first, second = response.output[2], response.output[3]
    assert (first.name, first.namespace, first.call_id, first.arguments) == ("read", "files", "call_1", '{"p":"a"}')
    assert (second.name, second.namespace) == ("shell", None)
    assert response.output[0].summary[0].text == "Need files."
    assert response.usage is not None and response.usage.input_tokens_details.cached_tokens == 10
    assert response.usage.output_tokens_details.reasoning_tokens == 5 and response.usage.total_tokens == 42
    assert response.status == "completed"


def unparsed(value: Any) -> Any:
    """Without what the SDK's stream helper adds of its own (`parsed`, `parsed_arguments`: None here)."""
    if isinstance(value, dict):
        return {k: unparsed(v) for k, v in value.items() if k not in ("parsed", "parsed_arguments")}
    if isinstance(value, list):
        return [unparsed(v) for v in value]
    return value


def test_a_streamed_answer_accumulated_by_the_sdk_is_the_complete_answer() -> None:
    whole = response_from_chat(COMPLETE, context(encrypted=True))
    raw = sse_of(ResponseStream(context(encrypted=True)), STREAMED)
    client = sdk_client(raw, True)
    with client.responses.stream(model="auto", input="x") as stream:
        events = list(stream)
        final = stream.get_final_response()
    streamed = unparsed(final.model_dump())
    assert streamed.pop("x_gateway") == {"cost_usd": 0.0001}  # the settled cost, as on the chat door's last chunk
    assert streamed == openai.types.responses.Response.model_validate(whole).model_dump()
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert decode_reasoning(final.output[0].encrypted_content) == "Need files."
    # Each event is named twice, as OpenAI sends it: `event:` and the data's `type`.
    named = [line for line in raw.decode().split("\n") if line.startswith("event: ")]
    assert [n.removeprefix("event: ") for n in named] == [e.type for e in events]


def test_codex_reads_what_it_needs_from_the_stream() -> None:
    """Codex (codex-api/src/sse/responses.rs) takes items from output_item.done, text from output_text.delta,
    reasoning from reasoning_summary_text.delta with summary_index, and id and usage from response.completed."""
    events = [json.loads(f) for f in frames(sse_of(ResponseStream(context()), STREAMED))]
    kinds = [e["type"] for e in events]
    for needed in (
        "response.created",
        "response.output_item.added",
        "response.reasoning_summary_part.added",
        "response.reasoning_summary_text.delta",
        "response.output_text.delta",
        "response.function_call_arguments.delta",
        "response.output_item.done",
    ):
        assert needed in kinds
    assert all(e["summary_index"] == 0 for e in events if e["type"].startswith("response.reasoning_summary"))
    completed = events[-1]
    assert completed["type"] == "response.completed" and completed["response"]["id"] == "resp_abc"
    usage = completed["response"]["usage"]
    assert (usage["input_tokens"], usage["output_tokens"], usage["total_tokens"]) == (30, 12, 42)


def test_a_custom_tool_call_comes_back_as_a_custom_tool_call_both_ways() -> None:
    names = ToolNames()
    names.custom.add("apply_patch")
    arguments = '{"input": "*** Begin Patch\\n*** End Patch"}'
    call = {"id": "call_7", "type": "function", "function": {"name": "apply_patch", "arguments": arguments}}
    chat = {
        **COMPLETE,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "", "tool_calls": [call]},
                "finish_reason": "tool_calls",
            }
        ],
    }
    whole = response_from_chat(chat, context(names=names))
    response = sdk_client(orjson.dumps(whole), False).responses.create(model="auto", input="x")
    item = response.output[0]
    assert item.type == "custom_tool_call" and (item.name, item.call_id) == ("apply_patch", "call_7")
    assert item.input == "*** Begin Patch\n*** End Patch"
    pieces = [
        delta(tool_calls=[{"index": 0, "id": "call_7", "function": {"name": "apply_patch", "arguments": '{"inp'}}]),
        delta(finish="tool_calls", tool_calls=[{"index": 0, "function": {"arguments": arguments[5:]}}]),
    ]
    raw = sse_of(ResponseStream(context(names=names)), pieces)
    with sdk_client(raw, True).responses.stream(model="auto", input="x") as stream:
        events = list(stream)
        final = stream.get_final_response()
    assert [e.type for e in events if "custom_tool_call" in e.type] == [
        "response.custom_tool_call_input.delta",
        "response.custom_tool_call_input.done",
    ]
    assert final.output[0].type == "custom_tool_call" and final.output[0].input == item.input


def test_length_is_incomplete_both_ways() -> None:
    cut = {
        **COMPLETE,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hal"}, "finish_reason": "length"}],
    }
    body = response_from_chat(cut, context())
    assert body["status"] == "incomplete" and body["incomplete_details"] == {"reason": "max_output_tokens"}
    stream = ResponseStream(context())
    events = [json.loads(f) for f in frames(sse_of(stream, [delta(content="Hal", finish="length")]))]
    assert events[-1]["type"] == "response.incomplete" and events[-1]["response"]["status"] == "incomplete"


def test_a_mid_stream_failure_is_response_failed_and_nothing_follows() -> None:
    stream = ResponseStream(context())
    head = stream.chunk(delta(content="Par"))
    failure = stream.error({"message": "provider went away", "type": "upstream_error", "code": "upstream_stream_cut"})
    events = [json.loads(f) for f in frames(head + failure)]
    assert events[-1]["type"] == "response.failed"
    assert events[-1]["response"]["error"] == {"code": "upstream_stream_cut", "message": "provider went away"}
    assert events[-1]["sequence_number"] == events[-2]["sequence_number"] + 1


def test_the_farewell_computed_before_the_stream_changes_nothing() -> None:
    stream = ResponseStream(context())
    farewell = stream.error({"message": "shutting down", "code": "gateway_shutting_down"})
    assert [json.loads(f)["type"] for f in frames(farewell)] == [
        "response.created",
        "response.in_progress",
        "response.failed",
    ]
    events = [json.loads(f) for f in frames(sse_of(stream, [delta(content="Hi", finish="stop")]))]
    assert events[0]["type"] == "response.created" and events[0]["sequence_number"] == 0


def test_a_call_whose_arguments_come_before_its_name_is_held_until_the_name() -> None:
    chunks = [
        delta(tool_calls=[{"index": 0, "id": "call_9", "function": {"arguments": "{"}}]),
        delta(tool_calls=[{"index": 0, "function": {"name": "shell", "arguments": "}"}}], finish="tool_calls"),
    ]
    events = [json.loads(f) for f in frames(sse_of(ResponseStream(context()), chunks))]
    added = next(e for e in events if e["type"] == "response.output_item.added")
    assert added["item"]["name"] == "shell"
    done = next(e for e in events if e["type"] == "response.output_item.done")
    assert done["item"]["arguments"] == "{}"


def test_an_empty_stream_still_completes() -> None:
    events = [json.loads(f) for f in frames(ResponseStream(context()).end())]
    assert [e["type"] for e in events] == ["response.created", "response.in_progress", "response.completed"]
    assert events[-1]["response"]["output"] == []


# --- hostile input ---------------------------------------------------------------------------------------------

# What orjson.loads can give a door: integers within 64 bits (a longer one is read as a float).
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=10,
)
# Every top-level field the door reads (its own table: the fuzz reaches each one the door learns), `model` set
# on its own.
FIELDS = sorted(KNOWN_FIELDS - {"model"})
ITEM_TYPES = ["message", "function_call", "function_call_output", "reasoning", "web_search_call", None]


@st.composite
def items(draw: st.DrawFn) -> dict[str, Any]:
    item = draw(
        st.dictionaries(
            st.sampled_from(
                [
                    "role",
                    "content",
                    "call_id",
                    "name",
                    "arguments",
                    "output",
                    "summary",
                    "encrypted_content",
                    "namespace",
                    "id",
                ]
            ),
            JSON_VALUES,
        )
    )
    kind = draw(st.sampled_from(ITEM_TYPES))
    if kind is not None:
        item["type"] = kind
    return item


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=st.dictionaries(st.sampled_from(FIELDS), JSON_VALUES, max_size=5),
    input_items=st.lists(items(), max_size=4),
)
def test_no_request_body_raises_anything_but_a_400(body: dict[str, Any], input_items: list[dict[str, Any]]) -> None:
    body = {"model": "auto", **body}
    if "input" not in body:
        body["input"] = input_items
    try:
        translated = translate_request(body)
        check_chat(translated.chat)
    except GatewayError as error:
        assert error.status == 400


@settings(max_examples=300, deadline=None)
@given(st.lists(st.dictionaries(st.sampled_from(["choices", "usage", "id"]), JSON_VALUES), max_size=5))
def test_no_chunk_raises_and_the_stream_always_ends(chunks: list[dict[str, Any]]) -> None:
    stream = ResponseStream(context())
    raw = sse_of(stream, chunks)
    assert json.loads(frames(raw)[-1])["type"] in ("response.completed", "response.incomplete")


def test_no_odd_answer_raises() -> None:
    odd: Iterator[dict[str, Any]] = iter(
        [
            {},
            {"choices": None},
            {"choices": [None]},
            {"choices": [{"message": {"tool_calls": 5, "content": 3}}]},
            {"choices": [{"message": {"tool_calls": [{"function": None}]}}], "usage": "many"},
        ]
    )
    for chat in odd:
        assert response_from_chat(chat, context())["object"] == "response"


# --- what each provider kind is sent -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mistral-medium-3.5", "kimi-k2.6"])
def test_a_codex_tool_round_with_reasoning_is_a_body_each_provider_takes(name: str) -> None:
    catalog = load_catalog(None, {"MISTRAL_API_KEY": "k", "MOONSHOT_API_KEY": "k"})
    model = catalog.model(name)
    assert model is not None
    body = json.loads((FIXTURES / "codex_0.171_request_tool_rounds.json").read_text())
    body["reasoning"] = {"effort": "high", "summary": "auto"}
    position = next(i for i, item in enumerate(body["input"]) if item["type"] == "function_call")
    reasoning = {"type": "reasoning", "summary": [], "encrypted_content": encode_reasoning("Read the notes first.")}
    body["input"].insert(position, reasoning)
    chat = translate_request({**body, "model": name}).chat
    check_chat(chat)
    provider = catalog.provider_of(model)
    adapter = MistralAdapter(provider) if provider.kind == "mistral" else MoonshotAdapter(provider)
    sent = adapter.prepare_chat(dict(chat), model, True)
    assert all(m["role"] in ("system", "user", "assistant", "tool") for m in sent["messages"])
    turn = next(m for m in sent["messages"] if m.get("tool_calls"))
    if provider.kind == "mistral":
        assert turn["content"][0]["type"] == "thinking"  # the replayed reasoning, as Mistral's thinking chunk
        assert all(len(call["id"]) == 9 for call in turn["tool_calls"])
        assert sent["reasoning_effort"] == "high"
    else:
        assert turn["reasoning_content"] == "Read the notes first."
        assert sent["thinking"] == {"type": "enabled"}
    assert "multi_agent_v1__spawn_agent" in [tool["function"]["name"] for tool in sent["tools"]]
