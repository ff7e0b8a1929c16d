"""Revocation reaches every node within a second (gateway/auth/invalidation.py), on a real PostgreSQL database.

"Nodes" here are Authenticators with stores of their own and their listeners, each on the event loop of its own
thread, as two gateway processes would have them; the last test runs two real gateway processes. The nodes keep
keys 30 s while their channel works and (unless a test says otherwise) 60 s without it, so that a refusal within
a second can only come from the notification, not from a cached answer growing old."""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.parse
from collections.abc import Coroutine, Iterator
from typing import Any

import psycopg
import pytest
from starlette.requests import Request

from gateway.auth.invalidation import PostgresListener
from gateway.auth.keys import generate_key, hash_key, new_key_id, visible_prefix
from gateway.auth.principal import Authenticator
from gateway.errors import GatewayError
from gateway.store import open_store
from gateway.store.base import KeyRecord, Team
from tests.support.admin import MASTER_KEY, Admin, unique
from tests.support.forwarder import Forwarder
from tests.support.gateways import start_cli_gateway, stop
from tests.support.http import auth, request
from tests.support.postgres import fresh_database
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow

SECOND = 1.0  # what the issue asks: a revoked key is refused on the other node within a second
# A key kept for the 1 s fallback lifetime is refused when it grows old; the test sees it at its next poll.
FALLBACK_AND_A_POLL = 1.0 + 0.25


class Node:
    """A store and an Authenticator listening for changes, on an event loop in a thread of their own."""

    def __init__(self, url: str, listen_url: str | None = None, fallback_seconds: float = 60.0) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.store = open_store(url)
        self.auth = Authenticator(
            None, self.store, database_url=listen_url or url, cache_seconds=30.0, fallback_seconds=fallback_seconds
        )
        self.call(self._open())

    async def _open(self) -> None:
        await self.store.open()
        await self.auth.start()

    def call(self, coroutine: Coroutine[Any, Any, Any], timeout: float = 20) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def check(self, key: str) -> str:
        """'ok', or the 401's message."""

        async def check() -> str:
            request = Request({"type": "http", "headers": [(b"authorization", f"Bearer {key}".encode())]})
            try:
                await self.auth.principal(request)
            except GatewayError as error:
                assert error.status == 401
                return error.message
            return "ok"

        return self.call(check())

    def status(self) -> dict[str, Any]:
        async def status() -> dict[str, Any]:
            return self.auth.status()

        return self.call(status())

    @property
    def listener(self) -> PostgresListener:
        assert isinstance(self.auth.channel, PostgresListener)
        return self.auth.channel

    def close(self) -> None:
        try:
            self.call(self.auth.close())
            self.call(self.store.close())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self.loop.close()


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    with fresh_database("gateway_auth") as url:
        yield url


@pytest.fixture()
def nodes(database: str) -> Iterator[tuple[Node, Node]]:
    a = Node(database)
    b = Node(database)
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def add_team_and_key(node: Node, *listening: Node) -> tuple[str, str, KeyRecord]:
    """A new team and a key of it, written through `node`'s store; returns once every node in `listening` heard
    of both writes (a notification heard later would make it read the key again, which the tests count)."""
    team = unique("team")
    key = generate_key()
    record = KeyRecord(new_key_id(), team, "test", visible_prefix(key), hash_key(key), created_at=int(time.time()))
    heard = [other.listener.notifications for other in listening]

    async def add() -> None:
        await node.store.create_team(Team(team, created_at=int(time.time())))
        await node.store.create_key(record)

    node.call(add())
    for other, before in zip(listening, heard, strict=True):
        # Two transactions, two notifications (`team:NAME`, `key:HASH`).
        wait_until(lambda: other.listener.notifications >= before + 2, 5, "the writes heard")  # noqa: B023
    return team, key, record


def cached(node: Node, key: str) -> None:
    """The key works on `node` and is answered from its memory from now on."""
    assert node.check(key) == "ok"
    reads = node.status()["reads"]
    for _ in range(5):
        assert node.check(key) == "ok"
    assert node.status()["reads"] == reads


def refused_within_a_second(node: Node, key: str, message: str, seconds: float = SECOND) -> float:
    """Wait until `node` refuses `key` (with `message` in the refusal): the seconds it took, checked < `seconds`."""
    started = time.monotonic()
    wait_until(lambda: message in node.check(key), 5, f"refused with {message!r}")
    elapsed = time.monotonic() - started
    assert elapsed < seconds, elapsed
    return elapsed


def execute(url: str, *statements: str, params: tuple[Any, ...] = ()) -> None:
    with psycopg.connect(url, autocommit=True) as connection:
        for statement in statements:
            connection.execute(statement, params)  # type: ignore[arg-type]


