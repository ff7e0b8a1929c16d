"""A real gateway (conftest's `start_gateway`, uvicorn in a thread, the emulators behind it) with a ledger of its
own and a key of team `coders` ($5 a month): what the SDK suites (tests/http/test_anthropic_sdk.py,
test_openai_responses_sdk.py) call."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.http.servers import ThreadedServer
from gateway.store.base import LedgerRow
from tests.support.gateways import GatewayFactory
from tests.support.store import ledger_at_least, make_key, make_team

TEAM = "coders"


@dataclass
class TeamGateway:
    url: str
    key: str
    db: str

    def rows(self, count: int) -> list[LedgerRow]:
        """The ledger once it has `count` rows, oldest first (a stream's row is written as the stream ends)."""
        return ledger_at_least(self.db, count)


def start_team_gateway(start_gateway: GatewayFactory, db: str, master_key: str) -> tuple[ThreadedServer, str]:
    """Team `coders` ($5) and a key of it in `db`, then a gateway on `db`: (the server, the key)."""
    make_team(db, TEAM, "5.00")
    key, _ = make_key(db, TEAM)
    return start_gateway(database_url=db, master_key=master_key), key
