"""Portability (issue 12, item 3): a conversation one provider produced replays on the other, through the gateway.

Hypothesis builds multi-turn chat conversations the way real clients build them, as if one provider (Mistral, Kimi,
or an OpenAI-shaped client) had answered every assistant turn: text turns and image parts (data: URLs), parallel tool
calls and their results (ids in the origin's format: Mistral's 9 alphanumerics, Kimi's `functions.NAME:IDX`, OpenAI's
`call_...`), legacy `functions` with `function_call` / `function` messages, replayed thinking (`reasoning_content`, as
Kimi returns it and as the gateway flattens Mistral's), `system` / `developer` turns (first or late), a last assistant
message to continue (Kimi's `partial: true`, Mistral's `prefix: true`), `tool_choice` (auto, none, required, a named
function), `max_tokens` / `max_completion_tokens`, and the nulls clients send (`content: null` on tool-call turns,
the openai SDK's `refusal` / `function_call` / `audio: null` when it replays a message it received).

Each one goes through a real gateway on 127.0.0.1 to the *other* provider's strict emulator (Mistral: mistral-common's
models and serving validator; Moonshot: K2.6's documented rules, thinking on by default), three ways:

- `named`: the other provider's model by name (and, as a check on the generator, the origin's model too, so every
  conversation of this variant meets both strict emulators);
- `auto`: `model: auto` routed across providers by policy: a team whose policy prefers Kimi (`kimi-first`) gets Kimi,
  a request without a key (open mode: the built-in team `admin`, policy `default`, Mistral first) or the Kimi team
  with `x-gateway-residency: eu` gets Mistral;
- `fallback`: `model: auto` whose first candidate is the origin's provider, which answers 503 twice (the first try and
  the policy's one retry), so the gateway falls back to the other provider (`fallback:upstream-503`).

The emulator reached must answer 200 (a refusal there is a gateway adapter bug: the gateway is meant to make every
history acceptable to both), and the client's answer must be OpenAI's chat format, checked with the openai SDK's own
types (`ChatCompletion`, `ChatCompletionChunk`, chunk by chunk) plus the required fields those types leave lenient.
What reached the provider is checked too: the continuation marker in the provider's words, one output limit, every
message, image and replayed reasoning kept, every tool result answering a call of the turn before it.

Reproducible: `derandomize=True`, no example database. 3 variants x (streamed or not) x 55 examples = 330, about 30 s
here; small bodies (1-8 turns after an optional system turn, at most a dozen messages, a few words per text, 1x1
images, output at most 40 tokens). The tests at the end are the smallest failures the property test found, one per
rule, so each shows on its own.
"""

from __future__ import annotations

import hashlib
import json
import string
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from gateway.http.servers import ThreadedServer
from tests.support import sse
from tests.support.emulators import EmulatorControl
from tests.support.gateways import GatewayFactory
from tests.support.http import Answer, post_json
from tests.support.store import make_key, make_team

pytestmark = pytest.mark.slow

CHAT = "/v1/chat/completions"
MODEL_OF = {"mistral": "mistral-medium-3.5", "moonshot": "kimi-k2.6"}
PROVIDER_OF_ORIGIN = {"mistral": "mistral", "kimi": "moonshot"}
OTHER = {"mistral": "moonshot", "moonshot": "mistral"}
FAULT = "status=503,retry_after=0"  # Retry-After 0: honoured, so the policy's one retry happens at once

EXAMPLES = 55  # per variant and streaming or not: 330 in all
SETTINGS = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)

# Two policies over the built-in catalog: Mistral first (the master team's `default`) and Kimi first. No backoff, one
# retry, a Retry-After up to 0 ms honoured (the fault's is 0), so a fallback costs nothing but the calls.
FALLBACKS = "fallbacks: {retries: 1, backoff_ms: 0, max_backoff_ms: 0, retry_after_max_ms: 0}\n"
POLICIES = {
    "default": "name: default\nprefer: [mistral-medium-3.5, kimi-k2.6]\n" + FALLBACKS,
    "kimi-first": "name: kimi-first\nprefer: [kimi-k2.6, mistral-medium-3.5]\n" + FALLBACKS,
}


@dataclass
class World:
    url: str
    kimi_key: str  # a key of team `kimi-first`
    controls: dict[str, EmulatorControl]  # provider -> its emulator


