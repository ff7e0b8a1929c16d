"""Shared fixtures: provider emulators and gateways, each a real uvicorn server on 127.0.0.1."""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.catalog import load_catalog
from gateway.emulators import EmulatorOptions, start_emulator
from gateway.http.app import create_app
from gateway.http.servers import ThreadedServer
from gateway.settings import Settings
from gateway.state import Gateway

MISTRAL_KEY = "test-mistral-key-0123456789"
MOONSHOT_KEY = "test-moonshot-key-0123456789"


@pytest.fixture(scope="session")
def mistral() -> Iterator[ThreadedServer]:
    with start_emulator("mistral", EmulatorOptions(api_key=MISTRAL_KEY)) as server:
        yield server


@pytest.fixture(scope="session")
def moonshot() -> Iterator[ThreadedServer]:
    with start_emulator("moonshot", EmulatorOptions(api_key=MOONSHOT_KEY)) as server:
        yield server


def provider_env(mistral: ThreadedServer, moonshot: ThreadedServer) -> dict[str, str]:
    return {
        "MISTRAL_API_KEY": MISTRAL_KEY,
        "MISTRAL_API_BASE": mistral.url + "/v1",
        "MOONSHOT_API_KEY": MOONSHOT_KEY,
        "MOONSHOT_API_BASE": moonshot.url + "/v1",
    }


GatewayFactory = Callable[..., ThreadedServer]


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


class EmulatorControl:
    """The emulators' control endpoints: what reached the provider, and faults to inject."""

    def __init__(self, url: str) -> None:
        self.url = url

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("content-type", "application/json")
        with urllib.request.urlopen(request, timeout=10) as response:
            raw = response.read()
        return json.loads(raw) if raw else None

    def reset(self) -> None:
        self._call("DELETE", "/_emulator/requests")
        self._call("DELETE", "/_emulator/faults")

    def requests(self) -> list[dict[str, Any]]:
        return self._call("GET", "/_emulator/requests")

    def last(self) -> dict[str, Any]:
        received = self.requests()
        assert received, "the emulator received no request"
        return received[-1]

    def fault(self, fault: str, count: int = 1) -> None:
        self._call("POST", "/_emulator/faults", {"fault": fault, "count": count})


POSTGRES_ADMIN_URL = os.environ.get("GATEWAY_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session (dropped afterwards).

    PostgreSQL must be running (`.ci/run` starts it); a missing server fails the
    tests that need it with a clear message, it never skips them.
    """
    import uuid

    import psycopg

    try:
        admin = psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL is not reachable at {POSTGRES_ADMIN_URL} (start it, or set GATEWAY_TEST_POSTGRES): {exc}"
        )
    name = f"gateway_test_{uuid.uuid4().hex[:12]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
