"""Redis goes away, hangs, comes back, or refuses scripts, behind a forwarder the test controls (the machine's Redis
itself runs on): every call returns within its timeout with `LimitsUnavailable`; fail_open grants degraded,
fail_closed refuses; the retry window keeps requests off Redis; Redis back is normal again; a Redis that refuses
scripts stops the gateway at open() with an error that says so; the URL's password is never in an error or a log."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from typing import BinaryIO

import pytest
from pydantic import SecretStr

from gateway.limits.base import Grant, Limit, LimitsMisconfigured, LimitsUnavailable, Want
from gateway.limits.guarded import GuardedLimitStore
from gateway.limits.redis_store import RedisLimitStore
from gateway.limits.stores import open_limit_store
from gateway.settings import Settings
from tests.support.forwarder import Forwarder

pytestmark = pytest.mark.slow

TIMEOUT = 0.2
BOUND = 5 * TIMEOUT  # "returned, and not after waiting on a dead connection": not a timing claim
RPM = Limit("key:k", "rpm", 100)
PASSWORD = "s3cret-pw"


@pytest.fixture()
def forwarder() -> Iterator[Forwarder]:
    forwarder = Forwarder(6379).start()
    yield forwarder
    forwarder.stop()


class CountingRedis(RedisLimitStore):
    """The real store, counting the acquires that reached it."""

    calls = 0

    async def acquire(
        self, wants: Sequence[Want], holder: str, lease_seconds: float, now: float | None = None
    ) -> Grant:
        self.calls += 1
        return await super().acquire(wants, holder, lease_seconds, now)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def timed_acquire(store: RedisLimitStore | GuardedLimitStore, holder: str) -> tuple[Grant | Exception, float]:
    started = time.monotonic()
    try:
        result: Grant | Exception = await store.acquire([Want(RPM, 1)], holder, 30)
    except LimitsUnavailable as exc:
        result = exc
    return result, time.monotonic() - started


@pytest.mark.parametrize("failure", ["fail_open", "fail_closed"])
def test_redis_going_away_and_coming_back(forwarder: Forwarder, redis_prefix: str, failure: str) -> None:
    outcomes: list[str] = []
    inner = CountingRedis(f"redis://127.0.0.1:{forwarder.port}/0", redis_prefix, TIMEOUT)
    clock = Clock()
    store = GuardedLimitStore(inner, failure, 1.0, outcomes.append, clock=clock)  # type: ignore[arg-type]

    async def main() -> None:
        await store.open()
        grant = await store.acquire([Want(RPM, 1)], "before", 30)
        assert grant.ok and not grant.degraded and grant.states[0].remaining == 99

        forwarder.stop()
        result, took = await timed_acquire(store, "during")
        assert took < BOUND
        if failure == "fail_open":
            assert isinstance(result, Grant) and result.ok and result.degraded
        else:
            assert isinstance(result, LimitsUnavailable) and "127.0.0.1" in result.detail
        status = store.status()
        assert status["reachable"] is False and status["kind"] == "redis" and status["since"] is not None
        assert f"127.0.0.1:{forwarder.port}" in status["error"]

        calls = inner.calls
        for holder in range(10):
            await timed_acquire(store, f"window{holder}")
        assert inner.calls == calls  # the retry window: Redis is not asked, nobody waits for its timeout

        forwarder.start()
        clock.now += 1.0
        grant = await store.acquire([Want(RPM, 1)], "after", 30)
        assert grant.ok and not grant.degraded and grant.states[0].remaining == 98  # the use before the outage
        assert store.status()["reachable"] is True
        await store.close()

    asyncio.run(main())
    assert outcomes == [failure] * 11


def test_a_redis_that_never_answers_times_out(forwarder: Forwarder, redis_prefix: str) -> None:
    forwarder.hang()

    async def main() -> None:
        store = RedisLimitStore(f"redis://127.0.0.1:{forwarder.port}/0", redis_prefix, TIMEOUT)
        started = time.monotonic()
        with pytest.raises(LimitsUnavailable) as unavailable:
            await store.open()
        assert time.monotonic() - started < BOUND
        result, took = await timed_acquire(store, "a")
        assert took < BOUND and isinstance(result, LimitsUnavailable)
        for detail in (result.detail, unavailable.value.detail):
            assert detail == f"Redis at 127.0.0.1:{forwarder.port}: TimeoutError: no answer within 0.2 s"
        started = time.monotonic()
        assert not await store.ping()
        assert time.monotonic() - started < BOUND

        forwarder.answer()
        assert (await store.acquire([Want(RPM, 1)], "b", 30)).ok
        await store.close()

    asyncio.run(main())


def test_the_password_is_never_in_an_error_or_a_log(
    forwarder: Forwarder, redis_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    forwarder.stop()  # nothing listens on its port
    url = f"redis://:{PASSWORD}@127.0.0.1:{forwarder.port}/0"

    async def main() -> None:
        inner = RedisLimitStore(url, redis_prefix, TIMEOUT)
        with pytest.raises(LimitsUnavailable) as unavailable:
            await inner.acquire([Want(RPM, 1)], "a", 30)
        assert PASSWORD not in unavailable.value.detail
        assert PASSWORD not in inner._redact(RuntimeError(f"AUTH {PASSWORD} failed"))
        store = GuardedLimitStore(inner, "fail_open", 1.0)
        await store.open()
        assert (await store.acquire([Want(RPM, 1)], "b", 30)).degraded
        assert PASSWORD not in str(store.status())
        await store.close()

    with caplog.at_level(logging.DEBUG):
        asyncio.run(main())
    assert any("unreachable" in record.getMessage() for record in caplog.records)
    assert all(PASSWORD not in record.getMessage() for record in caplog.records)


class ScriptRefusingRedis:
    """A Redis proxy that allows plain commands and refuses scripts (as some managed proxies do): answers AUTH,
    HELLO-less handshakes, PING and SELECT, and `-ERR unknown command` to everything else."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.commands: list[str] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self.listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        reader = client.makefile("rb")
        try:
            while command := _read_command(reader):
                name = command[0].upper()
                self.commands.append(name)
                if name == "PING":
                    client.sendall(b"+PONG\r\n")
                elif name in ("AUTH", "SELECT", "CLIENT"):
                    client.sendall(b"+OK\r\n")
                else:
                    client.sendall(f"-ERR unknown command '{name}', with args beginning with: \r\n".encode())
        except OSError:
            pass
        finally:
            client.close()


