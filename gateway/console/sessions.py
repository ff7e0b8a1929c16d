"""Console sessions and CSRF tokens: stateless, signed, so every worker and node accepts them.

A session is a token the server signs and the browser keeps in an `HttpOnly`, `SameSite=Strict` cookie scoped to
`/ui`: `v1.EXPIRES.SID.SIGNATURE`, the signature an HMAC-SHA256 of the rest with a key derived from the master
key. Nothing is stored: any process that has the same master key checks it, and changing the master key ends every
session. Logging out removes the cookie from the browser; a token copied before that stays valid until it expires
(12 hours), as with any stateless session.

The CSRF token of a session is an HMAC (another derived key) of its random id: a page renders it in a hidden
`csrf_token` field of every form and each POST must send it back. A cross-site page cannot read it, and the cookie
is not sent with cross-site requests anyway (`SameSite=Strict`): two independent defences.

The login form has no session yet: GET /ui/login sets a short-lived signed login cookie holding a random id, and
its form carries the CSRF token of that id, checked like a session's (so no POST is accepted without a token).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

SESSION_COOKIE = "gateway_console"
LOGIN_COOKIE = "gateway_console_login"
COOKIE_PATH = "/ui"
SESSION_SECONDS = 12 * 3600
LOGIN_SECONDS = 3600  # a login form left open longer is refused once, then rendered again with a fresh token
VERSION = "v1"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _derive(master_key: str, purpose: str) -> bytes:
    """A key for one purpose only: a session signature can never pass as a CSRF token, nor the reverse."""
    return hmac.new(master_key.encode(), f"gateway-console/{purpose}/{VERSION}".encode(), hashlib.sha256).digest()


@dataclass(frozen=True, slots=True)
class Session:
    sid: str  # random: what the CSRF token is derived from
    expires_at: int


class Sessions:
    """Issues and checks session and login tokens and their CSRF tokens, all keyed by the master key."""

    def __init__(
        self,
        master_key: str,
        seconds: int = SESSION_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._session_key = _derive(master_key, "session")
        self._login_key = _derive(master_key, "login")
        self._csrf_key = _derive(master_key, "csrf")
        self.seconds = seconds
        self._clock = clock

    # -- tokens -------------------------------------------------------------------------------

    def _sign(self, key: bytes, payload: str) -> str:
        return _b64(hmac.new(key, payload.encode(), hashlib.sha256).digest())

    def _issue(self, key: bytes, seconds: int) -> tuple[str, Session]:
        session = Session(secrets.token_urlsafe(18), int(self._clock()) + seconds)
        payload = f"{VERSION}.{session.expires_at}.{session.sid}"
        return f"{payload}.{self._sign(key, payload)}", session

    def _check(self, key: bytes, token: str | None) -> Session | None:
        if not token or len(token) > 200:
            return None
        payload, _, signature = token.rpartition(".")
        if not _same(self._sign(key, payload), signature):
            return None
        version, _, rest = payload.partition(".")
        expires, _, sid = rest.partition(".")
        if version != VERSION or not expires.isdigit() or not sid:
            return None
        session = Session(sid, int(expires))
        return session if session.expires_at > self._clock() else None

    def issue(self) -> tuple[str, Session]:
        """A new admin session: (cookie value, session)."""
        return self._issue(self._session_key, self.seconds)

    def check(self, token: str | None) -> Session | None:
        """The session of a cookie value, or None (absent, forged, from another master key, or expired)."""
        return self._check(self._session_key, token)

    def issue_login(self) -> tuple[str, Session]:
        """The login form's own short-lived token (no session exists yet)."""
        return self._issue(self._login_key, LOGIN_SECONDS)

    def check_login(self, token: str | None) -> Session | None:
        return self._check(self._login_key, token)

    # -- CSRF -------------------------------------------------------------------------------------

    def csrf(self, session: Session) -> str:
        return self._sign(self._csrf_key, session.sid)

    def csrf_ok(self, session: Session, token: str | None) -> bool:
        return bool(token) and _same(self.csrf(session), token or "")


def _same(expected: str, given: str) -> bool:
    """Constant-time equality of a token we made and one a client sent, which may hold any character (compared as
    UTF-8 bytes: `hmac.compare_digest` refuses non-ASCII strings with a TypeError, which would be a 500)."""
    return hmac.compare_digest(expected.encode(), given.encode("utf-8", "surrogatepass"))


def cookie_header(name: str, value: str, max_age: int, secure: bool) -> str:
    """A `Set-Cookie` value: HttpOnly (no script reads it), SameSite=Strict (no cross-site request carries it),
    Path=/ui (never sent to the API), Secure when the console is served over TLS."""
    parts = [f"{name}={value}", f"Path={COOKIE_PATH}", f"Max-Age={max_age}", "HttpOnly", "SameSite=Strict"]
    if secure:
        parts.append("Secure")
    return "; ".join(parts)
