"""Each request's front door, as the ledger row, the metrics and the request log line name it (the `endpoint`
column of migration 3, the `endpoint` label, the log's `endpoint` field). In-process (tests/support/inprocess.py):
the real app, budgets and settlement on SQLite, in front of `MockAdapter` providers."""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx
import orjson
from prometheus_client.parser import text_string_to_metric_families

from gateway.budget.journal import SettlementJournal
from gateway.providers.mock import MockCall
from gateway.state import Gateway
from gateway.store import open_store
from gateway.store.base import SpendFilter
from tests.support.inprocess import HELLO, MASTER, bearer, run, team_key
from tests.support.metrics import Samples, total
from tests.support.store import ledger_row


def answer(call: MockCall) -> Any:
    """What a provider says: an embedding, a stream, or a chat-shaped answer (chat, legacy completions, FIM)."""
    if call.operation == "embeddings":
        return {
            "object": "list",
            "data": [{"object": "embedding", "index": 0, "embedding": [0.25, -0.5]}],
            "model": "mistral-embed",
            "usage": {"prompt_tokens": 4, "total_tokens": 4},
        }
    if call.stream:
        delta = {"index": 0, "delta": {"content": "Hi!"}, "finish_reason": "stop"}
        return [
            {"id": "c1", "created": 1, "model": "m", "choices": [delta]},
            {"id": "c1", "choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 3}},
        ]
    message = {"role": "assistant", "content": "Hi!"}
    return {
        "id": "cmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "upstream",
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
    }


async def scrape(client: httpx.AsyncClient) -> Samples:
    answer = await client.get("/metrics", headers=bearer(MASTER))
    assert answer.status_code == 200
    samples: Samples = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


# (path, body, the door it names): every door, chat both ways, legacy completions both ways (a chat turn, and
# fill-in-the-middle with `suffix`), Anthropic's Messages and OpenAI's Responses (each translated into a chat turn).
DOORS = [
    ("/v1/chat/completions", {"model": "mistral-medium-3.5", "messages": HELLO}, "chat"),
    ("/v1/chat/completions", {"model": "kimi-k2.6", "messages": HELLO, "stream": True}, "chat"),
    ("/v1/completions", {"model": "mistral-medium-3.5", "prompt": "Say hi"}, "completions"),
    ("/v1/completions", {"model": "codestral", "prompt": "def add(a, b):", "suffix": "\n"}, "completions"),
    ("/v1/fim/completions", {"model": "codestral", "prompt": "def add(a, b):", "suffix": "\n"}, "fim"),
    ("/v1/embeddings", {"model": "mistral-embed", "input": "Hello there"}, "embeddings"),
    ("/v1/messages", {"model": "mistral-medium-3.5", "max_tokens": 64, "messages": HELLO}, "messages"),
    ("/v1/responses", {"model": "kimi-k2.6", "input": "Hello there", "stream": True}, "responses"),
]


def test_each_door_names_itself_in_the_ledger_the_metrics_and_the_log(tmp_path: Path) -> None:
    logged: list[dict[str, Any]] = []  # the request log's entries

    async def scenario(gateway: Gateway, client: httpx.AsyncClient, calls: dict[str, list[MockCall]]) -> None:
        key = await team_key(gateway, budget_usd="5.00")
        for path, body, _ in DOORS:
            reply = await client.post(path, json=body, headers=bearer(key))
            assert reply.status_code == 200, (path, reply.text)
        # Refused before the door read anything (a bad key): no door to name; an admin route is no door at all.
        refused = await client.post("/v1/fim/completions", json=DOORS[4][1], headers=bearer("no"))
        assert refused.status_code == 401
        assert (await client.get("/admin/teams", headers=bearer(MASTER))).status_code == 200

        rows = await gateway.store.ledger_rows(SpendFilter())
        assert [(r.endpoint, r.model, r.stream) for r in rows] == [
            ("chat", "mistral-medium-3.5", False),
            ("chat", "kimi-k2.6", True),
            ("completions", "mistral-medium-3.5", False),
            ("completions", "codestral", False),
            ("fim", "codestral", False),
            ("embeddings", "mistral-embed", False),
            ("messages", "mistral-medium-3.5", False),
            ("responses", "kimi-k2.6", True),
        ]
        by_endpoint = {r.group: r for r in await gateway.store.spend(SpendFilter(), "endpoint")}
        assert {door: row.requests for door, row in by_endpoint.items()} == {
            "chat": 2,
            "completions": 2,
            "fim": 1,
            "embeddings": 1,
            "messages": 1,
            "responses": 1,
        }

        m = await scrape(client)
        for door in ("chat", "completions", "fim", "embeddings", "messages", "responses"):
            mine = [r for r in rows if r.endpoint == door]
            assert total(m, "gateway_requests_total", endpoint=door, status="200") == len(mine), door
            assert total(m, "gateway_request_duration_seconds_count", endpoint=door) == len(mine), door
            assert total(m, "gateway_overhead_seconds_count", endpoint=door) == len(mine), door
            spent = sum(r.cost_nanos for r in mine) / 1e9
            assert abs(total(m, "gateway_spend_usd_total", endpoint=door) - spent) < 1e-12, door
            prompt = sum(r.prompt_tokens for r in mine)
            assert total(m, "gateway_tokens_total", endpoint=door, type="prompt") == prompt, door
        assert total(m, "gateway_time_to_first_token_seconds_count", endpoint="chat") == 1  # the streams
        assert total(m, "gateway_time_to_first_token_seconds_count", endpoint="responses") == 1
        assert total(m, "gateway_requests_total", endpoint="none", status="401") == 1
        assert total(m, "gateway_requests_total") == len(DOORS) + 1  # the admin call is not counted

        doors = [(entry["path"], entry["endpoint"], entry["status"]) for entry in logged]
        assert doors == [(path, door, 200) for path, _, door in DOORS] + [
            ("/v1/fim/completions", None, 401),
            ("/admin/teams", None, 200),
        ]

    run(
        tmp_path,
        {"mistral": answer, "moonshot": answer},
        scenario,
        on_app=lambda app: app.state.request_log.listeners.append(logged.append),
    )


def test_a_settlement_journaled_before_the_upgrade_replays_as_chat(tmp_path: Path) -> None:
    """A journal line written by the release before the `endpoint` column (no such field) still replays."""
    row = asdict(ledger_row("alpha", 1_234))
    del row["endpoint"]
    directory = tmp_path / "journal"
    directory.mkdir()
    # A process that died with this settlement journaled (an unlocked file of another pid): the next one replays it.
    line = orjson.dumps({"row": row, "scopes": [], "hold": None})
    (directory / "journal-1-0a0b0c0d.jsonl").write_bytes(line + b"\n")

    async def main() -> list[Any]:
        store = open_store(f"sqlite:///{tmp_path / 'gateway.db'}")
        await store.open()
        journal = SettlementJournal(directory, 1 << 20)
        try:
            assert await journal.replay(store) == 1
            return await store.ledger_rows(SpendFilter())
        finally:
            journal.close()
            await store.close()

    rows = asyncio.run(main())
    assert [(r.id, r.cost_nanos, r.endpoint) for r in rows] == [(row["id"], 1_234, "chat")]
