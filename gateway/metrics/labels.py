"""Label values, bounded: configuration values pass, anything else becomes `other`.

A client controls the model name it sends, its headers and (through errors) some status codes; none of
that may create a series. Every label value goes through `Bounds`, built from the catalog.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from gateway.metrics.families import (
    BATCH_MODES,
    BATCH_OUTCOMES,
    BATCH_STATUSES,
    ENDPOINT_VALUES,
    LIMIT_KINDS,
    LIMIT_SCOPES,
    STATUS_VALUES,
    STORE_OUTCOMES,
)

if TYPE_CHECKING:
    from gateway.catalog import Catalog

OTHER = "other"
NONE = "none"  # no model or provider involved (refused before routing)
FIXED_REASONS = frozenset(
    {
        "pinned",
        "preferred",
        "rerouted",
        "alias",
        "budget-downgrade",
        "fallback:connect",
        "fallback:timeout",
        "fallback:circuit-open",
        "fallback:capacity",
        "fallback:upstream-429",
        "fallback:quota-exhausted",
        # refusals (model `none`)
        "no_route",
        "model_not_allowed",
        "context_length_exceeded",
        "budget_exceeded",
        "unsupported_capability",
        "invalid_residency",
        "model_not_found",
    }
)
_UPSTREAM_5XX = re.compile(r"^fallback:upstream-5\d\d$")
_STATUSES = frozenset(STATUS_VALUES)
_ENDPOINTS = frozenset(ENDPOINT_VALUES)
_LIMIT_KINDS = frozenset(LIMIT_KINDS)
_STORE_OUTCOMES = frozenset(STORE_OUTCOMES)
_BATCH_VALUES = frozenset(BATCH_MODES) | frozenset(BATCH_OUTCOMES) | frozenset(BATCH_STATUSES)
# `gateway.limits.base.Limit.scope` spells a team's limit on one model `team-model`; the label says `team_model`.
_SCOPES = {scope: scope for scope in LIMIT_SCOPES} | {"team-model": "team_model"}


class Bounds:
    """The label values one catalog allows."""

    def __init__(self, catalog: Catalog) -> None:
        self.models = frozenset(catalog.models) | {"auto"}
        self.providers = frozenset(catalog.providers)
        self.regions = frozenset(catalog.regions)
        windows = {m.context_window for m in catalog.models.values()}
        self._context = frozenset(f"context>{w}" for w in windows)

    def model(self, name: str | None) -> str:
        if name is None:
            return NONE
        return name if name in self.models else OTHER

    def provider(self, name: str | None) -> str:
        if name is None:
            return NONE
        return name if name in self.providers else OTHER

    def reason(self, reason: str | None) -> str:
        if not reason:
            return NONE
        if reason in FIXED_REASONS or reason in self._context or _UPSTREAM_5XX.match(reason):
            return reason
        if reason.startswith("residency:") and set(reason[10:].split(",")) <= self.regions:
            return reason
        return OTHER

    @staticmethod
    def status(status: int) -> str:
        text = str(status)
        return text if text in _STATUSES else OTHER

    @staticmethod
    def endpoint(name: str | None) -> str:
        """The front door; None: the request was refused before its door read it (a bad key, a body that is not
        JSON)."""
        if name is None:
            return NONE
        return name if name in _ENDPOINTS else OTHER

    @staticmethod
    def team(name: str | None) -> str:
        """Team names come from the database, where only the master key creates them: bounded by configuration."""
        return name if name else NONE

    @staticmethod
    def scope(name: str) -> str:
        """Whose limit: a scope's kind (`team`, `key`, `team_model`, `provider`, `deployment`), given bare or as a
        limit's whole scope (`team:web`, `team-model:web:kimi-k2.6`: the part before the first colon)."""
        return _SCOPES.get(name.partition(":")[0], OTHER)

    @staticmethod
    def limit(kind: str) -> str:
        """Which limit: `rpm`, `tpm`, `concurrency`."""
        return kind if kind in _LIMIT_KINDS else OTHER

    @staticmethod
    def batch(value: str) -> str:
        """A batch line's mode or outcome, or a batch's status (`gateway.metrics.families.BATCH_*`)."""
        return value if value in _BATCH_VALUES else OTHER

    @staticmethod
    def store_outcome(outcome: str) -> str:
        """What an unreachable limit store led to: `fail_open`, `fail_closed`."""
        return outcome if outcome in _STORE_OUTCOMES else OTHER
