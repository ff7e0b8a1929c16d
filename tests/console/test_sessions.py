"""Sessions and CSRF tokens: signed by a key derived from the master key, checked without any stored state."""

from __future__ import annotations

from gateway.console.sessions import Sessions, cookie_header


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_session_issued_by_one_process_is_accepted_by_another_with_the_same_master_key() -> None:
    token, session = Sessions("master").issue()
    other = Sessions("master").check(token)  # another worker or node: nothing shared but the key
    assert other == session


def test_a_forged_or_altered_token_is_refused() -> None:
    sessions = Sessions("master")
    token, _ = sessions.issue()
    payload, _, signature = token.rpartition(".")
    version, expires, sid = payload.split(".")
    assert sessions.check(f"{version}.{int(expires) + 3600}.{sid}.{signature}") is None  # a longer life
    assert sessions.check(f"{version}.{expires}.other.{signature}") is None
    assert sessions.check(token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    assert sessions.check("") is None
    assert sessions.check(None) is None
    assert sessions.check("x" * 500) is None


def test_another_master_key_ends_every_session() -> None:
    token, _ = Sessions("master").issue()
    assert Sessions("rotated").check(token) is None


def test_a_session_expires_after_its_lifetime() -> None:
    clock = Clock()
    sessions = Sessions("master", seconds=12 * 3600, clock=clock)
    token, _ = sessions.issue()
    clock.now += 12 * 3600 - 1
    assert sessions.check(token) is not None
    clock.now += 1
    assert sessions.check(token) is None


def test_the_csrf_token_belongs_to_its_session_only() -> None:
    sessions = Sessions("master")
    _, one = sessions.issue()
    _, two = sessions.issue()
    assert sessions.csrf_ok(one, sessions.csrf(one))
    assert not sessions.csrf_ok(one, sessions.csrf(two))
    assert not sessions.csrf_ok(one, "")
    assert not sessions.csrf_ok(one, None)
    assert Sessions("rotated").csrf(one) != sessions.csrf(one)


def test_login_tokens_and_session_tokens_are_not_interchangeable() -> None:
    sessions = Sessions("master")
    login, _ = sessions.issue_login()
    session, _ = sessions.issue()
    assert sessions.check(login) is None
    assert sessions.check_login(session) is None
    assert sessions.check_login(login) is not None


def test_the_cookie_is_http_only_strict_and_secure_only_over_tls() -> None:
    plain = cookie_header("gateway_console", "v", 60, secure=False)
    assert plain == "gateway_console=v; Path=/ui; Max-Age=60; HttpOnly; SameSite=Strict"
    assert cookie_header("gateway_console", "v", 60, secure=True).endswith("; Secure")


def test_tokens_with_any_characters_are_refused_not_an_error() -> None:
    """A client may send any character in a cookie or a form field: refused like any wrong token (a TypeError from
    comparing non-ASCII text in constant time would be a 500)."""
    sessions = Sessions("master")
    token, session = sessions.issue()
    payload, _, _ = token.rpartition(".")
    for forged in (f"{payload}.\u00e9\u00e9\u00e9", "v1.1.\u00e9.\u00e9", "\udcff", token + "\u2028"):
        assert sessions.check(forged) is None
        assert sessions.check_login(forged) is None
        assert sessions.csrf_ok(session, forged) is False