@pytest.fixture(scope="module")
def world(
    start_gateway: GatewayFactory,
    mistral: ThreadedServer,
    moonshot: ThreadedServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[World]:
    root = tmp_path_factory.mktemp("portability")
    directory = root / "policies"
    directory.mkdir()
    for name, text in POLICIES.items():
        (directory / f"{name}.yaml").write_text(text)
    database = f"sqlite:///{root / 'gateway.db'}"
    server = start_gateway(
        master_key=None,
        policies_dir=directory,
        database_url=database,
        request_log=False,
        circuit_failures=1_000_000,  # examples stay independent: the fallback variant fails a provider twice each
    )
    make_team(database, "kimi-first", policy="kimi-first")
    key, _ = make_key(database, "kimi-first")
    controls = {"mistral": EmulatorControl(mistral.url), "moonshot": EmulatorControl(moonshot.url)}
    try:
        yield World(server.url, key, controls)
    finally:
        for control in controls.values():
            control.reset()  # never leave a queued fault to another test


# ------------------------------------------------------------------------------------------- conversations

TOOLS: dict[str, dict[str, Any]] = {
    "get_weather": {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather of a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    },
    "get_time": {
        "type": "function",
        "function": {
            "name": "get_time",
            "description": "The time now",
            "parameters": {"type": "object", "properties": {}},
        },
    },
    "search_docs": {
        "type": "function",
        "function": {
            "name": "search_docs",
            "description": "Search the documentation",
            "parameters": {
                "type": "object",
                "properties": {"query": {"type": "string"}, "limit": {"type": "integer"}},
                "required": ["query"],
            },
        },
    },
    "list_files": {"type": "function", "function": {"name": "list_files", "description": "Files in the project"}},
}
CITIES = ("Oslo", "Paris", "Zürich", "東京", "São Paulo")
WORDS = (
    "the",
    "weather",
    "tomorrow",
    "please",
    "code",
    "why",
    "does",
    "this",
    "fail",
    "explain",
    "Zürich",
    "🙂",
    "def",
    "f(x):",
    "return",
    "x",
    "*",
    "2",
    "résumé",
    "42",
    "ok",
    "and",
    "then",
    "?",
)
TEXT = st.lists(st.sampled_from(WORDS), min_size=1, max_size=7).map(" ".join)
PNG_1X1 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
JPEG_1X1 = (
    "/9j/4AAQSkZJRgABAQEASABIAAD/2wBDAP//////////////////////////////////////////////////////////////////////"
    "////////////////wAALCAABAAEBAREA/8QAFAABAAAAAAAAAAAAAAAAAAAAA//EABQQAQAAAAAAAAAAAAAAAAAAAAD/2gAIAQEAAD8AN//Z"
)
IMAGES = (f"data:image/png;base64,{PNG_1X1}", f"data:image/jpeg;base64,{JPEG_1X1}")
ALNUM = string.ascii_letters + string.digits
NULLABLE = (
    "max_tokens",
    "temperature",
    "top_p",
    "stop",
    "n",
    "presence_penalty",
    "frequency_penalty",
    "seed",
    "tool_choice",
    "stream_options",
    "response_format",
)


def _ident(seed: int, serial: int, length: int) -> str:
    """A provider-looking random id, stable for (seed, serial): ids are distinct within a conversation, as real
    providers' are (hypothesis alone would happily draw the same one twice)."""
    number = int.from_bytes(hashlib.blake2b(f"{seed}:{serial}".encode(), digest_size=24).digest(), "big")
    chars = []
    for _ in range(length):
        number, rest = divmod(number, len(ALNUM))
        chars.append(ALNUM[rest])
    return "".join(chars)


@dataclass
class Conversation:
    origin: str  # "mistral", "kimi" or "openai": who answered the assistant turns (the ids' and fields' format)
    target: str  # the provider it is replayed on: the other one ("openai": drawn)
    body: dict[str, Any]
    continued: bool  # the last message is an assistant turn to continue (partial / prefix)


def _text_parts(draw: st.DrawFn, text: str) -> Any:
    return [{"type": "text", "text": text}] if draw(st.integers(0, 3)) == 0 else text


def _user(draw: st.DrawFn, vision: bool) -> dict[str, Any]:
    text = draw(TEXT)
    message: dict[str, Any] = {"role": "user"}
    if vision and draw(st.integers(0, 2)) == 0:
        parts: list[dict[str, Any]] = [{"type": "text", "text": text}]
        for _ in range(draw(st.integers(1, 2))):
            image: dict[str, Any] = {"url": draw(st.sampled_from(IMAGES))}
            detail = draw(st.sampled_from([None, None, "auto", "low", "high"]))
            if detail:
                image["detail"] = detail
            parts.insert(draw(st.integers(0, len(parts))), {"type": "image_url", "image_url": image})
        if draw(st.integers(0, 4)) == 0:
            parts = [part for part in parts if part["type"] == "image_url"]  # a pasted screenshot, no text
        message["content"] = parts
    else:
        message["content"] = _text_parts(draw, text)
    if draw(st.integers(0, 7)) == 0:
        message["name"] = "alice"
    return message


def _arguments(draw: st.DrawFn, name: str) -> str:
    if name == "get_weather":
        args: dict[str, Any] = {"city": draw(st.sampled_from(CITIES))}
    elif name == "search_docs":
        args = {"query": draw(TEXT)}
        if draw(st.booleans()):
            args["limit"] = draw(st.integers(1, 5))
    else:
        args = {}
    return json.dumps(args, ensure_ascii=draw(st.booleans()))


class _Builder:
    """One conversation, turn by turn, in the origin's format."""

    def __init__(self, draw: st.DrawFn, origin: str) -> None:
        self.draw, self.origin = draw, origin
        self.seed = draw(st.integers(0, 2**31))
        self.serial = 0
        self.kimi_calls = 0  # Kimi numbers its tool calls across the conversation
        # Thinking: Kimi K2.6 thinks by default (a client may have turned it off); Mistral's reasoning models answer
        # with thinking when asked for it (the gateway flattens it into reasoning_content).
        self.effort = draw(st.sampled_from([None, None, None, "none", "low", "medium", "high"]))
        if origin == "kimi":
            self.thinking = draw(st.integers(0, 3)) > 0
        elif origin == "mistral":
            self.thinking = self.effort not in (None, "none")
        else:
            self.thinking = False
        # Replayed the way the openai SDK dumps a message it received (model_dump(): every field, nulls included),
        # else as the raw JSON the client got (tool calls keep their `index`).
        self.sdk_echo = draw(st.booleans())

    def call_id(self, name: str) -> str:
        self.serial += 1
        if self.origin == "kimi":
            self.kimi_calls += 1
            return f"functions.{name}:{self.kimi_calls - 1}"
        if self.origin == "mistral":
            return _ident(self.seed, self.serial, 9)
        return "call_" + _ident(self.seed, self.serial, 24)

    def assistant(self, content: Any, calls: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if calls:
            message["tool_calls"] = calls
        if self.thinking:
            reasoning = self.draw(TEXT)
            if self.origin == "mistral" and self.draw(st.integers(0, 3)) == 0:
                # Mistral's own wire form, as a client that talked to Mistral directly (mistralai SDK) replays it
                thinking = {"type": "thinking", "thinking": [{"type": "text", "text": reasoning}], "closed": True}
                text = [{"type": "text", "text": content}] if isinstance(content, str) and content else []
                message["content"] = [thinking, *text]
            else:
                message["reasoning_content"] = reasoning
        if self.sdk_echo:
            message.update({"refusal": None, "function_call": None, "audio": None, "annotations": []})
            message.setdefault("tool_calls", None)
        return message

    def text_turn(self) -> dict[str, Any]:
        return self.assistant(self.draw(TEXT))

    def tool_turn(self, tools: list[str]) -> list[dict[str, Any]]:
        draw = self.draw
        names = draw(st.lists(st.sampled_from(tools), min_size=1, max_size=3))  # parallel calls, a name maybe twice
        calls = []
        for index, name in enumerate(names):
            call: dict[str, Any] = {
                "id": self.call_id(name),
                "type": "function",
                "function": {"name": name, "arguments": _arguments(draw, name)},
            }
            if not self.sdk_echo and self.origin in ("kimi", "mistral"):
                call["index"] = index
            calls.append(call)
        # content: null (OpenAI, Kimi), "" (Mistral's answers), or a few words before the calls
        content = draw(st.sampled_from(["", None] if self.origin == "mistral" else [None, None, None, ""]) | TEXT)
        turn = [self.assistant(content, calls)]
        results = []
        for call in calls:
            result: dict[str, Any] = {"role": "tool", "tool_call_id": call["id"]}
            shape = draw(st.integers(0, 9))
            output = draw(st.sampled_from(["sunny, 21 C", '{"ok": true, "items": [1, 2]}', "12:30", "no match"]))
            result["content"] = [{"type": "text", "text": output}] if shape == 0 else ("" if shape == 1 else output)
            if self.origin == "kimi" or draw(st.integers(0, 4)) == 0:
                result["name"] = call["function"]["name"]  # Kimi's documented tool message carries the name
            results.append(result)
        if len(results) > 1 and draw(st.integers(0, 5)) == 0:
            results.reverse()  # an async client posts results as they finish
        return turn + results

    def legacy_turn(self, functions: list[str]) -> list[dict[str, Any]]:
        draw = self.draw
        name = draw(st.sampled_from(functions))
        message = self.assistant(None)
        message.pop("tool_calls", None)
        message["function_call"] = {"name": name, "arguments": _arguments(draw, name)}
        return [message, {"role": "function", "name": name, "content": draw(st.sampled_from(["sunny", "12:30"]))}]


@st.composite
def conversations(draw: st.DrawFn, stream: bool) -> Conversation:
    origin = draw(st.sampled_from(["mistral", "kimi", "openai"]))
    target = OTHER[PROVIDER_OF_ORIGIN[origin]] if origin in PROVIDER_OF_ORIGIN else draw(st.sampled_from(sorted(OTHER)))
    b = _Builder(draw, origin)
    legacy = draw(st.integers(0, 7)) == 0
    with_tools = legacy or draw(st.integers(0, 3)) > 0  # agents and IDE clients send tools with every request
    tools = draw(st.lists(st.sampled_from(sorted(TOOLS)), unique=True, min_size=1, max_size=3)) if with_tools else []
    vision = draw(st.booleans())
    messages: list[dict[str, Any]] = []
    head = draw(st.sampled_from([None, "system", "system", "developer"]))
    if head:
        messages.append({"role": head, "content": _text_parts(draw, draw(TEXT))})
    turns = draw(st.integers(1, 8))
    state = "user"  # what may come next: "user" (a user turn), "answer" (after a user), "tools" (after results)
    while len(messages) - (1 if head else 0) < turns:
        if state == "user":
            if messages and draw(st.integers(0, 9)) == 0:  # an instruction injected after the assistant's answer
                messages.append({"role": draw(st.sampled_from(["system", "developer"])), "content": draw(TEXT)})
            messages.append(_user(draw, vision))
            state = "answer"
            continue
        after_user = ["text", "text", "tools", "tools", "tools", "late_system", "user"]
        move = draw(st.sampled_from(after_user if state == "answer" else ["text", "text", "tools"]))
        if move == "tools" and tools:
            messages += b.legacy_turn(tools) if legacy else b.tool_turn(tools)
            state = "tools"
        elif move == "late_system":  # a developer / system instruction mid-conversation, then the user again
            messages.append({"role": draw(st.sampled_from(["system", "developer"])), "content": draw(TEXT)})
            messages.append(_user(draw, vision))
        elif move == "user":
            messages.append(_user(draw, vision))
        else:
            messages.append(b.text_turn())
            state = "user"
    # The request's last message: a user turn, tool results (the agent wants the next step), or the origin's way to
    # make the model continue an assistant message (Kimi partial, Mistral prefix; OpenAI has none).
    continued = False
    if messages[-1]["role"] == "assistant" or (origin != "openai" and draw(st.integers(0, 2)) == 0):
        if origin != "openai" and draw(st.booleans()):
            if messages[-1]["role"] != "assistant":
                messages.append(b.text_turn())
            messages[-1]["partial" if origin == "kimi" else "prefix"] = True
            continued = True
        elif messages[-1]["role"] == "assistant":
            messages.append(_user(draw, vision))
    body: dict[str, Any] = {"messages": messages}
    if tools:
        if legacy:
            body["functions"] = [TOOLS[name]["function"] for name in tools]
            choice = draw(st.sampled_from([None, "auto", "none", "named"]))
            if choice == "named" and not continued:
                body["function_call"] = {"name": draw(st.sampled_from(tools))}
            elif choice not in (None, "named"):
                body["function_call"] = choice
        else:
            body["tools"] = [TOOLS[name] for name in tools]
            choice = draw(st.sampled_from([None, "auto", "none", "required", "named"]))
            if continued and choice in ("required", "named"):
                choice = "auto"  # a client continuing a text does not force a tool call
            if choice == "named":
                body["tool_choice"] = {"type": "function", "function": {"name": draw(st.sampled_from(tools))}}
            elif choice is not None:
                body["tool_choice"] = choice
            if draw(st.integers(0, 4)) == 0:
                body["parallel_tool_calls"] = draw(st.booleans())
    limit = draw(st.sampled_from(["max_tokens", "max_completion_tokens", "both", None]))
    if limit in ("max_tokens", "both"):
        body["max_tokens"] = draw(st.integers(1, 40))
    if limit in ("max_completion_tokens", "both"):
        body["max_completion_tokens"] = draw(st.integers(1, 40))
    if b.effort is not None:
        body["reasoning_effort"] = b.effort
    if draw(st.integers(0, 4)) == 0:
        body["temperature"] = draw(st.sampled_from([0, 0.3, 1]))  # Aider's 0 among them
    if stream:
        body["stream"] = True
        options = draw(st.sampled_from([None, None, True, False]))
        if options is not None:
            body["stream_options"] = {"include_usage": options}
    for name in draw(st.lists(st.sampled_from(NULLABLE), unique=True, max_size=3)):
        body.setdefault(name, None)  # what LangChain-style clients send for "not set"
    if draw(st.integers(0, 5)) == 0:
        body["user"] = "user-1234"
    return Conversation(origin, target, body, continued)


# ------------------------------------------------------------------------------------------- OpenAI's format

FINISH_REASONS = {"stop", "length", "tool_calls", "content_filter", "function_call"}


def _tool_names(body: dict[str, Any]) -> set[str]:
    declared = body.get("tools") or [{"function": f} for f in body.get("functions") or []]
    return {tool["function"]["name"] for tool in declared}


def check_completion(raw: dict[str, Any], body: dict[str, Any]) -> None:
    """A non-streamed answer as OpenAI's SDK reads it, with the fields its types default checked present."""
    ChatCompletion.model_validate(raw)
    for key in ("id", "object", "created", "model", "choices"):
        assert key in raw, f"answer without {key!r}: {raw}"
    assert raw["object"] == "chat.completion" and isinstance(raw["id"], str) and raw["id"]
    assert raw["choices"], raw
    for position, choice in enumerate(raw["choices"]):
        assert choice.get("index") == position, raw
        assert choice.get("finish_reason") in FINISH_REASONS, raw
        message = choice.get("message")
        assert isinstance(message, dict) and message.get("role") == "assistant", raw
        assert "content" in message and (message["content"] is None or isinstance(message["content"], str)), raw
        assert message.get("reasoning_content") is None or isinstance(message["reasoning_content"], str), raw
        calls = message.get("tool_calls")
        if choice["finish_reason"] == "tool_calls":
            assert calls, raw
        for call in calls or ():
            assert isinstance(call.get("id"), str) and call["id"] and call.get("type") == "function", raw
            assert call["function"]["name"] in _tool_names(body), raw
            json.loads(call["function"]["arguments"])
    usage = raw.get("usage")
    assert usage and all(isinstance(usage.get(k), int) for k in ("prompt_tokens", "completion_tokens", "total_tokens"))


def check_stream(raw: bytes, body: dict[str, Any]) -> None:
    """A streamed answer: every event a `ChatCompletionChunk`, then `[DONE]`; each choice ends once; tool calls
    arrive with their id and name first and their arguments add up to JSON; usage as `stream_options` asked."""
    frames = sse.frames(raw, data_only=True)
    assert frames and frames[-1] == "[DONE]", f"the stream does not end with [DONE]: {frames[-3:]}"
    chunks = [json.loads(frame) for frame in frames[:-1]]
    assert chunks, "a stream without a chunk"
    finished: dict[int, str] = {}
    calls: dict[tuple[int, int], dict[str, Any]] = {}
    usage_chunks = []
    ids = set()
    for chunk in chunks:
        assert "error" not in chunk, f"the stream ended with an error event: {chunk}"
        ChatCompletionChunk.model_validate(chunk)
        for key in ("id", "object", "created", "model", "choices"):
            assert key in chunk, f"chunk without {key!r}: {chunk}"
        assert chunk["object"] == "chat.completion.chunk", chunk
        ids.add(chunk["id"])
        if chunk.get("usage") is not None:
            usage_chunks.append(chunk)
        for choice in chunk["choices"]:
            index = choice["index"]
            assert index not in finished, f"a chunk after choice {index} finished: {chunk}"
            delta = choice["delta"]
            assert delta.get("role") in (None, "assistant"), chunk
            assert delta.get("content") is None or isinstance(delta["content"], str), chunk
            assert delta.get("reasoning_content") is None or isinstance(delta["reasoning_content"], str), chunk
            for call in delta.get("tool_calls") or ():
                key = (index, call["index"])
                if key not in calls:
                    assert call.get("id") and call.get("type") == "function", f"a tool call opened without id: {chunk}"
                    assert call["function"]["name"] in _tool_names(body), chunk
                    calls[key] = {"id": call["id"], "arguments": ""}
                else:
                    assert call.get("id") in (None, calls[key]["id"]), chunk
                calls[key]["arguments"] += (call.get("function") or {}).get("arguments") or ""
            if choice.get("finish_reason") is not None:
                assert choice["finish_reason"] in FINISH_REASONS, chunk
                finished[index] = choice["finish_reason"]
    assert len(ids) == 1, f"chunk ids differ: {ids}"
    assert finished, "no choice finished"
    for call in calls.values():
        json.loads(call["arguments"])
    if finished.get(0) == "tool_calls":
        assert any(key[0] == 0 for key in calls), "finish_reason tool_calls without a tool call"
    if (body.get("stream_options") or {}).get("include_usage"):
        assert usage_chunks and usage_chunks[-1] is chunks[-1] and chunks[-1]["choices"] == [], (
            f"stream_options.include_usage: no final usage chunk: {chunks[-1]}"
        )
        usage = chunks[-1]["usage"]
        assert all(isinstance(usage.get(k), int) for k in ("prompt_tokens", "completion_tokens", "total_tokens"))


def check_answer(answer: Answer, body: dict[str, Any]) -> None:
    if body.get("stream"):
        assert answer.headers.get("content-type", "").startswith("text/event-stream"), answer.headers
        check_stream(answer.body, body)
    else:
        check_completion(answer.json(), body)


# ------------------------------------------------------------------------------------------- replay


def _sent_to(control: EmulatorControl) -> list[dict[str, Any]]:
    return [r["body"] for r in control.requests() if r["path"] == CHAT]


def _refused(world: World, provider: str, answer: Answer, conversation: Conversation) -> str:
    who = provider if _sent_to(world.controls[provider]) else f"the gateway (before calling {provider})"
    return (
        f"{who} refused a conversation answered by {conversation.origin} ({answer.status}): "
        f"{answer.body[:600].decode(errors='replace')}"
    )


def replay(
    world: World, conversation: Conversation, provider: str, model: str, headers: dict[str, str], reason: str | None
) -> dict[str, Any]:
    """Send the conversation, check the answer, and return the body `provider`'s emulator received."""
    body = {"model": model, **conversation.body}
    answer = post_json(world.url, CHAT, body, headers)
    note(
        f"status {answer.status}, headers {{provider: {answer.headers.get('x-gateway-provider')}, reason: "
        f"{answer.headers.get('x-gateway-route-reason')}}}"
    )
    if answer.status != 200:
        pytest.fail(_refused(world, provider, answer, conversation))
    assert answer.headers["x-gateway-provider"] == provider, answer.headers
    assert answer.headers["x-gateway-model"] == MODEL_OF[provider], answer.headers
    if reason is not None:
        assert answer.headers["x-gateway-route-reason"] == reason, answer.headers
    check_answer(answer, body)
    received = _sent_to(world.controls[provider])
    assert len(received) == 1, f"{provider} received {len(received)} requests"
    return received[0]


def _reasoning_of(message: dict[str, Any]) -> str | None:
    """The replayed thinking of a client's assistant turn: `reasoning_content`, or Mistral's thinking parts."""
    if message.get("reasoning_content"):
        return message["reasoning_content"]
    content = message.get("content")
    parts = [p for p in content if p.get("type") == "thinking"] if isinstance(content, list) else []
    return "".join(t["text"] for p in parts for t in p["thinking"]) or None


def _images(messages: list[dict[str, Any]]) -> int:
    parts = [p for m in messages if isinstance(m.get("content"), list) for p in m["content"]]
    return sum(1 for p in parts if p.get("type") == "image_url")


def check_translation(conversation: Conversation, provider: str, sent: dict[str, Any]) -> None:
    """What reached the provider keeps what the client asked for, in that provider's words."""
    note(f"{provider} received: {json.dumps(sent, ensure_ascii=False)}")
    client_messages = conversation.body["messages"]
    messages = sent["messages"]
    last = messages[-1]
    if conversation.continued:
        # Kimi continues an assistant message marked `partial: true`, Mistral one marked `prefix: true`; an unmarked
        # last assistant message is answered as a new turn (or refused), so the client's continuation is lost.
        marker = "prefix" if provider == "mistral" else "partial"
        asked = "prefix" if "prefix" in client_messages[-1] else "partial"
        if last.get(marker) is not True:
            pytest.fail(
                f"the client's last assistant message asked to be continued ({asked}: true, from "
                f"{conversation.origin}), but {provider} received it without `{marker}: true`: {last}"
            )
    # One output limit whatever the provider: the one the client sent, or the smaller when it sent both names (the
    # limit the gateway itself reads, validation._sampling, and reserves the budget for).
    limits = [conversation.body.get(k) for k in ("max_completion_tokens", "max_tokens") if conversation.body.get(k)]
    wanted = min(limits) if limits else None
    name = "max_tokens" if provider == "mistral" else "max_completion_tokens"
    if sent.get(name) != wanted:
        pytest.fail(
            f"the client asked for at most {wanted} tokens (max_tokens={conversation.body.get('max_tokens')}, "
            f"max_completion_tokens={conversation.body.get('max_completion_tokens')}), {provider} was sent "
            f"{name}={sent.get(name)}"
        )
    assert len(messages) == len(client_messages), "a message was dropped or added"
    assert _images(messages) == _images(client_messages), "an image part was lost"
    # Every tool result answers a call of the assistant turn before it, once.
    pending: set[str] = set()
    for message in messages:
        if message["role"] == "assistant":
            pending = {call["id"] for call in message.get("tool_calls") or ()}
        elif message["role"] == "tool":
            assert message["tool_call_id"] in pending, f"a tool result that answers no pending call: {message}"
            pending.discard(message["tool_call_id"])
    thinking_on = sent.get("thinking", {}).get("type") != "disabled"
    for client, message in zip(client_messages, messages, strict=False):
        reasoning = _reasoning_of(client) if client["role"] == "assistant" else None
        if reasoning is None:
            continue
        if provider == "moonshot":
            assert message.get("reasoning_content") == reasoning or not thinking_on, (client, message)
        elif sent.get("reasoning_effort") not in (None, "none"):
            assert isinstance(message.get("content"), list) and message["content"][0]["type"] == "thinking", message
    if provider == "moonshot":
        assert all(m["role"] in ("system", "user", "assistant", "tool") for m in messages), messages


def record(conversation: Conversation) -> None:
    """Hypothesis statistics (--hypothesis-show-statistics): what the examples covered."""
    body, messages = conversation.body, conversation.body["messages"]
    event(f"origin {conversation.origin} -> {conversation.target}")
    calls = [len(m["tool_calls"]) for m in messages if m.get("tool_calls")]
    event("parallel tool calls" if any(c > 1 for c in calls) else "tool calls" if calls else "no tool call")
    for feature, present in (
        ("legacy functions", "functions" in body),
        ("image", _images(messages) > 0),
        ("continued (partial/prefix)", conversation.continued),
        ("developer role", any(m["role"] == "developer" for m in messages)),
        ("reasoning replayed", any(m["role"] == "assistant" and _reasoning_of(m) for m in messages)),
        ("late system", any(m["role"] in ("system", "developer") for m in messages[1:])),
        ("last message tool", messages[-1]["role"] in ("tool", "function")),
    ):
        if present:
            event(feature)
    event(f"tool_choice {json.dumps(body.get('tool_choice', body.get('function_call')))[:30]}")
    event(f"{len(messages)} messages")


VARIANTS = ("named", "auto", "fallback")


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@SETTINGS
@given(data=st.data())
def test_a_conversation_from_one_provider_replays_on_the_other(
    world: World, variant: str, stream: bool, data: st.DataObject
) -> None:
    conversation = data.draw(conversations(stream), label="conversation")
    for control in world.controls.values():
        control.reset()
    target = conversation.target
    first = OTHER[target]  # the provider the conversation came from (for an OpenAI-shaped one: the other one)
    record(conversation)
    note(f"origin {conversation.origin} -> {target} ({variant})")
    note(json.dumps(conversation.body, ensure_ascii=False))
    kimi_team = {"authorization": f"Bearer {world.kimi_key}"}
    try:
        if variant == "named":
            sent = replay(world, conversation, target, MODEL_OF[target], {}, "pinned")
            check_translation(conversation, target, sent)
            assert not _sent_to(world.controls[first])
            # The generator's check: the origin's own provider takes the conversation too.
            world.controls[target].reset()
            replay(world, conversation, first, MODEL_OF[first], {}, "pinned")
            return
        if variant == "auto":
            if target == "moonshot":
                headers, reason = kimi_team, "preferred"  # policy kimi-first
            elif data.draw(st.booleans(), label="by residency"):
                headers, reason = {**kimi_team, "x-gateway-residency": "eu"}, "residency:eu"
            else:
                headers, reason = {}, "preferred"  # the master team's policy `default`: Mistral first
            sent = replay(world, conversation, target, "auto", headers, reason)
            check_translation(conversation, target, sent)
            assert not _sent_to(world.controls[first]), f"auto called {first} too"
            return
        # fallback: `auto`'s first candidate is `first`, which fails before the first byte (twice: try and retry)
        headers = kimi_team if first == "moonshot" else {}
        world.controls[first].fault(FAULT, 2)
        sent = replay(world, conversation, target, "auto", headers, "fallback:upstream-503")
        check_translation(conversation, target, sent)
        assert len(_sent_to(world.controls[first])) == 2, f"{first} was not tried and retried"
    finally:
        for control in world.controls.values():
            control.reset()


# ------------------------------------------------------------------------------------------- found by the property
# The smallest conversations the property test reduced its failures to, one per rule, so that each shows on its own
# (hypothesis stops at the first failure it finds in a test).

USER = {"role": "user", "content": "Write a haiku about autumn"}


def _post(world: World, body: dict[str, Any]) -> tuple[Answer, dict[str, list[dict[str, Any]]]]:
    for control in world.controls.values():
        control.reset()
    answer = post_json(world.url, CHAT, body)
    return answer, {provider: _sent_to(control) for provider, control in world.controls.items()}


def test_found_mistral_prefix_reaches_kimi_as_partial(world: World) -> None:
    """Mistral's `prefix: true` on the last assistant message is Kimi's `partial: true` (the Mistral adapter maps
    partial -> prefix; the Moonshot adapter drops `prefix`, so Kimi answers a new turn instead of continuing)."""
    body = {
        "model": "kimi-k2.6",
        "max_tokens": 8,
        "messages": [USER, {"role": "assistant", "content": "Crisp leaves", "prefix": True}],
    }
    answer, sent = _post(world, body)
    assert answer.status == 200, answer.body
    last = sent["moonshot"][0]["messages"][-1]
    if last.get("partial") is not True:
        pytest.fail(f"Kimi received the client's prefix message without partial: true: {last}")


def test_found_legacy_function_messages_reach_kimi(world: World) -> None:
    """A legacy-functions history (an assistant `function_call`, then a `function` message) is sent to Kimi as a
    tool call and its result, as the Mistral adapter does; the Moonshot adapter refuses the `function` role."""
    body = {
        "model": "kimi-k2.6",
        "max_tokens": 8,
        "functions": [TOOLS["get_time"]["function"]],
        "messages": [
            {"role": "user", "content": "What time is it?"},
            {"role": "assistant", "content": None, "function_call": {"name": "get_time", "arguments": "{}"}},
            {"role": "function", "name": "get_time", "content": "12:30"},
        ],
    }
    answer, sent = _post(world, body)
    if answer.status != 200:
        pytest.fail(f"a legacy function-call history is refused on Kimi ({answer.status}): {answer.body.decode()}")
    assistant = sent["moonshot"][0]["messages"][1]
    assert assistant.get("tool_calls"), f"the assistant's function_call did not reach Kimi: {assistant}"


def test_found_one_output_limit_on_both_providers(world: World) -> None:
    """A client sending both limits (max_tokens and max_completion_tokens) gets the same one on either provider: the
    smaller, the one the gateway reads (validation._sampling) and reserves the budget for (and lowers, routing/
    planning.py `lowered`). Before, the Mistral adapter sent the client's max_tokens whatever max_completion_tokens
    said, so a request could run past what was reserved."""
    for first, second in ((40, 3), (3, 40)):
        body = {"messages": [USER], "max_tokens": first, "max_completion_tokens": second}
        got = {}
        for provider, model in MODEL_OF.items():
            answer, sent = _post(world, {"model": model, **body})
            assert answer.status == 200, answer.body
            got[provider] = sent[provider][0].get("max_tokens" if provider == "mistral" else "max_completion_tokens")
        if got != {"mistral": 3, "moonshot": 3}:
            pytest.fail(f"max_tokens={first}, max_completion_tokens={second}: the providers were sent {got}")
