"""Per-model, per-method error of our counts against the prompt tokens the provider reports.

Each observation is a ratio `reported / counted` (counted = the uncalibrated count, `Count.basis`).
The calibrated ratio starts at a default and is a running mean with the default as one pseudo-
observation until 1/(n+1) drops below `alpha`, then an EWMA (so it follows a provider's tokenizer or
template change). The band around it (how far the truth may be below or above `counted x ratio`)
is a per-method default until `min_samples` ratios are known (it may widen before, never narrow),
then the 1st and 99th percentiles of the last `window` ratios, at least `floor`.
"""

from __future__ import annotations

import math
import threading
from collections import deque

RATIO_BOUNDS = (0.2, 5.0)  # ratios outside are not tokenizer error (cached or truncated prompts, bugs): dropped


class ErrorStats:
    def __init__(
        self,
        ratio: float,
        lo: float,
        hi: float,
        *,
        window: int = 256,
        alpha: float = 0.05,
        min_samples: int = 20,
        floor: float = 0.01,
    ) -> None:
        self.default_ratio, self.default_lo, self.default_hi = ratio, lo, hi
        self.alpha, self.min_samples, self.floor = alpha, min_samples, floor
        self.n = 0  # all observations ever (the window keeps the last `window`)
        self._ratio = ratio
        self._window: deque[float] = deque(maxlen=window)
        self._sorted: list[float] | None = []
        self._lock = threading.Lock()

    def add(self, ratio: float) -> bool:
        if not (RATIO_BOUNDS[0] <= ratio <= RATIO_BOUNDS[1]):
            return False
        with self._lock:
            self.n += 1
            self._ratio += (ratio - self._ratio) * max(self.alpha, 1.0 / (self.n + 1))
            self._window.append(ratio)
            self._sorted = None
        return True

    def _quantile(self, q: float) -> float:
        values = self._sorted
        if values is None:
            values = self._sorted = sorted(self._window)
        return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]

    def calibration(self) -> tuple[float, float, float]:
        """(ratio, lo, hi): the truth is expected within counted x ratio x (1 - lo) .. (1 + hi)."""
        with self._lock:
            ratio = self._ratio
            if not self._window:
                return ratio, self.default_lo, self.default_hi
            lo = max(self.floor, 1.0 - self._quantile(0.01) / ratio)
            hi = max(self.floor, self._quantile(0.99) / ratio - 1.0)
            if len(self._window) < self.min_samples:
                lo, hi = max(lo, self.default_lo), max(hi, self.default_hi)
            return ratio, lo, hi

    def snapshot(self) -> dict[str, float | int | None]:
        ratio, lo, hi = self.calibration()
        with self._lock:
            window = list(self._window)
            p50 = self._quantile(0.5) if window else None
            p01 = self._quantile(0.01) if window else None
            p99 = self._quantile(0.99) if window else None
        return {
            "n": self.n,
            "mean": sum(window) / len(window) if window else None,
            "p01": p01,
            "p50": p50,
            "p99": p99,
            "ratio": ratio,
            "lo": lo,
            "hi": hi,
        }
