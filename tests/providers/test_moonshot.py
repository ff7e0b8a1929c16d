"""Every history a client may send is accepted by Kimi K2.6 as Moonshot documents it (thinking on by default).

Each rule has an adapter test (MoonshotAdapter.prepare_chat, what would be sent) and an end-to-end test: a real
gateway on 127.0.0.1 in front of the strict Moonshot emulator (thinking on by default, replayed tool-call turns
without reasoning_content and forced tool_choice refused in thinking mode, the developer role refused), checking
both the client's answer and what reached the emulator. Sources: ../shared/reference/providers.md, Moonshot
section; the choices are explained in gateway/providers/moonshot.py (settle_thinking).
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from gateway.catalog import ModelConfig, Price, Provider, Timeouts
from gateway.providers.moonshot import MISSING_REASONING, MoonshotAdapter
from tests.support import sse
from tests.support.emulators import EmulatorControl
from tests.support.gateways import GatewayFactory
from tests.support.http import Answer, post_json

CHAT = "/v1/chat/completions"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}
CALL = {"id": "call_abc123", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}
# An agent's history whose tool-call turn has no reasoning_content: answered by Mistral, by a client that drops
# unknown fields, or by an earlier fallback.
TOOL_HISTORY = [
    {"role": "user", "content": "What is the weather in Oslo?"},
    {"role": "assistant", "content": None, "tool_calls": [CALL]},
    {"role": "tool", "tool_call_id": CALL["id"], "content": "sunny, 21 C"},
]


# ---------------------------------------------------------------------------------------------- helpers


def kimi(upstream: str = "kimi-k2.6") -> ModelConfig:
    return ModelConfig(
        name="kimi-k2.6",
        provider="moonshot",
        upstream_model=upstream,
        context_window=1_048_576,
        max_output_tokens=32768,
        price=Price(input=Decimal("0.6"), output=Decimal("1.8")),
        fixed_sampling=True,
        max_n=1,
    )


def prepare(body: dict[str, Any], upstream: str = "kimi-k2.6") -> dict[str, Any]:
    provider = Provider("moonshot", "moonshot", "cn", "http://127.0.0.1:9/v1", None, None, 8, Timeouts())  # type: ignore[arg-type]
    return MoonshotAdapter(provider).prepare_chat({"model": "kimi-k2.6", **body}, kimi(upstream), False)


@pytest.fixture(scope="module")
def url(start_gateway: GatewayFactory) -> str:
    return start_gateway(master_key=None).url


def ask(url: str, body: dict[str, Any], model: str = "kimi-k2.6") -> Answer:
    return post_json(url, CHAT, {"model": model, **body})


def sent(moonshot_log: EmulatorControl) -> dict[str, Any]:
    """The body the emulator received (the last request)."""
    return moonshot_log.last()["body"]


def answered(answer: Answer) -> dict[str, Any]:
    assert answer.status == 200, answer.body
    assert answer.headers["x-gateway-provider"] == "moonshot"
    return answer.json()["choices"][0]["message"]


# ---------------------------------------------------------------------------------------------- adapter


def test_adapter_tool_turn_without_reasoning_turns_thinking_off_by_default() -> None:
    out = prepare({"messages": TOOL_HISTORY, "tools": [WEATHER]})
    assert out["thinking"] == {"type": "disabled"}
    assert "reasoning_content" not in out["messages"][1]  # nothing invented


def test_adapter_tool_turn_without_reasoning_gets_a_placeholder_when_thinking_was_asked_for() -> None:
    for asked in ({"thinking": {"type": "enabled"}}, {"reasoning_effort": "high"}):
        out = prepare({"messages": TOOL_HISTORY, "tools": [WEATHER], **asked})
        assert out["thinking"] == {"type": "enabled"}
        assert out["messages"][1]["reasoning_content"] == MISSING_REASONING
        assert "reasoning_content" not in TOOL_HISTORY[1]  # the client's messages are not changed
    always = prepare({"messages": TOOL_HISTORY, "tools": [WEATHER]}, upstream="kimi-k2-thinking")
    assert "thinking" not in always and always["messages"][1]["reasoning_content"] == MISSING_REASONING


def test_adapter_replayed_kimi_reasoning_is_kept_and_thinking_stays_on() -> None:
    history = [TOOL_HISTORY[0], {**TOOL_HISTORY[1], "reasoning_content": "I need the weather tool."}, TOOL_HISTORY[2]]
    out = prepare({"messages": history, "tools": [WEATHER]})
    assert "thinking" not in out  # K2.6's default (thinking on) is left to Moonshot
    assert out["messages"][1]["reasoning_content"] == "I need the weather tool."


@pytest.mark.parametrize("tool_choice", ["required", {"type": "function", "function": {"name": "get_weather"}}])
def test_adapter_forced_tool_choice_turns_thinking_off(tool_choice: Any) -> None:
    for asked in ({}, {"thinking": {"type": "enabled"}}):
        out = prepare({"messages": TOOL_HISTORY[:1], "tools": [WEATHER, TIME], "tool_choice": tool_choice, **asked})
        assert out["thinking"] == {"type": "disabled"} and out["tool_choice"] == tool_choice
    assert "thinking" not in prepare({"messages": TOOL_HISTORY[:1], "tools": [WEATHER], "tool_choice": "auto"})


def test_adapter_forced_tool_choice_on_a_model_that_always_thinks_is_auto_with_only_that_tool() -> None:
    named = {"type": "function", "function": {"name": "get_time"}}
    out = prepare({"messages": TOOL_HISTORY[:1], "tools": [WEATHER, TIME], "tool_choice": named}, "kimi-k2-thinking")
    assert out["tool_choice"] == "auto" and out["tools"] == [TIME] and "thinking" not in out


def test_adapter_developer_role_is_sent_as_system() -> None:
    out = prepare({"messages": [{"role": "developer", "content": "Be brief."}, {"role": "user", "content": "hi"}]})
    assert out["messages"][0] == {"role": "system", "content": "Be brief."}


def test_adapter_legacy_functions_become_tools() -> None:
    out = prepare({"messages": TOOL_HISTORY[:1], "functions": [WEATHER["function"]], "function_call": "auto"})
    assert out["tools"] == [WEATHER] and out["tool_choice"] == "auto"
    assert "functions" not in out and "function_call" not in out
    forced = prepare(
        {"messages": TOOL_HISTORY[:1], "functions": [WEATHER["function"]], "function_call": {"name": "get_weather"}}
    )
    assert forced["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert forced["thinking"] == {"type": "disabled"}  # a forced call: as above


def test_adapter_output_limit_is_max_completion_tokens() -> None:
    assert prepare({"messages": TOOL_HISTORY[:1], "max_tokens": 7}) == {
        "model": "kimi-k2.6",
        "messages": TOOL_HISTORY[:1],
        "max_completion_tokens": 7,
    }
    both = prepare({"messages": TOOL_HISTORY[:1], "max_tokens": 7, "max_completion_tokens": 9})
    assert both["max_completion_tokens"] == 9 and "max_tokens" not in both


@pytest.mark.parametrize(
    "effort, thinking",
    [
        ("none", {"type": "disabled"}),
        ("minimal", {"type": "disabled"}),
        ("low", {"type": "enabled"}),
        ("high", {"type": "enabled"}),
        ("xhigh", {"type": "enabled"}),
        ("medium", None),
        ("bogus", None),
    ],
)
def test_adapter_reasoning_effort_as_thinking(effort: str, thinking: dict[str, str] | None) -> None:
    out = prepare({"messages": TOOL_HISTORY[:1], "reasoning_effort": effort})
    assert "reasoning_effort" not in out and out.get("thinking") == thinking
    explicit = prepare({"messages": TOOL_HISTORY[:1], "reasoning_effort": effort, "thinking": {"type": "enabled"}})
    assert explicit["thinking"] == {"type": "enabled"}  # Kimi's own field wins
    assert "thinking" not in prepare({"messages": TOOL_HISTORY[:1], "reasoning_effort": effort}, "kimi-k2-0905-preview")


def test_adapter_mistral_and_openrouter_reasoning_become_reasoning_content() -> None:
    mistral_turn = {
        "role": "assistant",
        "tool_calls": [CALL],
        "content": [
            {
                "type": "thinking",
                "thinking": [{"type": "text", "text": "Oslo: "}, {"type": "text", "text": "use the tool."}],
            }
        ],
    }
    routed_turn = {"role": "assistant", "content": "", "tool_calls": [CALL], "reasoning": "Call the tool."}
    for turn, reasoning in ((mistral_turn, "Oslo: use the tool."), (routed_turn, "Call the tool.")):
        out = prepare({"messages": [TOOL_HISTORY[0], turn, TOOL_HISTORY[2]], "tools": [WEATHER]})
        assert out["messages"][1]["reasoning_content"] == reasoning and "reasoning" not in out["messages"][1]
        assert "thinking" not in out  # the reasoning is there: thinking stays on
        assert not any(
            isinstance(p, dict) and p.get("type") == "thinking" for p in out["messages"][1].get("content") or []
        )
    text_and_thinking = {
        "role": "assistant",
        "content": [
            {"type": "thinking", "thinking": [{"type": "text", "text": "hmm"}]},
            {"type": "text", "text": "Hello"},
        ],
    }
    out = prepare({"messages": [TOOL_HISTORY[0], text_and_thinking, {"role": "user", "content": "and?"}]})
    assert out["messages"][1] == {
        "role": "assistant",
        "content": [{"type": "text", "text": "Hello"}],
        "reasoning_content": "hmm",
    }


# ---------------------------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_e2e_tool_history_without_reasoning(url: str, moonshot_log: EmulatorControl) -> None:
    message = answered(ask(url, {"messages": TOOL_HISTORY, "tools": [WEATHER]}))
    assert message["content"]  # the agent gets its answer after the tool result
    assert sent(moonshot_log)["thinking"] == {"type": "disabled"}
    moonshot_log.reset()
    message = answered(ask(url, {"messages": TOOL_HISTORY, "tools": [WEATHER], "thinking": {"type": "enabled"}}))
    assert message["content"] and message["reasoning_content"]
    body = sent(moonshot_log)
    assert body["thinking"] == {"type": "enabled"} and body["messages"][1]["reasoning_content"] == MISSING_REASONING


@pytest.mark.slow
def test_e2e_history_answered_by_mistral_then_kimi(url: str, moonshot_log: EmulatorControl) -> None:
    """A conversation that moved from Mistral (no reasoning, Mistral's tool-call ids) to Kimi."""
    first = post_json(url, CHAT, {"model": "mistral-medium-3.5", "tools": [WEATHER], "messages": TOOL_HISTORY[:1]})
    assert first.status == 200 and first.headers["x-gateway-provider"] == "mistral", first.body
    turn = first.json()["choices"][0]["message"]
    assert turn["tool_calls"] and not turn.get("reasoning_content")
    history = [TOOL_HISTORY[0], turn, {"role": "tool", "tool_call_id": turn["tool_calls"][0]["id"], "content": "sunny"}]
    message = answered(ask(url, {"messages": history, "tools": [WEATHER]}))
    assert message["content"] and sent(moonshot_log)["thinking"] == {"type": "disabled"}


@pytest.mark.slow
def test_e2e_replayed_kimi_reasoning_keeps_thinking_on(url: str, moonshot_log: EmulatorControl) -> None:
    first = answered(ask(url, {"messages": TOOL_HISTORY[:1], "tools": [WEATHER]}))
    assert first["tool_calls"] and first["reasoning_content"]  # K2.6 thinks by default
    history = [
        TOOL_HISTORY[0],
        first,
        {"role": "tool", "tool_call_id": first["tool_calls"][0]["id"], "content": "sunny"},
    ]
    moonshot_log.reset()
    message = answered(ask(url, {"messages": history, "tools": [WEATHER]}))
    assert message["content"] and message["reasoning_content"]
    body = sent(moonshot_log)
    assert "thinking" not in body and body["messages"][1]["reasoning_content"] == first["reasoning_content"]


@pytest.mark.parametrize("tool_choice", ["required", {"type": "function", "function": {"name": "get_time"}}])
@pytest.mark.slow
def test_e2e_forced_tool_choice(url: str, moonshot_log: EmulatorControl, tool_choice: Any) -> None:
    for stream in (False, True):
        moonshot_log.reset()
        body = {"messages": TOOL_HISTORY[:1], "tools": [WEATHER, TIME], "tool_choice": tool_choice, "stream": stream}
        answer = ask(url, body)
        assert answer.status == 200, answer.body
        if stream:
            events = sse.events(answer.body)
            assert events[-1] == "[DONE]"
            names = [
                c["function"]["name"]
                for e in events[:-1]
                for ch in e["choices"]
                for c in ch["delta"].get("tool_calls") or []
                if c.get("function", {}).get("name")
            ]
        else:
            names = [c["function"]["name"] for c in answered(answer)["tool_calls"]]
        assert names == (["get_weather"] if tool_choice == "required" else ["get_time"])
        assert sent(moonshot_log)["thinking"] == {"type": "disabled"}


@pytest.mark.slow
def test_e2e_developer_role(url: str, moonshot_log: EmulatorControl) -> None:
    messages = [{"role": "developer", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    assert answered(ask(url, {"messages": messages}))["content"]
    assert sent(moonshot_log)["messages"][0] == {"role": "system", "content": "Be brief."}


@pytest.mark.slow
def test_e2e_legacy_functions(url: str, moonshot_log: EmulatorControl) -> None:
    """The emulator ignores `functions` (not a Moonshot parameter): a tool call only comes back through tools."""
    message = answered(ask(url, {"messages": TOOL_HISTORY[:1], "functions": [WEATHER["function"]]}))
    assert message["tool_calls"][0]["function"]["name"] == "get_weather"
    body = sent(moonshot_log)
    assert body["tools"] == [WEATHER] and "functions" not in body
    moonshot_log.reset()
    forced = answered(
        ask(
            url,
            {
                "messages": [{"role": "user", "content": "hello"}],
                "functions": [TIME["function"]],
                "function_call": {"name": "get_time"},
            },
        )
    )
    assert forced["tool_calls"][0]["function"]["name"] == "get_time"
    assert sent(moonshot_log)["tool_choice"] == {"type": "function", "function": {"name": "get_time"}}


@pytest.mark.slow
def test_e2e_max_tokens_sent_as_max_completion_tokens(url: str, moonshot_log: EmulatorControl) -> None:
    for field in ("max_tokens", "max_completion_tokens"):
        moonshot_log.reset()
        answer = ask(
            url, {"messages": [{"role": "user", "content": "a long story"}], field: 4, "thinking": {"type": "disabled"}}
        )
        assert answer.status == 200 and answer.json()["choices"][0]["finish_reason"] == "length", answer.body
        body = sent(moonshot_log)
        assert body["max_completion_tokens"] == 4 and "max_tokens" not in body


@pytest.mark.parametrize("effort, thinks", [("none", False), ("minimal", False), ("high", True), ("medium", True)])
@pytest.mark.slow
def test_e2e_reasoning_effort(url: str, moonshot_log: EmulatorControl, effort: str, thinks: bool) -> None:
    message = answered(ask(url, {"messages": [{"role": "user", "content": "think?"}], "reasoning_effort": effort}))
    assert bool(message.get("reasoning_content")) is thinks
    assert "reasoning_effort" not in sent(moonshot_log)


@pytest.mark.slow
def test_e2e_mistral_thinking_replayed_as_reasoning_content(url: str, moonshot_log: EmulatorControl) -> None:
    turn = {
        "role": "assistant",
        "tool_calls": [CALL],
        "content": [
            {"type": "thinking", "thinking": [{"type": "text", "text": "The weather tool knows."}], "closed": True}
        ],
    }
    history = [TOOL_HISTORY[0], turn, TOOL_HISTORY[2]]
    assert answered(ask(url, {"messages": history, "tools": [WEATHER]}))["content"]
    body = sent(moonshot_log)
    assert body["messages"][1]["reasoning_content"] == "The weather tool knows." and "thinking" not in body


@pytest.mark.slow
def test_e2e_default_thinking_streams_reasoning(url: str, moonshot_log: EmulatorControl) -> None:
    answer = ask(url, {"messages": [{"role": "user", "content": "stream"}], "stream": True, "temperature": 0})
    assert answer.status == 200, answer.body
    events = sse.events(answer.body)
    assert events[-1] == "[DONE]"
    deltas = [ch["delta"] for e in events[:-1] for ch in e["choices"]]
    assert any(d.get("reasoning_content") for d in deltas) and any(d.get("content") for d in deltas)
    assert "temperature" not in sent(moonshot_log)  # fixed sampling: Aider's temperature 0 is dropped
    json.dumps(events)  # the relayed events are plain JSON
