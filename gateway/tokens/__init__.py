"""Prompt token counting for routing: a fast estimate always, a tokenizer near a window boundary.

    counter = TokenCounter()                      # once per gateway; loads nothing yet
    n = estimate(body)                            # any request, microseconds even for 4 MB
    c = await counter.count_async(body, model, provider.kind, limit=window - expected_output)
    if not c.fits(limit): ...                     # c.tokens + c.margin > limit
    counter.observe(model.name, c, usage.prompt_tokens)   # after the call: calibrates

`count` starts from the estimate and its band (±20% for Mistral, ±25% otherwise, then learned per
model from reported usage). Only when the band straddles `limit` does it count with a tokenizer:
Tekken for Mistral models (`exact=True`), o200k_base times a learned ratio for Kimi (no package ships
Kimi's vocabulary; `exact=False`), nothing better for other models. See the submodules: `heuristic`
(the heuristic and its accuracy), `vocab` (offline tokenizer files, load times), `calibration`.
"""

from gateway.tokens.counter import Count, TokenCounter, family_of
from gateway.tokens.heuristic import FAMILIES, Family, collect, estimate
from gateway.tokens.vocab import TokenizerUnavailable

__all__ = ["Count", "FAMILIES", "Family", "TokenCounter", "TokenizerUnavailable", "collect", "estimate", "family_of"]
