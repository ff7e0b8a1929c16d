"""Every limit store (memory, a SQLite file, the machine's Redis) behaves the same, to the last bit, with explicit
times: the burst and the steady rate, exact retry times, too-large costs, settling, blocking, leases that end on
their own (a holder killed before releasing), all or nothing over several limits. Redis's Lua and the Python
algorithm agree on random sequences of operations (hypothesis). And `open_limit_store` picks the store the settings
call for."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from gateway.limits import gcra
from gateway.limits.base import Grant, Limit, LimitKind, LimitStore, State, Want
from gateway.limits.guarded import GuardedLimitStore
from gateway.limits.memory import MemoryLimitStore
from gateway.limits.redis_store import RedisLimitStore
from gateway.limits.sqlite_store import SqliteLimitStore
from gateway.limits.stores import open_limit_store
from gateway.settings import Settings
from tests.support.redis_keys import REDIS_URL, delete_prefix

T0 = 1_760_000_000.123  # a time of today's magnitude (time.time())
Scenario = Callable[[LimitStore], Awaitable[None]]
Factory = Callable[[], LimitStore]


@pytest.fixture(params=["memory", "sqlite", "redis"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path, redis_prefix: str) -> Factory:
    def make() -> LimitStore:
        if request.param == "memory":
            return MemoryLimitStore()
        if request.param == "sqlite":
            return SqliteLimitStore(tmp_path / "limits.db")
        return RedisLimitStore(REDIS_URL, redis_prefix, timeout_seconds=2.0)

    return make


def run(make: Factory, scenario: Scenario) -> None:
    async def main() -> None:
        store = make()
        await store.open()
        try:
            await scenario(store)
        finally:
            await store.close()

    asyncio.run(main())


def remaining(grant: Grant) -> list[int]:
    return [state.remaining for state in grant.states]


def test_a_minute_at_once_then_the_steady_rate(make_store: Factory) -> None:
    rpm = Limit("key:k", "rpm", 60)

    async def scenario(store: LimitStore) -> None:
        for left in range(59, -1, -1):
            grant = await store.acquire([Want(rpm, 1)], "r", 30, now=T0)
            assert grant.ok and remaining(grant) == [left]
        refused = await store.acquire([Want(rpm, 1)], "r", 30, now=T0)
        assert not refused.ok and refused.refused == rpm and refused.retry_after == 1.0
        assert refused.states == (State(rpm, 0, 60.0),)
        assert not (await store.acquire([Want(rpm, 1)], "r", 30, now=T0 + 0.999)).ok
        assert (await store.acquire([Want(rpm, 1)], "r", 30, now=T0 + 1.0)).ok
        assert not (await store.acquire([Want(rpm, 1)], "r", 30, now=T0 + 1.0)).ok
        assert await store.peek([rpm], now=T0 + 31.0) == (State(rpm, 30, 30.0),)
        # 29 * (60 / 29) is more than 60, and 60 / (60 / 29) less than 29: rounding must cost no unit.
        odd = Limit("key:odd", "rpm", 29)
        for left in range(28, -1, -1):
            assert remaining(await store.acquire([Want(odd, 1)], "r", 30, now=T0)) == [left]
        assert not (await store.acquire([Want(odd, 1)], "r", 30, now=T0)).ok
        assert (await store.peek([odd], now=T0 + 60))[0].remaining == 29

    run(make_store, scenario)


def test_refusals_say_exactly_when_and_too_large_costs_take_nothing(make_store: Factory) -> None:
    tpm, rpm = Limit("team:t", "tpm", 1000), Limit("team:t", "rpm", 10)

    async def scenario(store: LimitStore) -> None:
        assert (await store.acquire([Want(tpm, 900)], "r1", 30, now=T0)).ok
        grant = await store.acquire([Want(rpm, 1), Want(tpm, 300)], "r2", 30, now=T0)
        assert not grant.ok and grant.refused == tpm and not grant.too_large
        assert grant.retry_after == pytest.approx(12.0)  # 200 tokens more than fit, at 60 s / 1000 each
        assert remaining(grant) == [10, 100]
        assert (await store.acquire([Want(rpm, 1), Want(tpm, 300)], "r2", 30, now=T0 + grant.retry_after)).ok
        too_large = await store.acquire([Want(rpm, 1), Want(tpm, 1001)], "r3", 30, now=T0 + 60)
        assert not too_large.ok and too_large.too_large and too_large.refused == tpm and too_large.retry_after == 0
        assert (await store.peek([rpm], now=T0 + 60))[0].remaining == 10  # it took nothing

    run(make_store, scenario)


def test_settling_gives_back_and_takes_more(make_store: Factory) -> None:
    tpm = Limit("key:k", "tpm", 1000)

    async def scenario(store: LimitStore) -> None:
        grant = await store.acquire([Want(tpm, 800)], "r1", 30, now=T0)
        assert remaining(grant) == [200]
        await store.settle(tpm, -500, now=T0)  # the answer was shorter than reserved
        assert (await store.peek([tpm], now=T0))[0].remaining == 700
        await store.settle(tpm, +1200, now=T0)  # longer: owed by the next requests
        assert (await store.peek([tpm], now=T0))[0] == State(tpm, 0, 90.0)
        refused = await store.acquire([Want(tpm, 1)], "r2", 30, now=T0)
        assert refused.retry_after == pytest.approx(30.06)
        # Giving back never credits the past: an idle limit stays exactly whole.
        idle = Limit("key:idle", "tpm", 1000)
        await store.settle(idle, -5000, now=T0)
        assert await store.peek([idle], now=T0) == (State(idle, 1000, 0.0),)

    run(make_store, scenario)


def test_a_block_holds_until_it_ends(make_store: Factory) -> None:
    rpm, slots = Limit("provider:p", "rpm", 60), Limit("provider:p", "concurrency", 4)

    async def scenario(store: LimitStore) -> None:
        await store.block(rpm, 10.0, now=T0)
        await store.block(slots, 10.0, now=T0)
        for limit in (rpm, slots):
            grant = await store.acquire([Want(limit, 1)], "r", 30, now=T0 + 9.5)
            assert not grant.ok and grant.refused == limit
        assert (await store.acquire([Want(rpm, 1)], "r", 30, now=T0 + 9.5)).retry_after == pytest.approx(1.5)
        assert (await store.acquire([Want(slots, 1)], "r", 30, now=T0 + 9.5)).retry_after == pytest.approx(0.5)
        assert await store.peek([rpm, slots], now=T0 + 5) == (State(rpm, 0, 65.0), State(slots, 0, 5.0))
        assert (await store.acquire([Want(slots, 1)], "r", 30, now=T0 + 10)).ok
        assert (await store.acquire([Want(rpm, 1)], "r", 30, now=T0 + 11)).ok
        assert not (await store.acquire([Want(rpm, 1)], "r", 30, now=T0 + 11)).ok  # the steady rate, no burst

    run(make_store, scenario)


def test_leases_are_released_renewed_and_end_on_their_own(make_store: Factory) -> None:
    slots = Limit("team:t", "concurrency", 2)

    async def scenario(store: LimitStore) -> None:
        assert remaining(await store.acquire([Want(slots, 1)], "a", 30, now=T0)) == [1]
        assert remaining(await store.acquire([Want(slots, 1)], "b", 10, now=T0)) == [0]
        full = await store.acquire([Want(slots, 1)], "c", 30, now=T0 + 1)
        assert not full.ok and full.retry_after == gcra.CONCURRENCY_RETRY_SECONDS
        assert (await store.acquire([Want(slots, 1)], "a", 30, now=T0 + 1)).ok  # a renewal, not a third slot
        await store.release([slots], "a")
        await store.release([slots], "nobody")
        assert (await store.acquire([Want(slots, 1)], "c", 60, now=T0 + 2)).ok
        # "b" never releases (its process was killed): its slot comes back when its lease ends, not before.
        late = await store.acquire([Want(slots, 1)], "d", 30, now=T0 + 9.99)
        assert not late.ok and late.retry_after == pytest.approx(0.01)
        assert (await store.acquire([Want(slots, 1)], "d", 30, now=T0 + 10)).ok
        assert await store.peek([slots], now=T0 + 10) == (State(slots, 0, 0.0),)
        assert await store.peek([slots], now=T0 + 62) == (State(slots, 2, 0.0),)

    run(make_store, scenario)


def test_several_limits_are_all_or_nothing(make_store: Factory) -> None:
    key_rpm, team_tpm, team_slots = (
        Limit("key:k", "rpm", 10),
        Limit("team:t", "tpm", 1000),
        Limit("team:t", "concurrency", 3),
    )
    limits = [key_rpm, team_slots, team_tpm]

    async def scenario(store: LimitStore) -> None:
        assert (await store.acquire([Want(team_tpm, 950)], "other", 30, now=T0)).ok
        for attempt in range(5):
            grant = await store.acquire(
                [Want(key_rpm, 1), Want(team_slots, 1), Want(team_tpm, 100)], f"r{attempt}", 30, now=T0
            )
            assert not grant.ok and grant.refused == team_tpm
        # Five refusals took nothing from the key's rate or the team's slots.
        assert [s.remaining for s in await store.peek(limits, now=T0)] == [10, 3, 50]
        grant = await store.acquire([Want(key_rpm, 1), Want(team_slots, 1), Want(team_tpm, 50)], "ok", 30, now=T0)
        assert grant.ok and remaining(grant) == [9, 2, 0]
        # Two wants on one limit count twice.
        both = Limit("key:both", "tpm", 100)
        assert not (await store.acquire([Want(both, 60), Want(both, 60)], "x", 30, now=T0)).ok
        assert remaining(await store.acquire([Want(both, 60), Want(both, 40)], "x", 30, now=T0)) == [0, 0]

    run(make_store, scenario)


def test_a_limit_whose_amount_changes_keeps_its_use(make_store: Factory) -> None:
    async def scenario(store: LimitStore) -> None:
        assert (await store.acquire([Want(Limit("key:k", "rpm", 10), 5)], "r", 30, now=T0)).ok
        assert (await store.peek([Limit("key:k", "rpm", 20)], now=T0))[0].remaining == 10

    run(make_store, scenario)


def test_the_stores_own_clock(make_store: Factory) -> None:
    rpm, slots = Limit("key:clock", "rpm", 2), Limit("key:clock", "concurrency", 1)

    async def scenario(store: LimitStore) -> None:
        assert (await store.acquire([Want(rpm, 1), Want(slots, 1)], "a", 30)).ok
        assert not (await store.acquire([Want(slots, 1)], "b", 30)).ok
        await store.release([slots], "a")
        assert (await store.acquire([Want(rpm, 1), Want(slots, 1)], "b", 30)).ok
        refused = await store.acquire([Want(rpm, 1)], "c", 30)
        assert not refused.ok and 0 < refused.retry_after <= 30
        state = (await store.peek([rpm]))[0]
        assert state.remaining == 0 and 30 < state.reset_seconds <= 60

    run(make_store, scenario)


def test_give_back_releases_and_settles_in_one_call_as_release_and_settle_do(make_store: Factory) -> None:
    tpm, slots, rpm = Limit("key:gb", "tpm", 600), Limit("key:gb", "concurrency", 1), Limit("key:gb", "rpm", 60)

    async def scenario(store: LimitStore) -> None:
        assert (await store.acquire([Want(tpm, 300), Want(slots, 1), Want(rpm, 1)], "a", 30, now=T0)).ok
        # 300 tokens reserved, 120 used: 180 given back; the slot released; the rpm left as it is.
        await store.give_back("a", [slots], [(tpm, -180)], now=T0)
        assert await store.peek([tpm, slots, rpm], now=T0) == (
            State(tpm, 480, 12.0),
            State(slots, 1, 0.0),
            State(rpm, 59, 1.0),
        )
        await store.give_back("nobody", [slots], [], now=T0)  # nothing held: nothing happens
        assert (await store.acquire([Want(slots, 1)], "b", 30, now=T0)).ok

    run(make_store, scenario)


# The same operations on every store give the same answers as the algorithm in Python (the memory store).

SCOPES = ("key:a", "team:b")
KINDS: tuple[LimitKind, ...] = ("rpm", "tpm", "concurrency")
HOLDERS = ("h1", "h2", "h3")
# 17 and 29 are amounts whose bursts and remaining counts need gcra.EPSILON (17 * (60 / 17) > 60).
AMOUNTS = (1, 2, 3, 7, 17, 29, 60, 1000)


def _limit(scope: str, kind: LimitKind, amount: int) -> Limit:
    return Limit(scope, kind, amount)


def random_operations(rng: random.Random, count: int, start: float = T0) -> list[tuple[Any, ...]]:
    """Operations at times that often coincide (bursts at one instant, a lease's exact end), on limits whose
    amounts mostly stay put (so bursts reach the limit's edge) and sometimes change."""
    amounts = {(scope, kind): rng.choice(AMOUNTS) for scope in SCOPES for kind in KINDS}
    now, operations = start, []
    for _ in range(count):
        now += rng.choice([0.0, 0.0, 0.0, 0.5, 5.0, 0.001, rng.uniform(0, 2), rng.uniform(0, 40)])
        limits = []
        for kind in rng.sample(KINDS, rng.randint(1, 3)):
            scope = rng.choice(SCOPES)
            amount = amounts[scope, kind] if rng.random() < 0.9 else rng.choice(AMOUNTS)
            limits.append(_limit(scope, kind, amount))
        what = rng.choice(["acquire", "acquire", "acquire", "acquire", "settle", "release", "peek", "block", "burst"])
        if what == "burst":  # one request after another at one instant, to one past the limit's edge
            limit = limits[0]
            for _ in range(min(limit.amount, 30) + 1):
                operations.append(("acquire", [Want(limit, 1)], rng.choice(HOLDERS), 30.0, now))
        elif what == "acquire":
            wants = [Want(limit, _cost(rng, limit)) for limit in limits]
            operations.append(("acquire", wants, rng.choice(HOLDERS), rng.choice([0.5, 5.0, 30.0]), now))
        elif what == "settle":
            operations.append(("settle", limits[0], rng.randint(-500, 500), now))
        elif what == "release":
            operations.append(("release", limits, rng.choice(HOLDERS)))
        elif what == "peek":
            operations.append(("peek", limits, now))
        else:
            operations.append(("block", limits[0], rng.choice([0.0, 0.5, rng.uniform(0, 90)]), now))
    return operations


def _cost(rng: random.Random, limit: Limit) -> int:
    if limit.kind != "tpm":
        return 1
    return rng.choice([1, limit.amount, rng.randint(0, limit.amount + 1)])


async def apply(store: LimitStore, operation: tuple[Any, ...]) -> Any:
    name, *args = operation
    return await getattr(store, name)(*args)


def test_every_store_answers_as_the_algorithm_does(make_store: Factory) -> None:
    async def scenario(store: LimitStore) -> None:
        for seed in range(3):
            # One store for every seed: each seed's times start well after everything before it has ended.
            operations = random_operations(random.Random(seed), 200, start=T0 + seed * 1e6)
            reference = MemoryLimitStore()
            for number, operation in enumerate(operations):
                answer = await apply(store, operation)
                assert answer == await apply(reference, operation), f"seed {seed}, operation {number}"

    run(make_store, scenario)


@pytest.mark.slow
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), count=st.integers(1, 60))
def test_redis_lua_and_python_agree_on_random_sequences(seed: int, count: int) -> None:
    operations = random_operations(random.Random(seed), count)
    prefix = f"test-limits-agree-{seed}-{random.getrandbits(64):x}"

    async def main() -> None:
        store, reference = RedisLimitStore(REDIS_URL, prefix, 2.0), MemoryLimitStore()
        try:
            for number, operation in enumerate(operations):
                assert await apply(store, operation) == await apply(reference, operation), f"operation {number}"
        finally:
            await store.close()

    try:
        asyncio.run(main())
    finally:
        delete_prefix(prefix)


