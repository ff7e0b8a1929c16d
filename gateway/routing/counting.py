"""How the gateway counts a request's prompt tokens before the call (the context-fit step and reservations).

`PromptCounts` collects a body's text once, then gives each catalog model its own `Count`: the calibrated
estimate of the model's tokenizer family (microseconds even for a 4 MB body; typical error 6%), with the
band the estimate's error allows. The context step decides on the band when it is clear of the model's
limit; when the band straddles it, `refine` counts with the model's tokenizer (Tekken for Mistral, o200k
times a learned ratio for Kimi; off the event loop for large texts) and the step decides on that count.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from gateway.tokens import FAMILIES, Count, TokenCounter, collect
from gateway.tokens.heuristic import Parts, estimate_parts

if TYPE_CHECKING:
    from gateway.catalog import Catalog

SIZE_FLOOR_DIVISOR = 16  # a body's prompt is never counted below a sixteenth of its bytes


class PromptCounts:
    """One request's prompt tokens, per catalog model (`by_model`), and one model-neutral figure (`tokens`,
    the Mistral-family estimate) for reports and cost estimates.

    Every count is at least a sixteenth of the body's size, for bodies whose text the counters do not read
    (unknown fields), so a large body is never priced or routed as nearly empty.
    """

    def __init__(self, counter: TokenCounter, catalog: Catalog, body: dict[str, Any], size: int) -> None:
        self._counter, self._catalog = counter, catalog
        self.parts = collect(body)
        self.floor = size // SIZE_FLOOR_DIVISOR
        per_family: dict[str, tuple[int, int]] = {}
        self.by_model: dict[str, Count] = {}
        for model in catalog.models.values():
            kind = catalog.provider_of(model).kind
            self.by_model[model.name] = counter.estimate_parts(self.parts, model, kind, per_family).at_least(self.floor)
        # The model-neutral figure: Mistral's estimate when a Mistral model was counted, else the first
        # family's (not a second pass over the text just for it).
        neutral = per_family.get("mistral") or next(iter(per_family.values()), None)
        if neutral is None:
            neutral = estimate_parts(self.parts, FAMILIES["mistral"])
        self.tokens = max(sum(neutral), self.floor)

    async def refine(self, names: Iterable[str]) -> None:
        """Count `names` with their tokenizers (in a thread when loading or encoding is heavy)."""
        for name in names:
            current = self.by_model.get(name)
            if current is None or not current.refinable:
                continue
            model = self._catalog.models[name]
            step = self._counter.refinement(self.parts, model, self._catalog.provider_of(model).kind, current)
            counted = await asyncio.to_thread(step.run) if step.heavy else step.run()
            self.by_model[name] = replace(counted.at_least(self.floor), refinable=False)

    def done(self) -> None:
        """Counting is over: drop the collected text (a streamed answer can outlive the request body by minutes)."""
        self.parts = Parts()

    def upper(self, names: Iterable[str]) -> int:
        """The largest upper bound among `names` (what a reservation covering any of them must price)."""
        return max((self.by_model[n].upper for n in names if n in self.by_model), default=self.tokens)
