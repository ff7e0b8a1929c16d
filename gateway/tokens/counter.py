"""TokenCounter: the estimate everywhere, a tokenizer only when the estimate straddles the limit."""

from __future__ import annotations

import asyncio
import json
import math
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gateway.tokens.calibration import ErrorStats
from gateway.tokens.heuristic import FAMILIES, Family, Parts, collect, compact_json, estimate_parts
from gateway.tokens.vocab import Lazy, TokenizerUnavailable, count_texts, load_o200k, load_tekken

if TYPE_CHECKING:
    from gateway.catalog import ModelConfig


MISTRAL_PREFIXES = ("mistral", "codestral", "magistral", "devstral", "ministral", "pixtral", "voxtral", "open-mistral")
KIMI_PREFIXES = ("kimi", "moonshot")
# Default (ratio, lo, hi) per method and family before any usage is observed. Estimate: the worst
# error on the fitting corpus was 18% (Tekken), more against a tokenizer we do not have (Kimi,
# others). Tekken: exact text, approximate template (tool JSON, tool-result wrappers). o200k as
# Kimi: Kimi K2's tiktoken-style vocabulary is larger for Chinese (fewer tokens) and about equal
# for English and code, so the upside is smaller than the downside.
DEFAULTS: dict[tuple[str, str], tuple[float, float, float]] = {
    ("estimate", "mistral"): (1.0, 0.20, 0.20),
    ("estimate", "kimi"): (1.0, 0.25, 0.25),
    ("estimate", "other"): (1.0, 0.25, 0.25),
    ("tekken", "mistral"): (1.0, 0.03, 0.03),
    ("o200k", "kimi"): (1.0, 0.15, 0.10),
}
TOKENIZER_OF = {"mistral": "tekken", "kimi": "o200k"}  # the better count each family has


def family_of(model: ModelConfig, provider_kind: str) -> str:
    """The tokenizer family ("mistral", "kimi" or "other") from the provider kind or the model's names."""
    if provider_kind == "mistral":
        return "mistral"
    if provider_kind == "moonshot":
        return "kimi"
    for name in (model.name, model.upstream_model, (model.litellm_name or "").rpartition("/")[2]):
        lowered = name.lower()
        if lowered.startswith(MISTRAL_PREFIXES):
            return "mistral"
        if lowered.startswith(KIMI_PREFIXES):
            return "kimi"
    return "other"


@dataclass(frozen=True, slots=True)
class Count:
    """A prompt's tokens. The truth is expected between `lower` and `upper`."""

    tokens: int  # best guess, calibrated, fixed costs included
    exact: bool  # the text was counted with the model's own tokenizer (Tekken for Mistral)
    method: str  # "estimate", "tekken" or "o200k"
    margin: int  # how far the truth may exceed `tokens`
    basis: int = 0  # uncalibrated text + template tokens: what `observe` compares with
    fixed: int = 0  # images and other parts at their fixed (upper-bound) cost, not calibrated
    below: int = 0  # how far the truth may fall short of `tokens`
    refinable: bool = False  # an estimate for a model with a tokenizer: `refine` can count it better

    @property
    def upper(self) -> int:
        return self.tokens + self.margin

    @property
    def lower(self) -> int:
        return self.tokens - self.below

    def fits(self, limit: int) -> bool:
        return self.upper <= limit

    def straddles(self, limit: int) -> bool:
        """The band holds `limit`: whether the prompt fits is unknown until a better count."""
        return self.lower <= limit < self.upper

    def at_least(self, floor: int) -> Count:
        """This count, raised to `floor` tokens (a bound from the body's size for text the count cannot see)."""
        if self.tokens >= floor:
            return self
        return Count(floor, self.exact, self.method, self.margin, self.basis, self.fixed, 0, self.refinable)


