"""Rate limits on the request path, in-process (tests/support/inprocess.py): the caller's limits taken before the
budget, the team's limit on a model per route, everything given back at settlement (tokens corrected to the real
usage), the x-ratelimit-* headers on every response, and the store's failure behaviour."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx

from gateway.auth.principal import Principal
from gateway.limits.base import Grant, Limit, LimitStore, LimitsUnavailable, State, Want
from gateway.limits.callers import key_scope, team_scope
from gateway.limits.guarded import GuardedLimitStore
from gateway.limits.leases import Leases
from gateway.limits.memory import MemoryLimitStore
from gateway.pipeline.limits import RequestLimits
from gateway.providers.mock import MockCall
from gateway.state import Gateway
from gateway.store.base import Rates, Team
from tests.support.inprocess import HELLO, bearer, chunks, ledger, reply, run, settled, team_key

CHAT = "/v1/chat/completions"


def ask(model: str = "mistral-medium-3.5", **fields: Any) -> dict[str, Any]:
    return {"model": model, "messages": HELLO, **fields}


def test_a_team_over_its_rpm_gets_429_naming_the_limit_and_nothing_is_reserved_or_sent(tmp_path: Path) -> None:
    async def scenario(gateway: Gateway, client: httpx.AsyncClient, calls: dict[str, list[MockCall]]) -> None:
        key = await team_key(gateway, "alpha", rpm=2)
        first = await client.post(CHAT, json=ask(), headers=bearer(key))
        second = await client.post(CHAT, json=ask(), headers=bearer(key))
        third = await client.post(CHAT, json=ask(), headers=bearer(key))
        assert first.status_code == second.status_code == 200
        assert first.headers["x-ratelimit-limit-requests"] == "2"
        assert (first.headers["x-ratelimit-remaining-requests"], second.headers["x-ratelimit-remaining-requests"]) == (
            "1",
            "0",
        )
        assert third.status_code == 429
        error = third.json()["error"]
        assert error["code"] == "rate_limit_exceeded" and error["type"] == "requests"
        assert "team 'alpha'" in error["message"] and "2 requests per minute" in error["message"]
        # 2 per minute: the next request fits 30 s after the burst (GCRA), so Retry-After says about that.
        assert 25 <= int(third.headers["retry-after"]) <= 30
        assert 25_000 <= int(third.headers["retry-after-ms"]) <= 30_000
        assert third.headers["x-ratelimit-remaining-requests"] == "0"
        assert len(await ledger(gateway)) == 2  # the refused request wrote nothing

    calls = run(tmp_path, {}, scenario)
    assert len(calls["mistral"]) == 2


def test_a_keys_own_limit_holds_beside_its_teams(tmp_path: Path) -> None:
    async def scenario(gateway: Gateway, client: httpx.AsyncClient, calls: dict[str, list[MockCall]]) -> None:
        from gateway.admin import service

        await service.create_team(gateway.store, {"name": "beta", "rpm": 100}, "UTC", gateway.catalog)
        tight = (await service.create_key(gateway.store, {"team": "beta", "rpm": 1}))["key"]
        loose = (await service.create_key(gateway.store, {"team": "beta"}))["key"]
        assert (await client.post(CHAT, json=ask(), headers=bearer(tight))).status_code == 200
        refused = await client.post(CHAT, json=ask(), headers=bearer(tight))
        assert refused.status_code == 429 and "API key" in refused.json()["error"]["message"]
        # The tightest limit is the one the headers show: the key's 1, not the team's 100.
        assert refused.headers["x-ratelimit-limit-requests"] == "1"
        other = await client.post(CHAT, json=ask(), headers=bearer(loose))
        assert other.status_code == 200 and other.headers["x-ratelimit-limit-requests"] == "100"
        # Two of the team's 100 taken: the refused request took nothing from the team either (all or nothing).
        assert int(other.headers["x-ratelimit-remaining-requests"]) >= 98  # (one comes back every 0.6 s)

    run(tmp_path, {}, scenario)


def test_tokens_are_reserved_before_the_call_and_corrected_to_the_real_usage(tmp_path: Path) -> None:
    async def scenario(gateway: Gateway, client: httpx.AsyncClient, calls: dict[str, list[MockCall]]) -> None:
        key = await team_key(gateway, "gamma", tpm=10_000)
        answer = await client.post(CHAT, json=ask(max_tokens=4000), headers=bearer(key))
        assert answer.status_code == 200
        # While the call ran, its prompt's count and its 4,000 tokens of output were held...
        held = 10_000 - int(answer.headers["x-ratelimit-remaining-tokens"])
        assert 4000 < held < 4100
        assert answer.headers["x-ratelimit-limit-tokens"] == "10000"
        # ...and after it, only what the provider reported (12 + 3) is counted (plus what the time since gave back:
        # 10,000 a minute is a token every 6 ms).
        (state,) = await gateway.limit_store.peek([Limit(team_scope("gamma"), "tpm", 10_000)])
        assert 9_980 <= state.remaining <= 10_000

    run(tmp_path, {}, scenario)


def test_a_request_larger_than_the_tpm_limit_is_refused_as_too_large_without_retry(tmp_path: Path) -> None:
    async def scenario(gateway: Gateway, client: httpx.AsyncClient, calls: dict[str, list[MockCall]]) -> None:
        key = await team_key(gateway, "delta", tpm=500)
        answer = await client.post(CHAT, json=ask(max_tokens=1000), headers=bearer(key))
        assert answer.status_code == 429
        error = answer.json()["error"]
        assert error["type"] == "tokens" and error["message"].startswith("Request too large")
        assert answer.headers["x-should-retry"] == "false" and "retry-after" not in answer.headers

    calls = run(tmp_path, {}, scenario)
    assert calls["mistral"] == []


def test_a_concurrency_slot_is_held_for_a_whole_stream_and_given_back_at_its_end(tmp_path: Path) -> None:
    release = asyncio.Event()
    started = asyncio.Event()

    async def held(call: MockCall) -> AsyncIterator[dict[str, Any]]:
        started.set()
        await release.wait()
        for chunk in chunks("Hello"):
            yield chunk

    async def scenario(gateway: Gateway, client: httpx.AsyncClient, calls: dict[str, list[MockCall]]) -> None:
        key = await team_key(gateway, "eps", max_concurrent=1)
        body = ask(stream=True, stream_options={"include_usage": True})
        streaming = asyncio.create_task(client.post(CHAT, json=body, headers=bearer(key)))
        await started.wait()
        refused = await client.post(CHAT, json=ask(), headers=bearer(key))
        assert refused.status_code == 429
        assert "1 concurrent requests" in refused.json()["error"]["message"]
        release.set()
        assert (await streaming).status_code == 200
        await settled(gateway, 1)
        assert (await client.post(CHAT, json=ask(), headers=bearer(key))).status_code == 200

    run(tmp_path, {"mistral": lambda call: held(call) if call.stream else reply()}, scenario)


def test_a_budget_refusal_gives_the_concurrency_slot_back(tmp_path: Path) -> None:
    async def scenario(gateway: Gateway, client: httpx.AsyncClient, calls: dict[str, list[MockCall]]) -> None:
        key = await team_key(gateway, "zeta", max_concurrent=1, budget_usd="0.000001")
        for _ in range(3):  # each refused by the budget, not by a slot the previous one kept
            answer = await client.post(CHAT, json=ask(max_tokens=1000), headers=bearer(key))
            assert answer.status_code == 429 and answer.json()["error"]["code"] == "budget_exceeded"

    run(tmp_path, {}, scenario)


def test_a_teams_limit_on_a_model_moves_auto_to_the_next_candidate_and_refuses_a_named_model(
    tmp_path: Path,
) -> None:
    async def scenario(gateway: Gateway, client: httpx.AsyncClient, calls: dict[str, list[MockCall]]) -> None:
        key = await team_key(gateway, "eta", model_limits={"mistral-medium-3.5": {"rpm": 1}})
        first = await client.post(CHAT, json=ask(), headers=bearer(key))
        assert first.status_code == 200 and first.headers["x-gateway-model"] == "mistral-medium-3.5"
        named = await client.post(CHAT, json=ask(), headers=bearer(key))
        assert named.status_code == 429 and "on model 'mistral-medium-3.5'" in named.json()["error"]["message"]
        auto = await client.post(CHAT, json=ask("auto"), headers=bearer(key))
        assert auto.status_code == 200 and auto.headers["x-gateway-model"] != "mistral-medium-3.5"

    run(tmp_path, {}, scenario)


def test_the_messages_door_renders_a_rate_limit_as_anthropics_rate_limit_error(tmp_path: Path) -> None:
    async def scenario(gateway: Gateway, client: httpx.AsyncClient, calls: dict[str, list[MockCall]]) -> None:
        key = await team_key(gateway, "theta", rpm=1)
        body = {"model": "mistral-medium-3.5", "max_tokens": 100, "messages": [{"role": "user", "content": "Hi"}]}
        headers = {"x-api-key": key, "anthropic-version": "2023-06-01"}
        assert (await client.post("/v1/messages", json=body, headers=headers)).status_code == 200
        refused = await client.post("/v1/messages", json=body, headers=headers)
        assert refused.status_code == 429
        assert refused.json()["type"] == "error" and refused.json()["error"]["type"] == "rate_limit_error"
        assert int(refused.headers["retry-after"]) >= 1 and refused.headers["x-ratelimit-limit-requests"] == "1"

    run(tmp_path, {}, scenario)


def test_callers_without_limits_get_no_rate_limit_headers(tmp_path: Path) -> None:
    async def scenario(gateway: Gateway, client: httpx.AsyncClient, calls: dict[str, list[MockCall]]) -> None:
        key = await team_key(gateway, "iota")
        answer = await client.post(CHAT, json=ask(), headers=bearer(key))
        assert answer.status_code == 200
        assert not [name for name in answer.headers if name.startswith("x-ratelimit")]

    run(tmp_path, {}, scenario)


class Unreachable(LimitStore):
    """A limit store that cannot be reached (Redis down)."""

    kind = "redis"

    def __init__(self) -> None:
        self.calls = 0

    async def acquire(
        self, wants: Sequence[Want], holder: str, lease_seconds: float, now: float | None = None
    ) -> Grant:
        self.calls += 1
        raise LimitsUnavailable("connection refused")

    async def settle(self, limit: Limit, delta: int, now: float | None = None) -> None:
        raise LimitsUnavailable("connection refused")

    async def release(self, limits: Sequence[Limit], holder: str) -> None:
        raise LimitsUnavailable("connection refused")

    async def peek(self, limits: Sequence[Limit], now: float | None = None) -> tuple[State, ...]:
        raise LimitsUnavailable("connection refused")

    async def block(self, limit: Limit, seconds: float, now: float | None = None) -> None:
        raise LimitsUnavailable("connection refused")

    async def ping(self) -> bool:
        return False

    async def close(self) -> None:
        pass


def _store_down(gateway: Gateway, failure: str) -> None:
    gateway.limit_store = GuardedLimitStore(Unreachable(), failure, 60.0)  # type: ignore[arg-type]
    gateway.provider_queues.store = gateway.limit_store


def test_fail_open_lets_requests_through_when_the_limit_store_is_down(tmp_path: Path) -> None:
    async def scenario(gateway: Gateway, client: httpx.AsyncClient, calls: dict[str, list[MockCall]]) -> None:
        key = await team_key(gateway, "kappa", rpm=1)
        _store_down(gateway, "fail_open")
        for _ in range(3):  # over the limit, but the limits cannot be known: let through (budgets still hold)
            answer = await client.post(CHAT, json=ask(), headers=bearer(key))
            assert answer.status_code == 200
        ready = await client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["limits"]["reachable"] is False

    run(tmp_path, {}, scenario)


def test_fail_closed_refuses_with_503_before_anything_is_spent_when_the_limit_store_is_down(tmp_path: Path) -> None:
    async def scenario(gateway: Gateway, client: httpx.AsyncClient, calls: dict[str, list[MockCall]]) -> None:
        key = await team_key(gateway, "lambda", rpm=100)
        _store_down(gateway, "fail_closed")
        answer = await client.post(CHAT, json=ask(), headers=bearer(key))
        assert answer.status_code == 503 and answer.json()["error"]["code"] == "rate_limits_unavailable"
        assert int(answer.headers["retry-after"]) >= 1
        assert await ledger(gateway) == []
        ready = await client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["limits"]["on_failure"] == "fail_closed"

    calls = run(tmp_path, {}, scenario)
    assert calls["mistral"] == []


def test_the_scopes_the_key_and_team_limits_are_kept_under() -> None:
    assert team_scope("a") == "team:a" and key_scope("key_1") == "key:key_1"


def test_explain_shows_each_limit_what_is_left_and_whether_the_request_fits_taking_nothing(tmp_path: Path) -> None:
    async def scenario(gateway: Gateway, client: httpx.AsyncClient, calls: dict[str, list[MockCall]]) -> None:
        key = await team_key(gateway, "mu", rpm=1, tpm=100_000)
        for expected_fit in (True, True):  # explaining takes nothing: twice the same answer
            explained = (await client.post("/v1/route/explain", json=ask(), headers=bearer(key))).json()
            limits = explained["rate_limits"]
            assert limits["fits"] is expected_fit and limits["reachable"] is True
            assert [(item["scope"], item["limit"], item["remaining"]) for item in limits["limits"]] == [
                ("team:mu", "rpm", 1),
                ("team:mu", "tpm", 100_000),
            ]
        assert (await client.post(CHAT, json=ask(), headers=bearer(key))).status_code == 200
        after = (await client.post("/v1/route/explain", json=ask(), headers=bearer(key))).json()["rate_limits"]
        assert after["fits"] is False and after["limits"][0]["remaining"] == 0

    run(tmp_path, {}, scenario)


class SuspendingStore(MemoryLimitStore):
    """A store that suspends in give_back (as Redis does), until the test opens its gate."""

    kind = "redis"

    def __init__(self) -> None:
        super().__init__()
        self.entered, self.gate = asyncio.Event(), asyncio.Event()

    async def give_back(
        self, holder: str, slots: Sequence[Limit], settles: Sequence[tuple[Limit, int]], now: float | None = None
    ) -> None:
        self.entered.set()
        await self.gate.wait()
        await super().give_back(holder, slots, settles, now)


def test_a_request_cancelled_while_it_gives_back_still_gives_its_slot_back() -> None:
    async def main() -> None:
        store = SuspendingStore()
        background: list[asyncio.Task[Any]] = []

        def in_background(coroutine: Any) -> asyncio.Task[Any]:
            background.append(asyncio.get_running_loop().create_task(coroutine))
            return background[-1]

        gateway = SimpleNamespace(limit_store=store, leases=Leases(store), in_background=in_background)
        team = Team("nu", rates=Rates(max_concurrent=1))
        request = SimpleNamespace(principal=Principal(team, None, False))
        limits = RequestLimits(gateway, request, 10)  # type: ignore[arg-type]
        await limits.take_caller()
        slot = Limit(team_scope("nu"), "concurrency", 1)
        assert (await store.peek([slot]))[0].remaining == 0
        settling = asyncio.create_task(limits.settle(5))
        await store.entered.wait()
        settling.cancel()  # the client left while its request gave back
        store.gate.set()
        await asyncio.gather(*background)
        assert (await store.peek([slot]))[0].remaining == 1

    asyncio.run(main())
