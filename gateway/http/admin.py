"""Admin API (master key only): teams, keys, spend."""

from __future__ import annotations

from starlette.routing import Route

from gateway.core import Gateway


def routes(gateway: Gateway) -> list[Route]:
    return []
