"""litellm's bundled model catalog, read offline, compared with ours.

The catalog is the JSON file inside litellm's wheel; reading it directly (not
importing litellm, which takes seconds and would try to fetch the map over the
network) keeps `gateway models` fast and offline.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any

import orjson

from gateway.catalog import Catalog, ModelConfig

MILLION = Decimal(1_000_000)


@lru_cache(maxsize=1)
def bundled_catalog() -> dict[str, Any]:
    spec = importlib.util.find_spec("litellm")
    if spec is None or spec.origin is None:
        return {}
    path = Path(spec.origin).parent / "model_prices_and_context_window_backup.json"
    try:
        return orjson.loads(path.read_bytes())
    except OSError:
        return {}


@dataclass(frozen=True)
class Difference:
    model: str
    field: str
    ours: str
    litellm: str


def _per_million(value: Any) -> Decimal | None:
    if value is None:
        return None
    return (Decimal(str(value)) * MILLION).normalize()


def _entry(model: ModelConfig, bundled: dict[str, Any]) -> dict[str, Any] | None:
    for key in (model.litellm_name, model.upstream_model, model.name):
        if key and isinstance(bundled.get(key), dict):
            return bundled[key]
    return None


def compare(catalog: Catalog) -> dict[str, list[Difference]]:
    """Per model, where the configured window or prices differ from litellm's (empty if unknown there)."""
    bundled = bundled_catalog()
    out: dict[str, list[Difference]] = {}
    for model in catalog.models.values():
        entry = _entry(model, bundled)
        diffs: list[Difference] = []
        if entry is None:
            out[model.name] = diffs
            continue
        window = entry.get("max_input_tokens") or entry.get("max_tokens")
        if window is not None and int(window) != model.context_window:
            diffs.append(Difference(model.name, "context_window", str(model.context_window), str(window)))
        pairs = [
            ("input", model.price.input, entry.get("input_cost_per_token")),
            ("output", model.price.output, entry.get("output_cost_per_token")),
            ("cached_input", model.price.cached_input, entry.get("cache_read_input_token_cost")),
        ]
        for name, ours, theirs in pairs:
            theirs_m = _per_million(theirs)
            if ours is not None and theirs_m is not None and ours.normalize() != theirs_m:
                diffs.append(Difference(model.name, f"price.{name}", f"${ours}", f"${theirs_m}"))
        out[model.name] = diffs
    return out


def listed(model: ModelConfig) -> bool:
    """Whether litellm's bundled catalog has an entry for `model` (by its litellm name, upstream id or name)."""
    return _entry(model, bundled_catalog()) is not None


def as_json(catalog: Catalog, differences: dict[str, list[Difference]]) -> str:
    models = []
    for model in catalog.models.values():
        card = model.model_dump(mode="json")
        card["region"] = catalog.provider_of(model).region
        card["litellm_differences"] = [d.__dict__ for d in differences.get(model.name, [])]
        models.append(card)
    return orjson.dumps({"models": models}, option=orjson.OPT_INDENT_2).decode()
