"""Fixtures for the real-client tests: installed tools, a gateway with a team and key, scripted emulators.

What runs the tools (a clean offline environment, timeouts, the installer) is in tests/support/coding_tools.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.http.servers import ThreadedServer
from tests.support import ROOT
from tests.support.coding_tools import REFUSALS_MASTER_KEY, TEAM, ClientGateway, Installer
from tests.support.emulators import Script
from tests.support.gateways import GatewayFactory
from tests.support.store import make_key, make_team


@pytest.fixture(scope="session")
def installer() -> Iterator[Installer]:
    installs = Installer()
    installs.start(["aider", "cn", "vibe", "kimi"])  # all at once, in the background
    yield installs
    installs.shutdown()


@pytest.fixture()
def client_gateway(start_gateway: GatewayFactory, tmp_path: Path) -> ClientGateway:
    """A gateway of its own (own ledger), with team `coders` ($5 a month) and a key of that team."""
    db = f"sqlite:///{tmp_path / 'ledger.db'}"
    make_team(db, TEAM, "5.00")
    key, record = make_key(db, TEAM)
    server = start_gateway(database_url=db, master_key="master-key-for-client-tests")
    return ClientGateway(server.url, key, record.id, db, server)


@pytest.fixture()
def refusing_gateway(start_gateway: GatewayFactory, tmp_path: Path) -> tuple[ClientGateway, dict[str, str]]:
    """A gateway (policies of policies/, master key `REFUSALS_MASTER_KEY`) with teams it refuses, and their keys by
    team: `broke` (a budget of a millionth of a dollar), `eu-strict` (eu only, policy eu-only, which refuses a named
    model it may not use instead of rerouting it), `kimi-eu` (eu only, Kimi only: no route). The ClientGateway
    holds kimi-eu's key."""
    db = f"sqlite:///{tmp_path / 'ledger.db'}"
    keys = {}
    make_team(db, "broke", "0.000001")
    keys["broke"], _ = make_key(db, "broke")
    make_team(db, "eu-strict", "5.00", regions=["eu"], policy="eu-only")
    keys["eu-strict"], _ = make_key(db, "eu-strict")
    make_team(db, "kimi-eu", "5.00", regions=["eu"], models=["kimi-k2.6"])
    keys["kimi-eu"], record = make_key(db, "kimi-eu")
    server = start_gateway(database_url=db, master_key=REFUSALS_MASTER_KEY, policies_dir=ROOT / "policies")
    return ClientGateway(server.url, keys["kimi-eu"], record.id, db, server), keys


@pytest.fixture()
def mistral_script(mistral: ThreadedServer) -> Iterator[Script]:
    script = Script(mistral.url)
    script.clear()
    yield script
    script.clear()  # other tests rely on the emulator's generated replies


@pytest.fixture()
def moonshot_script(moonshot: ThreadedServer) -> Iterator[Script]:
    script = Script(moonshot.url)
    script.clear()
    yield script
    script.clear()
