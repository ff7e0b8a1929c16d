"""How long an answer is expected to be: a high percentile of recent answers, per team and model.

The expectation prices what explain and the routing cost steps show; it is learned per team and model
(falling back to the model's, then to the configured default), so one team's short answers cannot
shrink another team's figures, nor its long ones inflate them. Admission itself prices the worst case
(see accounting.py): an expectation is a guess, and guesses cannot bound a budget.
"""

from __future__ import annotations

from collections import deque

WINDOW = 256  # recent answers remembered per (team, model) and per model
PERCENTILE = 0.95
MIN_SAMPLES = 8  # below this, the next level's figure applies (team -> model -> default)
MAX_TRACKED = 4096  # (team, model) pairs remembered; past it, new pairs use the model's figure


class OutputEstimator:
    def __init__(self, default_tokens: int, max_tracked: int = MAX_TRACKED) -> None:
        self.default_tokens = default_tokens
        self.max_tracked = max_tracked
        self._recent: dict[tuple[str | None, str], deque[int]] = {}  # (team or None for the model's, model)
        self._cached: dict[tuple[str | None, str], int | None] = {}

    def seed(self, model: str, tokens: list[int]) -> None:
        """The model's history (all teams), read from the ledger at start-up."""
        self._recent[(None, model)] = deque(tokens[:WINDOW], maxlen=WINDOW)
        self._cached.pop((None, model), None)

    def observe(self, model: str, completion_tokens: int, team: str | None = None) -> None:
        keys: list[tuple[str | None, str]] = [(None, model)]
        if team is not None:
            keys.append((team, model))
        for key in keys:
            recent = self._recent.get(key)
            if recent is None:
                if key[0] is not None and len(self._recent) >= self.max_tracked:
                    continue
                recent = self._recent[key] = deque(maxlen=WINDOW)
            recent.append(completion_tokens)
            self._cached.pop(key, None)

    def _percentile(self, key: tuple[str | None, str]) -> int | None:
        if key in self._cached:
            return self._cached[key]
        recent = self._recent.get(key)
        value = None
        if recent is not None and len(recent) >= MIN_SAMPLES:
            ordered = sorted(recent)
            value = ordered[min(len(ordered) - 1, int(PERCENTILE * len(ordered)))]
        self._cached[key] = value
        return value

    def learned(self, model: str, team: str | None = None) -> int | None:
        """The team's percentile for the model when it has enough answers, else the model's."""
        if team is not None:
            value = self._percentile((team, model))
            if value is not None:
                return value
        return self._percentile((None, model))

    def expected(self, model: str, max_tokens: int | None, model_max_output: int, team: str | None = None) -> int:
        """min(max_tokens, learned percentile or default), never more than the model can produce."""
        guess = self.learned(model, team)
        guess = self.default_tokens if guess is None else max(guess, 1)
        if max_tokens is not None:
            guess = min(guess, max_tokens)
        if model_max_output:
            guess = min(guess, model_max_output)
        return guess
