"""What every console page goes through: the session, the CSRF check, the form, the security headers, and an
HTML answer for every outcome (a GatewayError's message on a page of its own, anything unexpected as a 500 page
that says nothing of the gateway's insides: the traceback goes to the log).

Pages are rendered by Jinja2 with autoescaping on for every template, so a value that came from a request (a
team's name, a model, a route reason, an error message) is text on the page, never markup.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote

from jinja2 import Environment, PackageLoader, StrictUndefined
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from gateway.console import formats
from gateway.console.attempts import LoginAttempts
from gateway.console.sessions import SESSION_COOKIE, Session, Sessions, cookie_header
from gateway.errors import GatewayError
from gateway.state import Gateway

log = logging.getLogger("gateway")

# No inline script or style anywhere: scripts and styles come from /ui/static/ only, forms post only here, and no
# other site may frame the console (clickjacking).
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",  # (for browsers that predate frame-ancestors)
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",  # pages hold spend, keys shown once, request contents
}
FORM_MEDIA = "application/x-www-form-urlencoded"
MAX_FORM_FIELDS = 1000


def secure_request(request: Request) -> bool:
    """Whether the browser reached the console over TLS: the server's own scheme, or `X-Forwarded-Proto: https` from
    a TLS-terminating proxy. The header is trusted for this only: a client that forged it would only get a cookie
    its browser keeps off plain HTTP (a failed login), never a weaker one."""
    if request.url.scheme == "https":
        return True
    forwarded = request.headers.get("x-forwarded-proto", "")
    return forwarded.split(",", 1)[0].strip().lower() == "https"


def templates() -> Environment:
    """The console's templates, from the package (they ship in the wheel), autoescaped, strict about undefined
    names (a typo in a template fails its test instead of rendering nothing)."""
    env = Environment(
        loader=PackageLoader("gateway.console", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(formats.FILTERS)
    return env


@dataclass
class Form:
    """A posted form: each field's values in order (checkboxes repeat a name)."""

    fields: dict[str, list[str]] = field(default_factory=dict)

    def get(self, name: str, default: str = "") -> str:
        values = self.fields.get(name)
        return values[-1] if values else default

    def all(self, name: str) -> list[str]:
        return list(self.fields.get(name, ()))

    def __contains__(self, name: str) -> bool:
        return name in self.fields


async def read_form(request: Request, limit: int) -> Form:
    """A urlencoded form body, at most `limit` bytes, UTF-8."""
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media != FORM_MEDIA:
        raise GatewayError(415, f"A console form is sent as {FORM_MEDIA}.", "invalid_request_error", "unsupported")
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise GatewayError(413, f"The form is larger than {limit} bytes.", "invalid_request_error", "too_large")
            chunks.append(chunk)
    except ClientDisconnect as exc:
        raise GatewayError(400, "The form was not sent completely.", "invalid_request_error", "disconnected") from exc
    try:
        pairs = parse_qsl(
            b"".join(chunks).decode("utf-8"), keep_blank_values=True, errors="strict", max_num_fields=MAX_FORM_FIELDS
        )
    except (UnicodeDecodeError, ValueError) as exc:
        raise GatewayError(400, "The form could not be read.", "invalid_request_error", "invalid_form") from exc
    form = Form()
    for name, value in pairs:
        form.fields.setdefault(name, []).append(value)
    return form


@dataclass
class Console:
    """What the pages share: the gateway, the sessions (None: no master key, so no console), the templates, and
    the explain endpoint of the API (given by the app, which owns the front doors it parses with)."""

    gateway: Gateway
    sessions: Sessions | None
    env: Environment
    explain: Callable[..., Awaitable[Response]]
    attempts: LoginAttempts = field(default_factory=LoginAttempts)  # failed logins per client address

    @property
    def form_limit(self) -> int:
        return self.gateway.settings.max_body_bytes