def test_redis_keys_are_the_prefixs_and_expire_when_idle(redis_prefix: str) -> None:
    rpm, slots = Limit("key:k", "rpm", 60), Limit("key:k", "concurrency", 2)

    async def scenario(store: LimitStore) -> None:
        await store.acquire([Want(rpm, 30), Want(slots, 1)], "a", 100, now=T0)

    run(lambda: RedisLimitStore(REDIS_URL, redis_prefix, 2.0), scenario)
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = sorted(client.scan_iter(match=f"{redis_prefix}:*"))
        assert keys == [f"{redis_prefix}:limit:key:k:concurrency".encode(), f"{redis_prefix}:limit:key:k:rpm".encode()]
        ttl = {key: client.pttl(key) for key in keys}
        # Idle 30 s (rpm) and 100 s (the lease) from now, then the grace: gone without anyone deleting them.
        assert 30_000 < ttl[keys[1]] <= (30 + gcra.IDLE_GRACE_SECONDS) * 1000
        assert 100_000 < ttl[keys[0]] <= (100 + gcra.IDLE_GRACE_SECONDS) * 1000
    finally:
        client.close()


# Which store the settings call for.


def test_open_limit_store_picks_memory_sqlite_or_redis(tmp_path: Path, redis_prefix: str) -> None:
    memory = open_limit_store(Settings(data_dir=tmp_path))
    assert isinstance(memory, MemoryLimitStore) and memory.kind == "memory"

    workers = open_limit_store(Settings(data_dir=tmp_path, workers=4, redis_failure="fail_closed"))
    assert isinstance(workers, GuardedLimitStore) and workers.kind == "sqlite"
    assert isinstance(workers.inner, SqliteLimitStore) and workers.inner.path == tmp_path / "limits.db"
    assert workers.status()["on_failure"] == "fail_closed"

    shared = open_limit_store(
        Settings(data_dir=tmp_path, workers=4, redis_url=SecretStr(REDIS_URL), redis_prefix=redis_prefix)
    )
    assert isinstance(shared, GuardedLimitStore) and isinstance(shared.inner, RedisLimitStore)
    assert shared.inner.prefix == redis_prefix and shared.inner.timeout_seconds == 0.25

    async def main() -> None:
        for store in (memory, workers, shared):
            await store.open()
            assert (await store.acquire([Want(Limit("key:k", "rpm", 1), 1)], "r", 30)).ok
            assert await store.ping()
            await store.close()

    asyncio.run(main())
    assert (tmp_path / "limits.db").exists()
