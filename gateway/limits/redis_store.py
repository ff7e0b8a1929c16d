"""Limits in Redis, shared by every gateway node: each operation is one Lua script (`redis_scripts`), atomic on the
server and timed by the server's clock, so N nodes admit what one limit allows, not N times it.

Every call is bounded by `timeout_seconds` (connect, socket and the whole call; redis-py's own retries are off, so
the bound is not multiplied) and any error or timeout is `LimitsUnavailable`: what happens then is the caller's
policy (`guarded.GuardedLimitStore`: fail_open or fail_closed). A Redis (or a proxy in front of one) that refuses
scripts is refused at `open()` with `LimitsMisconfigured`: limits kept per node instead would silently multiply.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError

from gateway.limits import gcra, redis_scripts
from gateway.limits.base import (
    Grant,
    Limit,
    LimitsMisconfigured,
    LimitStore,
    LimitsUnavailable,
    State,
    Want,
)

SCRIPTS = {
    "acquire": redis_scripts.ACQUIRE,
    "settle": redis_scripts.SETTLE,
    "release": redis_scripts.RELEASE,
    "give_back": redis_scripts.GIVE_BACK,
    "peek": redis_scripts.PEEK,
    "block": redis_scripts.BLOCK,
}


def _now(now: float | None) -> str:
    """A time for a script: '' asks for Redis's own; repr() of a float reads back as the same double in Lua."""
    return "" if now is None else repr(float(now))


class RedisLimitStore(LimitStore):
    kind = "redis"

    def __init__(self, url: str, prefix: str, timeout_seconds: float) -> None:
        self.prefix = prefix
        self.timeout_seconds = timeout_seconds
        self._password = urlsplit(url).password
        self._pool: ConnectionPool = ConnectionPool.from_url(
            url,
            socket_timeout=timeout_seconds,
            socket_connect_timeout=timeout_seconds,
            retry=Retry(NoBackoff(), 0),
        )
        self._redis = Redis(connection_pool=self._pool)
        self._scripts = {name: self._redis.register_script(source) for name, source in SCRIPTS.items()}
        kwargs = self._pool.connection_kwargs
        self.where = kwargs.get("path") or f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"

    def key(self, limit: Limit) -> str:
        return f"{self.prefix}:limit:{limit.key}"

    async def open(self) -> None:
        """Load the scripts and run one: a server that refuses scripts is `LimitsMisconfigured`, one that cannot be
        reached `LimitsUnavailable`."""
        try:
            for script in self._scripts.values():
                await self._bounded(self._redis.script_load(script.script))
            await self._bounded(self._scripts["peek"](keys=[], args=[_now(0.0)]))
        except ResponseError as exc:
            raise LimitsMisconfigured(
                f"Redis at {self.where} refuses Lua scripts ({self._redact(exc)}). Shared rate limits need EVAL, "
                "EVALSHA and SCRIPT LOAD: point GATEWAY_REDIS_URL at a Redis (or a proxy) that allows them, or "
                "unset it to keep limits on this node only. The gateway does not fall back to per-node limits on "
                "its own: that would multiply every limit by the number of nodes."
            ) from exc
        except (RedisError, OSError, TimeoutError) as exc:
            raise self._unavailable(exc) from exc

    async def acquire(
        self, wants: Sequence[Want], holder: str, lease_seconds: float, now: float | None = None
    ) -> Grant:
        gcra.check_wants(wants, holder, lease_seconds)
        args: list[str | int] = [_now(now), holder, repr(float(lease_seconds))]
        for want in wants:
            args += [want.limit.kind, want.limit.amount, want.cost]
        reply = await self._run("acquire", [self.key(w.limit) for w in wants], args)
        ok, index, retry_after, too_large = int(reply[0]), int(reply[1]), float(reply[2]), bool(int(reply[3]))
        states = _states([w.limit for w in wants], reply[4:])
        if ok:
            return Grant(True, states)
        return Grant(False, states, wants[index - 1].limit, retry_after, too_large)

    async def settle(self, limit: Limit, delta: int, now: float | None = None) -> None:
        await self._run("settle", [self.key(limit)], [_now(now), limit.kind, limit.amount, delta])

    async def release(self, limits: Sequence[Limit], holder: str) -> None:
        slots = [self.key(limit) for limit in limits if limit.kind == "concurrency"]
        if slots:
            await self._run("release", slots, [holder])

    async def give_back(
        self, holder: str, slots: Sequence[Limit], settles: Sequence[tuple[Limit, int]], now: float | None = None
    ) -> None:
        released = [self.key(limit) for limit in slots if limit.kind == "concurrency"]
        rates = [(limit, delta) for limit, delta in settles if limit.kind != "concurrency"]
        if not released and not rates:
            return
        args: list[str | int] = [_now(now), holder, len(released)]
        for limit, delta in rates:
            args += [limit.kind, limit.amount, delta]
        await self._run("give_back", released + [self.key(limit) for limit, _ in rates], args)

    async def peek(self, limits: Sequence[Limit], now: float | None = None) -> tuple[State, ...]:
        args: list[str | int] = [_now(now)]
        for limit in limits:
            args += [limit.kind, limit.amount]
        return _states(limits, await self._run("peek", [self.key(limit) for limit in limits], args))

    async def block(self, limit: Limit, seconds: float, now: float | None = None) -> None:
        if seconds < 0:
            raise ValueError(f"a block lasts >= 0 seconds, not {seconds}")
        await self._run("block", [self.key(limit)], [_now(now), limit.kind, repr(float(seconds))])

    async def ping(self) -> bool:
        try:
            return bool(await self._bounded(self._redis.ping()))
        except (RedisError, OSError, TimeoutError):
            return False

    async def close(self) -> None:
        await self._redis.aclose()
        await self._pool.aclose()

    async def _run(self, name: str, keys: list[str], args: Sequence[str | int]) -> Any:
        try:
            return await self._bounded(self._scripts[name](keys=keys, args=args))
        except (RedisError, OSError, TimeoutError) as exc:
            raise self._unavailable(exc) from exc

    async def _bounded(self, call: Any) -> Any:
        # The socket timeouts bound each read and the connect; this bounds the whole call (connect + send + read).
        # (asyncio.timeout, not wait_for: on 3.11 wait_for runs the call in a task of its own, ~10% of a call's CPU.)
        async with asyncio.timeout(self.timeout_seconds):
            return await call

    def _unavailable(self, exc: BaseException) -> LimitsUnavailable:
        if isinstance(exc, TimeoutError) and not str(exc):
            text = f"no answer within {self.timeout_seconds:g} s"
        else:
            text = self._redact(exc)
        return LimitsUnavailable(f"Redis at {self.where}: {type(exc).__name__}: {text}")

    def _redact(self, exc: BaseException) -> str:
        """The error's text without the URL's password, should a driver ever quote it."""
        text = str(exc)
        return text.replace(self._password, "***") if self._password else text


def _states(limits: Sequence[Limit], flat: Sequence[Any]) -> tuple[State, ...]:
    """States from a script's reply: remaining and reset of each limit, in order."""
    return tuple(State(limit, int(flat[2 * i]), float(flat[2 * i + 1])) for i, limit in enumerate(limits))
