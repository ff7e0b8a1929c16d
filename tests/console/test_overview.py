"""The overview: spend today and this period against every team's budget, the projection to the period's end,
traffic (requests, error rate, latency and time to first token, the gateway's overhead), circuits and queues."""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from gateway.admin import service
from gateway.console.data import bucket_quantile
from gateway.console.overview import projection
from gateway.routing.circuits import deployment
from gateway.state import Gateway
from tests.console.harness import login, record, row, run_console
from tests.support.inprocess import HELLO, bearer, team_key


def cells(page: str, team: str) -> list[str]:
    """The cells of a team's row in the budgets table."""
    line = page.split(f'<tr data-team="{team}">', 1)[1].split("</tr>", 1)[0]
    return [re.sub(r"<[^>]+>", "", cell).strip() for cell in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", line, re.S)]


def test_the_overview_shows_spend_budgets_traffic_circuits_and_queues(tmp_path: Path) -> None:
    async def scenario(gateway: Gateway, client: httpx.AsyncClient) -> None:
        key = await team_key(gateway, "web", budget_usd=10)
        await service.create_team(gateway.store, {"name": "free"}, "UTC", gateway.catalog)
        for _ in range(3):
            answer = await client.post(
                "/v1/chat/completions", json={"model": "auto", "messages": HELLO}, headers=bearer(key)
            )
            assert answer.status_code == 200
        team = await gateway.store.get_team("web")
        assert team is not None
        await record(gateway, row("web", 2_000_000_000, status=502), team=team)
        for _ in range(gateway.circuits.failures):
            gateway.circuits.failed(deployment("moonshot", "kimi-k2.6"))
        gateway.provider_queues.status = lambda: {"mistral": {"waiting": 3, "seats": 2}}  # type: ignore[method-assign]
        await login(client)
        page = await client.get("/ui")
        assert page.status_code == 200
        web = cells(page.text, "web")
        spent = (await service.get_team(gateway.store, "web", "UTC"))["spent_nanos"]
        assert spent > 2_000_000_000
        assert web[0] == "web" and web[1] == "monthly"
        assert web[2] == web[3]  # all of it today
        assert web[3].startswith("$2.00") and web[5] == "$10.00"
        assert web[6] == f"{spent / 10_000_000_000 * 100:.1f}%"
        assert cells(page.text, "free")[5] == "no limit"
        assert 'id="chart-budgets"' in page.text and "web, spent so far: 20.0%" in page.text
        assert 'id="stat-requests">4<' in page.text
        assert 'id="stat-error-rate">25.0%' in page.text
        assert 'id="stat-overhead-requests">3<' in page.text  # three requests reached a provider here
        circuits = page.text.split('id="circuits-table"', 1)[1].split("</table>", 1)[0]
        kimi = circuits.split("<td>kimi-k2.6</td>", 1)[1].split("</tr>", 1)[0]
        assert "open" in kimi and "closed" in circuits.split("<td>mistral-medium-3.5</td>", 1)[1].split("</tr>", 1)[0]
        queues = page.text.split('id="queues-table"', 1)[1].split("</table>", 1)[0]
        assert '<td>mistral</td><td class="num">3</td><td class="num">2</td>' in queues

    run_console(tmp_path, scenario)


def test_an_empty_gateway_has_an_overview(tmp_path: Path) -> None:
    async def scenario(gateway: Gateway, client: httpx.AsyncClient) -> None:
        await login(client)
        page = await client.get("/ui")
        assert page.status_code == 200
        assert 'id="no-teams"' in page.text and 'id="no-queues"' in page.text
        assert 'id="stat-requests">0<' in page.text

    run_console(tmp_path, scenario)


def test_the_projection_carries_the_pace_so_far_to_the_periods_end() -> None:
    start, end = 1_000_000, 1_000_000 + 30 * 86400
    assert projection(3_000, start, end, start + 10 * 86400) == 9_000
    assert projection(3_000, start, end, start + 1800) is None  # too early to say
    assert projection(3_000, start, None, start + 10 * 86400) is None  # the total period never ends


def test_overhead_quantiles_are_interpolated_within_buckets() -> None:
    buckets = [(0.001, 0.0), (0.002, 50.0), (0.005, 90.0), (0.01, 100.0), (float("inf"), 100.0)]
    assert bucket_quantile(buckets, 0.5) == 0.002
    assert abs((bucket_quantile(buckets, 0.95) or 0) - 0.0075) < 1e-12
    assert bucket_quantile([(0.01, 0.0), (float("inf"), 0.0)], 0.5) is None
    assert bucket_quantile([(0.01, 1.0), (float("inf"), 10.0)], 0.95) == 0.01  # beyond the last bound
