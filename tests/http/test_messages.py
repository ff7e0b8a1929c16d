"""`POST /v1/messages` and `/v1/messages/count_tokens` in-process: the real app, routing, budgets and ledger on SQLite,
in front of MockAdapter providers. Each test states what the provider was sent and said, and what the client (read as
Anthropic's SDK reads it), the budget and the ledger see."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import Message

from gateway.catalog import load_catalog
from gateway.providers.mock import MockCall
from gateway.providers.moonshot import MoonshotAdapter
from gateway.state import Gateway
from gateway.store.base import ScopeUsage, team_scope
from tests.support.inprocess import ENV, bearer, chunks, ledger, reply, run, settled, team_key
from tests.support.sse import frames

FIXTURES = Path(__file__).resolve().parents[1] / "clients" / "fixtures"
MESSAGES = "/v1/messages?beta=true"  # as Claude Code posts it
ANTHROPIC_HEADERS = {
    "anthropic-version": "2023-06-01",
    "anthropic-beta": "claude-code-20250219,interleaved-thinking-2025-05-14,context-management-2025-06-27",
}
WEATHER = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
ASK: dict[str, Any] = {
    "model": "mistral-medium-3.5",
    "max_tokens": 512,
    "system": [{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}}],
    "messages": [{"role": "user", "content": "Weather in Paris?"}],
    "tools": [WEATHER, {"type": "web_search_20250305", "name": "web_search"}],
    "metadata": {"user_id": "someone"},
}


async def team_usage(gateway: Gateway, name: str = "alpha") -> ScopeUsage:
    """The team's spend and holds in its current budget period."""
    team = await gateway.store.get_team(name)
    assert team is not None
    start, _ = gateway.accounting.window(team.period, datetime.now(UTC))
    return await gateway.store.usage(team_scope(name), start)


def api_key(key: str) -> dict[str, str]:
    return {"x-api-key": key, **ANTHROPIC_HEADERS}