@dataclass
class View:
    """One request to a page: the console, the request, its session and (a POST) its form."""

    console: Console
    request: Request
    session: Session | None
    form: Form = field(default_factory=Form)

    @property
    def gateway(self) -> Gateway:
        return self.console.gateway

    @property
    def csrf_token(self) -> str:
        sessions = self.console.sessions
        return sessions.csrf(self.session) if sessions is not None and self.session is not None else ""

    def render(
        self, template: str, status: int = 200, headers: Mapping[str, str] | None = None, **context: Any
    ) -> Response:
        values: dict[str, Any] = {"title": "Console", "section": "", **context}
        page = self.console.env.get_template(template).render(
            csrf_token=self.csrf_token, logged_in=self.session is not None, path=self.request.url.path, **values
        )
        return HTMLResponse(page, status_code=status, headers=dict(headers or {}))

    def redirect(self, url: str) -> Response:
        """303 See Other to a path of the console (after a POST: the browser GETs it)."""
        return RedirectResponse(url, status_code=303)


Page = Callable[[View], Awaitable[Response]]
Endpoint = Callable[[Request], Awaitable[Response]]


def safe_next(target: str | None) -> str:
    """Where to go after logging in: a path of the console only (never another site: `//evil`, `/\\evil`)."""
    if not target or not target.startswith("/ui") or target.startswith("//") or "\\" in target:
        return "/ui"
    return target


# When even the error page cannot be rendered: a fixed page, nothing from the request in it.
BARE_ERROR = (
    b"<!doctype html><title>Error</title><h1>The console could not show this page</h1><p>See the gateway's log.</p>"
)


def error_page(view: View, status: int, title: str, message: str) -> Response:
    try:
        return view.render("error.html", status=status, title=title, message=message)
    except Exception:
        log.exception("console: the error page failed (%s: %s)", status, title)
        return HTMLResponse(BARE_ERROR, status_code=status)


def page(console: Console, handler: Page, *, public: bool = False) -> Endpoint:
    """The endpoint of a console page: `public` pages (the login form) need no session; every other one needs a
    valid session, and a POST to any of them the CSRF token of its session (or of its login form)."""

    async def endpoint(request: Request) -> Response:
        view = View(console, request, None)
        try:
            response = await _serve(console, handler, view, public)
        except GatewayError as error:
            response = error_page(view, error.status, _title(error.status), error.message)
        except Exception:
            incident = secrets.token_hex(6)
            log.exception("console: unhandled error on %s %s (incident %s)", request.method, request.url.path, incident)
            response = error_page(
                view,
                500,
                "Something went wrong",
                f"The console could not show this page. The gateway's log has the details (incident {incident}).",
            )
        response.headers.update(SECURITY_HEADERS)
        return response

    return endpoint


async def _serve(console: Console, handler: Page, view: View, public: bool) -> Response:
    sessions = console.sessions
    request = view.request
    if sessions is None:
        return error_page(
            view,
            503,
            "The console is off",
            "The console is for the people who run the gateway: it needs GATEWAY_MASTER_KEY to be set.",
        )
    view.session = sessions.check(request.cookies.get(SESSION_COOKIE))
    if view.session is None and not public:
        if request.method in ("GET", "HEAD"):
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return view.redirect(f"/ui/login?next={quote(target, safe='')}")
        return error_page(view, 403, "Not logged in", "Your session has ended or is missing: log in again.")
    if request.method == "POST":
        view.form = await read_form(request, console.form_limit)
        if not public:
            assert view.session is not None
            if not sessions.csrf_ok(view.session, view.form.get("csrf_token") or None):
                return error_page(
                    view, 403, "Refused", "This form is missing its CSRF token, or it is not this session's."
                )
    return await handler(view)


def _title(status: int) -> str:
    return {400: "Not accepted", 401: "Not logged in", 403: "Refused", 404: "Not found", 409: "Conflict"}.get(
        status, "Could not complete" if status < 500 else "The gateway could not do this"
    )


def with_session_cookie(response: Response, token: str, seconds: int, secure: bool) -> Response:
    response.headers.append("set-cookie", cookie_header(SESSION_COOKIE, token, seconds, secure))
    return response
