"""A request's decision inputs as its ledger row records them (`LedgerRow.decision`, migration 6), and read back.

The settlement of every request served by the pipeline writes what the routing decision read, so that a policy can
later be replayed over real traffic without keeping any prompt text:

    {"counts": {"mistral-medium-3.5": 1180, "kimi-k2.6": 1096, ...},   prompt tokens counted for each catalog model
     "tokens": 1180,                                                    the model-neutral count (Mistral's estimate)
     "capabilities": ["chat", "tools"],                                 what the request needs (its operation first)
     "max_tokens": 256,                                                 as the client asked (null: not set)
     "n": 1,                                                            answers asked for (n or best_of)
     "residency": ["eu"],                                               the x-gateway-residency header (null: none)
     "expected_output": 256}                                            the output the decision priced

Rows written before migration 6, and lines run on a provider's batch API, have none: `inputs_of` approximates those
from what the row has (the billed prompt tokens as the count, the endpoint as the capability).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

import orjson

from gateway.store.base import LedgerRow
from gateway.tokens import Count

# The operation (and so the capability) each front door's requests run as (`gateway.pipeline.request`): the legacy
# completions door is chat unless it carried a `suffix` (FIM), which a row without inputs cannot tell.
OPERATION_OF_ENDPOINT = {
    "chat": "chat",
    "completions": "chat",
    "fim": "fim",
    "embeddings": "embeddings",
    "messages": "chat",
    "responses": "chat",
}


def encode_inputs(
    counts: Mapping[str, Count],
    tokens: int,
    capabilities: Collection[str],
    max_tokens: int | None,
    n: int,
    residency: Collection[str] | None,
    expected_output: int,
) -> str:
    """The JSON text of one request's decision inputs (on the request path: one dict and one dump)."""
    return orjson.dumps(
        {
            "counts": {name: count.tokens for name, count in counts.items()},
            "tokens": tokens,
            "capabilities": sorted(capabilities),
            "max_tokens": max_tokens,
            "n": n,
            "residency": sorted(residency) if residency is not None else None,
            "expected_output": expected_output,
        }
    ).decode()


def residency_regions(header: str | None) -> list[str] | None:
    """The regions of an `x-gateway-residency` header, read as the pipeline reads it (`pipeline.plan`), which has
    refused an unknown or empty one before any row is written."""
    if header is None:
        return None
    return [part.strip().lower() for part in header.split(",") if part.strip()]


@dataclass(frozen=True, slots=True)
class DecisionInputs:
    """What `decide` needs of one past request. `recorded` False: approximated from a row without inputs."""

    counts: dict[str, int]
    tokens: int
    capabilities: frozenset[str]
    max_tokens: int | None
    n: int
    residency: frozenset[str] | None
    recorded: bool

    def expected_output(self, default_expected_output: int) -> int:
        """The output the decision prices: none for embeddings, else `max_tokens`, else the gateway's default."""
        if "embeddings" in self.capabilities:
            return 0
        return self.max_tokens or default_expected_output


def inputs_of(row: LedgerRow) -> DecisionInputs:
    """The row's recorded inputs, or (none recorded, or unreadable) what the row itself says."""
    if row.decision is not None:
        try:
            return _parsed(orjson.loads(row.decision))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            pass  # (written by this module, so only a hand-edited row gets here: approximated like an old one)
    return DecisionInputs(
        counts={},
        tokens=max(row.prompt_tokens, 0),
        capabilities=frozenset({OPERATION_OF_ENDPOINT.get(row.endpoint, "chat")}),
        max_tokens=None,
        n=1,
        residency=None,
        recorded=False,
    )


def _parsed(data: dict[str, object]) -> DecisionInputs:
    counts = data["counts"]
    capabilities = data["capabilities"]
    residency = data.get("residency")
    max_tokens = data.get("max_tokens")
    if not isinstance(counts, dict) or not isinstance(capabilities, list):
        raise TypeError("counts must be an object and capabilities a list")
    if residency is not None and not isinstance(residency, list):
        raise TypeError("residency must be a list or null")
    return DecisionInputs(
        counts={str(name): int(value) for name, value in counts.items()},
        tokens=int(data["tokens"]),  # type: ignore[call-overload]
        capabilities=frozenset(str(c) for c in capabilities),
        max_tokens=int(max_tokens) if max_tokens is not None else None,  # type: ignore[call-overload]
        n=int(data.get("n") or 1),  # type: ignore[call-overload]
        residency=frozenset(str(r) for r in residency) if residency is not None else None,
        recorded=True,
    )
