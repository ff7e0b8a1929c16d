"""Every value that came from a request is text on the console's pages, never markup: a team named
`<script>alert(1)</script>` (a row no admin API accepts, but a database may hold), with keys, models, providers,
route reasons and error messages of the same kind."""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import quote

import httpx

from gateway.auth.keys import generate_key, hash_key, new_key_id
from gateway.state import Gateway
from gateway.store.base import KeyRecord, Team
from tests.console.harness import csrf_of, login, post, record, row, run_console

SCRIPT = "<script>alert(1)</script>"
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"
ATTRIBUTE = '"><img src=x onerror=alert(2)>'


def assert_escaped(page: httpx.Response, shows: str = ESCAPED) -> None:
    assert SCRIPT not in page.text, page.request.url
    assert "<img src=x" not in page.text, page.request.url
    assert shows in page.text, f"{page.request.url} does not show the value"


def test_hostile_values_are_escaped_on_every_page_that_shows_them(tmp_path: Path) -> None:
    async def scenario(gateway: Gateway, client: httpx.AsyncClient) -> None:
        team = Team(SCRIPT, budget_nanos=10_000_000_000, created_at=int(time.time()))
        await gateway.store.create_team(team)  # (straight into the store: the admin API refuses such a name)
        key = KeyRecord(new_key_id(), SCRIPT, ATTRIBUTE + SCRIPT, SCRIPT[:10], hash_key(generate_key()))
        await gateway.store.create_key(key)
        hostile = row(
            SCRIPT,
            3_000_000,
            key_id=key.id,
            key_prefix=SCRIPT,
            requested_model=SCRIPT,
            model=SCRIPT,
            provider=SCRIPT,
            region=SCRIPT,
            route_reason=SCRIPT + ATTRIBUTE,
            status=502,
        )
        await record(gateway, hostile, team=team)
        token = await login(client)
        team_path = "/ui/teams/" + quote(SCRIPT, safe="")
        pages = [
            await client.get("/ui"),
            await client.get("/ui/teams"),
            await client.get(team_path),
            await client.get("/ui/requests"),
            await client.get("/ui/requests?" + "&".join(f"{f}={quote(SCRIPT)}" for f in ("team", "model", "q"))),
            await client.get(f"/ui/requests/{hostile.id}"),
            await client.get("/ui/routing"),
        ]
        for page in pages:
            assert page.status_code == 200, page.request.url
            assert_escaped(page)
        filtered = pages[4].text
        assert f'value="{ESCAPED}"' in filtered  # the filter typed is shown back in its field, escaped
        explained = await post(
            client,
            "/ui/routing/explain",
            token,
            body='{"model": "auto", "messages": [{"role": "user", "content": "hi"}]}',
            team=SCRIPT,
            format="chat",
        )
        assert explained.status_code == 200
        assert_escaped(explained)
        assert "Decision for team " + ESCAPED in explained.text
        replayed = await post(client, "/ui/routing/replay", token, policy="name: default\n", since="1d", replay_team="")
        assert replayed.status_code == 200, replayed.text
        assert_escaped(replayed)
        # Error messages quote what was asked for, escaped too.
        for page in (
            await client.get("/ui/teams/" + quote(SCRIPT + "x", safe="")),
            await client.get("/ui/requests/" + quote(SCRIPT, safe="")),
            await client.get("/ui/requests?status=" + quote(SCRIPT)),
            await post(client, "/ui/teams", token, name=SCRIPT, period="monthly"),
            await post(client, "/ui/routing/explain", token, body="{", team=SCRIPT, format="chat", headers="a: b"),
            await post(client, "/ui/routing/explain", token, body="{}", team="", format=SCRIPT),
        ):
            assert page.status_code in (400, 404), page.text
            assert SCRIPT not in page.text
        # The team's own forms still work on such a name (links and actions are URL-encoded).
        edit = await post(client, team_path, csrf_of(pages[2].text), budget_usd="20")
        assert edit.status_code == 303
        changed = await gateway.store.get_team(SCRIPT)
        assert changed is not None and changed.budget_nanos == 20_000_000_000

    run_console(tmp_path, scenario)