def test_a_key_revoked_through_one_node_is_refused_on_the_other_within_a_second(nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    assert b.status()["healthy"] and b.status()["lifetime_seconds"] == 30.0
    _, key, record = add_team_and_key(a, b)
    cached(b, key)
    a.call(a.store.revoke_key(record.id, int(time.time())))
    refused_within_a_second(b, key, "has been revoked")
    assert a.check(key) != "ok"


def test_a_revocation_in_sql_by_hand_reaches_the_other_node_and_a_rolled_back_one_does_not(
    database: str, nodes: tuple[Node, Node]
) -> None:
    a, b = nodes
    _, key, record = add_team_and_key(a, b)
    cached(b, key)
    reads = b.status()["reads"]
    with psycopg.connect(database) as connection:  # a transaction that is rolled back notifies nothing
        connection.execute("UPDATE api_keys SET revoked_at = 1 WHERE id = %s", (record.id,))
        connection.rollback()
    # Notifications arrive in commit order: once a later commit's has reached B, the rolled-back one would have.
    _, marker_key, _ = add_team_and_key(a, b)
    notifications = b.listener.notifications
    execute(
        database,
        "UPDATE teams SET budget_nanos = 1 WHERE name = (SELECT team FROM api_keys WHERE key_hash = %s)",
        params=(hash_key(marker_key),),
    )
    wait_until(lambda: b.listener.notifications > notifications, 5, "the later notification")
    assert b.check(key) == "ok" and b.status()["reads"] == reads  # still cached: nothing said it changed

    execute(database, "UPDATE api_keys SET revoked_at = 1 WHERE id = %s", params=(record.id,))
    refused_within_a_second(b, key, "has been revoked")


def test_a_key_made_on_one_node_works_on_the_other_at_once_though_it_was_refused_there(
    nodes: tuple[Node, Node],
) -> None:
    a, b = nodes
    team, _, _ = add_team_and_key(a, b)
    key = generate_key()
    for _ in range(3):
        assert b.check(key) == "Incorrect API key provided."
    assert b.status()["reads"] >= 1
    record = KeyRecord(new_key_id(), team, "late", visible_prefix(key), hash_key(key), created_at=int(time.time()))
    a.call(a.store.create_key(record))
    started = time.monotonic()
    wait_until(lambda: b.check(key) == "ok", 5, "the new key accepted")
    assert time.monotonic() - started < SECOND


def test_a_team_deleted_on_one_node_is_refused_on_the_other(nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    team, key, _ = add_team_and_key(a, b)
    _, other_key, _ = add_team_and_key(a, b)
    cached(b, key)
    cached(b, other_key)
    a.call(a.store.delete_team(team))
    refused_within_a_second(b, key, "Incorrect API key provided.")
    reads = b.status()["reads"]
    assert b.check(other_key) == "ok" and b.status()["reads"] == reads  # another team's key stays cached


def test_a_killed_listener_connection_is_replaced_and_the_cache_forgets_what_it_may_have_missed(
    database: str, nodes: tuple[Node, Node]
) -> None:
    a, b = nodes
    _, key, record = add_team_and_key(a, b)
    cached(b, key)
    listener = b.listener
    pid, connections = listener.backend_pid, listener.connections
    execute(database, "SELECT pg_terminate_backend(%s)", params=(pid,))
    wait_until(lambda: listener.connections > connections and listener.healthy(), 10, "listening again")
    assert listener.backend_pid != pid
    # Whatever was kept before is forgotten (a change in between would have gone unheard): read again.
    reads = b.status()["reads"]
    assert b.check(key) == "ok" and b.status()["reads"] == reads + 1
    # And notifications work again.
    a.call(a.store.revoke_key(record.id, int(time.time())))
    refused_within_a_second(b, key, "has been revoked")


def test_while_the_listener_cannot_reach_the_database_keys_live_the_fallback_lifetime(database: str) -> None:
    parts = urllib.parse.urlsplit(database)
    forwarder = Forwarder(parts.port or 5432, parts.hostname or "127.0.0.1").start()
    listen_url = urllib.parse.urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{forwarder.port}"))
    a = Node(database)
    b = Node(database, listen_url=listen_url, fallback_seconds=1.0)  # its store reaches the database directly
    try:
        assert b.status()["healthy"]
        _, key, record = add_team_and_key(a, b)
        _, other_key, other = add_team_and_key(a, b)
        cached(b, key)

        forwarder.stop()  # B's listener loses its connection, and cannot connect again
        wait_until(lambda: not b.status()["healthy"], 10, "the channel seen down")
        assert b.status()["lifetime_seconds"] == 1.0
        # A change unheard: B forgot what it kept when the connection dropped, and keeps keys 1 s at most now.
        a.call(a.store.revoke_key(record.id, int(time.time())))
        refused_within_a_second(b, key, "has been revoked")
        assert b.check(other_key) == "ok"
        a.call(a.store.revoke_key(other.id, int(time.time())))
        refused_within_a_second(b, other_key, "has been revoked", FALLBACK_AND_A_POLL)  # kept 1 s at most

        forwarder.start()
        wait_until(lambda: b.status()["healthy"], 15, "the channel back")
        assert b.status()["lifetime_seconds"] == 30.0
        _, key, record = add_team_and_key(a, b)
        cached(b, key)
        notifications = b.listener.notifications
        a.call(a.store.revoke_key(record.id, int(time.time())))
        refused_within_a_second(b, key, "has been revoked")
        assert b.listener.notifications > notifications
    finally:
        a.close()
        b.close()
        forwarder.stop()


def test_the_triggers_are_installed_once_however_many_nodes_start(database: str, nodes: tuple[Node, Node]) -> None:
    third = Node(database)
    third.close()
    with psycopg.connect(database) as connection:
        rows = connection.execute(
            "SELECT tgrelid::regclass::text, tgname FROM pg_trigger WHERE tgname LIKE 'gateway_auth%' ORDER BY 2"
        ).fetchall()
    assert rows == [
        ("api_keys", "gateway_auth_api_keys"),
        ("api_keys", "gateway_auth_api_keys_truncate"),
        ("teams", "gateway_auth_teams"),
        ("teams", "gateway_auth_teams_truncate"),
    ]


def test_a_database_user_that_may_not_create_triggers_uses_those_an_owner_installed(
    database: str, nodes: tuple[Node, Node]
) -> None:
    """The gateway may run as a user that does not own the tables: once a node running as the owner (or an
    administrator) installed the triggers, the others listen without being allowed to create them."""
    role = unique("gateway_listener").replace("-", "_")
    parts = urllib.parse.urlsplit(database)
    as_role = urllib.parse.urlunsplit(parts._replace(netloc=f"{role}@{parts.hostname}:{parts.port or 5432}"))
    execute(database, f'CREATE ROLE "{role}" LOGIN', f'GRANT SELECT ON teams, api_keys TO "{role}"')
    a, _ = nodes  # (the fixture's nodes installed the triggers)
    restricted = Node(database, listen_url=as_role)
    try:
        assert restricted.status()["healthy"]
        _, key, record = add_team_and_key(a, restricted)
        cached(restricted, key)
        a.call(a.store.revoke_key(record.id, int(time.time())))
        refused_within_a_second(restricted, key, "has been revoked")
    finally:
        restricted.close()
        execute(database, f'DROP OWNED BY "{role}"', f'DROP ROLE "{role}"')


def key_cache(url: str) -> dict[str, Any]:
    return request(url, "GET", "/readyz").json()["key_cache"]


def test_two_gateway_processes_a_key_revoked_on_one_is_refused_by_the_other_within_a_second() -> None:
    # No fallback within the test's time: only the notification can make node 2 refuse the key it keeps.
    env = {"GATEWAY_MASTER_KEY": MASTER_KEY, "GATEWAY_KEY_CACHE_FALLBACK_SECONDS": "60"}
    with fresh_database("gateway_auth_e2e") as database:
        node1, url1 = start_cli_gateway(database, env)
        try:
            node2, url2 = start_cli_gateway(database, env)
            try:
                admin1 = Admin(url1)
                heard = key_cache(url2)["notifications"]
                team = unique("nodes")
                admin1.ok("POST", "/admin/teams", {"name": team}, status=201)
                created = admin1.ok("POST", "/admin/keys", {"team": team, "name": "two-nodes"}, status=201)
                key = created["key"]
                # Node 2 heard of both (else a notification arriving later would have it read the key again).
                wait_until(lambda: key_cache(url2)["notifications"] >= heard + 2, 5, "node 2 heard the writes")
                for _ in range(20):
                    assert request(url2, "GET", "/v1/models", None, auth(key)).status == 200
                cache = key_cache(url2)
                assert cache["invalidation"] == "postgres-listen" and cache["healthy"], cache
                assert cache["reads"] == 1 and cache["hits"] == 19, cache  # 20 requests, 1 database read

                admin1.ok("DELETE", f"/admin/keys/{created['id']}")
                started = time.monotonic()
                wait_until(
                    lambda: request(url2, "GET", "/v1/models", None, auth(key)).status == 401, 5, "refused on node 2"
                )
                assert time.monotonic() - started < SECOND
                refused = request(url2, "GET", "/v1/models", None, auth(key))
                assert refused.status == 401 and "revoked" in refused.error["message"]
                assert request(url1, "GET", "/v1/models", None, auth(key)).status == 401
            finally:
                stop(node2)
        finally:
            stop(node1)
