"""How changes to teams and keys reach every process's key cache (gateway/auth/cache.py).

On PostgreSQL the database itself says what changed: triggers on `teams` and `api_keys` (installed at start,
idempotently) send `NOTIFY gateway_auth` with what a committed write touched, whoever wrote it: the admin API of
any node, `gateway teams/keys` writing the database directly, or SQL by hand. A rolled-back write notifies
nothing. Each process LISTENs on a connection of its own and removes what a notification names from its cache.

While the listener is not known to work (not yet connected, connection lost, or not heard from for
`lease_seconds`), `healthy()` is False and the cache keeps keys at most its fallback lifetime (1 s by default),
so a revocation still takes effect everywhere within about that. A connection that was lost may have missed
notifications: the cache is cleared then, and again once LISTENing anew. A connection that goes silent without
closing (a cut network) is noticed by a probe every `probe_seconds`.

On SQLite there is no channel (`NoInvalidation`): one node, whose `--workers` share the file, so the fallback
lifetime bounds how late a change made by another process takes effect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from typing import Any, Protocol

log = logging.getLogger("gateway.auth")

CHANNEL = "gateway_auth"
# Installing the triggers takes this transaction-level advisory lock, so that nodes starting together do not
# race (the store's migrations take 7243001).
INSTALL_LOCK = 7243002
PROBE_SECONDS = 1.0
PROBE_TIMEOUT_SECONDS = 1.0
CONNECT_TIMEOUT_SECONDS = 5
RECONNECT_BACKOFF = (0.05, 2.0)  # seconds: the first retry after a failure, and the most between two

# A notification names what changed: `key:HASH`, `team:NAME`, or `*` (anything: a TRUNCATE, or a value too long
# for a notification's payload).
NOTIFY_FUNCTION = f"""
CREATE OR REPLACE FUNCTION gateway_auth_notify(kind text, value text) RETURNS void LANGUAGE sql AS $$
    SELECT pg_notify('{CHANNEL}', CASE
        WHEN value IS NULL OR octet_length(value) > 1000 THEN '*'
        ELSE kind || ':' || value
    END)
$$"""
TRIGGER_FUNCTION = """
CREATE OR REPLACE FUNCTION gateway_auth_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_LEVEL = 'STATEMENT' THEN
        PERFORM gateway_auth_notify('*', NULL);
        RETURN NULL;
    END IF;
    IF TG_OP = 'UPDATE' AND OLD IS NOT DISTINCT FROM NEW THEN
        RETURN NULL;  -- a write that changed nothing
    END IF;
    IF TG_TABLE_NAME = 'api_keys' THEN
        IF TG_OP <> 'INSERT' THEN PERFORM gateway_auth_notify('key', OLD.key_hash); END IF;
        IF TG_OP <> 'DELETE' THEN PERFORM gateway_auth_notify('key', NEW.key_hash); END IF;
    ELSE
        IF TG_OP <> 'INSERT' THEN PERFORM gateway_auth_notify('team', OLD.name); END IF;
        IF TG_OP <> 'DELETE' THEN PERFORM gateway_auth_notify('team', NEW.name); END IF;
    END IF;
    RETURN NULL;
END
$$"""
# (table, trigger name, when it fires); PostgreSQL sends one notification per distinct payload per transaction.
TRIGGERS = (
    ("api_keys", "gateway_auth_api_keys", "AFTER INSERT OR UPDATE OR DELETE ON api_keys FOR EACH ROW"),
    ("api_keys", "gateway_auth_api_keys_truncate", "AFTER TRUNCATE ON api_keys FOR EACH STATEMENT"),
    ("teams", "gateway_auth_teams", "AFTER INSERT OR UPDATE OR DELETE ON teams FOR EACH ROW"),
    ("teams", "gateway_auth_teams_truncate", "AFTER TRUNCATE ON teams FOR EACH STATEMENT"),
)


class Forgets(Protocol):
    """What a channel tells of changes (the key cache)."""

    def forget_key(self, key_hash: str) -> None: ...

    def forget_team(self, team: str) -> None: ...

    def clear(self) -> None: ...


def apply(payload: str, target: Forgets) -> None:
    """Remove from `target` what a notification's payload names."""
    kind, _, value = payload.partition(":")
    if kind == "key" and value:
        target.forget_key(value)
    elif kind == "team" and value:
        target.forget_team(value)
    else:
        target.clear()


class Invalidation(Protocol):
    name: str
    notifications: int  # changes heard so far

    def healthy(self) -> bool: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...


class NoInvalidation:
    """No channel (SQLite): the cache keeps keys for its fallback lifetime only."""

    name = "none"
    notifications = 0

    def healthy(self) -> bool:
        return False

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass


def is_postgres(url: str | None) -> bool:
    return url is not None and url.startswith(("postgresql://", "postgres://"))


