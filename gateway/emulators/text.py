"""Deterministic reply text and the emulator's token counter.

Token-counting rule (the emulators' contract: usage, prompt caching, context-window
checks and Moonshot's estimate endpoint all use it):
  * text costs one token per match of the regex `\\w+|[^\\w\\s]` (a run of word
    characters, or one punctuation character);
  * every message costs MESSAGE_TOKENS, plus its text: string content, the `text`
    of array parts, IMAGE_TOKENS per image part, the compact JSON of `tool_calls`,
    and `reasoning_content`;
  * tool definitions cost the tokens of their compact JSON;
  * a prompt is tools + the sum of its messages, so a prefix of the messages costs
    exactly the sum of its messages (what prompt caching reports).
Generated replies are words from WORDS joined by single spaces: one word, one token.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

TOKEN_RE = re.compile(r"\w+|[^\w\s]")
MESSAGE_TOKENS = 4
IMAGE_TOKENS = 85
WORDS = [
    "alpha",
    "bravo",
    "cedar",
    "delta",
    "ember",
    "fjord",
    "granite",
    "harbor",
    "island",
    "jasper",
    "kernel",
    "lantern",
    "meadow",
    "nimbus",
    "orbit",
    "pixel",
    "quartz",
    "river",
    "summit",
    "timber",
    "umbra",
    "vector",
    "willow",
    "xenon",
    "yonder",
    "zephyr",
    "amber",
    "basalt",
    "comet",
    "dune",
    "echo",
    "falcon",
    "glacier",
    "horizon",
    "iris",
    "juniper",
    "koala",
    "lotus",
    "mosaic",
    "nectar",
    "opal",
    "prism",
    "quiver",
    "raven",
    "sierra",
    "tundra",
    "utopia",
    "velvet",
    "walnut",
    "yarrow",
    "zenith",
]
_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def count_tokens(text: str | None) -> int:
    return len(TOKEN_RE.findall(text)) if isinstance(text, str) else 0


Counter = Callable[[str | None], int]


def _json_tokens(value: Any, count: Counter = count_tokens) -> int:
    return count(orjson.dumps(value).decode()) if value else 0


def content_tokens(content: Any, count: Counter = count_tokens) -> int:
    """Tokens of a message content: a string, or an array of text/image parts."""
    if isinstance(content, str):
        return count(content)
    if not isinstance(content, list):
        return 0
    total = 0
    for part in content:
        if not isinstance(part, dict):
            continue
        if part.get("type") in ("image_url", "image"):
            total += IMAGE_TOKENS
        else:
            total += count(part.get("text") if isinstance(part.get("text"), str) else None)
    return total


def message_tokens(message: Any, count: Counter = count_tokens) -> int:
    if not isinstance(message, dict):
        return MESSAGE_TOKENS
    reasoning = message.get("reasoning_content")
    return (
        MESSAGE_TOKENS
        + content_tokens(message.get("content"), count)
        + _json_tokens(message.get("tool_calls"), count)
        + count(reasoning if isinstance(reasoning, str) else None)
    )


def tools_tokens(tools: Any, count: Counter = count_tokens) -> int:
    return _json_tokens(tools, count)


@dataclass
class PromptCount:
    """A prompt's tokens, kept per message so prefix caching can sum any prefix."""

    tools: int
    messages: list[int]

    @property
    def total(self) -> int:
        return self.tools + sum(self.messages)


def count_prompt(messages: list, tools: Any = None, count: Counter = count_tokens) -> PromptCount:
    """`count` counts one text: the default splits words and punctuation; the Mistral emulator passes its
    provider's real tokenizer (Tekken), so that the usage it reports is what Mistral would bill."""
    return PromptCount(tools_tokens(tools, count), [message_tokens(m, count) for m in messages])


def canonical(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def rng_for(*parts: Any) -> random.Random:
    """A generator seeded by a stable hash of `parts` (never Python's salted hash())."""
    digest = hashlib.sha256(canonical(list(parts))).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def reply_words(rng: random.Random, cap: int, minimum: int = 0) -> tuple[list[str], bool]:
    """Words of a reply and whether `cap` cut it short. The natural length is 5 to 48."""
    natural = max(1, minimum, rng.randint(5, 48))
    return [rng.choice(WORDS) for _ in range(min(cap, natural))], cap < natural


def random_id(rng: random.Random, length: int) -> str:
    return "".join(rng.choice(_ID_ALPHABET) for _ in range(length))


def schema_value(schema: Any, rng: random.Random, depth: int = 0) -> Any:
    """A value valid against a simple JSON schema: words for strings, ints for numbers."""
    if not isinstance(schema, dict):
        return rng.choice(WORDS)
    if schema.get("enum"):
        return schema["enum"][0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind == "object" or "properties" in schema:
        if depth > 4:
            return {}
        props = schema.get("properties") or {}
        return {name: schema_value(sub, rng, depth + 1) for name, sub in props.items()}
    if kind == "array":
        return [schema_value(schema.get("items"), rng, depth + 1)]
    if kind in ("integer", "number"):
        low = int(schema.get("minimum", 1))
        return rng.randint(low, max(low, int(schema.get("maximum", low + 99))))
    if kind == "boolean":
        return True
    return rng.choice(WORDS)


def split_chunks(text: str, tokens_per_chunk: int) -> list[str]:
    """Split a space-joined reply into pieces of N words whose concatenation is the text."""
    words = text.split(" ") if text else []
    size = max(1, tokens_per_chunk)
    pieces = [" ".join(words[i : i + size]) for i in range(0, len(words), size)]
    return [piece if i == 0 else " " + piece for i, piece in enumerate(pieces)]
