"""No console page answers hostile form fields or query strings with a 5xx: every POST route of the console (found
from the router) and every page, sent odd values (NUL, control characters, huge, unicode, markup, numbers out of
range, dates that do not exist, YAML that PyYAML's constructors refuse) in every field any form has. Seeded, so a
failure names a request that can be sent again."""

from __future__ import annotations

import random
from pathlib import Path
from urllib.parse import urlencode

import httpx
from starlette.routing import Route

from gateway.admin import service
from gateway.state import Gateway
from tests.console.harness import login, run_console

VALUES = [
    "", "\x00", "a\x00b", "\x07", "x" * 5000, "-1", "1e309", "NaN", "inf", "0", "99999999999999999999999", "ü",
    "<script>", "../..", "%00", "\r\n", " ", "1.5", "daily", "monthly", "eu", "kimi-k2.6", "auto",
    "name: default\x00", "{", "[]", "true", "2026-13-45", "30d", "-5d", "name: x\nregions: !!int abc\n",
    "[" * 3000,
]  # fmt: skip
FIELDS = [
    "name", "budget_usd", "period", "soft_limit_pct", "regions", "models", "policy", "rpm", "tpm", "max_concurrent",
    "model_limits", "confirm", "key_name", "expires_at", "body", "team", "headers", "policy_name", "since", "until",
    "format", "replay_team", "next", "weight", "budget", "page", "order", "status", "model", "provider", "key", "q",
    "from", "to", "batch", "outcome", "endpoint", "route_reason", "region", "door",
]  # fmt: skip
PAGES = ["/ui", "/ui/teams", "/ui/teams/alpha", "/ui/requests", "/ui/routing", "/ui/requests/x", "/ui/teams/%00"]


def test_no_hostile_form_or_query_gets_a_5xx(tmp_path: Path) -> None:
    async def scenario(gateway: Gateway, client: httpx.AsyncClient) -> None:
        await service.create_team(gateway.store, {"name": "alpha", "budget_usd": 5}, "UTC", gateway.catalog)
        key_id = str((await service.create_key(gateway.store, {"team": "alpha"}))["id"])
        token = await login(client)
        app = client._transport.app  # type: ignore[attr-defined]
        paths = [
            route.path.replace("{name:path}", "alpha").replace("{key_id}", key_id)
            for route in app.router.routes
            if isinstance(route, Route) and route.path.startswith("/ui") and "POST" in (route.methods or ())
            if route.path not in ("/ui/login", "/ui/logout")
        ]
        rng = random.Random(2026)
        every_field = [(path, [(name, value) for name in FIELDS]) for path in paths for value in VALUES]
        mixed = [
            (rng.choice(paths), [(name, rng.choice(VALUES)) for name in rng.sample(FIELDS, rng.randint(0, 8))])
            for _ in range(300)
        ]
        for path, fields in every_field + mixed:  # each value in every field of every form, then mixtures
            answer = await client.post(
                path,
                content=urlencode([*fields, ("csrf_token", token)]).encode(),
                headers={"content-type": "application/x-www-form-urlencoded"},
            )
            assert answer.status_code < 500, (path, fields, answer.text[:300])
            assert "Traceback" not in answer.text
            if path.endswith("/delete") and answer.status_code < 400:  # (the team is needed by the other routes)
                await service.create_team(gateway.store, {"name": "alpha", "budget_usd": 5}, "UTC", gateway.catalog)
        for _ in range(200):
            page = rng.choice(PAGES)
            query = urlencode([(rng.choice(FIELDS), rng.choice(VALUES)) for _ in range(rng.randint(0, 5))])
            answer = await client.get(f"{page}?{query}")
            assert answer.status_code < 500, (page, query[:300], answer.text[:300])

    run_console(tmp_path, scenario)
