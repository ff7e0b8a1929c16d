"""Teams and keys in the console: every change through the admin service (its validation, its errors shown on the
form), keys shown once and working at once, revoked at once; spend over time by model and by provider."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx

from gateway.state import Gateway
from gateway.store.base import Team
from tests.console.harness import login, post, record, row, run_console
from tests.support.inprocess import HELLO, bearer


def test_a_post_to_teams_with_name_budget_and_period_creates_a_team(tmp_path: Path) -> None:
    async def scenario(gateway: Gateway, client: httpx.AsyncClient) -> None:
        token = await login(client)
        answer = await post(client, "/ui/teams", token, name="web", budget_usd="50", period="weekly")
        assert answer.status_code == 303
        assert answer.headers["location"] == "/ui/teams/web?created=1"
        team = await gateway.store.get_team("web")
        assert team is not None and team.budget_nanos == 50_000_000_000 and team.period == "weekly"
        page = await client.get(answer.headers["location"])
        assert 'id="team-created"' in page.text and "$50.00" in page.text
        listing = await client.get("/ui/teams")
        assert 'id="team-link-web"' in listing.text

    run_console(tmp_path, scenario)


def test_the_full_team_form_sets_every_field(tmp_path: Path) -> None:
    async def scenario(gateway: Gateway, client: httpx.AsyncClient) -> None:
        token = await login(client)
        fields = {
            "name": "eu-team",
            "budget_usd": "1250.5",
            "period": "monthly",
            "soft_limit_pct": "80",
            "policy": "eu-only",
            "rpm": "60",
            "tpm": "100000",
            "max_concurrent": "4",
            "regions": ["", "eu"],
            "models": ["", "mistral-medium-3.5", "codestral"],
            "model_limits": '{"codestral": {"rpm": 10}}',
        }
        answer = await client.post("/ui/teams", data={"csrf_token": token, **fields})
        assert answer.status_code == 303, answer.text
        team = await gateway.store.get_team("eu-team")
        assert team is not None
        assert team.budget_nanos == 1_250_500_000_000 and team.soft_limit_pct == 80 and team.policy == "eu-only"
        assert (team.rates.rpm, team.rates.tpm, team.rates.max_concurrent) == (60, 100_000, 4)
        assert team.regions == ["eu"] and team.models == ["mistral-medium-3.5", "codestral"]
        assert team.model_rates["codestral"].rpm == 10
        refused = await post(client, "/ui/teams", token, name="other", period="monthly", rpm="1,000")
        assert refused.status_code == 400 and "Invalid &#39;rpm&#39;" in refused.text

    run_console(tmp_path, scenario)


def test_a_refused_team_shows_the_services_message_and_what_was_typed(tmp_path: Path) -> None:
    async def scenario(gateway: Gateway, client: httpx.AsyncClient) -> None:
        token = await login(client)
        bad = await post(client, "/ui/teams", token, name="web", budget_usd="lots", period="monthly")
        assert bad.status_code == 400
        assert "Invalid &#39;budget_usd&#39;" in bad.text and 'value="lots"' in bad.text
        unknown = await post(client, "/ui/teams", token, name="web", period="monthly", policy="eu_only")
        assert unknown.status_code == 400 and "unknown policy &#39;eu_only&#39;" in unknown.text
        await post(client, "/ui/teams", token, name="web", period="monthly")
        duplicate = await post(client, "/ui/teams", token, name="web", period="monthly")
        assert duplicate.status_code == 400 and "already exists" in duplicate.text
        assert [t.name for t in await gateway.store.list_teams()] == ["web"]

    run_console(tmp_path, scenario)


def test_editing_a_team_changes_its_budget_and_clears_what_is_emptied(tmp_path: Path) -> None:
    async def scenario(gateway: Gateway, client: httpx.AsyncClient) -> None:
        token = await login(client)
        await post(client, "/ui/teams", token, name="web", budget_usd="50", period="monthly", rpm="60")
        form = (await client.get("/ui/teams/web")).text
        assert 'name="budget_usd" id="team-budget" value="50"' in form
        assert 'name="rpm" id="team-rpm" value="60"' in form
        answer = await client.post(
            "/ui/teams/web",
            data={
                "csrf_token": token,
                "budget_usd": "75.25",
                "period": "daily",
                "soft_limit_pct": "",
                "policy": "default",
                "rpm": "",
                "tpm": "",
                "max_concurrent": "",
                "regions": "",
                "models": "",
                "model_limits": "",
            },
        )
        assert answer.status_code == 303 and answer.headers["location"] == "/ui/teams/web?updated=1"
        team = await gateway.store.get_team("web")
        assert team is not None and team.budget_nanos == 75_250_000_000 and team.period == "daily"
        assert team.rates.rpm is None
        refused = await post(client, "/ui/teams/web", token, budget_usd="-1")
        assert refused.status_code == 400 and "must not be negative" in refused.text
        assert 'value="-1"' in refused.text

    run_console(tmp_path, scenario)


def test_deleting_a_team_needs_its_confirmation(tmp_path: Path) -> None:
    async def scenario(gateway: Gateway, client: httpx.AsyncClient) -> None:
        token = await login(client)
        await post(client, "/ui/teams", token, name="web", period="monthly")
        unconfirmed = await post(client, "/ui/teams/web/delete", token)
        assert unconfirmed.status_code == 400
        assert await gateway.store.get_team("web") is not None
        answer = await post(client, "/ui/teams/web/delete", token, confirm="yes")
        assert answer.status_code == 303 and answer.headers["location"] == "/ui/teams?deleted=web"
        assert await gateway.store.get_team("web") is None
        assert 'id="team-deleted"' in (await client.get(answer.headers["location"])).text
        missing = await post(client, "/ui/teams/web/delete", token, confirm="yes")
        assert missing.status_code == 404

    run_console(tmp_path, scenario)


def test_a_key_is_shown_once_works_at_once_and_stops_when_revoked(tmp_path: Path) -> None:
    async def scenario(gateway: Gateway, client: httpx.AsyncClient) -> None:
        token = await login(client)
        await post(client, "/ui/teams", token, name="web", budget_usd="5", period="monthly")
        created = await post(client, "/ui/teams/web/keys", token, name="laptop", budget_usd="1", expires_at="")
        assert created.status_code == 200
        assert created.headers["cache-control"] == "no-store"
        found = re.search(r'id="new-key" name="new_key" value="(gw-[^"]+)"', created.text)
        assert found is not None
        key = found.group(1)
        assert 'id="copy-key" data-copy="new-key"' in created.text
        answer = await client.post(
            "/v1/chat/completions", json={"model": "auto", "messages": HELLO}, headers=bearer(key)
        )
        assert answer.status_code == 200
        team_page = (await client.get("/ui/teams/web")).text
        assert key not in team_page  # never shown again
        (record_id,) = re.findall(r'data-key="([^"]+)"', team_page)
        assert "laptop" in team_page and "active" in team_page
        revoked = await post(client, f"/ui/keys/{record_id}/revoke", token)
        assert revoked.status_code == 303 and revoked.headers["location"].startswith("/ui/teams/web?revoked=")
        refused = await client.post(
            "/v1/chat/completions", json={"model": "auto", "messages": HELLO}, headers=bearer(key)
        )
        assert refused.status_code == 401
        assert "revoked" in (await client.get("/ui/teams/web")).text

    run_console(tmp_path, scenario)


def test_a_refused_key_shows_the_services_message(tmp_path: Path) -> None:
    async def scenario(gateway: Gateway, client: httpx.AsyncClient) -> None:
        token = await login(client)
        await post(client, "/ui/teams", token, name="web", period="monthly", models=["mistral-medium-3.5"])
        past = await post(client, "/ui/teams/web/keys", token, name="old", expires_at="2020-01-01")
        assert past.status_code == 400 and "is in the past" in past.text and 'value="2020-01-01"' in past.text
        assert await gateway.store.list_keys("web") == []
        assert (await post(client, "/ui/teams/nobody/keys", token, name="x")).status_code == 400

    run_console(tmp_path, scenario)


def test_a_teams_spend_over_time_is_charted_by_model_and_provider(tmp_path: Path) -> None:
    async def scenario(gateway: Gateway, client: httpx.AsyncClient) -> None:
        token = await login(client)
        await post(client, "/ui/teams", token, name="web", budget_usd="100", period="monthly")
        team = await gateway.store.get_team("web")
        assert isinstance(team, Team)
        now = time.time()
        await record(
            gateway,
            row("web", 2_500_000_000, model="kimi-k2.6", provider="moonshot", region="cn", ts=now),
            row("web", 1_250_000_000, model="mistral-medium-3.5", provider="mistral", region="eu", ts=now - 86400),
            row("web", 250_000_000, model="codestral", provider="mistral", region="eu", ts=now - 2 * 86400),
            team=team,
        )
        page = (await client.get("/ui/teams/web")).text
        for chart in ("chart-spend-model", "chart-spend-provider"):
            svg = page.split(f'id="{chart}"', 1)[1].split("</figure>", 1)[0]
            assert svg.count('class="bar"') == 3  # one column piece per (day, series)
        by_model = page.split('id="spend-by-model"', 1)[1].split("</table>", 1)[0]
        assert re.findall(r"<td>([^<]+)</td><td class=\"num\">([^<]+)</td>", by_model) == [
            ("kimi-k2.6", "$2.50"),
            ("mistral-medium-3.5", "$1.25"),
            ("codestral", "$0.25"),
        ]
        by_provider = page.split('id="spend-by-provider"', 1)[1].split("</table>", 1)[0]
        assert "$1.50" in by_provider and "$2.50" in by_provider
        assert 'id="team-spent">$4.00<' in page

    run_console(tmp_path, scenario)
