"""Conformance of the emulators' scripted replies (gateway/emulators/script.py), straight at the emulators."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.http.servers import ThreadedServer
from tests.support.emulators import MISTRAL_KEY, MOONSHOT_KEY, Script
from tests.support.http import auth, post_json

pytestmark = pytest.mark.slow

MODELS = {"mistral": ("mistral-medium-3.5", MISTRAL_KEY), "moonshot": ("kimi-k2.6", MOONSHOT_KEY)}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "read_file",
            "description": "Read a file",
            "parameters": {"type": "object", "properties": {"path": {"type": "string"}}},
        },
    }
]


def chat(server: ThreadedServer, kind: str, text: str, stream: bool = False, **extra: Any) -> Any:
    model, key = MODELS[kind]
    body = {"model": model, "messages": extra.pop("messages", [{"role": "user", "content": text}]), **extra}
    if stream:
        body["stream"] = True
    answer = post_json(server.url, "/v1/chat/completions", body, auth(key), timeout=10)
    assert answer.status == 200, answer.body
    return answer.events if stream else answer.json()


def streamed_text(events: list[Any]) -> tuple[str, list[dict], dict | None]:
    text, calls, usage = "", [], None
    for event in events:
        if not isinstance(event, dict):
            continue
        usage = event.get("usage") or usage
        for choice in event.get("choices", []):
            usage = choice.get("usage") or usage
            delta = choice.get("delta") or {}
            text += delta.get("content") or "" if isinstance(delta.get("content"), (str, type(None))) else ""
            calls += delta.get("tool_calls") or []
    return text, calls, usage


@pytest.fixture(params=["mistral", "moonshot"])
def emulator(request: pytest.FixtureRequest, mistral: ThreadedServer, moonshot: ThreadedServer):
    server = {"mistral": mistral, "moonshot": moonshot}[request.param]
    script = Script(server.url)
    script.clear()
    yield request.param, server, script
    script.clear()


def test_without_a_script_the_reply_is_generated_as_before(emulator) -> None:
    kind, server, _ = emulator
    first, second = chat(server, kind, "Hello there"), chat(server, kind, "Hello there")
    assert first["choices"][0]["message"]["content"] == second["choices"][0]["message"]["content"]  # deterministic
    assert first["choices"][0]["message"]["content"].split()[0].isalpha()


def test_scripted_text_is_sent_once_with_its_usage(emulator) -> None:
    kind, server, script = emulator
    script.queue({"content": "Exactly this, with\nnew lines."})
    reply = chat(server, kind, "Anything")
    assert reply["choices"][0]["message"]["content"] == "Exactly this, with\nnew lines."
    assert reply["choices"][0]["finish_reason"] == "stop"
    # "Exactly this , with new lines ." in the emulators' count, plus Kimi K2.6's reasoning (it thinks by default)
    reasoning = (reply["usage"].get("completion_tokens_details") or {}).get("reasoning_tokens", 0)
    assert reply["usage"]["completion_tokens"] == 7 + reasoning
    assert bool(reasoning) is bool(reply["choices"][0]["message"].get("reasoning_content")) is (kind == "moonshot")
    assert script.state()["queued"] == [] and len(script.state()["used"]) == 1
    assert chat(server, kind, "Anything")["choices"][0]["message"]["content"] != "Exactly this, with\nnew lines."


def test_scripted_text_streams_in_the_providers_format(emulator) -> None:
    kind, server, script = emulator
    script.queue({"content": "line one\nline two and three"})
    events = chat(server, kind, "Anything", stream=True)
    text, calls, usage = streamed_text(events)
    assert text == "line one\nline two and three" and calls == []
    assert usage is not None and usage["completion_tokens"] > 0
    assert events[-1] == "[DONE]"


@pytest.mark.parametrize("stream", [False, True])
def test_scripted_tool_call_has_the_providers_ids(emulator, stream: bool) -> None:
    kind, server, script = emulator
    script.queue({"tool_calls": [{"name": "read_file", "arguments": {"path": "notes.txt"}}]})
    if stream:
        _, calls, _ = streamed_text(chat(server, kind, "Read it", stream=True, tools=TOOLS))
        arguments = "".join(c.get("function", {}).get("arguments", "") for c in calls)
        call = calls[0]
    else:
        message = chat(server, kind, "Read it", tools=TOOLS)["choices"][0]["message"]
        call = message["tool_calls"][0]
        arguments = call["function"]["arguments"]
    assert call["function"]["name"] == "read_file" and json.loads(arguments) == {"path": "notes.txt"}
    if kind == "mistral":
        assert len(call["id"]) == 9 and call["id"].isalnum()
    else:
        assert call["id"] == "functions.read_file:0"


def test_match_model_and_after_tool_pick_the_reply(emulator) -> None:
    kind, server, script = emulator
    model = MODELS[kind][0]
    script.queue(
        {"match": "BANANA", "content": "about bananas"},
        {"model": "some-other-model", "content": "never"},
        {"match": "apple", "after_tool": True, "content": "after the tool"},
        {"match": "apple", "tools": True, "content": "apple with tools"},
        {"match": "apple", "content": "first apple"},
    )
    assert chat(server, kind, "I like apples")["choices"][0]["message"]["content"] == "first apple"
    assert chat(server, kind, "apples again", tools=TOOLS)["choices"][0]["message"]["content"] == "apple with tools"
    assert chat(server, kind, "Tell me about the banana")["choices"][0]["message"]["content"] == "about bananas"
    call = {
        "id": "abcDEF123" if kind == "mistral" else "functions.read_file:0",
        "type": "function",
        "function": {"name": "read_file", "arguments": "{}"},
    }
    turn = {"role": "assistant", "content": "", "tool_calls": [call]}
    if kind == "moonshot":  # K2.6 thinks by default and then refuses a tool-call turn replayed without its reasoning
        turn["reasoning_content"] = "Reading the request before answering."
    messages = [
        {"role": "user", "content": "apple please"},
        turn,
        {"role": "tool", "tool_call_id": call["id"], "content": "ok"},
    ]
    assert chat(server, kind, "", messages=messages)["choices"][0]["message"]["content"] == "after the tool"
    state = script.state()
    assert [r["content"] for r in state["queued"]] == ["never"]
    assert [u["used_for_model"] for u in state["used"]] == [model] * 4


def test_bad_scripts_are_refused_and_delete_empties(emulator) -> None:
    _, server, script = emulator
    for bad in (
        {"replies": "text"},
        {"replies": [{"content": 3}]},
        {"replies": [{"surprise": 1}]},
        {"replies": [{"tool_calls": [{"arguments": {}}]}]},
    ):
        refused = post_json(server.url, "/_emulator/script", bad, timeout=10)
        assert refused.status == 400 and "emulator_error" in refused.json()
    script.queue("plain text is a reply too")
    assert script.state()["queued"] == [{"content": "plain text is a reply too"}]
    script.clear()
    assert script.state() == {"queued": [], "used": []}
