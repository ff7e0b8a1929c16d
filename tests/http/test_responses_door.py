"""`POST /v1/responses` in-process: the real app, routing, budgets and ledger on SQLite, in front of MockAdapter
providers. What each test states is what the provider was sent and said, and what the client and the ledger see."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from gateway.http.response_store import ResponseStore
from gateway.providers.mock import MockCall
from gateway.state import Gateway
from tests.support.inprocess import bearer, chunks, ledger, reply, run, settled, team_key
from tests.support.sse import frames

WEB_SEARCH = {"type": "web_search"}
SHELL = {
    "type": "function",
    "name": "shell",
    "description": "Run a command",
    "strict": False,
    "parameters": {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]},
}
FILES = {
    "type": "namespace",
    "name": "files",
    "description": "File tools",
    "tools": [{"type": "function", "name": "read", "parameters": {"type": "object", "properties": {}}}],
}
CODEX_LIKE: dict[str, Any] = {
    "model": "mistral-medium-3.5",
    "input": [
        {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "You are Codex."}]},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "List the files."}]},
    ],
    "tools": [SHELL, FILES, WEB_SEARCH],
    "tool_choice": "auto",
    "parallel_tool_calls": False,
    "reasoning": {"summary": "auto"},
    "include": ["reasoning.encrypted_content"],
    "prompt_cache_key": "thread-1",
    "client_metadata": {"x": "y"},
    "store": False,
}


def events_of(raw: bytes) -> list[dict[str, Any]]:
    return [json.loads(data) for data in frames(raw)]


def test_a_complete_answer_is_a_response_object_with_the_ledger_row_of_the_responses_endpoint(tmp_path: Path) -> None:
    async def scenario(gateway: Gateway, client: httpx.AsyncClient, calls: dict[str, list[MockCall]]) -> None:
        key = await team_key(gateway)
        answer = await client.post("/v1/responses", json=CODEX_LIKE, headers=bearer(key))
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["object"] == "response" and body["id"].startswith("resp_") and body["status"] == "completed"
        assert [item["type"] for item in body["output"]] == ["message"]
        assert body["output"][0]["content"][0] == {
            "type": "output_text",
            "text": "Hi!",
            "annotations": [],
            "logprobs": [],
        }
        assert body["usage"]["input_tokens"] == 12 and body["usage"]["output_tokens"] == 3
        assert body["usage"]["total_tokens"] == 15
        assert answer.headers["x-gateway-dropped-tools"] == "web_search"
        assert answer.headers["x-gateway-provider"] == "mistral"
        rows = await ledger(gateway)
        assert [(r.endpoint, r.model, r.status, r.prompt_tokens, r.completion_tokens) for r in rows] == [
            ("responses", "mistral-medium-3.5", 200, 12, 3)
        ]

    calls = run(tmp_path, {}, scenario)
    sent = calls["mistral"][0].body
    assert sent["messages"] == [
        {"role": "system", "content": "You are Codex."},
        {"role": "user", "content": "List the files."},
    ]
    assert [t["function"]["name"] for t in sent["tools"]] == ["shell", "files__read"]
    assert sent["prompt_cache_key"] == "thread-1" and sent["parallel_tool_calls"] is False
    assert "client_metadata" not in sent and "include" not in sent and "store" not in sent


def test_a_stream_renders_reasoning_text_and_calls_in_pieces_and_completes_with_usage(tmp_path: Path) -> None:
    stream = [
        {"id": "c", "choices": [{"index": 0, "delta": {"role": "assistant", "reasoning_content": "Think"}}]},
        {"id": "c", "choices": [{"index": 0, "delta": {"reasoning_content": "ing."}}]},
        {"id": "c", "choices": [{"index": 0, "delta": {"content": "Reading."}}]},
        {
            "id": "c",
            "choices": [
                {
                    "index": 0,
                    "delta": {
                        "tool_calls": [
                            {"index": 0, "id": "call_1", "type": "function", "function": {"name": "files__read"}}
                        ]
                    },
                }
            ],
        },
        {
            "id": "c",
            "choices": [
                {"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '{"a":'}}]}},
            ],
        },
        {
            "id": "c",
            "choices": [
                {
                    "index": 0,
                    "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]},
                    "finish_reason": "tool_calls",
                }
            ],
        },
        {"id": "c", "choices": [], "usage": {"prompt_tokens": 20, "completion_tokens": 7}},
    ]

    async def scenario(gateway: Gateway, client: httpx.AsyncClient, calls: dict[str, list[MockCall]]) -> None:
        key = await team_key(gateway)
        body = {**CODEX_LIKE, "model": "kimi-k2.6", "stream": True}
        answer = await client.post("/v1/responses", json=body, headers=bearer(key))
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"].startswith("text/event-stream")
        events = events_of(answer.content)
        kinds = [e["type"] for e in events]
        assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
        assert [e["sequence_number"] for e in events] == list(range(len(events)))
        assert "".join(e["delta"] for e in events if e["type"] == "response.reasoning_summary_text.delta") == (
            "Thinking."
        )
        assert "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta") == "Reading."
        done = [e["item"] for e in events if e["type"] == "response.output_item.done"]
        assert [i["type"] for i in done] == ["reasoning", "message", "function_call"]
        call = done[2]
        assert (call["name"], call["namespace"], call["arguments"], call["call_id"]) == (
            "read",
            "files",
            '{"a":1}',
            "call_1",
        )
        assert done[0]["encrypted_content"]  # include asked for it
        completed = events[-1]["response"]
        assert completed["output"] == done and completed["usage"]["input_tokens"] == 20
        assert completed["x_gateway"]["model"] == "kimi-k2.6" and completed["x_gateway"]["cost_usd"] > 0
        rows = await settled(gateway)
        assert [(r.endpoint, r.stream, r.prompt_tokens, r.completion_tokens) for r in rows] == [
            ("responses", True, 20, 7)
        ]

    calls = run(tmp_path, {"moonshot": lambda call: stream}, scenario)
    assert calls["moonshot"][0].include_usage  # the door always asks for the usage chunk


def test_a_tool_round_trip_replays_calls_outputs_and_reasoning(tmp_path: Path) -> None:
    async def scenario(gateway: Gateway, client: httpx.AsyncClient, calls: dict[str, list[MockCall]]) -> None:
        key = await team_key(gateway)
        first = await client.post("/v1/responses", json={**CODEX_LIKE, "model": "kimi-k2.6"}, headers=bearer(key))
        assert first.status_code == 200, first.text
        output = first.json()["output"]
        history = (
            CODEX_LIKE["input"] + output + [{"type": "function_call_output", "call_id": "call_9", "output": "a.txt"}]
        )
        again = await client.post(
            "/v1/responses", json={**CODEX_LIKE, "model": "kimi-k2.6", "input": history}, headers=bearer(key)
        )
        assert again.status_code == 200, again.text

    answers = iter(
        [
            {
                **reply(),
                "choices": [
                    {
                        "index": 0,
                        "message": {
                            "role": "assistant",
                            "content": "",
                            "reasoning_content": "I should list.",
                            "tool_calls": [
                                {
                                    "id": "call_9",
                                    "type": "function",
                                    "function": {"name": "files__read", "arguments": "{}"},
                                }
                            ],
                        },
                        "finish_reason": "tool_calls",
                    }
                ],
            },
            reply("a.txt is there."),
        ]
    )
    calls = run(tmp_path, {"moonshot": lambda call: next(answers)}, scenario)
    replayed = calls["moonshot"][1].body["messages"]
    assert replayed[2] == {
        "role": "assistant",
        "content": None,
        "reasoning_content": "I should list.",
        "tool_calls": [{"id": "call_9", "type": "function", "function": {"name": "files__read", "arguments": "{}"}}],
    }
    assert replayed[3] == {"role": "tool", "tool_call_id": "call_9", "content": "a.txt"}


def test_a_budget_refusal_is_an_openai_error_before_any_provider_call(tmp_path: Path) -> None:
    async def scenario(gateway: Gateway, client: httpx.AsyncClient, calls: dict[str, list[MockCall]]) -> None:
        key = await team_key(gateway, budget_usd="0.000001")
        answer = await client.post(
            "/v1/responses", json={**CODEX_LIKE, "max_output_tokens": 1000, "stream": True}, headers=bearer(key)
        )
        assert answer.status_code == 429
        assert answer.json()["error"]["code"] == "budget_exceeded" and answer.json()["error"]["type"]
        assert await ledger(gateway) == []

    calls = run(tmp_path, {}, scenario)
    assert calls["mistral"] == [] and calls["moonshot"] == []


def test_residency_fails_closed_through_the_responses_door(tmp_path: Path) -> None:
    async def scenario(gateway: Gateway, client: httpx.AsyncClient, calls: dict[str, list[MockCall]]) -> None:
        key = await team_key(gateway)
        headers = {**bearer(key), "x-gateway-residency": "eu"}
        pinned = await client.post("/v1/responses", json={**CODEX_LIKE, "model": "kimi-k2.6"}, headers=headers)
        assert pinned.status_code == 200 and pinned.headers["x-gateway-region"] == "eu"
        assert pinned.headers["x-gateway-route-reason"] != "pinned"
        refused = await client.post(
            "/v1/responses", json={**CODEX_LIKE, "model": "auto"}, headers={**headers, "x-gateway-residency": "mars"}
        )
        assert refused.status_code == 400 and "mars" in refused.json()["error"]["message"]
        auto = await client.post("/v1/responses", json={**CODEX_LIKE, "model": "auto"}, headers=headers)
        assert auto.status_code == 200 and auto.headers["x-gateway-region"] == "eu"

    calls = run(tmp_path, {}, scenario)
    assert calls["moonshot"] == []


def test_bad_bodies_are_400s_in_openai_shape(tmp_path: Path) -> None:
    bad: list[tuple[dict[str, Any], str]] = [
        ({**CODEX_LIKE, "api_base": "http://evil"}, "api_base"),
        ({**CODEX_LIKE, "litellm_logging": {}}, "litellm_logging"),
        ({**CODEX_LIKE, "surprise": 1}, "surprise"),
        ({**CODEX_LIKE, "input": [{"type": "file_search_call", "id": "x"}]}, "input[0].type"),
        ({**CODEX_LIKE, "tool_choice": {"type": "web_search"}}, "tool_choice"),
        ({**CODEX_LIKE, "input": 5}, "input"),
        ({"model": "auto"}, "input"),
    ]

    async def scenario(gateway: Gateway, client: httpx.AsyncClient, calls: dict[str, list[MockCall]]) -> None:
        key = await team_key(gateway)
        for body, param in bad:
            answer = await client.post("/v1/responses", json=body, headers=bearer(key))
            assert answer.status_code == 400, (param, answer.text)
            assert answer.json()["error"]["param"] == param, answer.text
        assert await ledger(gateway) == []

    calls = run(tmp_path, {}, scenario)
    assert calls["mistral"] == [] and calls["moonshot"] == []


def test_explain_reads_a_responses_body(tmp_path: Path) -> None:
    async def scenario(gateway: Gateway, client: httpx.AsyncClient, calls: dict[str, list[MockCall]]) -> None:
        key = await team_key(gateway)
        answer = await client.post(
            "/v1/route/explain?format=responses", json={**CODEX_LIKE, "model": "auto"}, headers=bearer(key)
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["format"] == "responses"

    run(tmp_path, {}, scenario)


def test_a_streamed_length_stop_is_an_incomplete_response(tmp_path: Path) -> None:
    stream = chunks("Hel", "lo")
    stream[-2]["choices"][0]["finish_reason"] = "length"

    async def scenario(gateway: Gateway, client: httpx.AsyncClient, calls: dict[str, list[MockCall]]) -> None:
        key = await team_key(gateway)
        body = {"model": "mistral-medium-3.5", "input": "Say hello", "stream": True, "max_output_tokens": 2}
        answer = await client.post("/v1/responses", json=body, headers=bearer(key))
        events = events_of(answer.content)
        assert events[-1]["type"] == "response.incomplete"
        assert events[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
        assert events[-1]["response"]["output"][0]["content"][0]["text"] == "Hello"

    run(tmp_path, {"mistral": lambda call: stream}, scenario)


def test_previous_response_id_puts_the_kept_turns_first_for_the_same_team_only(tmp_path: Path) -> None:
    async def scenario(gateway: Gateway, client: httpx.AsyncClient, calls: dict[str, list[MockCall]]) -> None:
        key = await team_key(gateway)
        other = await team_key(gateway, "beta")
        body = {"model": "mistral-medium-3.5", "input": "My name is Ada.", "instructions": "Be brief."}
        first = await client.post("/v1/responses", json=body, headers=bearer(key))
        assert first.status_code == 200 and first.json()["store"] is True
        follow = {
            "model": "mistral-medium-3.5",
            "input": "What is my name?",
            "previous_response_id": first.json()["id"],
        }
        second = await client.post("/v1/responses", json={**follow, "stream": True}, headers=bearer(key))
        assert second.status_code == 200
        completed = events_of(second.content)[-1]["response"]
        assert completed["previous_response_id"] == first.json()["id"]
        third = await client.post(
            "/v1/responses", json={**follow, "previous_response_id": completed["id"]}, headers=bearer(key)
        )
        assert third.status_code == 200, third.text
        stolen = await client.post("/v1/responses", json=follow, headers=bearer(other))
        assert stolen.status_code == 404 and stolen.json()["error"]["code"] == "previous_response_not_found"
        explained = await client.post("/v1/route/explain?format=responses", json=follow, headers=bearer(key))
        assert explained.status_code == 200, explained.text
        unkept = await client.post("/v1/responses", json={**body, "store": False}, headers=bearer(key))
        assert unkept.json()["store"] is False
        again = {**follow, "previous_response_id": unkept.json()["id"]}
        assert (await client.post("/v1/responses", json=again, headers=bearer(key))).status_code == 404

    calls = run(tmp_path, {"mistral": lambda call: chunks("Hi!") if call.stream else reply()}, scenario)
    sent = [call.body["messages"] for call in calls["mistral"]]
    assert sent[1] == [
        {"role": "user", "content": "My name is Ada."},
        {"role": "assistant", "content": "Hi!"},
        {"role": "user", "content": "What is my name?"},
    ]  # the first response's instructions are not carried over (as OpenAI's API does)
    assert sent[2] == [
        *sent[1],
        {"role": "assistant", "content": "Hi!"},
        {"role": "user", "content": "What is my name?"},
    ]


def test_no_kept_responses_means_previous_response_id_is_refused(tmp_path: Path) -> None:
    async def scenario(gateway: Gateway, client: httpx.AsyncClient, calls: dict[str, list[MockCall]]) -> None:
        key = await team_key(gateway)
        body = {"model": "auto", "input": "x", "previous_response_id": "resp_1"}
        answer = await client.post("/v1/responses", json=body, headers=bearer(key))
        assert answer.status_code == 400 and answer.json()["error"]["param"] == "previous_response_id"
        kept = await client.post("/v1/responses", json={"model": "auto", "input": "x"}, headers=bearer(key))
        assert kept.json()["store"] is False

    run(tmp_path, {}, scenario, responses_kept=0)


def test_the_store_is_bounded_by_count_and_bytes_least_recently_used_first() -> None:
    store = ResponseStore(max_responses=2, max_bytes=200)
    item = [{"role": "user", "content": "x" * 20}]
    assert store.put("a", "r1", item) and store.put("a", "r2", item)
    assert store.get("a", "r1") == item  # r1 used last: r2 goes first
    store.put("a", "r3", item)
    assert store.get("a", "r2") is None and store.get("a", "r1") == item and len(store) == 2
    assert store.get("b", "r1") is None  # another team's
    assert not store.put("a", "big", [{"content": "y" * 500}])  # larger than the whole store: not kept
    store.put("a", "r4", [{"content": "z" * 150}])
    assert store.bytes <= 200 and store.get("a", "r4") is not None
    copy = store.get("a", "r4")
    assert copy is not None
    copy.clear()
    assert store.get("a", "r4")  # each lookup is a copy
