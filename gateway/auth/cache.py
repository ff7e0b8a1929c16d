"""Gateway keys cached per process, so that a request does not read its key from the database every time.

What is cached is what the database said of a key hash: its record and its team, or that no key has that hash.
Whether the key may be used (revoked, expired, team gone) is decided from that on every request by the
`Authenticator`, so an expiry time takes effect at its second whatever the cache holds.

How long an answer is kept depends on whether changes reach this process (`healthy`, gateway/auth/invalidation.py):
while they do, `seconds` (each change removes what it touched at once); while they do not (SQLite, or the channel
down), at most `fallback_seconds`, which is then how late a revocation can take effect here. "No such key" is
kept at most `fallback_seconds` in any case: it only spares the database a flood of one wrong key, and a key made
a moment later by a path that does not notify must still work soon. Positive and negative answers are kept in
separate bounded LRUs so that a flood of random wrong keys cannot push the real keys out.

Concurrent misses for one hash share a single read (single-flight). A change that arrives while a read is under
way may have been missed by that read, so its answer is handed to its callers but not kept (a generation count),
and callers after the change start a read of their own.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from gateway.store.base import KeyRecord, Team

# What the database says of a key hash: the key and its team (None: the team no longer exists); None: no such key.
Found = tuple[KeyRecord, Team | None]
Load = Callable[[str], Awaitable[Found | None]]

MAX_ENTRIES = 10_000


@dataclass(slots=True)
class _Entry:
    found: Found
    loaded_at: float  # when the read that produced it started (the clock of the cache)


def _never_healthy() -> bool:
    return False


class KeyCache:
    """`get(key_hash)`: the database's answer for a key hash, from memory while it is fresh enough.

    `forget_key`, `forget_team` and `clear` are called when a change is known (a notification, or the admin API
    of this process). Counters: `hits` (answered from memory), `misses` (not), `reads` (database reads made:
    fewer than misses when concurrent misses shared one)."""

    def __init__(
        self,
        load: Load,
        *,
        seconds: float,
        fallback_seconds: float,
        healthy: Callable[[], bool] = _never_healthy,
        max_entries: int = MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._load = load
        self._seconds = seconds
        self._fallback_seconds = fallback_seconds
        self._healthy = healthy
        self._max_entries = max_entries
        self._clock = clock
        self._found: OrderedDict[str, _Entry] = OrderedDict()
        self._missing: OrderedDict[str, float] = OrderedDict()  # key hash -> when the read that found none started
        self._reading: dict[str, asyncio.Task[Found | None]] = {}
        self._generation = 0  # advanced by every change; a read that saw it advance does not keep its answer
        self.hits = 0
        self.misses = 0
        self.reads = 0

    @property
    def enabled(self) -> bool:
        return self._seconds > 0

    def lifetime(self) -> float:
        """How long a found key is kept now: `seconds` while changes reach this process, else the fallback."""
        if self._healthy():
            return self._seconds
        return min(self._seconds, self._fallback_seconds)

    def __len__(self) -> int:
        return len(self._found) + len(self._missing)

    async def get(self, key_hash: str) -> Found | None:
        lifetime = self.lifetime()
        if lifetime > 0:
            now = self._clock()
            entry = self._found.get(key_hash)
            if entry is not None:
                if now - entry.loaded_at < lifetime:
                    self._found.move_to_end(key_hash)
                    self.hits += 1
                    return entry.found
                del self._found[key_hash]
            else:
                missing_since = self._missing.get(key_hash)
                if missing_since is not None:
                    if now - missing_since < min(lifetime, self._fallback_seconds):
                        self.hits += 1
                        return None
                    del self._missing[key_hash]
        self.misses += 1
        read = self._reading.get(key_hash)
        if read is None:
            read = asyncio.ensure_future(self._read(key_hash))
            # The callers may all be cancelled (clients that went away) while the read goes on: its error, if
            # any, is then nobody's, and must not be reported as never retrieved.
            read.add_done_callback(_retrieve)
            self._reading[key_hash] = read
        # Shielded: one caller cancelled does not cancel the read the others wait for.
        return await asyncio.shield(read)

    async def _read(self, key_hash: str) -> Found | None:
        generation = self._generation
        started = self._clock()
        this = asyncio.current_task()
        self.reads += 1
        try:
            found = await self._load(key_hash)
        finally:
            if self._reading.get(key_hash) is this:
                del self._reading[key_hash]
        if generation == self._generation and self.lifetime() > 0:
            self._keep(key_hash, found, started)
        return found

    def _keep(self, key_hash: str, found: Found | None, loaded_at: float) -> None:
        if found is None:
            self._missing[key_hash] = loaded_at
            self._missing.move_to_end(key_hash)
            if len(self._missing) > self._max_entries:
                self._missing.popitem(last=False)
            return
        self._found[key_hash] = _Entry(found, loaded_at)
        self._found.move_to_end(key_hash)
        if len(self._found) > self._max_entries:
            self._found.popitem(last=False)

    # -- changes ---------------------------------------------------------------------------------

    def forget_key(self, key_hash: str) -> None:
        """The key with this hash was made, changed or deleted."""
        self._generation += 1
        self._found.pop(key_hash, None)
        self._missing.pop(key_hash, None)
        self._reading.pop(key_hash, None)  # (it goes on for its callers; later callers read again)

    def forget_team(self, team: str) -> None:
        """The team of this name was made, changed or deleted: its keys are read again."""
        self._generation += 1
        for key_hash in [h for h, entry in self._found.items() if entry.found[0].team == team]:
            del self._found[key_hash]
        self._reading.clear()  # which team a read under way is for is not known yet

    def clear(self) -> None:
        """Anything may have changed (or changes may have been missed): forget everything."""
        self._generation += 1
        self._found.clear()
        self._missing.clear()
        self._reading.clear()


def _retrieve(read: asyncio.Task[Found | None]) -> None:
    if not read.cancelled():
        read.exception()
