"""The console's security: log in with the master key, the session cookie's attributes, the CSRF token on every
POST, the Content-Security-Policy on every page, safe redirects, and no traceback on any page."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
from starlette.routing import Route

from gateway.admin import service
from gateway.console.web import CONTENT_SECURITY_POLICY, safe_next
from gateway.state import Gateway
from tests.console.harness import csrf_of, login, post, run_console
from tests.support.inprocess import MASTER

PAGES = ("/ui", "/ui/teams", "/ui/teams/alpha", "/ui/requests", "/ui/routing")


def console_post_paths(client: httpx.AsyncClient, key_id: str) -> list[str]:
    """Every POST route of the console, its path parameters filled with things that exist."""
    app = client._transport.app  # type: ignore[attr-defined]
    paths = []
    for route in app.router.routes:
        if isinstance(route, Route) and route.path.startswith("/ui") and "POST" in (route.methods or ()):
            paths.append(route.path.replace("{name:path}", "alpha").replace("{key_id}", key_id))
    return paths


async def _team_and_key(gateway: Gateway) -> str:
    await service.create_team(gateway.store, {"name": "alpha", "budget_usd": 5}, "UTC", gateway.catalog)
    return str((await service.create_key(gateway.store, {"team": "alpha"}))["id"])


def test_logging_in_with_the_master_key_starts_a_strict_http_only_session(tmp_path: Path) -> None:
    async def scenario(gateway: Gateway, client: httpx.AsyncClient) -> None:
        first = await client.get("/ui/requests?team=alpha")
        assert first.status_code == 303
        assert first.headers["location"] == "/ui/login?next=%2Fui%2Frequests%3Fteam%3Dalpha"
        form = await client.get(first.headers["location"])
        assert form.status_code == 200
        login_cookie = form.headers["set-cookie"]
        assert "HttpOnly" in login_cookie and "SameSite=Strict" in login_cookie and "Path=/ui" in login_cookie
        answer = await client.post(
            "/ui/login",
            data={"master_key": MASTER, "csrf_token": csrf_of(form.text), "next": "/ui/requests?team=alpha"},
        )
        assert answer.status_code == 303
        assert answer.headers["location"] == "/ui/requests?team=alpha"
        session = next(c for c in answer.headers.get_list("set-cookie") if c.startswith("gateway_console="))
        attributes = [part.strip() for part in session.split(";")]
        assert {"HttpOnly", "SameSite=Strict", "Path=/ui", "Max-Age=43200"} <= set(attributes)
        assert "Secure" not in attributes  # plain HTTP: a Secure cookie would never come back
        page = await client.get("/ui/requests?team=alpha")
        assert page.status_code == 200
        assert 'id="requests-table"' in page.text

    run_console(tmp_path, scenario)


@pytest.mark.parametrize(
    ("base_url", "headers"),
    [("https://gateway", {}), ("http://gateway", {"x-forwarded-proto": "https"})],
)
def test_the_session_cookie_is_secure_when_served_over_tls(
    tmp_path: Path, base_url: str, headers: dict[str, str]
) -> None:
    async def scenario(gateway: Gateway, client: httpx.AsyncClient) -> None:
        secure = httpx.AsyncClient(transport=client._transport, base_url=base_url, headers=headers)
        async with secure:
            form = await secure.get("/ui/login")
            assert "Secure" in form.headers["set-cookie"]
            # (behind a TLS proxy the browser speaks HTTPS and sends the Secure cookie back; httpx, speaking plain
            # HTTP to the app here, would not: it is sent by hand)
            cookie = form.headers["set-cookie"].split(";", 1)[0]
            answer = await secure.post(
                "/ui/login",
                data={"master_key": MASTER, "csrf_token": csrf_of(form.text)},
                headers={"cookie": cookie},
            )
            assert answer.status_code == 303
            session = next(c for c in answer.headers.get_list("set-cookie") if c.startswith("gateway_console="))
            assert session.endswith("; Secure")

    run_console(tmp_path, scenario)


def test_a_wrong_master_key_or_a_login_without_its_token_is_refused(tmp_path: Path) -> None:
    async def scenario(gateway: Gateway, client: httpx.AsyncClient) -> None:
        form = await client.get("/ui/login")
        wrong = await client.post("/ui/login", data={"master_key": "guess", "csrf_token": csrf_of(form.text)})
        assert wrong.status_code == 401
        assert "not the gateway&#39;s master key" in wrong.text
        assert not any(c.startswith("gateway_console=") for c in wrong.headers.get_list("set-cookie"))
        without = await client.post("/ui/login", data={"master_key": MASTER})
        assert without.status_code == 403
        assert not any(c.startswith("gateway_console=") for c in without.headers.get_list("set-cookie"))
        assert (await client.get("/ui")).status_code == 303  # still logged out

    run_console(tmp_path, scenario)


def test_every_post_without_the_sessions_csrf_token_is_refused(tmp_path: Path) -> None:
    async def scenario(gateway: Gateway, client: httpx.AsyncClient) -> None:
        key_id = await _team_and_key(gateway)
        await login(client)
        other = httpx.AsyncClient(transport=client._transport, base_url="http://gateway")
        async with other:
            foreign = await login(other)  # another session's token is not this session's
        paths = console_post_paths(client, key_id)
        assert {"/ui/teams", "/ui/teams/alpha", "/ui/teams/alpha/delete", "/ui/teams/alpha/keys"} <= set(paths)
        assert f"/ui/keys/{key_id}/revoke" in paths and "/ui/logout" in paths and "/ui/routing/replay" in paths
        for path in paths:
            fields = {"name": "beta", "budget_usd": "1", "period": "daily", "confirm": "yes", "master_key": MASTER}
            missing = await client.post(path, data=fields)
            assert missing.status_code == 403, path
            assert missing.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
            forged = await client.post(path, data={**fields, "csrf_token": foreign})
            assert forged.status_code == 403, path
        # Nothing changed: no team created or deleted, the key still active, still logged in.
        assert [t.name for t in await gateway.store.list_teams()] == ["alpha"]
        key = await gateway.store.get_key(key_id)
        assert key is not None and key.revoked_at is None
        assert (await client.get("/ui")).status_code == 200

    run_console(tmp_path, scenario)


def test_a_post_without_a_session_is_refused(tmp_path: Path) -> None:
    async def scenario(gateway: Gateway, client: httpx.AsyncClient) -> None:
        await _team_and_key(gateway)
        answer = await client.post("/ui/teams", data={"name": "beta", "csrf_token": "anything"})
        assert answer.status_code == 403
        assert await gateway.store.get_team("beta") is None

    run_console(tmp_path, scenario)


def test_every_page_has_the_content_security_policy_and_no_inline_script_or_style(tmp_path: Path) -> None:
    async def scenario(gateway: Gateway, client: httpx.AsyncClient) -> None:
        await _team_and_key(gateway)
        logged_out = [await client.get("/ui/login"), await client.get("/ui")]
        await login(client)
        pages = [await client.get(path) for path in (*PAGES, "/ui/no-such-page", "/ui/teams/nobody")]
        for page in logged_out + pages:
            assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
            assert page.headers["x-frame-options"] == "DENY"
            assert page.headers["x-content-type-options"] == "nosniff"
            if page.status_code != 303:
                assert page.headers["cache-control"] == "no-store"
                assert "<script>" not in page.text and "<style" not in page.text and " style=" not in page.text
                assert not re.search(r"<[a-z]+[^>]*\son[a-z]+=", page.text)  # no inline event handlers
        assert [p.status_code for p in pages[-2:]] == [404, 404]
        assert "default-src 'self'" in CONTENT_SECURITY_POLICY and "unsafe-inline" not in CONTENT_SECURITY_POLICY

    run_console(tmp_path, scenario)


def test_the_stylesheet_and_script_are_served_from_the_package(tmp_path: Path) -> None:
    async def scenario(gateway: Gateway, client: httpx.AsyncClient) -> None:
        page = await client.get("/ui/login")
        urls = re.findall(r'(?:href|src)="(/ui/static/[^"]+)"', page.text)
        assert len(urls) == 2 and all("?v=" in url for url in urls)
        for url in urls:
            asset = await client.get(url)
            assert asset.status_code == 200
            assert asset.headers["content-type"].startswith(("text/css", "text/javascript"))
            assert asset.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
            again = await client.get(url, headers={"if-none-match": asset.headers["etag"]})
            assert again.status_code == 304
        assert (await client.get("/ui/static/base.html")).status_code == 404  # only the loaded assets
        traversal = await client.get("/ui/static/..%2Ftemplates%2Fbase.html")
        assert traversal.status_code != 200 and "{% extends" not in traversal.text
        assert (await client.get("/ui/static/missing.js")).status_code == 404
        assert "http" not in page.text.split("<body>")[0].replace("http-equiv", "")  # no CDN in the head

    run_console(tmp_path, scenario)


def test_logging_out_removes_the_session_cookie(tmp_path: Path) -> None:
    async def scenario(gateway: Gateway, client: httpx.AsyncClient) -> None:
        token = await login(client)
        answer = await post(client, "/ui/logout", token)
        assert answer.status_code == 303 and answer.headers["location"] == "/ui/login"
        assert any(
            c.startswith("gateway_console=;") and "Max-Age=0" in c for c in answer.headers.get_list("set-cookie")
        )
        assert (await client.get("/ui")).status_code == 303

    run_console(tmp_path, scenario)


def test_without_a_master_key_there_is_no_console(tmp_path: Path) -> None:
    async def scenario(gateway: Gateway, client: httpx.AsyncClient) -> None:
        for answer in (await client.get("/ui"), await client.get("/ui/login")):
            assert answer.status_code == 503
            assert "GATEWAY_MASTER_KEY" in answer.text

    run_console(tmp_path, scenario, master_key=None)


def test_an_unexpected_failure_shows_no_traceback(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def scenario(gateway: Gateway, client: httpx.AsyncClient) -> None:
        await login(client)

        async def broken(*args: object, **kwargs: object) -> None:
            raise RuntimeError("secret internals /etc/gateway")

        gateway.store.ledger_page = broken  # type: ignore[method-assign]
        answer = await client.get("/ui/requests")
        assert answer.status_code == 500
        assert "Traceback" not in answer.text and "secret internals" not in answer.text
        assert "incident" in answer.text
        assert answer.headers["content-security-policy"] == CONTENT_SECURITY_POLICY

    run_console(tmp_path, scenario)
    assert "secret internals" in caplog.text  # the log has it


def test_after_login_only_console_paths_are_followed() -> None:
    assert safe_next("/ui/teams?x=1") == "/ui/teams?x=1"
    for target in ("https://evil.example/", "//evil.example", "/\\evil.example", "/admin/teams", "", None):
        assert safe_next(target) == "/ui"


def test_the_console_leaves_the_apis_answers_alone(tmp_path: Path) -> None:
    async def scenario(gateway: Gateway, client: httpx.AsyncClient) -> None:
        await login(client)
        assert (await client.get("/ui/teams/")).status_code == 200  # a trailing slash, served as without
        head = await client.head("/ui/requests")
        assert head.status_code == 200 and head.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        unknown = await client.get("/v1/nothing-here")
        assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "not_found"
        admin = await client.get("/admin/teams")  # the session cookie is no key for the API (Path=/ui anyway)
        assert admin.status_code == 401

    run_console(tmp_path, scenario)


def test_a_hostile_cookie_or_token_is_refused_never_a_500(tmp_path: Path) -> None:
    async def scenario(gateway: Gateway, client: httpx.AsyncClient) -> None:
        token = await login(client)
        refused = await post(
            client, "/ui/teams", "caf\u00e9-\u00e9\u00e9", name="evil", budget_usd="1", period="monthly"
        )
        assert refused.status_code == 403
        assert await gateway.store.get_team("evil") is None
        accepted = await post(client, "/ui/teams", token, name="fine", budget_usd="1", period="monthly")
        assert accepted.status_code in (200, 303)
        client.cookies.clear()
        hostile = "gateway_console=v1.9999999999.\u00e9.\u00e9".encode("latin-1")  # (bytes a browser may send)
        page = await client.get("/ui", headers=[(b"cookie", hostile)])
        assert page.status_code == 303 and page.headers["location"].startswith("/ui/login")

    run_console(tmp_path, scenario)
