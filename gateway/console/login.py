"""`GET|POST /ui/login` (the master key, posted as `master_key`, starts a session) and `POST /ui/logout`."""

from __future__ import annotations

import math

from starlette.responses import Response

from gateway.console.sessions import LOGIN_COOKIE, LOGIN_SECONDS, SESSION_COOKIE, Sessions, cookie_header
from gateway.console.web import View, safe_next, secure_request, with_session_cookie


def _sessions(view: View) -> Sessions:
    sessions = view.console.sessions
    assert sessions is not None  # (the page wrapper answers 503 without a master key)
    return sessions


def _form(view: View, status: int, error: str, target: str) -> Response:
    """The login form with a fresh login token (its cookie and the CSRF token of its form)."""
    sessions = _sessions(view)
    token, login = sessions.issue_login()
    response = view.render(
        "login.html", status=status, title="Log in", error=error, next=target, login_csrf=sessions.csrf(login)
    )
    response.headers.append(
        "set-cookie", cookie_header(LOGIN_COOKIE, token, LOGIN_SECONDS, secure_request(view.request))
    )
    return response


async def login_form(view: View) -> Response:
    target = safe_next(view.request.query_params.get("next"))
    if view.session is not None:
        return view.redirect(target)
    return _form(view, 200, "", target)


async def login(view: View) -> Response:
    sessions = _sessions(view)
    form = view.form
    target = safe_next(form.get("next"))
    login_session = sessions.check_login(view.request.cookies.get(LOGIN_COOKIE))
    if login_session is None or not sessions.csrf_ok(login_session, form.get("csrf_token") or None):
        return _form(view, 403, "This login form has expired or was not sent from this console: try again.", target)
    attempts = view.console.attempts
    address = view.request.client.host if view.request.client is not None else "unknown"
    wait = math.ceil(attempts.wait(address))
    if wait > 0:
        response = _form(view, 429, f"Too many wrong keys from this address: try again in {wait} s.", target)
        response.headers["retry-after"] = str(wait)
        return response
    if not view.gateway.auth.is_master(form.get("master_key") or None):
        attempts.failed(address)
        return _form(view, 401, "That is not the gateway's master key.", target)
    token, _ = sessions.issue()
    secure = secure_request(view.request)
    response = with_session_cookie(view.redirect(target), token, sessions.seconds, secure)
    response.headers.append("set-cookie", cookie_header(LOGIN_COOKIE, "", 0, secure))
    return response


async def logout(view: View) -> Response:
    response = view.redirect("/ui/login")
    response.headers.append("set-cookie", cookie_header(SESSION_COOKIE, "", 0, secure_request(view.request)))
    return response
