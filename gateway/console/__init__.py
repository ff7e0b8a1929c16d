"""The web console at `/ui`, for the people who run the gateway: overview, teams and keys, requests, routing
(policies, explain, replay). Server-rendered pages (Jinja2, autoescaped) with SVG charts, one stylesheet and one
small script shipped in the package; a session from the master key, stateless and signed (`sessions`).

`routes(gateway, explain)` gives the app its routes (`gateway.http.app` mounts them after the API's: the API's
hot path never sees them)."""

from __future__ import annotations

from gateway.console.app import routes

__all__ = ["routes"]
