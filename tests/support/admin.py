"""The admin API from a test's side (tests/http/test_admin.py and tests/cli/test_admin.py): a client with the
master key, and a sample ledger with its expected reports computed in Python from the rows themselves."""

from __future__ import annotations

import json
import secrets
from collections import defaultdict
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from gateway.store.base import KeyRecord, LedgerRow
from tests.support.http import Answer, auth, post_json, request
from tests.support.store import ledger_row, make_key

MASTER_KEY = "test-master-key-admin-0123456789"
DAY = 86400.0


@dataclass
class Admin:
    """The admin API of one gateway, with a given key (the master key unless told)."""

    url: str
    key: str | None = MASTER_KEY

    def call(self, method: str, path: str, body: Any = None, key: str | None = "default") -> Answer:
        token = self.key if key == "default" else key
        headers = auth(token) if token else {}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["content-type"] = "application/json"
        return request(self.url, method, path, data, headers)

    def ok(self, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        answer = self.call(method, path, body)
        assert answer.status == status, (answer.status, answer.body)
        return answer.json()

    def spend(self, **params: Any) -> Answer:
        return self.call("GET", "/admin/spend?" + urlencode({k: v for k, v in params.items() if v is not None}))


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def insert_key(url: str, team: str, **fields: Any) -> tuple[str, KeyRecord]:
    """A key made straight in the database (for states the API refuses to create, such as already expired)."""
    return make_key(url, team, name="direct", **fields)


def sample_ledger(teams: tuple[str, str], keys: tuple[KeyRecord, KeyRecord]) -> list[LedgerRow]:
    """Rows over two teams, two keys (and no key), two models and providers, three front doors, three days, and two
    batches (and none)."""
    base = datetime(2026, 3, 10, 12, 0, tzinfo=UTC).timestamp()
    a, b = teams
    return [
        replace(
            ledger_row(a, 1_234_567, ts=base, key=keys[0], prompt=100, completion=40, cached=20),
            batch_id="batch_one",
            custom_id="req-1",
        ),
        ledger_row(
            a, 2_000_000_001, ts=base + 60, key=keys[0], model="codestral", provider="mistral", prompt=7, endpoint="fim"
        ),
        replace(ledger_row(a, 3, ts=base + DAY, key=keys[1], completion=1), batch_id="batch_two", custom_id="req-1"),
        replace(
            ledger_row(a, 999_999_999, ts=base + DAY + 5, model="mistral-medium-3.5", provider="mistral"),
            batch_id="batch_one",
            custom_id="req-2",
        ),
        ledger_row(
            b, 42_000_000, ts=base + 2 * DAY, model="codestral", provider="mistral", cached=3, endpoint="messages"
        ),
        ledger_row(b, 0, ts=base + 2 * DAY + 1),
    ]


def expected_groups(rows: list[LedgerRow], group_by: str) -> dict[Any, dict[str, int]]:
    """The report computed in Python from the rows themselves."""
    key_of = {
        "team": lambda r: r.team,
        "key": lambda r: r.key_prefix,
        "model": lambda r: r.model,
        "provider": lambda r: r.provider,
        "endpoint": lambda r: r.endpoint,
        "day": lambda r: datetime.fromtimestamp(r.ts, UTC).strftime("%Y-%m-%d"),
        "batch": lambda r: r.batch_id,
    }[group_by]
    out: dict[Any, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for r in rows:
        group = out[key_of(r)]
        group["requests"] += 1
        group["prompt_tokens"] += r.prompt_tokens
        group["completion_tokens"] += r.completion_tokens
        group["cached_tokens"] += r.cached_tokens
        group["cost_nanos"] += r.cost_nanos
    return {k: dict(v) for k, v in out.items()}


def totals(rows: list[LedgerRow]) -> dict[str, int]:
    return {
        "requests": len(rows),
        "prompt_tokens": sum(r.prompt_tokens for r in rows),
        "completion_tokens": sum(r.completion_tokens for r in rows),
        "cached_tokens": sum(r.cached_tokens for r in rows),
        "cost_nanos": sum(r.cost_nanos for r in rows),
    }


def chat(url: str, key: str, model: str = "kimi-k2.6") -> Answer:
    body = {"model": model, "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 16}
    return post_json(url, "/v1/chat/completions", body, auth(key))