class TokenCounter:
    """Counts prompts for routing; built once per gateway. Cheap to build: tokenizers load on first need.

    `count` may load a tokenizer (about 0.2 s, once) and encode megabytes (about 0.1 s per MB of mixed
    text) in the calling thread; on the event loop use `count_async`, which moves both to a thread.
    """

    def __init__(
        self, *, window: int = 256, min_samples: int = 20, thread_chars: int = 64 * 1024, max_tracked: int = 1024
    ) -> None:
        self.window, self.min_samples, self.thread_chars, self.max_tracked = (
            window,
            min_samples,
            thread_chars,
            max_tracked,
        )
        self.tekken = Lazy(load_tekken)
        self.o200k = Lazy(load_o200k)
        self._stats: dict[tuple[str, str], ErrorStats] = {}
        self._families: dict[str, str] = {}
        self._lock = threading.Lock()

    # -- counting ---------------------------------------------------------------------------------

    def count(self, body: dict[str, Any], model: ModelConfig, provider_kind: str, limit: int) -> Count:
        """Prompt tokens of `body` for `model`, exact enough to tell whether they fit in `limit`."""
        step = self._plan(body, model, provider_kind, limit)
        return step if isinstance(step, Count) else step.run()

    async def count_async(self, body: dict[str, Any], model: ModelConfig, provider_kind: str, limit: int) -> Count:
        """`count`, with tokenizer loading and encoding of large texts run in a thread."""
        step = self._plan(body, model, provider_kind, limit)
        if isinstance(step, Count):
            return step
        return await asyncio.to_thread(step.run) if step.heavy else step.run()

    def _plan(self, body: dict[str, Any], model: ModelConfig, provider_kind: str, limit: int) -> Count | _Exact:
        parts = collect(body)
        estimated = self.estimate_parts(parts, model, provider_kind)
        if not estimated.refinable or not estimated.straddles(limit):
            return estimated  # clearly fits, clearly does not, or nothing counts better
        return self.refinement(parts, model, provider_kind, estimated)

    def estimate_parts(
        self, parts: Parts, model: ModelConfig, provider_kind: str, per_family: dict[str, tuple[int, int]] | None = None
    ) -> Count:
        """The calibrated estimate of collected `parts` for `model`, with its band (microseconds). Pass one
        `per_family` dict for all the models of one request: the uncalibrated estimate is made once per family."""
        family = FAMILIES[family_of(model, provider_kind)]
        self._families.setdefault(model.name, family.name)
        if per_family is None:
            basis, fixed = estimate_parts(parts, family)
        else:
            if family.name not in per_family:
                per_family[family.name] = estimate_parts(parts, family)
            basis, fixed = per_family[family.name]
        ratio, lo, hi = self._stats_for(model.name, "estimate", family.name).calibration()
        tokens = basis * ratio
        return Count(
            round(tokens) + fixed,
            False,
            "estimate",
            math.ceil(tokens * hi),
            basis,
            fixed,
            below=math.floor(tokens * lo),
            refinable=family.name in TOKENIZER_OF,
        )

    def refinement(self, parts: Parts, model: ModelConfig, provider_kind: str, estimated: Count) -> _Exact:
        """The tokenizer count of `parts` for `model`, to `run()` here or, when `heavy`, in a thread."""
        family = FAMILIES[family_of(model, provider_kind)]
        method = TOKENIZER_OF[family.name]
        lazy = self.tekken if method == "tekken" else self.o200k
        heavy = not lazy.loaded or parts.chars > self.thread_chars
        return _Exact(self, model.name, method, family, parts, lazy, estimated, heavy)

    def preload(self) -> dict[str, float | None]:
        """Load both tokenizers now (e.g. `await asyncio.to_thread(counter.preload)` after start-up)."""
        for lazy in (self.tekken, self.o200k):
            try:
                lazy.get()
            except TokenizerUnavailable:
                pass
        return {"tekken": self.tekken.load_seconds, "o200k": self.o200k.load_seconds}

    # -- calibration ------------------------------------------------------------------------------

    def _stats_for(self, model: str, method: str, family: str | None = None) -> ErrorStats:
        key = (model, method)
        stats = self._stats.get(key)
        if stats is not None:
            return stats
        family = family or self._families.get(model) or _family_from_name(model)
        ratio, lo, hi = DEFAULTS.get((method, family), DEFAULTS[("estimate", "other")])
        stats = ErrorStats(ratio, lo, hi, window=self.window, min_samples=self.min_samples)
        with self._lock:
            if len(self._stats) >= self.max_tracked:
                return stats  # untracked: defaults only, never stored
            return self._stats.setdefault(key, stats)

    def observe(self, model_name: str, counted: Count | int, reported: int, method: str = "estimate") -> None:
        """Record the provider's reported prompt tokens against our count of the same request.

        Pass the `Count` that `count` returned (its basis and method are used; counts that include
        images or other fixed-cost parts are skipped, their cost being an upper bound), or an
        uncalibrated count (`Count.basis`) with its method.
        """
        if isinstance(counted, Count):
            if counted.fixed:
                return
            basis, method = counted.basis, counted.method
        else:
            basis = counted
        if basis > 0 and reported > 0:
            self._stats_for(model_name, method).add(reported / basis)

    def error_stats(self, model_name: str, method: str = "estimate") -> dict[str, float | int | None]:
        """n, mean, p01, p50, p99 of reported/counted ratios, and the calibration in use (ratio, lo, hi)."""
        return self._stats_for(model_name, method).snapshot()

    def tracked(self) -> list[tuple[str, str]]:
        """(model, method) pairs with statistics, for metrics."""
        return sorted(self._stats)


def _count(basis: int, fixed: int, ratio: float, lo: float, hi: float, method: str, exact: bool) -> Count:
    tokens = basis * ratio
    return Count(round(tokens) + fixed, exact, method, math.ceil(tokens * hi), basis, fixed, math.floor(tokens * lo))


@dataclass(slots=True)
class _Exact:
    """The tokenizer step of a count, to run here or in a thread (`heavy`)."""

    counter: TokenCounter
    model: str
    method: str
    family: Family
    parts: Parts
    lazy: Lazy
    estimated: Count
    heavy: bool

    def run(self) -> Count:
        try:
            encoding = self.lazy.get()
        except TokenizerUnavailable:  # logged once by Lazy
            return self.estimated
        basis = count_texts(encoding, _texts(self.parts, self.family))
        basis += self.parts.overhead(self.family)
        ratio, lo, hi = self.counter._stats_for(self.model, self.method, self.family.name).calibration()
        fixed = self.parts.fixed(self.family)
        return _count(basis, fixed, ratio, lo, hi, self.method, exact=self.method == "tekken")


def _family_from_name(model: str) -> str:
    lowered = model.lower()
    return (
        "mistral" if lowered.startswith(MISTRAL_PREFIXES) else "kimi" if lowered.startswith(KIMI_PREFIXES) else "other"
    )


def _texts(parts: Parts, family: Family) -> list[str]:
    """What the tokenizer encodes: the texts, and structured parts as the template would write them."""
    if not parts.structured:
        return parts.texts
    if family.name == "mistral":  # mistral_common: json.dumps with its default ", " and ": "
        blob = [json.dumps(item, default=str) for item in parts.structured]
    else:
        blob = [compact_json(item).decode() for item in parts.structured]
    return [*parts.texts, *blob]
