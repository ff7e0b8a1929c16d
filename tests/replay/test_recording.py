"""Every settlement writes what the routing decision read on the ledger row (gateway/pipeline/settle.py, migration 6),
and never the prompt: through the in-process gateway (tests/support/inprocess.py), each door, streams, failures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import orjson

from gateway.providers.mock import MockCall
from gateway.replay.inputs import inputs_of
from gateway.state import Gateway
from tests.support.inprocess import bearer, chunks, ledger, reply, run, settled, team_key, upstream_error

SECRET = "the-launch-code-is-swordfish"  # prompt text that must appear in no ledger row
PROMPT = [{"role": "user", "content": f"Remember {SECRET}. " * 50}]
TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}]
EMBEDDING = {"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}],
             "model": "mistral-embed", "usage": {"prompt_tokens": 7, "total_tokens": 7}}  # fmt: skip


def answer(call: MockCall) -> Any:
    if call.operation == "embeddings":
        return EMBEDDING
    if call.stream:
        return chunks("Hi", " there")
    return reply()


def decisions(rows: list[Any]) -> dict[str, dict[str, Any]]:
    """Each row's recorded inputs by its endpoint (and stream), as JSON."""
    out = {}
    for row in rows:
        assert row.decision is not None, row
        assert SECRET not in row.decision and "Remember" not in row.decision
        out[row.endpoint + (":stream" if row.stream else "")] = orjson.loads(row.decision)
    return out


def test_each_door_records_the_decision_inputs_without_the_prompt(tmp_path: Path) -> None:
    async def scenario(gateway: Gateway, client: httpx.AsyncClient, calls: dict[str, list[MockCall]]) -> None:
        key = await team_key(gateway)
        headers = {**bearer(key), "x-gateway-residency": "EU"}
        chat = {"model": "auto", "messages": PROMPT, "tools": TOOLS, "max_tokens": 300}
        assert (await client.post("/v1/chat/completions", json=chat, headers=headers)).status_code == 200
        stream = {"model": "auto", "messages": PROMPT, "stream": True, "n": 2}
        async with client.stream("POST", "/v1/chat/completions", json=stream, headers=bearer(key)) as streamed:
            assert streamed.status_code == 200
            await streamed.aread()
        embed = {"model": "mistral-embed", "input": f"{SECRET} " * 20}
        assert (await client.post("/v1/embeddings", json=embed, headers=bearer(key))).status_code == 200
        fim = {"model": "codestral", "prompt": f"def {SECRET.replace('-', '_')}():", "suffix": "return 1"}
        assert (await client.post("/v1/fim/completions", json=fim, headers=bearer(key))).status_code == 200
        # Claude Code asks for 64,000 tokens; the pipeline lowers it to the model's 32,768, the row keeps what was asked.
        messages = {"model": "mistral-medium-3.5", "max_tokens": 64000, "messages": PROMPT}
        assert (await client.post("/v1/messages", json=messages, headers={"x-api-key": key})).status_code == 200
        responses = {"model": "auto", "input": f"Remember {SECRET}"}
        assert (await client.post("/v1/responses", json=responses, headers=bearer(key))).status_code == 200
        rows = await settled(gateway, 6)
        found = decisions(rows)
        catalog = gateway.catalog

        chat_row = found["chat"]
        assert set(chat_row["counts"]) == set(catalog.models)  # every catalog model's count of the prompt
        assert all(count > 100 for count in chat_row["counts"].values())
        assert chat_row["tokens"] > 100
        assert chat_row["capabilities"] == ["chat", "tools"]
        assert (chat_row["max_tokens"], chat_row["n"], chat_row["expected_output"]) == (300, 1, 300)
        assert chat_row["residency"] == ["eu"]  # as routing read the header
        assert found["chat:stream"]["n"] == 2 and found["chat:stream"]["max_tokens"] is None
        assert found["chat:stream"]["expected_output"] == gateway.settings.default_expected_output_tokens
        assert found["chat:stream"]["residency"] is None
        assert found["embeddings"]["capabilities"] == ["embeddings"] and found["embeddings"]["expected_output"] == 0
        assert found["fim"]["capabilities"] == ["fim"]
        assert found["messages"]["max_tokens"] == 64000 and found["messages"]["capabilities"] == ["chat"]
        assert found["responses"]["capabilities"] == ["chat"]
        # What replay reads back.
        by_endpoint = {r.endpoint + (":stream" if r.stream else ""): r for r in rows}
        read = inputs_of(by_endpoint["chat"])
        assert read.recorded and read.residency == frozenset({"eu"}) and read.capabilities == {"chat", "tools"}
        assert read.counts == chat_row["counts"] and read.expected_output(1024) == 300

    run(tmp_path, {"mistral": answer, "moonshot": answer}, scenario)


def test_a_failed_request_records_its_inputs_too(tmp_path: Path) -> None:
    def failing(call: MockCall) -> Any:
        raise upstream_error(400)

    async def scenario(gateway: Gateway, client: httpx.AsyncClient, calls: dict[str, list[MockCall]]) -> None:
        key = await team_key(gateway)
        body = {"model": "kimi-k2.6", "messages": PROMPT, "max_tokens": 50}
        assert (await client.post("/v1/chat/completions", json=body, headers=bearer(key))).status_code == 400
        (row,) = await ledger(gateway)
        assert row.status == 400
        recorded = decisions([row])["chat"]
        assert (recorded["max_tokens"], recorded["capabilities"]) == (50, ["chat"])

    run(tmp_path, {"moonshot": failing}, scenario)
