"""Model-name aliases through the real app, in-process (MockAdapter providers, real SQLite): Claude Code's ids
are served by the models the policy's `aliases` map them to, the ledger keeps the name the client sent, an
unmapped name is a 404 saying how to map it, and a reloaded policy's aliases apply at once."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx

from gateway.providers.mock import MockCall
from gateway.state import Gateway
from tests.support import ROOT
from tests.support.inprocess import HELLO, bearer, ledger, run, team_key

CHAT = "/v1/chat/completions"
HAIKU = "claude-haiku-4-5-20251001"
WEATHER = [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object", "properties": {}}}}]


def policies(tmp_path: Path) -> Path:
    """A copy of the shipped policies, which the test may edit and reload."""
    directory = tmp_path / "policies"
    shutil.copytree(ROOT / "policies", directory)
    return directory


def test_a_claude_haiku_request_is_served_by_the_cheapest_allowed_model(tmp_path: Path) -> None:
    async def scenario(gateway: Gateway, client: httpx.AsyncClient, calls: dict[str, list[MockCall]]) -> None:
        key = await team_key(gateway)
        answer = await client.post(CHAT, json={"model": HAIKU, "messages": HELLO}, headers=bearer(key))
        assert answer.status_code == 200, answer.text
        # The cheapest chat model the default policy allows: codestral ($0.30/$0.90).
        assert answer.headers["x-gateway-model"] == "codestral"
        assert answer.headers["x-gateway-route-reason"] == "alias"
        assert [c.model.name for c in calls["mistral"]] == ["codestral"]
        # With tools, and for a team that may not use codestral: the cheapest of what is left (Kimi).
        narrow = await team_key(gateway, "beta", models=["mistral-medium-3.5", "kimi-k2.6"])
        body = {"model": HAIKU, "messages": HELLO, "tools": WEATHER}
        answer = await client.post(CHAT, json=body, headers=bearer(narrow))
        assert answer.status_code == 200, answer.text
        assert answer.headers["x-gateway-model"] == "kimi-k2.6"
        assert [c.model.name for c in calls["moonshot"]] == ["kimi-k2.6"]
        rows = sorted(await ledger(gateway), key=lambda r: r.team)
        assert [(r.team, r.requested_model, r.model, r.route_reason, r.status) for r in rows] == [
            ("alpha", HAIKU, "codestral", "alias", 200),
            ("beta", HAIKU, "kimi-k2.6", "alias", 200),
        ]

    run(tmp_path, {}, scenario, policies_dir=policies(tmp_path))


def test_explain_names_the_alias_and_an_unmapped_name_is_a_404(tmp_path: Path) -> None:
    async def scenario(gateway: Gateway, client: httpx.AsyncClient, calls: dict[str, list[MockCall]]) -> None:
        key = await team_key(gateway, policy="eu-only")
        explained = await client.post(
            "/v1/route/explain", json={"model": "claude-opus-4-1", "messages": HELLO}, headers=bearer(key)
        )
        assert explained.status_code == 200, explained.text
        data = explained.json()
        assert data["requested_model"] == "claude-opus-4-1" and data["policy"] == "eu-only"
        assert data["alias"] == {
            "requested": "claude-opus-4-1",
            "entry": "aliases[1]",
            "match": "claude-*",
            "to": "auto",
        }
        assert (data["model"], data["reason"]) == ("mistral-medium-3.5", "alias")

        refused = await client.post(CHAT, json={"model": "gpt-4o", "messages": HELLO}, headers=bearer(key))
        assert refused.status_code == 404
        error = refused.json()["error"]
        assert (error["code"], error["param"]) == ("model_not_found", "model")
        assert "The model 'gpt-4o'" in error["message"] and "policy 'eu-only'" in error["message"]
        assert "`aliases` in policies/eu-only.yaml" in error["message"]
        assert calls.get("mistral", []) == [] and calls.get("moonshot", []) == []

    run(tmp_path, {}, scenario, policies_dir=policies(tmp_path))


def test_a_reloaded_policys_aliases_apply_to_the_next_request(tmp_path: Path) -> None:
    directory = policies(tmp_path)

    async def scenario(gateway: Gateway, client: httpx.AsyncClient, calls: dict[str, list[MockCall]]) -> None:
        key = await team_key(gateway)
        before = await client.post(CHAT, json={"model": "gpt-4o", "messages": HELLO}, headers=bearer(key))
        assert before.status_code == 404
        default = directory / "default.yaml"
        default.write_text(
            default.read_text().replace(
                '  - {match: "claude-*", to: auto}',
                '  - {match: "claude-*", to: auto}\n  - {match: "gpt-*", to: kimi-k2.6}',
            )
        )
        reloaded = await gateway.reload()
        assert reloaded.policies is not None and reloaded.policies.ok and reloaded.policies.changed
        after = await client.post(CHAT, json={"model": "gpt-4o", "messages": HELLO}, headers=bearer(key))
        assert after.status_code == 200, after.text
        assert (after.headers["x-gateway-model"], after.headers["x-gateway-route-reason"]) == ("kimi-k2.6", "alias")
        rows = [r for r in await ledger(gateway) if r.status == 200]
        assert [(r.requested_model, r.model) for r in rows] == [("gpt-4o", "kimi-k2.6")]

    run(tmp_path, {}, scenario, policies_dir=directory)
