"""How many completion tokens to reserve for: a high percentile of recent answers, per model.

Reserving `max_tokens` (the worst case) blocks coding agents long before their
budget is spent; reserving what answers really are keeps requests flowing,
and the settlement corrects the reservation to the real cost afterwards.
"""

from __future__ import annotations

from collections import deque

WINDOW = 256  # recent answers remembered per model
PERCENTILE = 0.95
MIN_SAMPLES = 8  # below this, the configured default applies


class OutputEstimator:
    def __init__(self, default_tokens: int) -> None:
        self.default_tokens = default_tokens
        self._recent: dict[str, deque[int]] = {}
        self._cached: dict[str, int] = {}

    def seed(self, model: str, tokens: list[int]) -> None:
        self._recent[model] = deque(tokens[:WINDOW], maxlen=WINDOW)
        self._cached.pop(model, None)

    def observe(self, model: str, completion_tokens: int) -> None:
        self._recent.setdefault(model, deque(maxlen=WINDOW)).append(completion_tokens)
        self._cached.pop(model, None)

    def learned(self, model: str) -> int | None:
        if model in self._cached:
            return self._cached[model]
        recent = self._recent.get(model)
        if recent is None or len(recent) < MIN_SAMPLES:
            return None
        ordered = sorted(recent)
        value = ordered[min(len(ordered) - 1, int(PERCENTILE * len(ordered)))]
        self._cached[model] = value
        return value

    def expected(self, model: str, max_tokens: int | None, model_max_output: int) -> int:
        """min(max_tokens, learned percentile or default), never more than the model can produce."""
        guess = self.learned(model)
        guess = self.default_tokens if guess is None else max(guess, 1)
        if max_tokens is not None:
            guess = min(guess, max_tokens)
        if model_max_output:
            guess = min(guess, model_max_output)
        return guess
