"""Moonshot (Kimi): fixed sampling on K2.5/K2.6, usage inside the final choice.

Kimi K2.5/K2.6 refuse any temperature, top_p, n or penalty other than their
fixed values (Aider sends `temperature: 0`), so for models marked
`fixed_sampling` those fields are dropped and the provider's fixed values apply.
Usage arrives inside the final choice and, when `stream_options` is sent, again
in a trailing chunk; it is recorded once (assigned, never added).

Requests are rebuilt from Moonshot's documented chat parameters (fields.py says why).

Every history a client may send is made acceptable to Kimi (the rules, each with its source, are below and in
`settle_thinking`): roles, legacy functions, the output limit's name, replayed reasoning from Kimi, Mistral or
OpenRouter-style clients, and the two thinking-mode refusals (a forced `tool_choice`, a replayed tool-call turn
without its `reasoning_content`).
"""

from __future__ import annotations

from typing import Any

from gateway.catalog import ModelConfig
from gateway.providers.base import Adapter, Reply, StreamOutcome
from gateway.providers.fields import HINT_FIELDS, Messages, Shape, rebuild, roles
from gateway.providers.openai_compatible import OpenAICompatibleAdapter, usage_from
from gateway.types import Json

FIXED_SAMPLING_FIELDS = ("temperature", "top_p", "n", "presence_penalty", "frequency_penalty")

# Moonshot's chat parameters: ../shared/reference/providers.md, Moonshot section (sampling table: temperature,
# top_p, n, penalties; `thinking`; `tools`/`tool_choice`; `max_tokens`/`max_completion_tokens`;
# `response_format`; streaming and `stream_options`), and the chat API reference it is gathered from
# (platform.moonshot.cn/docs/api/chat: `stop`). The output limit is sent as `max_completion_tokens`: "The API
# reference marks `max_tokens` deprecated in favour of `max_completion_tokens`" (providers.md); a client's
# `max_tokens` is renamed to it (its own `max_completion_tokens` wins when it sends both).
CHAT_FIELDS = frozenset(
    {
        "model",
        "messages",
        "temperature",
        "top_p",
        "n",
        "presence_penalty",
        "frequency_penalty",
        "max_completion_tokens",
        "response_format",
        "stop",
        "stream",
        "tools",
        "tool_choice",
        "thinking",
    }
)
# Usage comes inside the final choice without `stream_options`; the relay makes the client's usage chunk.
# `seed`, `parallel_tool_calls`, `prompt_cache_key` (Kimi caches prefixes by itself) and `safety_identifier`
# are OpenAI best-effort hints Moonshot does not document: dropped, not forwarded. So is OpenAI's
# `reasoning_effort` (Moonshot's own Kimi CLI sends it), which is not one of Kimi's documented parameters: where it
# has a meaning for Kimi it is translated into `thinking` (see `settle_thinking`), else dropped. `top_k` (Anthropic's
# and Mistral's sampling cut-off, which the Messages door forwards) is not a Moonshot parameter either, and K2.5/K2.6
# sample with fixed values: dropped.
_DROPPED = HINT_FIELDS | {
    "stream_options",
    "seed",
    "parallel_tool_calls",
    "prompt_cache_key",
    "safety_identifier",
    "reasoning_effort",
    "top_k",
}
# Message keys (same sources): `name`; assistant `tool_calls`, `reasoning_content` (replayed in thinking mode),
# `partial` (partial mode); tool `tool_call_id`. The developer role is refused by Moonshot: sent as system.
MESSAGES = Messages(
    roles(
        system=("content", "name"),
        user=("content", "name"),
        assistant=("content", "name", "tool_calls", "reasoning_content", "partial"),
        tool=("content", "tool_call_id", "name"),
    ),
    {"developer": "system"},
)
# Legacy functions are not supported by Moonshot (providers.md): translated into tools.
CHAT = Shape(CHAT_FIELDS, {"max_tokens": "max_completion_tokens"}, _DROPPED, MESSAGES, translate_functions=True)