def sse_events(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    """(event name, data) of each event: every event of this door is named."""
    out = []
    for block in raw.decode().split("\n\n"):
        if not block.strip():
            continue
        name, data = block.split("\n", 1)
        assert name.startswith("event: ") and data.startswith("data: "), block
        out.append((name.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    assert [json.loads(f) for f in frames(raw)] == [d for _, d in out]  # as any SSE reader reads it
    return out


def accumulated(raw: bytes) -> Message:
    """The stream as the anthropic SDK's own accumulator builds the final message."""
    snapshot: Any = None
    buffers: dict[int, bytes] = {}
    for _, data in sse_events(raw):
        snapshot = accumulate_event(event=data, current_snapshot=snapshot, json_bufs=buffers)  # type: ignore[arg-type]
    return Message.model_validate(snapshot.to_dict())


def test_a_complete_answer_is_a_message_reserved_settled_and_in_the_ledger(tmp_path: Path) -> None:
    held: list[int] = []
    state: dict[str, Gateway] = {}

    async def answer(call: MockCall) -> dict[str, Any]:
        usage = await team_usage(state["gateway"])
        held.append(usage.reserved_nanos)  # what the budget holds while the provider works
        out = reply("Sunny.", prompt=40, completion=6)
        out["choices"][0]["message"]["reasoning_content"] = "Easy."
        return out

    async def scenario(gateway: Gateway, client: httpx.AsyncClient, calls: dict[str, list[MockCall]]) -> None:
        state["gateway"] = gateway
        key = await team_key(gateway, budget_usd="5")
        answer = await client.post(MESSAGES, json=ASK, headers=api_key(key))
        assert answer.status_code == 200, answer.text
        message = Message.model_validate(answer.json())
        assert message.model == "mistral-medium-3.5" and message.id.startswith("msg_")
        assert [block.type for block in message.content] == ["thinking", "text"]
        assert message.content[1].text == "Sunny." and message.stop_reason == "end_turn"  # type: ignore[union-attr]
        assert (message.usage.input_tokens, message.usage.output_tokens) == (40, 6)
        assert answer.headers["x-gateway-dropped-tools"] == "web_search_20250305"
        assert answer.headers["x-gateway-model"] == "mistral-medium-3.5" and answer.headers["x-request-id"]
        rows = await ledger(gateway)
        assert [(r.endpoint, r.model, r.status, r.prompt_tokens, r.completion_tokens) for r in rows] == [
            ("messages", "mistral-medium-3.5", 200, 40, 6)
        ]
        # 40 x $1.50 + 6 x $7.50 per million
        assert rows[0].cost_nanos == 105_000 and answer.headers["x-gateway-cost-usd"] == "0.000105000"
        after = await team_usage(gateway)
        assert after.reserved_nanos == 0 and after.spent_nanos == rows[0].cost_nanos

    calls = run(tmp_path, {"mistral": answer}, scenario)
    assert held and held[0] > 0  # reserved before the call ...
    sent = calls["mistral"][0].body
    assert sent["messages"] == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Weather in Paris?"},
    ]
    assert [t["function"]["name"] for t in sent["tools"]] == ["get_weather"] and sent["max_tokens"] == 512
    assert sent["user"] == "someone" and "metadata" not in sent and "cache_control" not in json.dumps(sent)


def test_a_kimi_stream_with_reasoning_and_tool_calls_in_pieces(tmp_path: Path) -> None:
    def stream(call: MockCall) -> list[dict[str, Any]]:
        def delta(**fields: Any) -> dict[str, Any]:
            return {"id": "k", "model": "kimi-k2.6", "choices": [{"index": 0, "delta": fields, "finish_reason": None}]}

        out = [
            delta(role="assistant", content=""),
            delta(reasoning_content="Paris, "),
            delta(reasoning_content="then Lyon."),
            delta(
                tool_calls=[
                    {
                        "index": 0,
                        "id": "functions.get_weather:0",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": ""},
                    }
                ]
            ),
            delta(tool_calls=[{"index": 0, "function": {"arguments": '{"city": "Paris"}'}}]),
            delta(
                tool_calls=[
                    {
                        "index": 1,
                        "id": "functions.get_weather:1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":'},
                    }
                ]
            ),
            delta(tool_calls=[{"index": 1, "function": {"arguments": ' "Lyon"}'}}]),
        ]
        out[-1]["choices"][0]["finish_reason"] = "tool_calls"
        out.append(
            {"id": "k", "choices": [], "usage": {"prompt_tokens": 30, "completion_tokens": 12, "cached_tokens": 20}}
        )
        return out

    async def scenario(gateway: Gateway, client: httpx.AsyncClient, calls: dict[str, list[MockCall]]) -> None:
        key = await team_key(gateway)
        body = {**ASK, "model": "kimi-k2.6", "stream": True, "thinking": {"type": "enabled", "budget_tokens": 8000}}
        answer = await client.post(MESSAGES, json=body, headers=bearer(key))
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"].startswith("text/event-stream")
        events = sse_events(answer.content)
        assert [name for name, _ in events][:2] == ["message_start", "ping"]
        assert [name for name, _ in events][-2:] == ["message_delta", "message_stop"]
        message = accumulated(answer.content)
        assert [b.type for b in message.content] == ["thinking", "tool_use", "tool_use"]
        assert message.content[0].thinking == "Paris, then Lyon."  # type: ignore[union-attr]
        assert [(b.id, b.input) for b in message.content[1:]] == [  # type: ignore[union-attr]
            ("functions.get_weather:0", {"city": "Paris"}),  # Kimi's ids unchanged: its template reads them
            ("functions.get_weather:1", {"city": "Lyon"}),
        ]
        assert message.stop_reason == "tool_use"
        assert (message.usage.input_tokens, message.usage.cache_read_input_tokens, message.usage.output_tokens) == (
            10,
            20,
            12,
        )
        rows = await settled(gateway)
        assert [(r.endpoint, r.model, r.status, r.prompt_tokens, r.completion_tokens) for r in rows] == [
            ("messages", "kimi-k2.6", 200, 30, 12)
        ]
        cost = events[-2][1]["x_gateway"]["cost_usd"]
        assert cost == rows[0].cost_nanos / 1e9 and cost > 0  # the settled cost, in message_delta

    calls = run(tmp_path, {"moonshot": stream}, scenario)
    sent = calls["moonshot"][0]
    assert sent.stream and sent.include_usage and sent.body["reasoning_effort"] == "medium"


def test_claude_codes_captured_requests_are_served(tmp_path: Path) -> None:
    first = json.loads((FIXTURES / "claude_code_2.1.197_request.json").read_text())
    rounds = json.loads((FIXTURES / "claude_code_2.1.197_request_tool_rounds.json").read_text())
    headers = json.loads((FIXTURES / "claude_code_2.1.197_headers.json").read_text())["headers"]

    async def scenario(gateway: Gateway, client: httpx.AsyncClient, calls: dict[str, list[MockCall]]) -> None:
        key = await team_key(gateway)
        sent = {**{k: v for k, v in headers.items() if k.lower().startswith(("anthropic-", "x-"))}, **bearer(key)}
        for body in (first, rounds):
            answer = await client.post(MESSAGES, json=body, headers=sent)
            assert answer.status_code == 200, answer.text
            assert accumulated(answer.content).content[0].text == "Hello, world"  # type: ignore[union-attr]
        rows = await settled(gateway, 2)
        assert sorted((r.endpoint, r.model) for r in rows) == [
            ("messages", "kimi-k2.6"),
            ("messages", "mistral-medium-3.5"),
        ]

    calls = run(tmp_path, {name: lambda call: chunks("Hello", ", world") for name in ("mistral", "moonshot")}, scenario)
    mistral, kimi = calls["mistral"][0].body, calls["moonshot"][0].body
    assert len(mistral["tools"]) == 24 and mistral["reasoning_effort"] == "high" and mistral["max_tokens"] == 32000
    assert not mistral["messages"][0]["content"].startswith("x-anthropic-billing-header")
    # What Moonshot is sent for the tool rounds: thinking on (effort high), each replayed tool turn with its reasoning.
    catalog = load_catalog(None, ENV)
    model = catalog.models["kimi-k2.6"]
    prepared = MoonshotAdapter(catalog.provider_of(model)).prepare_chat(dict(kimi), model, True)
    assert prepared["thinking"] == {"type": "enabled"}
    replayed = [m for m in prepared["messages"] if m.get("tool_calls")]
    assert len(replayed) == 2 and all(m["reasoning_content"] == "Reasoning here." for m in replayed)


def test_refusals_are_in_anthropics_shape(tmp_path: Path) -> None:
    async def scenario(gateway: Gateway, client: httpx.AsyncClient, calls: dict[str, list[MockCall]]) -> None:
        poor = await team_key(gateway, "poor", budget_usd="0.000001")
        spent = await client.post(MESSAGES, json=ASK, headers=api_key(poor))
        assert spent.status_code == 429 and spent.headers["x-should-retry"] == "false"
        error = spent.json()
        assert error["type"] == "error" and error["error"]["type"] == "rate_limit_error"
        assert error["error"]["details"] == {"error_code": "budget_exceeded"}

        key = await team_key(gateway, models=["kimi-k2.6"])  # so that residency in the EU leaves nothing
        for body, headers, path in [
            ({**ASK, "model": "kimi-k2.6"}, {"x-gateway-residency": "eu"}, MESSAGES),  # residency fails closed
            ({**ASK, "model": "gpt-4o"}, {}, MESSAGES),  # an unmapped name: the pipeline's own 404
            ({**ASK, "api_base": "http://evil.test"}, {}, MESSAGES),
            ({**ASK, "max_tokens": 10**12}, {}, MESSAGES),  # more than the model can produce
        ]:
            chat = {"model": body["model"], "messages": [{"role": "user", "content": "x"}]}
            chat.update({k: body[k] for k in ("api_base", "max_tokens") if k in body})
            openai = await client.post("/v1/chat/completions", json=chat, headers={**bearer(key), **headers})
            answer = await client.post(path, json=body, headers={**api_key(key), **headers})
            assert answer.status_code == openai.status_code >= 400, (answer.text, openai.text)
            error = answer.json()
            assert set(error) == {"type", "error"} and error["type"] == "error"
            assert error["error"]["details"]["error_code"] == openai.json()["error"]["code"]
            assert error["error"]["message"]
        assert calls.get("mistral", []) == [] and calls.get("moonshot", []) == []

        wrong = await client.post(MESSAGES, json=ASK, headers={"x-api-key": "sk-wrong"})
        assert wrong.status_code == 401 and wrong.json()["error"]["type"] == "authentication_error"
        for method, path, status in [("GET", "/v1/messages", 405), ("POST", "/v1/messages/batches", 404)]:
            answer = await client.request(method, path, headers=api_key(key))
            assert answer.status_code == status and answer.json()["type"] == "error", answer.text
        bad = await client.post(
            MESSAGES, content=b"{not json", headers={**api_key(key), "content-type": "application/json"}
        )
        assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"

    run(tmp_path, {}, scenario)


def test_count_tokens_counts_for_the_chosen_model_without_calling_or_reserving(tmp_path: Path) -> None:
    async def scenario(gateway: Gateway, client: httpx.AsyncClient, calls: dict[str, list[MockCall]]) -> None:
        key = await team_key(gateway, budget_usd="0.000001")  # a budget too small to serve anything
        short = {k: v for k, v in ASK.items() if k != "max_tokens"}
        small = await client.post("/v1/messages/count_tokens", json=short, headers=api_key(key))
        assert small.status_code == 200, small.text
        longer = {**short, "messages": [{"role": "user", "content": "Weather in Paris? " * 200}]}
        large = await client.post("/v1/messages/count_tokens", json=longer, headers=bearer(key))
        assert small.json()["input_tokens"] > 0 and large.json()["input_tokens"] > small.json()["input_tokens"] + 600
        assert large.headers["x-gateway-model"] == "mistral-medium-3.5"
        assert await ledger(gateway) == []
        usage = await team_usage(gateway)
        assert usage.reserved_nanos == usage.spent_nanos == 0
        unknown = await client.post("/v1/messages/count_tokens", json={**short, "model": "gpt-4o"}, headers=bearer(key))
        assert unknown.status_code == 404 and unknown.json()["error"]["type"] == "not_found_error"
        anonymous = await client.post("/v1/messages/count_tokens", json=short)
        assert anonymous.status_code == 401 and anonymous.json()["error"]["type"] == "authentication_error"

    calls = run(tmp_path, {}, scenario)
    assert calls.get("mistral", []) == [] and calls.get("moonshot", []) == []


def test_explain_reads_a_messages_body(tmp_path: Path) -> None:
    async def scenario(gateway: Gateway, client: httpx.AsyncClient, calls: dict[str, list[MockCall]]) -> None:
        key = await team_key(gateway)
        explained = await client.post(
            "/v1/route/explain?format=messages", json={**ASK, "model": "auto"}, headers=bearer(key)
        )
        assert explained.status_code == 200, explained.text
        data = explained.json()
        assert data["format"] == "messages" and data["model"] == "mistral-medium-3.5"
        refused = await client.post(
            "/v1/route/explain?format=messages", json={**ASK, "max_tokens": None}, headers=bearer(key)
        )
        assert refused.status_code == 400

    run(tmp_path, {}, scenario)


def nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = {"a": value}
    return value


def test_deep_nesting_anywhere_is_served_or_refused_never_a_500(tmp_path: Path) -> None:
    async def scenario(gateway: Gateway, client: httpx.AsyncClient, calls: dict[str, list[MockCall]]) -> None:
        key = await team_key(gateway)
        call = {"type": "tool_use", "id": "t1", "name": "get_weather", "input": nested(100)}
        result = {"type": "tool_result", "tool_use_id": "t1", "content": [nested(100)]}
        schema = {"type": "object", "properties": nested(100)}
        bodies = [
            {**ASK, "messages": [ASK["messages"][0], {"role": "assistant", "content": [call]}]},
            {
                **ASK,
                "messages": [
                    ASK["messages"][0],
                    {"role": "assistant", "content": [call]},
                    {"role": "user", "content": [result]},
                ],
            },
            {**ASK, "tools": [{**WEATHER, "input_schema": schema}]},
            {**ASK, "metadata": nested(120)},
            {**ASK, "thinking": nested(120)},
        ]
        statuses = []
        for body in bodies:
            answer = await client.post(MESSAGES, json=body, headers=api_key(key))
            assert answer.status_code < 500, answer.text
            statuses.append(answer.status_code)
            if answer.status_code != 200:
                assert answer.json()["error"]["type"] == "invalid_request_error"
        deep = b'{"model": "auto", "max_tokens": 5, "messages": ' + b'{"a": ' * 1000 + b"1" + b"}" * 1000 + b"}"
        answer = await client.post(MESSAGES, content=deep, headers={**api_key(key), "content-type": "application/json"})
        statuses.append(answer.status_code)  # beyond what the body reader takes
        assert statuses == [200, 400, 200, 400, 400, 400]  # a block inside a tool_result must be typed

    run(tmp_path, {}, scenario)


def test_claude_model_ids_are_served_through_the_policys_aliases(tmp_path: Path) -> None:
    async def scenario(gateway: Gateway, client: httpx.AsyncClient, calls: dict[str, list[MockCall]]) -> None:
        key = await team_key(gateway)
        # Claude Code's small/fast model asks for titles and summaries without tools: the cheapest model (codestral)
        plain = {k: v for k, v in ASK.items() if k != "tools"}
        for asked, served in [("claude-sonnet-4-5", "mistral-medium-3.5"), ("claude-haiku-4-5-20251001", "codestral")]:
            answer = await client.post(MESSAGES, json={**plain, "model": asked}, headers=api_key(key))
            assert answer.status_code == 200, answer.text
            assert answer.json()["model"] == asked  # the name the client sent, as Anthropic answers
            assert (answer.headers["x-gateway-model"], answer.headers["x-gateway-route-reason"]) == (served, "alias")
        rows = sorted(await ledger(gateway), key=lambda r: r.ts)
        assert [(r.endpoint, r.requested_model, r.model) for r in rows] == [
            ("messages", "claude-sonnet-4-5", "mistral-medium-3.5"),
            ("messages", "claude-haiku-4-5-20251001", "codestral"),
        ]

    run(tmp_path, {}, scenario)
