"""Concurrency slots held by this process's requests, renewed while the requests run.

A slot is a lease (gateway/limits/gcra.py) so that a process killed with SIGKILL cannot keep it: its leases end
and the slots come back. The lease is short (`LEASE_SECONDS`) and renewed by this process every `RENEW_SECONDS`
while the request that holds it runs (a stream may last many minutes), by acquiring it again as the same holder,
which the stores take as a renewal, not a second slot. So a dead process's slots return within a minute, and a
live request's never lapse, unless the store is unreachable for longer than a lease (then a few more requests
than the limit may run for a while: the same bargain as `fail_open`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable

from gateway.limits.base import Limit, LimitStore, LimitsUnavailable, Want

log = logging.getLogger("gateway.limits")

LEASE_SECONDS = 60.0
RENEW_SECONDS = 20.0


class Leases:
    """The slots this process holds, by holder, and the task that renews them."""

    def __init__(
        self, store: LimitStore, lease_seconds: float = LEASE_SECONDS, renew_seconds: float = RENEW_SECONDS
    ) -> None:
        self.store = store
        self.lease_seconds, self.renew_seconds = lease_seconds, renew_seconds
        self._held: dict[str, set[Limit]] = {}
        self._task: asyncio.Task[None] | None = None

    def hold(self, holder: str, limits: Iterable[Limit]) -> None:
        """`holder` took these limits' slots (other kinds of limit are ignored): renew them until `drop`."""
        slots = [limit for limit in limits if limit.kind == "concurrency"]
        if slots:
            self._held.setdefault(holder, set()).update(slots)

    def drop(self, holder: str, limits: Iterable[Limit] | None = None) -> None:
        """`holder` gave these slots back (None: all of its slots)."""
        if limits is None:
            self._held.pop(holder, None)
            return
        held = self._held.get(holder)
        if held is not None:
            held.difference_update(limits)
            if not held:
                del self._held[holder]

    def held(self) -> int:
        """How many holders have slots now."""
        return len(self._held)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._renew_forever())

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def renew(self) -> int:
        """Renew every slot held now; how many holders were renewed. Stops at the first unreachable store."""
        renewed = 0
        for holder, slots in list(self._held.items()):
            try:
                await self.store.acquire([Want(limit, 1) for limit in slots], holder, self.lease_seconds)
            except LimitsUnavailable as error:
                log.warning("leases not renewed (the limit store cannot be reached): %s", error.detail)
                break
            renewed += 1
        return renewed

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self.renew_seconds)
            try:
                await self.renew()
            except Exception:  # a bug here must not end the renewals for good
                log.exception("renewing concurrency leases failed")
