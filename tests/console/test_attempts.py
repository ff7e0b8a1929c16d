"""Failed console logins throttled per client address (gateway/console/attempts.py), and over HTTP."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from gateway.console import attempts as attempts_module
from gateway.console.attempts import LoginAttempts
from gateway.state import Gateway
from tests.console.harness import csrf_of, login, run_console
from tests.support.inprocess import MASTER


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_of_failures_then_one_per_interval() -> None:
    clock = Clock()
    attempts = LoginAttempts(10, clock)
    for _ in range(10):
        assert attempts.wait("a") == 0
        attempts.failed("a")
    assert 5.9 <= attempts.wait("a") <= 6.0  # 60 s / 10: the next failure's turn
    assert attempts.wait("b") == 0  # another address is not held to a's failures
    clock.now += 6.0
    assert attempts.wait("a") == 0
    attempts.failed("a")
    assert attempts.wait("a") > 5.9
    clock.now += 60.0  # a minute without failures: whole again, and forgotten
    assert attempts.wait("a") == 0 and "a" not in attempts._full_at


def test_asking_is_not_failing() -> None:
    attempts = LoginAttempts(3, Clock())
    for _ in range(100):
        assert attempts.wait("a") == 0  # (a right key asks and never fails)


def test_the_addresses_remembered_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    attempts = LoginAttempts(1, Clock())
    monkeypatch.setattr(attempts_module, "MAX_ADDRESSES", 50)
    for index in range(200):
        attempts.failed(f"10.0.{index // 256}.{index % 256}")
    assert len(attempts._full_at) == 50
    assert attempts.wait("10.0.0.199") > 0 and attempts.wait("10.0.0.0") == 0  # the oldest forgotten


def test_guessing_from_one_address_is_refused_there_with_retry_after(tmp_path: Path) -> None:
    async def scenario(gateway: Gateway, client: httpx.AsyncClient) -> None:
        for guess in range(10):
            form = await client.get("/ui/login")
            wrong = await client.post(
                "/ui/login", data={"master_key": f"guess-{guess}", "csrf_token": csrf_of(form.text)}
            )
            assert wrong.status_code == 401
        form = await client.get("/ui/login")
        right = await client.post("/ui/login", data={"master_key": MASTER, "csrf_token": csrf_of(form.text)})
        assert right.status_code == 429  # the right key too: else the throttle would only slow guessing down
        assert 1 <= int(right.headers["retry-after"]) <= 6
        assert "Too many wrong keys from this address" in right.text
        assert not any(c.startswith("gateway_console=") for c in right.headers.get_list("set-cookie"))
        app = client._transport.app  # type: ignore[attr-defined]
        elsewhere = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, client=("10.9.8.7", 4242)), base_url="http://gateway"
        )
        async with elsewhere:
            await login(elsewhere)  # another address logs in

    run_console(tmp_path, scenario)
