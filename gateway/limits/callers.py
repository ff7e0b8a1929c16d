"""The limits a caller is held to: its team's, its key's, and its team's on the model that serves it."""

from __future__ import annotations

from gateway.limits.base import Limit, LimitKind, Want
from gateway.store.base import KeyRecord, Rates, Team


def team_scope(team: str) -> str:
    return f"team:{team}"


def key_scope(key_id: str) -> str:
    return f"key:{key_id}"


def team_model_scope(team: str, model: str) -> str:
    return f"team-model:{team}:{model}"


def rate_limits(scope: str, rates: Rates) -> list[Limit]:
    """The limits `rates` sets on `scope`, in a fixed order (rpm, tpm, concurrency)."""
    figures: tuple[tuple[LimitKind, int | None], ...] = (
        ("rpm", rates.rpm),
        ("tpm", rates.tpm),
        ("concurrency", rates.max_concurrent),
    )
    return [Limit(scope, kind, amount) for kind, amount in figures if amount is not None]


def caller_limits(team: Team, key: KeyRecord | None) -> list[Limit]:
    """The team's and the key's limits (whatever model serves the request)."""
    limits = rate_limits(team_scope(team.name), team.rates)
    if key is not None:
        limits += rate_limits(key_scope(key.id), key.rates)
    return limits


def model_limits(team: Team, model: str) -> list[Limit]:
    """The team's limits on `model` (`model_rates`), if it has any."""
    rates = team.model_rates.get(model)
    return rate_limits(team_model_scope(team.name, model), rates) if rates else []


def wants(limits: list[Limit], tokens: int) -> list[Want]:
    """What one request takes of each limit: 1 request, `tokens` tokens (its prompt and expected output), 1 slot."""
    return [Want(limit, tokens if limit.kind == "tpm" else 1) for limit in limits]
