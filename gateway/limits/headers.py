"""OpenAI's rate-limit headers (`x-ratelimit-limit-requests`, `-remaining-`, `-reset-`, and the `-tokens` set) and
`Retry-After`, from the limits a request was held to."""

from __future__ import annotations

import math
from collections.abc import Iterable

from gateway.limits.base import Limit, State

HEADER_SUFFIX = {"rpm": "requests", "tpm": "tokens"}


def duration(seconds: float) -> str:
    """A reset time as OpenAI writes it: `20ms`, `1.5s`, `6m0s`."""
    if seconds < 1:
        return f"{max(0, math.ceil(seconds * 1000))}ms"
    if seconds < 60:
        return f"{round(seconds, 3):g}s"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{round(rest, 3):g}s"


def rate_headers(states: Iterable[State]) -> dict[str, str]:
    """For requests and for tokens, the tightest limit (the least remaining): the one a client must pace itself
    by. Concurrency has no OpenAI header (a refusal by it names it in its message and `Retry-After`)."""
    tightest: dict[str, State] = {}
    for state in states:
        kind: str = state.limit.kind
        if kind in HEADER_SUFFIX and (kind not in tightest or state.remaining < tightest[kind].remaining):
            tightest[kind] = state
    headers: dict[str, str] = {}
    for kind, state in tightest.items():
        suffix = HEADER_SUFFIX[kind]
        headers[f"x-ratelimit-limit-{suffix}"] = str(state.limit.amount)
        headers[f"x-ratelimit-remaining-{suffix}"] = str(state.remaining)
        headers[f"x-ratelimit-reset-{suffix}"] = duration(state.reset_seconds)
    return headers


def retry_headers(seconds: float) -> dict[str, str]:
    """`Retry-After` in whole seconds (at least 1: HTTP has no fractions) and OpenAI's `retry-after-ms`, which its
    SDKs prefer."""
    return {"Retry-After": str(max(1, math.ceil(seconds))), "retry-after-ms": str(max(1, math.ceil(seconds * 1000)))}


SCOPE_KINDS = {
    "team": "team",
    "key": "key",
    "team-model": "team_model",
    "provider": "provider",
    "deployment": "deployment",
}


def scope_kind(limit: Limit) -> str:
    """The bounded `scope` label of a limit ("team:NAME" -> "team")."""
    return SCOPE_KINDS.get(limit.scope.partition(":")[0], "other")


def describe(limit: Limit) -> str:
    """A limit in words, for a refusal's message: "team 'a' limit of 30 requests per minute"."""
    kind, _, rest = limit.scope.partition(":")
    what = {"rpm": "requests per minute", "tpm": "tokens per minute", "concurrency": "concurrent requests"}[limit.kind]
    if kind == "team-model":
        team, _, model = rest.partition(":")
        owner = f"team {team!r} limit on model {model!r}"
    elif kind == "key":
        owner = f"API key {rest!r} limit"
    else:
        owner = f"{kind} {rest!r} limit"
    return f"{owner} of {limit.amount:,} {what}"
