"""Failed console logins, throttled per client address.

A master key is long and random, so guessing it is hopeless; the throttle is there so that a script cannot make a
console into an oracle at line rate, and so that guessing shows up in the logs. Each address may fail
`failures_per_minute` times at once, then once per `60 / failures_per_minute` seconds (the limits' own GCRA over
failures alone: a right key is never counted). Past that, every login from the address (the right key too, or
the throttle would only slow the guessing down) is answered 429 with `Retry-After` until its turn comes again.

Per process and in memory: a guess refused by one worker is a guess nobody else had to answer. The address is the
peer of the connection (the gateway runs uvicorn without proxy headers: a forwarded address is not trusted), so
behind a proxy its clients share one budget of failures; a person who types the key right waits at most one
interval once the guessing stops. At most `MAX_ADDRESSES` are remembered (the oldest forgotten first).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable

from gateway.limits import gcra

log = logging.getLogger("gateway.console")

MAX_ADDRESSES = 10_000


class LoginAttempts:
    def __init__(self, failures_per_minute: int = 10, clock: Callable[[], float] = time.monotonic) -> None:
        self.amount = failures_per_minute
        self.clock = clock
        self._full_at: OrderedDict[str, float] = OrderedDict()  # address -> when its failures are all forgotten

    def wait(self, address: str) -> float:
        """Seconds before `address` may try to log in again; 0: now."""
        full_at = self._full_at.get(address)
        if full_at is None:
            return 0.0
        ahead = full_at - self.clock()
        if ahead <= 0:
            del self._full_at[address]
            return 0.0
        fits, wait = gcra.rate_take(ahead, self.amount, 1)
        return 0.0 if fits is not None else wait

    def failed(self, address: str) -> None:
        """`address` sent a wrong key."""
        now = self.clock()
        ahead = self._full_at.pop(address, now) - now
        self._full_at[address] = now + gcra.rate_settle(ahead, self.amount, 1)  # (last: the newest)
        while len(self._full_at) > MAX_ADDRESSES:
            self._full_at.popitem(last=False)
        if gcra.rate_take(ahead, self.amount, 2)[0] is None:  # this failure used the address's last one
            log.warning("console login: %s failed %d times in a minute; throttled", address, self.amount)
