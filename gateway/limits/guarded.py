"""A limit store that cannot be reached, turned into the configured behaviour instead of an error or a wait.

`fail_open` (the default): a request is let through without limits (its grant says `degraded`; budgets still
hold, they are in the database); `fail_closed`: it is refused (`LimitsUnavailable`, a 503 from the pipeline).
Settling, releasing and blocking are best effort either way: leases end on their own, and a rate's state is whole
again within a minute.

After a failure the store is not asked again for `retry_seconds`: calls fail at once, so no request waits for the
timeout while the outage lasts; then one call at a time tries it again (the others still fail at once) until one
answers. The outage is logged once when it starts (with the store's detail, which never holds the URL's password)
and once when it ends, and each request answered without the store is reported to `on_unavailable(outcome)`
(a metric); `status()` is for /readyz.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal, TypeVar

from gateway.limits.base import Grant, Limit, LimitStore, LimitsUnavailable, State, Want

log = logging.getLogger("gateway.limits")
T = TypeVar("T")
Failure = Literal["fail_open", "fail_closed"]


class GuardedLimitStore(LimitStore):
    def __init__(
        self,
        inner: LimitStore,
        failure: Failure,
        retry_seconds: float,
        on_unavailable: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_state: Callable[[bool], None] | None = None,
    ) -> None:
        self.inner = inner
        self.kind = inner.kind
        self.failure: Failure = failure
        self.retry_seconds = retry_seconds
        self._on_unavailable = on_unavailable
        self._on_state = on_state  # told True / False when the store becomes reachable / unreachable (a gauge)
        self._clock = clock
        self._since: float | None = None  # unix time the outage began; None: reachable
        self._error = ""
        self._retry_at = 0.0  # on `clock`: before it, calls fail at once
        self._probing = False  # one call is trying the store again

    def status(self) -> dict[str, Any]:
        """For /readyz: whether the store answers, what happens to requests when it does not, and since when."""
        return {
            "kind": self.kind,
            "reachable": self._since is None,
            "on_failure": self.failure,
            "since": self._since,
            "error": self._error,
        }

    async def open(self) -> None:
        """Open the store; unreachable now is an outage like any other (the gateway starts, with its failure
        behaviour, and calls retry). `LimitsMisconfigured` (scripts refused) is raised: the gateway must not start."""
        try:
            await self.inner.open()
        except LimitsUnavailable as exc:
            self._down(exc.detail)
        else:
            self._up()

    async def acquire(
        self, wants: Sequence[Want], holder: str, lease_seconds: float, now: float | None = None
    ) -> Grant:
        try:
            return await self._guard(lambda: self.inner.acquire(wants, holder, lease_seconds, now))
        except LimitsUnavailable:
            if self._on_unavailable is not None:
                self._on_unavailable(self.failure)
            if self.failure == "fail_open":
                return Grant(True, degraded=True)
            raise

    async def settle(self, limit: Limit, delta: int, now: float | None = None) -> None:
        try:
            await self._guard(lambda: self.inner.settle(limit, delta, now))
        except LimitsUnavailable:
            pass  # best effort: the rate is whole again within a minute anyway

    async def release(self, limits: Sequence[Limit], holder: str) -> None:
        try:
            await self._guard(lambda: self.inner.release(limits, holder))
        except LimitsUnavailable:
            pass  # the lease ends on its own

    async def give_back(
        self, holder: str, slots: Sequence[Limit], settles: Sequence[tuple[Limit, int]], now: float | None = None
    ) -> None:
        try:
            await self._guard(lambda: self.inner.give_back(holder, slots, settles, now))
        except LimitsUnavailable:
            pass  # the leases end on their own; a rate is whole again within a minute

    async def peek(self, limits: Sequence[Limit], now: float | None = None) -> tuple[State, ...]:
        """Raises `LimitsUnavailable` in either mode: there is nothing true to show."""
        return await self._guard(lambda: self.inner.peek(limits, now))

    async def block(self, limit: Limit, seconds: float, now: float | None = None) -> None:
        try:
            await self._guard(lambda: self.inner.block(limit, seconds, now))
        except LimitsUnavailable:
            pass  # the provider will say so again

    async def ping(self) -> bool:
        """Ask the store now, whatever the fail-fast window says, and record the answer."""
        if await self.inner.ping():
            self._up()
            return True
        self._down(self._error or "no answer to a ping")
        return False

    async def close(self) -> None:
        await self.inner.close()

    async def _guard(self, call: Callable[[], Awaitable[T]]) -> T:
        probing = False
        if self._since is not None:
            if self._probing or self._clock() < self._retry_at:
                raise LimitsUnavailable(self._error)
            self._probing = probing = True
        try:
            result = await call()
        except LimitsUnavailable as exc:
            self._down(exc.detail)
            raise
        finally:
            if probing:
                self._probing = False
        self._up()
        return result

    def _down(self, detail: str) -> None:
        self._retry_at = self._clock() + self.retry_seconds
        self._error = detail
        if self._since is None:
            self._since = time.time()
            if self._on_state is not None:
                self._on_state(False)
            what = "let through without limits" if self.failure == "fail_open" else "refused (503)"
            log.warning(
                "rate limit store (%s) unreachable: %s; requests are %s (%s) until it answers, tried again every %g s",
                self.kind,
                detail,
                what,
                self.failure,
                self.retry_seconds,
            )

    def _up(self) -> None:
        if self._since is not None:
            log.warning("rate limit store (%s) reachable again after %.1f s", self.kind, time.time() - self._since)
            self._since, self._error = None, ""
            if self._on_state is not None:
                self._on_state(True)