def _read_command(reader: BinaryIO) -> list[str]:
    """One RESP array of bulk strings (what a client sends); [] at the end of the connection."""
    line = reader.readline()
    if not line.startswith(b"*"):
        return []
    parts = []
    for _ in range(int(line[1:])):
        size = int(reader.readline()[1:])
        parts.append(reader.read(size + 2)[:-2].decode())
    return parts


def test_a_redis_that_refuses_scripts_stops_the_gateway_at_open(redis_prefix: str) -> None:
    proxy = ScriptRefusingRedis()
    url = f"redis://:{PASSWORD}@127.0.0.1:{proxy.port}/0"
    try:

        async def main() -> None:
            for store in (
                RedisLimitStore(url, redis_prefix, 1.0),
                GuardedLimitStore(RedisLimitStore(url, redis_prefix, 1.0), "fail_open", 1.0),
                open_limit_store(Settings(redis_url=SecretStr(url), redis_prefix=redis_prefix)),
            ):
                with pytest.raises(LimitsMisconfigured) as refused:
                    await store.open()
                message = str(refused.value)
                assert "refuses Lua scripts" in message and "EVALSHA" in message and "per-node" in message
                assert f"127.0.0.1:{proxy.port}" in message and PASSWORD not in message
                assert await store.ping()  # it answers: this is not an outage, it can never work
                await store.close()

        asyncio.run(main())
        assert "SCRIPT" in proxy.commands
    finally:
        proxy.close()