# Thinking, by upstream model id (providers.md, Moonshot sampling constraints, from Moonshot's guide to the K2
# thinking models): K2.5 and K2.6 take `thinking: {"type": "enabled"|"disabled"}`, and "on kimi-k2.6 thinking is
# enabled by default"; the kimi-k2-thinking models always think; the other K2 models never do.
TOGGLES_THINKING = ("kimi-k2.5", "kimi-k2.6")
THINKS_BY_DEFAULT = ("kimi-k2.6",)
ALWAYS_THINKS = ("kimi-k2-thinking",)
# OpenAI's `reasoning_effort` has one meaning for Kimi, whose only control is on or off: "none" and "minimal" ask
# for no (or next to no) reasoning, so thinking off; "low", "high" and "xhigh" ask for reasoning, so thinking on;
# "medium" is OpenAI's documented default (fields.CHAT_REQUEST), the same as not sending it: the model's default.
EFFORT_THINKING = {"none": "disabled", "minimal": "disabled", "low": "enabled", "high": "enabled", "xhigh": "enabled"}
# Sent as the `reasoning_content` of a replayed tool-call turn that has none, only when thinking must stay on
# (the caller asked for it, or the model always thinks): Moonshot refuses such a turn in thinking mode. It says
# plainly that nothing is recorded, so the model does not take invented reasoning for its own.
MISSING_REASONING = "(The reasoning for this step was not recorded.)"


def _starts(upstream: str, prefixes: tuple[str, ...]) -> bool:
    return any(upstream == p or upstream.startswith(p + "-") for p in prefixes)


def _forced(tool_choice: Any) -> bool:
    """A tool_choice Moonshot refuses in thinking mode: "required" or a named function (providers.md)."""
    return tool_choice == "required" or isinstance(tool_choice, dict)


def _lacks_reasoning(message: Json) -> bool:
    return (
        message.get("role") == "assistant" and bool(message.get("tool_calls")) and not message.get("reasoning_content")
    )


def replay_reasoning(sent: Any, out: list[Json]) -> None:
    """Reasoning a client replays in another provider's shape, as Kimi's `reasoning_content` (kept when present):
    Mistral's thinking parts inside `content` (`{"type": "thinking", "thinking": [{"type": "text", ...}]}`,
    providers.md, Mistral streaming) and OpenRouter-style `reasoning` strings (fields.KNOWN_MESSAGE_KEYS). `out`
    is rebuild()'s copy of `sent`, message for message; the client's messages are not changed (a fallback to
    another provider sends them again)."""
    originals = sent if isinstance(sent, list) else []
    for original, message in zip(originals, out, strict=False):
        if message.get("role") != "assistant":
            continue
        thoughts: list[str] = []
        content = message.get("content")
        if isinstance(content, list):
            kept = []
            for part in content:
                if isinstance(part, dict) and part.get("type") == "thinking":
                    thoughts.append(_thinking_text(part.get("thinking")))
                else:
                    kept.append(part)
            if len(kept) != len(content):
                message["content"] = kept if kept else ("" if not message.get("tool_calls") else None)
                if message["content"] is None:
                    del message["content"]
        if not message.get("reasoning_content"):
            other = original.get("reasoning") if isinstance(original, dict) else None
            text = "".join(t for t in thoughts if t) or (other if isinstance(other, str) else "")
            if text:
                message["reasoning_content"] = text