class PostgresListener:
    """LISTEN gateway_auth on a connection of its own, in a task, reconnecting with backoff when it is lost."""

    name = "postgres-listen"

    def __init__(
        self,
        url: str,
        target: Forgets,
        *,
        probe_seconds: float = PROBE_SECONDS,
        probe_timeout_seconds: float = PROBE_TIMEOUT_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url = url
        self._target = target
        self._probe_seconds = probe_seconds
        self._probe_timeout = probe_timeout_seconds
        # Healthy only while the connection answered within this: a probe that hangs (a cut network) turns
        # the cache to its fallback lifetime without waiting for TCP to give up.
        self.lease_seconds = probe_seconds + probe_timeout_seconds + 0.5
        self._clock = clock
        self._listening = False
        self._alive_at = float("-inf")
        self._task: asyncio.Task[None] | None = None
        self._closing: asyncio.Event | None = None
        self.backend_pid: int | None = None  # the listening connection's server process (tests end it)
        self.connections = 0  # successful LISTENs so far
        self.notifications = 0

    def healthy(self) -> bool:
        return self._listening and self._clock() - self._alive_at <= self.lease_seconds

    async def start(self) -> None:
        """Start listening; returns once the first attempt succeeded or failed (a failure is logged and retried
        in the background: the cache works meanwhile with its fallback lifetime)."""
        if self._task is not None:
            return
        first_attempt = asyncio.Event()
        self._closing = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(
            self._run(self._closing, first_attempt), name="gateway-auth-listener"
        )
        waiter = asyncio.ensure_future(first_attempt.wait())
        try:
            await asyncio.wait(
                [waiter, self._task], timeout=CONNECT_TIMEOUT_SECONDS + 5, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            waiter.cancel()

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        if self._closing is not None:
            self._closing.set()
        task.cancel()
        # Bounded: the loop also ends by itself once `closing` is set, should a cancellation be lost inside a
        # library call (asyncio.wait_for in Python 3.11 can swallow one that races with a result).
        await asyncio.wait([task], timeout=CONNECT_TIMEOUT_SECONDS + 5)
        if not task.done():
            log.warning("key cache: the listener did not stop in time")
        self._listening = False

    async def _run(self, closing: asyncio.Event, first_attempt: asyncio.Event) -> None:
        backoff = 0.0
        failing = False
        while not closing.is_set():
            connection: Any = None
            try:
                connection = await self._connect()
                await self._install(connection)
                await connection.execute(f"LISTEN {CHANNEL}")
                self.backend_pid = connection.info.backend_pid
                # Anything kept before this instant may have changed unnoticed.
                self._target.clear()
                self._alive_at = self._clock()
                self._listening = True
                self.connections += 1
                if failing:
                    log.warning("key cache: listening for changes to teams and keys again")
                failing, backoff = False, 0.0
                first_attempt.set()
                await self._listen(connection, closing)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not failing:
                    log.warning(
                        "key cache: not listening for changes to teams and keys (%s: %s); cached keys live at most "
                        "the fallback lifetime until it is back",
                        type(exc).__name__,
                        str(exc).strip().splitlines()[0] if str(exc).strip() else "",
                    )
                failing = True
            finally:
                # Unhealthy first, then clear: nothing read from here on is kept past the fallback lifetime.
                self._listening = False
                self._target.clear()
                if connection is not None:
                    with contextlib.suppress(Exception):
                        await connection.close()
            first_attempt.set()
            backoff = min(RECONNECT_BACKOFF[1], max(RECONNECT_BACKOFF[0], backoff * 2))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(closing.wait(), backoff * random.uniform(0.5, 1.0))

    async def _connect(self) -> Any:
        import psycopg

        # Bounded, with TCP keepalives as the store's connections have (gateway/store/__init__.py).
        return await psycopg.AsyncConnection.connect(
            self._url,
            autocommit=True,
            connect_timeout=CONNECT_TIMEOUT_SECONDS,
            keepalives=1,
            keepalives_idle=5,
            keepalives_interval=2,
            keepalives_count=2,
            application_name="gateway-auth-listener",
        )

    async def _install(self, connection: Any) -> None:
        """The notify function and triggers, created if missing (the functions replaced: their text may be newer).

        A database user that may not create them (not the tables' owner) can still use them once an owner has:
        then the installed ones are used as they are."""
        import psycopg

        try:
            async with connection.transaction():
                await connection.execute(f"SELECT pg_advisory_xact_lock({INSTALL_LOCK})")
                await connection.execute(NOTIFY_FUNCTION)
                await connection.execute(TRIGGER_FUNCTION)
                for table, trigger, when in TRIGGERS:
                    if not await self._has_trigger(connection, table, trigger):
                        await connection.execute(
                            f"CREATE TRIGGER {trigger} {when} EXECUTE FUNCTION gateway_auth_changed()"
                        )
        except psycopg.errors.InsufficientPrivilege:
            for table, trigger, _ in TRIGGERS:
                if not await self._has_trigger(connection, table, trigger):
                    raise
            log.info("key cache: not allowed to update the notify triggers; using the ones installed")

    @staticmethod
    async def _has_trigger(connection: Any, table: str, trigger: str) -> bool:
        cursor = await connection.execute(
            "SELECT 1 FROM pg_trigger WHERE tgrelid = %s::regclass AND tgname = %s", (table, trigger)
        )
        return await cursor.fetchone() is not None

    async def _listen(self, connection: Any, closing: asyncio.Event) -> None:
        """Apply notifications as they come; between two, every `probe_seconds`, check the connection answers."""
        while not closing.is_set():
            async for notification in connection.notifies(timeout=self._probe_seconds):
                self.notifications += 1
                apply(notification.payload, self._target)
                self._alive_at = self._clock()
            # (notifications that arrive during the probe are kept by psycopg for the next `notifies`)
            await asyncio.wait_for(connection.execute("SELECT 1"), self._probe_timeout)
            self._alive_at = self._clock()


def channel_for(database_url: str | None, target: Forgets) -> Invalidation:
    """The listener on PostgreSQL, no channel otherwise."""
    if database_url is not None and is_postgres(database_url):
        return PostgresListener(database_url, target)
    return NoInvalidation()
