"""`POST /admin/replay` (gateway/http/admin.py over gateway/replay/service.py): the master key only; the body's
policies, team and window; errors naming the field; the ledger left as it was."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from gateway.providers.mock import MockCall
from gateway.state import Gateway
from tests.support.inprocess import HELLO, MASTER, bearer, ledger, run, settled, team_key

EU_DEFAULT = (
    "name: default\nmodels: [mistral-medium-3.5, codestral, mistral-embed]\nregions: [eu]\nnamed_model: reroute\n"
)


def test_the_master_key_replays_the_ledger_and_nothing_else_may(tmp_path: Path) -> None:
    async def scenario(gateway: Gateway, client: httpx.AsyncClient, calls: dict[str, list[MockCall]]) -> None:
        key = await team_key(gateway, "web")
        kimi = {"model": "kimi-k2.6", "messages": HELLO, "max_tokens": 20}
        auto = {"model": "auto", "messages": HELLO, "max_tokens": 20}
        for body in (kimi, kimi, auto):
            assert (await client.post("/v1/chat/completions", json=body, headers=bearer(key))).status_code == 200
        rows = await settled(gateway, 3)
        body = {"policy_yaml": EU_DEFAULT, "since": "1d"}

        for headers in ({}, bearer(key), bearer("gw-not-a-key")):
            refused = await client.post("/admin/replay", json=body, headers=headers)
            assert refused.status_code == 401, refused.text
            assert refused.json()["error"]["code"] == "invalid_api_key"

        answer = await client.post("/admin/replay", json=body, headers=bearer(MASTER))
        assert answer.status_code == 200, answer.text
        report = answer.json()
        assert report["object"] == "policy_replay" and report["rows"]["replayed"] == 3
        # This default policy reroutes a named model it does not allow: the Kimi rows move to the eu.
        assert report["region_moves"] == [{"from": "cn", "to": "eu", "requests": 2}]
        assert report["policies"]["names"] == ["cost-saver", "default", "eu-only"]  # the gateway's, default replaced
        assert report["refused"] == [] and report["rows"]["changed_model"] == 2
        assert int(report["cost"]["after_nanos"]) > 0 and report["cost"]["after_usd"].count(".") == 1
        assert await ledger(gateway) == rows  # read, never written

        baseline = await client.post("/admin/replay", json={"team": "web"}, headers=bearer(MASTER))
        assert baseline.status_code == 200 and baseline.json()["rows"]["changed_model"] == 0
        nobody = await client.post("/admin/replay", json={"team": "nobody"}, headers=bearer(MASTER))
        assert nobody.json()["rows"]["replayed"] == 0

    run(tmp_path, {}, scenario)


def test_bad_bodies_are_400s_naming_the_field(tmp_path: Path) -> None:
    cases: list[tuple[dict[str, Any], str | None, str]] = [
        (
            {"policy_yaml": "models: [gpt-5]\n", "policy_name": "next"},
            None,
            "next.yaml: models[0]: unknown model 'gpt-5'",
        ),
        ({"policy_yaml": "regions: [eu]\n"}, None, "needs its `name:` field"),
        ({"policy_yaml": EU_DEFAULT, "policy_files": {"default.yaml": EU_DEFAULT}}, "policy_files", "give one of"),
        ({"policy_yaml": 3}, "policy_yaml", "must be the text of one policy file"),
        ({"policy_files": {"eu.yaml": "regions: [eu]\n"}}, None, "no default.yaml"),
        ({"policy_dir": "/etc"}, "policy_dir", "a request names no path on the gateway's machine"),
        ({"policy_yaml": "name: x\nregions: [eu]\x00\n"}, None, "not valid YAML"),
        ({"since": "yesterday"}, "since", "duration back from now"),
        ({"since": "2d", "until": "3d"}, "until", "must be later than since"),
        ({"team": 5}, "team", "must be a team's name"),
        ({"policy": "x"}, "policy", "Unknown field 'policy'"),
    ]

    async def scenario(gateway: Gateway, client: httpx.AsyncClient, calls: dict[str, list[MockCall]]) -> None:
        for body, param, words in cases:
            answer = await client.post("/admin/replay", json=body, headers=bearer(MASTER))
            assert answer.status_code == 400, (body, answer.text)
            error = answer.json()["error"]
            assert words in error["message"], (body, error)
            assert error["param"] == param, (body, error)
            if param is None:
                assert error["code"] == "invalid_policy"

    run(tmp_path, {}, scenario)


def test_hostile_bodies_are_400s_never_500s(tmp_path: Path) -> None:
    bodies: list[Any] = [
        [],
        "text",
        {"since": []},
        {"since": True},
        {"since": 1e30},
        {"until": {"a": 1}},
        {"team": ["web"]},
        {"policy_name": 7, "policy_yaml": EU_DEFAULT},
        {"policy_yaml": "!!python/object/apply:os.system ['true']", "policy_name": "x"},
        {"policy_yaml": "- a\n- b\n", "policy_name": "x"},
        {"policy_yaml": "name: ../../etc/passwd\n"},
        {"policy_files": []},
        {"policy_files": {"default.yaml": 3}},
        {"policy_files": {}},
        {"policy_dir": ""},
        {"policy_dir": ["/"]},
        {"policy_dir": "/proc/self/environ"},
        {"policy_yaml": "\x00", "policy_name": "x"},
        {"policy_yaml": "2026-13-45"},
        {"policy_yaml": "name: x\nregions: !!float abc\n"},
        {"policy_yaml": "[" * 5000 + "]" * 5000, "policy_name": "x"},
        {"policy_files": {"default.yaml": "name: default\nmodels: [2026-02-30]\n"}},
        {"policy_files": {"default.yaml": "name: default\x07\n"}},
    ]

    async def scenario(gateway: Gateway, client: httpx.AsyncClient, calls: dict[str, list[MockCall]]) -> None:
        for body in bodies:
            answer = await client.post("/admin/replay", json=body, headers=bearer(MASTER))
            assert answer.status_code == 400, (body, answer.status_code, answer.text)
            assert answer.json()["error"]["message"], body

    run(tmp_path, {}, scenario)
