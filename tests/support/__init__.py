"""Helpers shared by the tests (fixtures stay in conftest.py). No test module imports from another test module:
what two of them need is here.

- http: the one HTTP client (http.client), `Answer`, requests left in flight, many at once, a request read by a
  hand-written upstream;
- sse: the one server-sent-events parser;
- emulators: the emulators' keys, control endpoints (faults, request log, scripts) and a client for one emulator;
- gateways: `gateway` as a subprocess (free port, clean environment, startup), the in-process factory's type;
- store: teams, keys and ledger rows straight in a database;
- postgres: fresh PostgreSQL databases;
- admin: the admin API's client and a sample ledger with its expected reports;
- metrics: scraping /metrics into samples;
- waiting: bounded polling;
- forwarder: a TCP forwarder to take a database away and give it back;
- coding_tools: the real coding tools, installed and run offline;
- inprocess: the gateway in-process (real app and SQLite, `MockAdapter` providers) and what a scenario asks of it;
- routing_scenarios: random `decide` scenarios (hypothesis) for the routing property tests;
- team_gateway: a real gateway with its own ledger and a team's key, for the SDK suites.
- token_texts: deterministic texts (prose, code, JSON, CJK, mixed) for token counting and its benchmark.

`ROOT` is the repository's root, whatever the depth of the test that needs a file from it.
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
