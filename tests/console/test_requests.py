"""The requests table: the ledger filtered by any column, searched, ordered and paged; a request's own page with its
route reason and decision inputs, and its content only where GATEWAY_LEDGER_CONTENT is on."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx

from gateway.state import Gateway
from tests.console.harness import login, record, row, run_console
from tests.support.inprocess import HELLO, bearer, team_key


def shown(page: httpx.Response) -> list[str]:
    """The ids of the ledger rows in the table, in order."""
    return re.findall(r'<tr data-request="([^"]+)">', page.text)


def test_filters_by_any_column_search_and_order(tmp_path: Path) -> None:
    async def scenario(gateway: Gateway, client: httpx.AsyncClient) -> None:
        now = time.time()
        web = row(
            "web", 1_000, ts=now - 30, model="kimi-k2.6", provider="moonshot", region="cn", route_reason="preferred"
        )
        ops = row(
            "ops",
            9_000,
            ts=now - 20,
            model="mistral-medium-3.5",
            provider="mistral",
            region="eu",
            route_reason="residency:eu",
            status=429,
            key_id="key_1",
            key_prefix="gw-abcdef",
        )
        old = row(
            "web",
            5_000,
            ts=now - 10 * 86400,
            model="codestral",
            provider="mistral",
            region="eu",
            route_reason="pinned",
            latency_ms=900.0,
            batch_id="batch_1",
            custom_id="line-1",
        )
        await record(gateway, web, ops, old)
        await login(client)
        everything = await client.get("/ui/requests")
        assert shown(everything) == [ops.id, web.id, old.id]  # newest first
        assert "Requests 1&ndash;3 of 3" in everything.text
        cases = {
            "team=web": [web.id, old.id],
            "key=gw-abc": [ops.id],
            "model=codestral": [old.id],
            "provider=mistral": [ops.id, old.id],
            "region=cn": [web.id],
            "route_reason=residency%3Aeu": [ops.id],
            "status=429": [ops.id],
            "errors=errors": [ops.id],
            "errors=ok": [web.id, old.id],
            "endpoint=chat": [ops.id, web.id, old.id],
            "lines=batch": [old.id],
            "lines=interactive": [ops.id, web.id],
            "since=1d": [ops.id, web.id],
            "until=1d": [old.id],
            "q=RESIDENCY": [ops.id],
            "q=kimi": [web.id],
            "order=cost": [ops.id, old.id, web.id],
            "order=latency": [old.id, ops.id, web.id],
            "order=oldest&team=web": [old.id, web.id],
        }
        for query, expected in cases.items():
            page = await client.get(f"/ui/requests?{query}")
            assert page.status_code == 200, query
            assert shown(page) == expected, query
        page = (await client.get("/ui/requests")).text
        assert "$0.000009" in page and "residency:eu" in page and "gw-abcdef" in page
        # A click on a value filters by it.
        assert 'href="/ui/requests?team=ops"' in page

    run_console(tmp_path, scenario)


def test_bad_filters_are_answered_on_the_page(tmp_path: Path) -> None:
    async def scenario(gateway: Gateway, client: httpx.AsyncClient) -> None:
        await login(client)
        for query, field in (
            ("status=abc", "status"),
            ("since=yesterday", "since"),
            ("order=random", "order"),
            ("page=0", "page"),
            ("colour=red", "colour"),
            ("lines=some", "lines"),
        ):
            page = await client.get(f"/ui/requests?{query}")
            assert page.status_code == 400, query
            assert f"Invalid &#39;{field}&#39;" in page.text, query
            assert 'id="requests-filter"' in page.text

    run_console(tmp_path, scenario)


def test_pages_of_fifty(tmp_path: Path) -> None:
    async def scenario(gateway: Gateway, client: httpx.AsyncClient) -> None:
        now = time.time()
        rows = [row("web", 1_000 + i, ts=now - i) for i in range(120)]
        await record(gateway, *rows)
        await login(client)
        first = await client.get("/ui/requests?team=web")
        assert shown(first) == [r.id for r in rows[:50]]
        assert "Page 1 of 3" in first.text and 'id="requests-previous"' not in first.text
        next_link = re.search(r'href="([^"]+)" id="requests-next"', first.text)
        assert next_link is not None and next_link.group(1) == "/ui/requests?team=web&amp;page=2"
        second = await client.get("/ui/requests?team=web&page=2")
        assert shown(second) == [r.id for r in rows[50:100]]
        assert 'id="requests-previous"' in second.text
        third = await client.get("/ui/requests?team=web&page=3")
        assert shown(third) == [r.id for r in rows[100:]]
        assert "Requests 101&ndash;120 of 120" in third.text and 'id="requests-next"' not in third.text
        assert shown(await client.get("/ui/requests?team=web&page=4")) == []

    run_console(tmp_path, scenario)


def test_a_request_made_through_the_gateway_has_its_page(tmp_path: Path) -> None:
    async def scenario(gateway: Gateway, client: httpx.AsyncClient) -> None:
        key = await team_key(gateway, "web")
        answer = await client.post(
            "/v1/chat/completions",
            json={"model": "auto", "messages": HELLO, "max_tokens": 64},
            headers={**bearer(key), "x-gateway-residency": "eu"},
        )
        assert answer.status_code == 200
        await login(client)
        table = await client.get("/ui/requests?team=web")
        (request_id,) = shown(table)
        page = await client.get(f"/ui/requests/{request_id}")
        assert page.status_code == 200
        reason = answer.headers["x-gateway-route-reason"]
        assert f'id="request-route-reason"><code>{reason}</code>' in page.text
        assert 'id="request-cost">$' in page.text
        inputs = page.text.split('id="request-inputs"', 1)[1].split("</dl>", 1)[0]
        assert "max_tokens</dt><dd>64" in inputs and "residency</dt><dd>eu" in inputs
        assert 'id="content-off"' in page.text and "Hello there" not in page.text
        assert (await client.get("/ui/requests/req_missing")).status_code == 404

    run_console(tmp_path, scenario)


def test_content_is_shown_only_where_ledger_content_is_on(tmp_path: Path) -> None:
    async def scenario(gateway: Gateway, client: httpx.AsyncClient) -> None:
        key = await team_key(gateway, "web")
        answer = await client.post(
            "/v1/chat/completions", json={"model": "auto", "messages": HELLO}, headers=bearer(key)
        )
        assert answer.status_code == 200
        await login(client)
        (request_id,) = shown(await client.get("/ui/requests"))
        page = await client.get(f"/ui/requests/{request_id}")
        content = page.text.split('id="request-content">', 1)[1].split("</pre>", 1)[0]
        assert "Hello there" in content and "Hi!" in content

    run_console(tmp_path, scenario, ledger_content=True)
