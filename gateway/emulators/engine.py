"""The provider-neutral part of a chat completion: which tool to call, reply text, lengths.

Each provider module turns a Generation into its own wire format.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from gateway.emulators.cache import PrefixCache
from gateway.emulators.options import EmulatorOptions
from gateway.emulators.text import TOKEN_RE, WORDS, PromptCount, count_tokens, reply_words, rng_for, schema_value

if TYPE_CHECKING:
    from gateway.emulators.script import ScriptedReply, ScriptQueue

_WEATHER = re.compile(r"\bweather\b", re.IGNORECASE)


@dataclass
class Choice:
    content: str
    finish_reason: str
    tokens: int
    tool_name: str | None = None
    tool_arguments: str | None = None
    reasoning: str | None = None
    reasoning_tokens: int = 0


@dataclass
class ChatSpec:
    """What decides a reply. `material` is everything the text must depend on (the messages)."""

    material: Any
    messages: list = field(default_factory=list)
    tools: Any = None
    tool_choice: Any = None
    max_tokens: int | None = None
    min_tokens: int = 0
    n: int = 1
    seed: Any = None  # the request's own seed (random_seed / seed)
    thinking: bool = False
    stop: Any = None


@dataclass
class Generation:
    choices: list[Choice]
    prompt_tokens: int
    cached_tokens: int
    key: list  # deterministic material for ids and padding derived by the provider

    @property
    def reasoning_tokens(self) -> int:
        return sum(c.reasoning_tokens for c in self.choices)

    @property
    def completion_tokens(self) -> int:
        return sum(c.tokens for c in self.choices) + self.reasoning_tokens


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def pick_tool(tools: Any, tool_choice: Any, messages: list) -> dict | None:
    """The function to call, or None: forced by tool_choice, or asked about the weather."""
    functions = [
        t["function"]
        for t in tools or []
        if isinstance(t, dict) and isinstance(t.get("function"), dict) and t["function"].get("name")
    ]
    if not functions or tool_choice == "none":
        return None
    if isinstance(tool_choice, dict):
        wanted = (tool_choice.get("function") or {}).get("name")
        return next((f for f in functions if f["name"] == wanted), functions[0])
    if tool_choice in ("any", "required"):
        return functions[0]
    # Only right after a user turn: after a tool result the model answers in text,
    # so agent loops driven by the emulator terminate.
    last = messages[-1] if messages else None
    if isinstance(last, dict) and last.get("role") == "user" and _WEATHER.search(_text_of(last.get("content"))):
        return functions[0]
    return None


def _apply_stop(text: str, stop: Any) -> tuple[str, bool]:
    stops = [stop] if isinstance(stop, str) else [s for s in stop or [] if isinstance(s, str)]
    cuts = [text.find(s) for s in stops if s and s in text]
    return (text[: min(cuts)], True) if cuts else (text, False)


def generate(seed: int, default_max_tokens: int, spec: ChatSpec) -> list[Choice]:
    cap = spec.max_tokens if spec.max_tokens is not None else default_max_tokens
    tool = pick_tool(spec.tools, spec.tool_choice, spec.messages)
    choices = []
    for index in range(spec.n):
        rng = rng_for(seed, spec.material, spec.seed, index)
        reasoning = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12))) if spec.thinking else None
        reasoning_tokens = count_tokens(reasoning)
        if tool is not None:
            params = tool.get("parameters")
            value = schema_value(params, rng) if isinstance(params, dict) else {}
            arguments = orjson.dumps(value if isinstance(value, dict) else {}).decode()
            tokens = count_tokens(tool["name"]) + count_tokens(arguments)
            choices.append(Choice("", "tool_calls", tokens, tool["name"], arguments, reasoning, reasoning_tokens))
            continue
        words, truncated = reply_words(rng, cap, spec.min_tokens)
        text, stopped = _apply_stop(" ".join(words), spec.stop)
        finish = "length" if truncated and not stopped else "stop"
        choices.append(Choice(text, finish, count_tokens(text), reasoning=reasoning, reasoning_tokens=reasoning_tokens))
    return choices


def chat_spec(body: dict, *, seed: Any, thinking: bool, max_tokens: int | None) -> ChatSpec:
    """The ChatSpec of an already validated chat-completions body."""
    messages = body["messages"]
    return ChatSpec(
        material=messages,
        messages=messages,
        tools=body.get("tools"),
        tool_choice=body.get("tool_choice"),
        max_tokens=max_tokens,
        n=int(body.get("n") or 1),
        seed=seed,
        stop=body.get("stop"),
        thinking=thinking,
    )


def scripted_choices(reply: ScriptedReply, spec: ChatSpec) -> list[Choice]:
    """A scripted reply (script.py) as the choices of a generation, for every requested choice.

    A text reply longer than `max_tokens` is cut there with finish_reason "length", as every provider does
    (OpenAI, Mistral and Moonshot document `max_tokens` as the most tokens the answer may have)."""
    finish = reply.finish_reason or ("tool_calls" if reply.tool_name else "stop")
    reasoning = "Reading the request before answering." if spec.thinking else None
    content, tokens = reply.content, reply.tokens
    if spec.max_tokens is not None and not reply.tool_name and tokens > spec.max_tokens:
        cut = list(TOKEN_RE.finditer(content))[spec.max_tokens - 1].end() if spec.max_tokens > 0 else 0
        content, tokens, finish = content[:cut], count_tokens(content[:cut]), "length"
    return [
        Choice(content, finish, tokens, reply.tool_name, reply.tool_arguments, reasoning, count_tokens(reasoning))
        for _ in range(spec.n)
    ]


def complete(
    spec: ChatSpec,
    prompt: PromptCount,
    options: EmulatorOptions,
    cache: PrefixCache,
    model: str,
    script: ScriptQueue | None = None,
) -> Generation:
    """Generate the choices and account for the prompt, remembering its prefixes for caching.

    A reply queued on `script` that fits the request is sent instead of generated words."""
    cached = cache.observe([model, spec.tools], spec.messages, prompt.messages, prompt.tools)
    scripted = script.take(spec.messages, model, spec.tools) if script is not None else None
    choices = scripted_choices(scripted, spec) if scripted else generate(options.seed, options.default_max_tokens, spec)
    return Generation(choices, prompt.total, cached, key=[options.seed, spec.material, spec.seed])
