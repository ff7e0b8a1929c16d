"""Batches in-process (gateway/batches/): planning by the team's policy and budget, and a runner round that runs
lines through the pipeline, on the real app and SQLite with in-process providers (tests/support/inprocess.py)."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import httpx

from gateway.batches.lines import parse_lines
from gateway.batches.planning import BatchPlanner
from gateway.batches.service import Batches
from gateway.state import Gateway
from tests.support.inprocess import bearer, ledger, run, team_key

CHAT = "/v1/chat/completions"
WINDOWS = {"mistral": 1, "moonshot": 12}  # both providers' batch APIs, as the live catalog has them
POLICIES = Path(__file__).resolve().parents[2] / "policies"


def content(*lines: dict[str, Any]) -> bytes:
    return b"".join(json.dumps(item).encode() + b"\n" for item in lines)


def chat(custom_id: str, model: str = "auto", **body: Any) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "url": CHAT,
        "body": {"model": model, "messages": [{"role": "user", "content": "Hello there"}], **body},
    }


async def planned(
    gateway: Gateway, key: str, data: bytes, window: int = 24, headers: dict[str, str] | None = None
) -> Any:
    principal = await gateway.auth.principal_for_key(key) if hasattr(gateway.auth, "principal_for_key") else None
    if principal is None:
        from starlette.requests import Request

        scope = {"type": "http", "headers": [(b"authorization", f"Bearer {key}".encode())]}
        principal = await gateway.auth.principal(Request(scope))
    return await BatchPlanner(gateway, principal, headers or {}, WINDOWS).plan(parse_lines(data, CHAT), CHAT, window)


def test_lines_that_name_no_model_go_to_the_cheapest_at_batch_prices(tmp_path: Path) -> None:
    async def scenario(gateway: Gateway, client: httpx.AsyncClient, calls: Any) -> None:
        key = await team_key(gateway)
        plan = await planned(gateway, key, content(chat("a"), chat("m", "mistral-medium-3.5"), chat("k", "kimi-k2.6")))
        chosen = [(line.line.custom_id, line.model.name if line.model else None, line.mode) for line in plan.lines]
        assert chosen == [
            ("a", "kimi-k2.6", "batch"),
            ("m", "mistral-medium-3.5", "batch"),
            ("k", "kimi-k2.6", "batch"),
        ]
        eu = await planned(gateway, key, content(chat("a")), headers={"x-gateway-residency": "eu"})
        assert eu.lines[0].model is not None and eu.lines[0].model.name == "mistral-medium-3.5"
        short = await planned(gateway, key, content(chat("a")), window=1)  # under Moonshot's 12 hours
        assert short.lines[0].mode == "interactive"

    run(tmp_path, {}, scenario)


def test_a_batch_over_budget_lowers_output_limits_then_is_refused(tmp_path: Path) -> None:
    async def scenario(gateway: Gateway, client: httpx.AsyncClient, calls: Any) -> None:
        # eu-only: `lower_max_tokens` down to 1,024; ten lines without max_tokens reserve 32,768 tokens each.
        key = await team_key(gateway, budget_usd="0.5", policy="eu-only", regions=["eu"])
        plan = await planned(gateway, key, content(*(chat(f"l{i}", "mistral-medium-3.5") for i in range(10))))
        assert plan.refusal is None and plan.steps == ["lower_max_tokens"]
        assert plan.room_nanos is not None and plan.reserved_nanos <= plan.room_nanos
        caps = {line.line.body["max_tokens"] for line in plan.lines if line.line.body is not None}
        assert len(caps) == 1 and 1024 <= caps.pop() < 32768
        poor = await team_key(gateway, "poor", budget_usd="0.001", policy="eu-only", regions=["eu"])
        refused = await planned(gateway, poor, content(*(chat(f"l{i}", "mistral-medium-3.5") for i in range(10))))
        assert refused.refusal is not None and refused.refusal.code == "budget_exceeded"
        assert refused.refusal.status == 429

    run(tmp_path, {}, scenario)


def test_a_batch_over_budget_moves_lines_to_a_cheaper_model_first(tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    shutil.copytree(POLICIES, policies)
    text = (policies / "default.yaml").read_text()
    (policies / "default.yaml").write_text(text + "\nbatch:\n  prefer: policy\n")

    async def scenario(gateway: Gateway, client: httpx.AsyncClient, calls: Any) -> None:
        key = await team_key(gateway, budget_usd="0.6")
        plan = await planned(
            gateway, key, content(*(chat(f"l{i}") for i in range(10)), chat("pinned", "mistral-medium-3.5"))
        )
        assert plan.steps[0] == "cheaper_model" and plan.refusal is None
        models = [line.model.name for line in plan.lines if line.model is not None]
        assert models[:10] == ["kimi-k2.6"] * 10 and models[10] == "mistral-medium-3.5"  # a named model stays
        assert {line.reason for line in plan.lines[:10]} == {"batch:budget-downgrade"}

    run(tmp_path, {}, scenario, policies_dir=policies)


def test_interactive_lines_run_through_the_pipeline_and_are_settled(tmp_path: Path) -> None:
    """Providers answered in-process have no batch API: every line runs on the pipeline, a few at a time, and is
    one ledger row with its batch id and custom_id."""

    async def scenario(gateway: Gateway, client: httpx.AsyncClient, calls: Any) -> None:
        key = await team_key(gateway, budget_usd="5")
        data = content(*(chat(f"l{i}", "mistral-medium-3.5", max_tokens=8) for i in range(6)), {"custom_id": "x"})
        uploaded = await client.post(
            "/v1/files", headers=bearer(key), files={"file": ("in.jsonl", data)}, data={"purpose": "batch"}
        )
        assert uploaded.status_code == 200, uploaded.text
        created = await client.post(
            "/v1/batches",
            headers=bearer(key),
            json={"input_file_id": uploaded.json()["id"], "endpoint": CHAT, "completion_window": "24h"},
        )
        assert created.status_code == 200, created.text
        batch_id = created.json()["id"]
        batches: Batches = client._transport.app.state.batches  # type: ignore[attr-defined]
        assert await batches.runner.round() == 1
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while (view := (await client.get(f"/v1/batches/{batch_id}", headers=bearer(key))).json())[
            "status"
        ] != "completed":
            assert loop.time() < deadline, (view["status"], view["request_counts"], view["x_gateway"]["jobs"])
            await batches.runner.round()
            await asyncio.sleep(0.01)
        assert view["request_counts"] == {"total": 7, "completed": 6, "failed": 1}
        rows = [row for row in await ledger(gateway) if row.batch_id == batch_id]
        assert sorted(row.custom_id for row in rows) == [f"l{i}" for i in range(6)]
        assert len(calls["mistral"]) == 6
        output = await client.get(f"/v1/files/{view['output_file_id']}/content", headers=bearer(key))
        answers = [json.loads(line) for line in output.text.splitlines()]
        assert [a["custom_id"] for a in answers] == [f"l{i}" for i in range(6)]
        assert all(a["response"]["status_code"] == 200 for a in answers)
        assert int(view["x_gateway"]["cost_nanos"]) == sum(row.cost_nanos for row in rows)

    run(tmp_path, {}, scenario)


def test_an_interactive_line_settled_before_its_node_stopped_is_not_sent_again(tmp_path: Path) -> None:
    """Lines run on the pipeline have the ledger ids of their lines: a node taking a batch over finds the row of a line
    the stopped node had settled, and charges and sends nothing for it."""
    from gateway.batches.render import request_id
    from gateway.store.base import LedgerRow, Settlement

    async def scenario(gateway: Gateway, client: httpx.AsyncClient, calls: Any) -> None:
        key = await team_key(gateway, budget_usd="5")
        data = content(*(chat(f"l{i}", "mistral-medium-3.5", max_tokens=8) for i in range(3)))
        uploaded = await client.post(
            "/v1/files", headers=bearer(key), files={"file": ("in.jsonl", data)}, data={"purpose": "batch"}
        )
        created = await client.post(
            "/v1/batches", headers=bearer(key), json={"input_file_id": uploaded.json()["id"], "endpoint": CHAT}
        )
        batch_id = created.json()["id"]
        earlier = LedgerRow(
            request_id(batch_id, 1), 1.0, "alpha", None, None, "mistral-medium-3.5", "mistral-medium-3.5", "mistral",
            "eu", 12, 3, 0, 41_000, False, 200, 10.0, None, "pinned", False, batch_id=batch_id, custom_id="l1",
        )  # fmt: skip
        await gateway.store.record(Settlement(earlier, []))
        batches: Batches = client._transport.app.state.batches  # type: ignore[attr-defined]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while (view := (await client.get(f"/v1/batches/{batch_id}", headers=bearer(key))).json())[
            "status"
        ] != "completed":
            assert loop.time() < deadline, view["status"]
            await batches.runner.round()
            await asyncio.sleep(0.01)
        assert len(calls["mistral"]) == 2
        rows = sorted((row.id, row.custom_id) for row in await ledger(gateway) if row.batch_id == batch_id)
        assert rows == [(request_id(batch_id, i), f"l{i}") for i in range(3)]
        errors = await client.get(f"/v1/files/{view['error_file_id']}/content", headers=bearer(key))
        lost = [json.loads(line) for line in errors.text.splitlines()]
        assert [(e["custom_id"], e["response"]["body"]["error"]["code"]) for e in lost] == [("l1", "answer_lost")]

    run(tmp_path, {}, scenario)
