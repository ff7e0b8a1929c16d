"""What both emulators share (gateway/emulators/app.py): the in-flight counts of /_emulator/stats and the gate of
/_emulator/hold, on real servers."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support.emulators import EmulatorClient, EmulatorControl, running
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow

MODELS = {"mistral": "mistral-medium-3.5", "moonshot": "kimi-k2.6"}


def ask(kind: str) -> dict:
    return {"model": MODELS[kind], "messages": [{"role": "user", "content": "hello"}], "max_tokens": 5}


def stats(client: EmulatorClient) -> dict:
    return client.control("GET", "stats").json()


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_held_requests_are_counted_in_flight(kind: str) -> None:
    with running(kind) as (server, client):
        control = EmulatorControl(server.url)
        assert control.stats() == {"in_flight": 0, "max_in_flight": 0, "requests": 0, "held": 0, "holding": False}
        control.hold()
        assert control.stats()["holding"] is True
        with ThreadPoolExecutor(3) as pool:
            answers = [pool.submit(client.chat, ask(kind)) for _ in range(3)]
            wait_until(lambda: control.stats()["held"] == 3, what="three requests at the gate")
            now = control.stats()
            assert (now["in_flight"], now["max_in_flight"], now["requests"]) == (3, 3, 3)
            control.hold(closed=False)
            assert all(answer.result().status == 200 for answer in answers)
        assert control.stats() == {"in_flight": 0, "max_in_flight": 3, "requests": 3, "held": 0, "holding": False}
        control.requests()  # control calls are not counted
        control.reset_stats()
        assert control.stats() == {"in_flight": 0, "max_in_flight": 0, "requests": 0, "held": 0, "holding": False}
        assert client.chat(ask(kind)).status == 200
        assert control.stats()["max_in_flight"] == 1 and control.stats()["requests"] == 1


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_a_stream_is_in_flight_until_its_end(kind: str) -> None:
    """A stream's endpoint returns before its body is sent: it stays counted until the connection ends."""
    with running(kind) as (_, client):
        sock = client.raw_request(
            "/v1/chat/completions", {**ask(kind), "stream": True}, {"x-emulator-fault": "stall=1"}
        )
        try:
            received = b""
            while b"data:" not in received:  # the first frame: the endpoint has returned, the body is going
                chunk = sock.recv(65536)
                assert chunk, received
                received += chunk
            assert stats(client)["in_flight"] == 1
        finally:
            sock.close()
        wait_until(lambda: stats(client)["in_flight"] == 0, what="the stream ended")
        assert stats(client)["max_in_flight"] == 1
