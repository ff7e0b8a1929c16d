"""Shared fixtures: provider emulators and gateways, each a real uvicorn server on 127.0.0.1, and PostgreSQL.

A test that uses any of them is a slow test (`pytest -m "not slow"` leaves it out): mark it `slow`. Helpers that
are not fixtures live in tests/support/.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.catalog import load_catalog
from gateway.emulators import EmulatorOptions, start_emulator
from gateway.http.app import create_app
from gateway.http.servers import ThreadedServer
from gateway.settings import Settings
from gateway.state import Gateway
from tests.support.emulators import MISTRAL_KEY, MOONSHOT_KEY, EmulatorControl, provider_env
from tests.support.gateways import GatewayFactory
from tests.support.postgres import fresh_database

# The fixtures below that start a real server (uvicorn on a socket) or need PostgreSQL, and what is built on them.
SERVER_FIXTURES = frozenset({"mistral", "moonshot", "start_gateway", "gateway_url", "mistral_log", "moonshot_log"})
SLOW_FIXTURES = SERVER_FIXTURES | {"postgres_url"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that uses one of SLOW_FIXTURES is slow even if its mark was forgotten, so that `-m "not slow"` stays
    fast. Tests that start subprocesses, servers or PostgreSQL by other means must carry the mark themselves."""
    for item in items:
        if item.get_closest_marker("slow") is None and SLOW_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def mistral() -> Iterator[ThreadedServer]:
    with start_emulator("mistral", EmulatorOptions(api_key=MISTRAL_KEY)) as server:
        yield server


@pytest.fixture(scope="session")
def moonshot() -> Iterator[ThreadedServer]:
    with start_emulator("moonshot", EmulatorOptions(api_key=MOONSHOT_KEY)) as server:
        yield server


@pytest.fixture(scope="session")
def start_gateway(
    mistral: ThreadedServer, moonshot: ThreadedServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayFactory]:
    """Start a gateway with settings overrides, an optional catalog file and extra environment.

    Each gateway gets its own SQLite database unless `database_url` is given.
    """
    started: list[ThreadedServer] = []

    def factory(config: Path | None = None, env: dict[str, str] | None = None, **settings: Any) -> ThreadedServer:
        environment = {**provider_env(mistral, moonshot), **(env or {})}
        if "database_url" not in settings:
            settings["database_url"] = f"sqlite:///{tmp_path_factory.mktemp('db') / 'gateway.db'}"
        gateway = Gateway(Settings(**settings), load_catalog(config, environment))
        server = ThreadedServer(create_app(gateway)).start()
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def gateway_url(start_gateway: GatewayFactory) -> str:
    return start_gateway(master_key=None).url


@pytest.fixture()
def mistral_log(mistral: ThreadedServer) -> EmulatorControl:
    control = EmulatorControl(mistral.url)
    control.reset()
    return control


@pytest.fixture()
def moonshot_log(moonshot: ThreadedServer) -> EmulatorControl:
    control = EmulatorControl(moonshot.url)
    control.reset()
    return control


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session (dropped afterwards); fails, never skips, without a
    server."""
    with fresh_database() as url:
        yield url
