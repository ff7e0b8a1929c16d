"""Reservations held by a process that was killed (SIGKILL) are released at once on this node, and after a
short, configurable time by the other nodes; never only when they expire (the provider's total timeout,
15 minutes by default)."""

from __future__ import annotations

import http.client
import signal
import subprocess
import threading
import uuid
from pathlib import Path

import pytest

from gateway.http.servers import ThreadedServer
from tests.support.emulators import EmulatorControl, provider_env
from tests.support.gateways import start_cli_gateway, stop
from tests.support.http import auth, begin_post_json
from tests.support.store import make_key, make_team, team_usage
from tests.support.waiting import wait_until

CHAT = "/v1/chat/completions"
BODY = {
    "model": "mistral-medium-3.5",
    "messages": [{"role": "user", "content": "hold on"}],
    "max_tokens": 500,
    "stream": True,
}

pytestmark = pytest.mark.slow


def _send(url: str, key: str) -> http.client.HTTPConnection:
    """Start a streaming request and leave it open (the provider hangs on it)."""
    return begin_post_json(url, CHAT, BODY, auth(key), timeout=60)


def _kill(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)


def test_a_restarted_node_releases_the_holds_of_its_killed_process(
    tmp_path: Path, mistral: ThreadedServer, moonshot: ThreadedServer, mistral_log: EmulatorControl
) -> None:
    db = f"sqlite:///{tmp_path / 'holds.db'}"
    team = make_team(db, "agents", "0.05")
    key, _ = make_key(db, "agents")
    env = provider_env(mistral, moonshot)
    first, url = start_cli_gateway(db, env)
    try:
        mistral_log.fault("hang", count=3)
        open_streams = [_send(url, key) for _ in range(3)]
        wait_until(lambda: len(mistral_log.requests()) == 3)
        assert team_usage(db, team).reserved_nanos > 0
        _kill(first)  # 3 streams in flight, their holds in the database
    finally:
        stop(first)
    for connection in open_streams:
        connection.close()
    assert team_usage(db, team).reserved_nanos > 0  # nothing released them yet
    second, url = start_cli_gateway(db, env)
    try:
        # Released during start-up (the killed process ran on this node and is gone), not in 15 minutes.
        assert team_usage(db, team).reserved_nanos == 0
    finally:
        stop(second)


def test_another_node_releases_a_dead_nodes_holds_after_its_heartbeat_stops(
    postgres_url: str, mistral: ThreadedServer, moonshot: ThreadedServer, mistral_log: EmulatorControl
) -> None:
    team = make_team(postgres_url, f"fleet-{uuid.uuid4().hex[:8]}", "0.05")
    key, _ = make_key(postgres_url, team.name)
    fast = {"GATEWAY_HEARTBEAT_SECONDS": "0.2", "GATEWAY_ORPHAN_HOLD_SECONDS": "2"}
    env = provider_env(mistral, moonshot)
    node_a, url_a = start_cli_gateway(postgres_url, {**env, **fast, "GATEWAY_NODE_NAME": "node-a"})
    node_b, url_b = start_cli_gateway(postgres_url, {**env, **fast, "GATEWAY_NODE_NAME": "node-b"})
    streams = []
    try:
        mistral_log.fault("hang", count=3)
        streams = [_send(url_a, key), _send(url_a, key)]
        wait_until(lambda: len(mistral_log.requests()) == 2)
        streams.append(_send(url_b, key))
        wait_until(lambda: len(mistral_log.requests()) == 3)
        held = team_usage(postgres_url, team).reserved_nanos
        assert held > 0
        _kill(node_a)
        # Node B sees node A's heartbeat stop and releases its two holds; its own stays.
        remaining = wait_until(
            lambda: (lambda r: r if 0 < r < held else None)(team_usage(postgres_url, team).reserved_nanos)
        )
        assert remaining * 3 == held  # the three holds are alike: B's one is left
        threading.Event().wait(3 * 0.2)  # a few more sweeps of B (time passing, not synchronisation) ...
        assert team_usage(postgres_url, team).reserved_nanos == remaining  # ... never release a live hold
    finally:
        for connection in streams:
            connection.close()
        stop(node_a)
        stop(node_b)