def _thinking_text(thinking: Any) -> str:
    if isinstance(thinking, str):
        return thinking
    if isinstance(thinking, list):
        return "".join(p.get("text", "") for p in thinking if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def settle_thinking(out: Json, model: ModelConfig, effort: Any) -> None:
    """Decide thinking for this request so that Kimi accepts it, and say so in `out["thinking"]`.

    In thinking mode Moonshot refuses a forced `tool_choice` and a replayed assistant tool-call turn without its
    `reasoning_content` (providers.md, Moonshot sampling constraints). The choices, for agents that must keep
    working:
    - A forced tool_choice ("required" or a named function) turns thinking off for this request, even when the
      caller asked for thinking: the agent's next step depends on getting that tool call, and thinking off is a
      documented mode that keeps the guarantee; `auto` plus an instruction would keep thinking but may answer in
      text, which breaks the agent. Only a model that cannot stop thinking (kimi-k2-thinking) gets `auto`, with
      a named function's tools narrowed to that function, so any call it makes is the one asked for.
    - A tool-call turn without reasoning (history from Mistral, from a client that drops unknown fields, or from
      an earlier fallback) turns thinking off for this request when the caller did not ask for thinking (K2.6's
      default): nothing is invented, and Kimi's non-thinking mode answers the agent well. When the caller did ask
      (`thinking: enabled`, or a `reasoning_effort` meaning it) or the model always thinks, each such turn gets
      MISSING_REASONING, which says that nothing was recorded instead of pretending to be the model's reasoning.
    """
    upstream = model.upstream_model
    toggles, always = _starts(upstream, TOGGLES_THINKING), _starts(upstream, ALWAYS_THINKS)
    thinking = out.get("thinking")
    asked = thinking.get("type") if isinstance(thinking, dict) else None
    if asked is None and toggles and isinstance(effort, str) and effort in EFFORT_THINKING:
        asked = EFFORT_THINKING[effort]
        out["thinking"] = {"type": asked}
    on = always or (toggles and (asked == "enabled" or (asked is None and _starts(upstream, THINKS_BY_DEFAULT))))
    if not on:
        return
    if _forced(out.get("tool_choice")):
        if not always:
            out["thinking"] = {"type": "disabled"}
            return
        choice = out["tool_choice"]
        if isinstance(choice, dict) and isinstance(out.get("tools"), list):
            name = (choice.get("function") or {}).get("name")
            named = [t for t in out["tools"] if isinstance(t, dict) and (t.get("function") or {}).get("name") == name]
            out["tools"] = named or out["tools"]
        out["tool_choice"] = "auto"
    messages = out.get("messages")
    lacking = [m for m in messages if isinstance(m, dict) and _lacks_reasoning(m)] if isinstance(messages, list) else []
    if not lacking:
        return
    if not always and asked is None:
        out["thinking"] = {"type": "disabled"}
        return
    for message in lacking:
        message["reasoning_content"] = MISSING_REASONING


def _prefix_as_partial(original: Any, rebuilt: list[Json]) -> None:
    """Mistral's `prefix: true` on the last assistant message is Kimi's partial mode (`partial: true`, Moonshot's
    "Partial Mode" docs): the answer continues that text instead of starting a new turn."""
    if not isinstance(original, list) or not original or not rebuilt:
        return
    last, out = original[-1], rebuilt[-1]
    if isinstance(last, dict) and last.get("prefix") is True and out.get("role") == "assistant":
        out["partial"] = True


class MoonshotAdapter(OpenAICompatibleAdapter):
    def prepare_chat(self, body: Json, model: ModelConfig, stream: bool) -> Json:
        out = rebuild(body, CHAT, model)
        if isinstance(out.get("messages"), list):
            replay_reasoning(body.get("messages"), out["messages"])
            _prefix_as_partial(body.get("messages"), out["messages"])
        if model.fixed_sampling:
            for key in FIXED_SAMPLING_FIELDS:
                out.pop(key, None)
        settle_thinking(out, model, body.get("reasoning_effort"))
        return out

    async def embeddings(self, body: Json, model: ModelConfig) -> Reply:
        # Moonshot documents no embeddings endpoint (providers.md, "Other endpoints").
        return await Adapter.embeddings(self, body, model)

    def fix_reply(self, reply: Json) -> bool:
        changed = False
        for choice in reply.get("choices") or ():
            if isinstance(choice, dict) and "usage" in choice:
                if "usage" not in reply:
                    reply["usage"] = choice["usage"]
                del choice["usage"]
                changed = True
        return super().fix_reply(reply) or changed  # no logprobs or refusal

    def fix_choice(self, choice: Json, outcome: StreamOutcome) -> bool:
        # Moonshot may put usage on the final choice as well as (or instead of) the chunk.
        if "usage" not in choice:
            return False
        usage = usage_from(choice.pop("usage"))
        if usage is not None:
            outcome.usage = usage
        return True
