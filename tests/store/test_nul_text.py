"""Text holding NUL from callers, on both databases: PostgreSQL's text cannot hold it (psycopg raises DataError),
so every lookup or write of such text through the store was a 500 there, or a row lost in a background write.
Over the in-process app: ids and names looked up are not found (404), filters match nothing, and what is written
(a key's name, a batch line's custom_id and metadata, a request's ledger row) is written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.state import Gateway
from tests.support.inprocess import MASTER, bearer, run, settled, team_key
from tests.support.postgres import fresh_database

CHAT = "/v1/chat/completions"
NUL = "a\x00b"


@pytest.mark.parametrize("database", ["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def test_text_with_nul_is_looked_up_and_written_without_a_5xx(tmp_path: Path, database: str) -> None:
    async def scenario(gateway: Gateway, client: httpx.AsyncClient, calls: Any) -> None:
        key = await team_key(gateway, budget_usd="5")
        as_team, as_master = bearer(key), bearer(MASTER)
        not_found = [
            ("POST", "/v1/batches", as_team, {"input_file_id": NUL, "endpoint": CHAT}),
            ("POST", "/v1/batches/explain", as_team, {"input_file_id": NUL, "endpoint": CHAT}),
            ("GET", "/v1/files/a%00b", as_team, None),
            ("GET", "/v1/files/a%00b/content", as_team, None),
            ("DELETE", "/v1/files/a%00b", as_team, None),
            ("GET", "/v1/batches/a%00b", as_team, None),
            ("POST", "/v1/batches/a%00b/cancel", as_team, None),
            ("GET", "/admin/teams/a%00b", as_master, None),
            ("DELETE", "/admin/keys/a%00b", as_master, None),
        ]
        for method, path, headers, body in not_found:
            answer = await client.request(method, path, headers=headers, json=body)
            assert answer.status_code == 404, (method, path, answer.text)
        empty = [
            ("GET", "/v1/batches?after=a%00b", as_team, None),
            ("GET", "/v1/files?purpose=a%00b", as_team, None),
            ("GET", "/admin/spend?team=a%00b", as_master, None),
            ("GET", "/admin/spend?group_by=batch&batch=a%00b", as_master, None),
            ("POST", "/admin/replay", as_master, {"team": NUL}),
        ]
        for method, path, headers, body in empty:
            answer = await client.request(method, path, headers=headers, json=body)
            assert answer.status_code == 200, (method, path, answer.text)
        named = await client.post("/admin/keys", headers=as_master, json={"team": "alpha", "name": NUL})
        assert named.status_code == 201, named.text
        chat = {"model": "kimi-k2.6", "messages": [{"role": "user", "content": NUL}], "user": NUL}
        assert (await client.post(CHAT, headers=as_team, json=chat)).status_code == 200
        unknown = await client.post(CHAT, headers=as_team, json={**chat, "model": NUL})
        assert unknown.status_code == 404, unknown.text
        line = {"custom_id": NUL, "method": "POST", "url": CHAT, "body": chat}
        uploaded = await client.post(
            "/v1/files",
            headers=as_team,
            files={"file": ("in.jsonl", httpx.Response(200, json=line).content + b"\n")},
            data={"purpose": "batch"},
        )
        assert uploaded.status_code == 200, uploaded.text
        created = await client.post(
            "/v1/batches",
            headers=as_team,
            json={"input_file_id": uploaded.json()["id"], "endpoint": CHAT, "metadata": {NUL: NUL}},
        )
        assert created.status_code == 200, created.text
        read = await client.get(f"/v1/batches/{created.json()['id']}", headers=as_team)
        assert read.status_code == 200 and len(read.json()["metadata"]) == 1
        rows = await settled(gateway, 1)  # the chat request's row (refused before routing, the 404 writes none)
        assert [(row.status, row.requested_model) for row in rows] == [(200, "kimi-k2.6")]

    if database == "sqlite":
        run(tmp_path, {}, scenario)
    else:
        with fresh_database() as url:
            run(tmp_path, {}, scenario, database_url=url)
