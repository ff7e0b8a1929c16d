"""The routing page: the policies as loaded (and why an edit was refused), the explain playground (the API's own
explain, for a team, a door and headers) and the replay of a pasted policy over the ledger."""

from __future__ import annotations

import csv
import io
import re
import shutil
import time
from pathlib import Path

import httpx
import orjson

from gateway.state import Gateway
from gateway.store.base import Team
from tests.console.harness import login, post, record, row, run_console

ROOT = Path(__file__).resolve().parents[2]
CHAT = '{"model": "auto", "messages": [{"role": "user", "content": "Bonjour"}], "max_tokens": 100}'
EU_ONLY = (ROOT / "policies" / "eu-only.yaml").read_text().replace("name: eu-only", "name: default")


def test_the_policies_as_loaded_and_a_refused_edit(tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    shutil.copytree(ROOT / "policies", policies)

    async def scenario(gateway: Gateway, client: httpx.AsyncClient) -> None:
        await login(client)
        page = await client.get("/ui/routing")
        assert page.status_code == 200
        for name in ("default", "eu-only", "cost-saver"):
            assert f'id="policy-{name}"' in page.text
        assert 'id="policy-no-error"' in page.text
        eu = page.text.split('id="policy-eu-only"', 1)[1].split("</details>", 1)[0]
        assert "- mistral-medium-3.5" in eu and "max_tokens_floor: 1024" in eu
        (policies / "eu-only.yaml").write_text((policies / "eu-only.yaml").read_text().replace("[eu]", "[mars]"))
        assert not (await gateway.reload()).ok
        broken = await client.get("/ui/routing")
        error = broken.text.split('id="policy-last-error"', 1)[1].split("</div>", 1)[0]
        assert "eu-only.yaml" in error and "mars" in error
        assert 'id="policy-eu-only"' in broken.text  # the previous version stays in use, and shown

    run_console(tmp_path, scenario, policies_dir=policies)


def test_the_explain_playground_shows_every_step_and_candidate(tmp_path: Path) -> None:
    async def scenario(gateway: Gateway, client: httpx.AsyncClient) -> None:
        await gateway.store.create_team(Team("web", created_at=int(time.time())))
        token = await login(client)
        page = await post(
            client,
            "/ui/routing/explain",
            token,
            body=CHAT,
            team="web",
            format="chat",
            headers="x-gateway-residency: eu",
        )
        assert page.status_code == 200
        result = page.text.split('id="explain-result"', 1)[1]
        assert "Decision for team web" in result
        chosen = result.split('id="explain-chosen"', 1)[1].split("</dl>", 1)[0]
        assert "mistral" in chosen and "(eu)" in chosen
        steps = re.findall(
            r"<td><code>([a-z_]+)</code></td>", result.split('id="explain-steps"', 1)[1].split("</table>")[0]
        )
        assert steps[:2] == ["allowed", "residency"] and "preference" in steps
        candidates = result.split('id="explain-candidates"', 1)[1].split("</table>", 1)[0]
        assert "kimi-k2.6" in candidates and "excluded by residency eu" in candidates
        assert 'id="explain-admission">Admitted' in result
        # What was typed stays in the form.
        assert "x-gateway-residency: eu</textarea>" in page.text and 'value="web" selected' in page.text

        messages = await post(
            client,
            "/ui/routing/explain",
            token,
            body='{"model": "auto", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}',
            team="",
            format="messages",
        )
        assert messages.status_code == 200 and "Decision for team admin" in messages.text

    run_console(tmp_path, scenario)


def test_explain_errors_are_answered_on_the_page(tmp_path: Path) -> None:
    async def scenario(gateway: Gateway, client: httpx.AsyncClient) -> None:
        token = await login(client)
        cases = [
            ({"body": "{not json", "format": "chat"}, 400, "not valid JSON"),
            ({"body": CHAT, "format": "chat", "team": "nobody"}, 404, "No team &#39;nobody&#39;"),
            ({"body": CHAT, "format": "fax"}, 400, "Unknown format"),
            ({"body": CHAT, "format": "chat", "headers": "no colon here"}, 400, "Headers, line 1"),
            ({"body": CHAT, "format": "chat", "headers": "Authorization: Bearer x"}, 400, "set by the playground"),
            ({"body": '{"model": "gpt-9", "messages": []}', "format": "chat"}, 400, "messages"),
        ]
        for fields, status, message in cases:
            page = await post(client, "/ui/routing/explain", token, **fields)
            assert page.status_code == status, (fields, page.text[-600:])
            assert message in page.text, fields
            assert 'id="explain-form"' in page.text

    run_console(tmp_path, scenario)


async def _traffic(gateway: Gateway) -> None:
    """Kimi traffic in cn and Mistral traffic in eu, for team web."""
    team = Team("web", created_at=int(time.time()))
    await gateway.store.create_team(team)
    now = time.time()
    kimi = [
        row(
            "web",
            1_000_000,
            ts=now - 3600 - i,
            model="kimi-k2.6",
            requested_model="auto",
            provider="moonshot",
            region="cn",
        )
        for i in range(3)
    ]
    mistral = row(
        "web",
        2_000_000,
        ts=now - 60,
        model="mistral-medium-3.5",
        requested_model="auto",
        provider="mistral",
        region="eu",
    )
    await record(gateway, *kimi, mistral)


def test_a_replay_shows_what_the_policy_would_have_done_beside_what_happened(tmp_path: Path) -> None:
    async def scenario(gateway: Gateway, client: httpx.AsyncClient) -> None:
        await _traffic(gateway)
        token = await login(client)
        page = await post(client, "/ui/routing/replay", token, policy=EU_ONLY, replay_team="web", since="7d")
        assert page.status_code == 200, page.text[-1500:]
        result = page.text.split('id="replay-result"', 1)[1]
        assert 'id="replay-replayed">4<' in result
        assert 'id="replay-moved">3<' in result  # Kimi's requests move to the eu region
        assert 'id="replay-cost-before">$0.005<' in result
        models = result.split('id="replay-models"', 1)[1].split("</table>", 1)[0]
        kimi = models.split("<td>kimi-k2.6</td>", 1)[1].split("</tr>", 1)[0]
        assert re.findall(r'class="num">([^<]+)<', kimi)[:2] == ["3", "0"]  # happened 3, replayed 0
        assert 'id="chart-replay-requests"' in result and 'id="chart-replay-cost"' in result
        assert "kimi-k2.6 (cn), happened: 3" in result and "kimi-k2.6 (cn), replayed: 0" in result
        moves = result.split('id="replay-region-moves"', 1)[1].split("</table>", 1)[0]
        assert "<td>cn</td><td>eu</td>" in moves
        # The policy pasted is kept in the form, and in the download forms.
        assert 'id="replay-download-csv"' in result and 'id="replay-download-json"' in result

        download = {"policy": EU_ONLY, "replay_team": "web", "since": "7d"}
        as_csv = await post(client, "/ui/routing/replay/download", token, format="csv", **download)
        assert as_csv.status_code == 200 and as_csv.headers["content-type"].startswith("text/csv")
        assert as_csv.headers["content-disposition"].startswith('attachment; filename="policy-replay-')
        table = list(csv.DictReader(io.StringIO(as_csv.text)))
        kimi_row = next(r for r in table if r["section"] == "model" and r["name"] == "kimi-k2.6")
        assert (kimi_row["requests_before"], kimi_row["requests_after"]) == ("3", "0")
        as_json = await post(client, "/ui/routing/replay/download", token, format="json", **download)
        report = orjson.loads(as_json.content)
        assert report["object"] == "policy_replay" and report["rows"]["moved_region"] == 3
        assert report["filters"]["team"] == "web"

    run_console(tmp_path, scenario)


def test_a_policy_that_does_not_validate_is_answered_with_its_problems(tmp_path: Path) -> None:
    async def scenario(gateway: Gateway, client: httpx.AsyncClient) -> None:
        token = await login(client)
        cases = [
            ({"policy": "name: default\nmodels: [gpt-5]\n"}, "gpt-5"),
            ({"policy": "models: [codestral]\n"}, "name"),
            ({"policy": ""}, "Paste a policy file"),
            ({"policy": "name: default\n", "since": "banana"}, "Invalid &#39;since&#39;"),
            ({"policy": "name: default\n", "since": "1d", "until": "2d"}, "must be after"),
        ]
        for fields, message in cases:
            page = await post(client, "/ui/routing/replay", token, **fields)
            assert page.status_code == 400, fields
            assert message in page.text, (fields, page.text[-800:])
            assert 'id="replay-result"' not in page.text
        bad = await post(client, "/ui/routing/replay/download", token, policy="name: default\n", format="xml")
        assert bad.status_code == 400

    run_console(tmp_path, scenario)
