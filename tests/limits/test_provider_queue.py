"""Provider queues: a provider's limits are never exceeded, teams share them fairly (weighted fair queueing), a
request that cannot get capacity in time gives up at once or at its bound, and a cancelled waiter leaves cleanly.
Every scenario runs on the in-memory store and (slow tier) on the Redis at 127.0.0.1:6379 (a key prefix of its
own; never flushed). The provider's work is a few turns of the event loop: positions served are counted, not
seconds."""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import pytest

from gateway.catalog import CapacityLimits, ModelConfig, Provider, Timeouts
from gateway.limits.base import Grant, Limit, LimitStore, State, Want
from gateway.limits.memory import MemoryLimitStore
from gateway.limits.provider_queue import (
    ProviderQueues,
    QueueTimeout,
    Seat,
    deployment_scope,
    limits_for,
    max_wait_for,
    provider_scope,
)
from gateway.limits.redis_store import RedisLimitStore
from tests.support.redis_keys import REDIS_URL, delete_prefix

LEASE = 60.0
LONG_WAIT = 30.0  # a bound no test reaches: the scenarios end on conditions


def provider(limits: dict[str, Any] | None = None, name: str = "acme") -> Provider:
    return Provider(
        name=name,
        kind="openai-compatible",
        region="eu",
        base_url="http://127.0.0.1:1/v1",
        api_key=None,
        litellm_provider=None,
        max_connections=8,
        timeouts=Timeouts(),
        limits=CapacityLimits(**limits) if limits is not None else None,
    )


def model(limits: dict[str, Any] | None = None, name: str = "m1", provider_name: str = "acme") -> ModelConfig:
    return ModelConfig.model_validate(
        {
            "name": name,
            "provider": provider_name,
            "upstream_model": name,
            "context_window": 1000,
            "max_output_tokens": 100,
            "price": {"input": 1, "output": 1},
            "limits": limits,
        }
    )


class Spy(LimitStore):
    """A store in front of another that counts calls and can hold `acquire` until the test lets it answer."""

    kind = "spy"

    def __init__(self, inner: LimitStore) -> None:
        self.inner = inner
        self.calls: dict[str, int] = {}
        self.gate: asyncio.Event | None = None  # set: acquire waits for it
        self.at_gate = asyncio.Event()

    def _count(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1

    async def acquire(
        self, wants: Sequence[Want], holder: str, lease_seconds: float, now: float | None = None
    ) -> Grant:
        self._count("acquire")
        if self.gate is not None:
            self.at_gate.set()
            await self.gate.wait()
        return await self.inner.acquire(wants, holder, lease_seconds, now)

    async def settle(self, limit: Limit, delta: int, now: float | None = None) -> None:
        self._count("settle")
        await self.inner.settle(limit, delta, now)

    async def release(self, limits: Sequence[Limit], holder: str) -> None:
        self._count("release")
        await self.inner.release(limits, holder)

    async def peek(self, limits: Sequence[Limit], now: float | None = None) -> tuple[State, ...]:
        return await self.inner.peek(limits, now)

    async def block(self, limit: Limit, seconds: float, now: float | None = None) -> None:
        self._count("block")
        await self.inner.block(limit, seconds, now)

    async def ping(self) -> bool:
        return await self.inner.ping()

    async def close(self) -> None:
        await self.inner.close()


StoreFactory = Callable[[], Awaitable[LimitStore]]


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.slow)])
def new_store(request: pytest.FixtureRequest) -> Iterator[Callable[[], Any]]:
    """`async with new_store() as make:` -> `await make()` gives a store; every store made in one test shares its
    state (two stores = two nodes). Redis: a prefix of its own, its keys deleted afterwards."""
    prefix = f"test-provider-queue-{uuid.uuid4().hex}"

    @asynccontextmanager
    async def stores() -> AsyncIterator[StoreFactory]:
        made: list[LimitStore] = []
        memory = MemoryLimitStore()

        async def make() -> LimitStore:
            if request.param == "memory":
                return memory
            store = RedisLimitStore(REDIS_URL, prefix, timeout_seconds=5.0)
            await store.open()
            made.append(store)
            return store

        try:
            yield make
        finally:
            for store in made:
                await store.close()

    yield stores
    if request.param == "redis":
        delete_prefix(prefix)


def run(coroutine: Awaitable[Any]) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(coroutine, 60)

    return asyncio.run(bounded())


async def turns(count: int = 3) -> None:
    """The provider's work: a few turns of the event loop (other tasks run meanwhile)."""
    for _ in range(count):
        await asyncio.sleep(0)


async def until(condition: Callable[[], bool], what: str, turns_left: int = 100_000) -> None:
    """Let other tasks run until `condition` holds (a bounded count of loop turns, no clock)."""
    for _ in range(turns_left):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"{what} not reached")


class Upstream:
    """Counts what reaches the provider: requests in flight now, the most ever at once, and who was served in
    which order."""

    def __init__(self, fill: int = 0, waiting: Callable[[], int] = lambda: 0) -> None:
        # With `fill`, a request stays until `fill` are in flight or nobody waits (`waiting()`): that the queue
        # fills its capacity is then a fact of the order of events, not of how fast the store answers.
        self.fill, self.waiting = fill, waiting
        self.in_flight = 0
        self.most = 0
        self.order: list[str] = []

    async def serve(self, queues: ProviderQueues, seat_of: Awaitable[Seat], team: str, work: int = 20) -> Seat:
        seat = await seat_of
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        self.order.append(team)
        try:
            while self.in_flight < self.fill and self.waiting() > 0:  # (bounded by the test's own timeout)
                await asyncio.sleep(0)
            await turns(work)
        finally:
            self.in_flight -= 1
            await queues.leave(seat, 10)
        return seat


def enter(
    queues: ProviderQueues,
    where: tuple[Provider, ModelConfig],
    team: str,
    *,
    weight: float = 1.0,
    tokens: int = 10,
    max_wait: float = LONG_WAIT,
) -> Awaitable[Seat]:
    return queues.enter(where[0], where[1], team, weight, tokens, uuid.uuid4().hex, max_wait, LEASE)


# -- the catalog's limits -----------------------------------------------------------------------------------


def test_limits_for_takes_the_account_and_the_deployment() -> None:
    account = provider({"concurrency": 2, "rpm": 60})
    deployment = model({"tpm": 5000, "max_wait_seconds": 3})
    assert limits_for(account, deployment) == [
        Limit("provider:acme", "rpm", 60),
        Limit("provider:acme", "concurrency", 2),
        Limit("deployment:acme:m1", "tpm", 5000),
    ]
    assert provider_scope("acme") == "provider:acme" and deployment_scope("acme", "m1") == "deployment:acme:m1"
    assert limits_for(provider(), model()) == []
    assert max_wait_for(account, deployment, 10.0) == 3
    assert max_wait_for(provider({"rpm": 1, "max_wait_seconds": 7}), model(), 10.0) == 7
    assert max_wait_for(account, model(), 10.0) == 10.0


def test_no_limits_costs_no_store_call() -> None:
    async def scenario() -> None:
        spy = Spy(MemoryLimitStore())
        depths: list[tuple[str, int]] = []
        queues = ProviderQueues(spy, on_depth=lambda p, d: depths.append((p, d)))
        for where in ((provider(), model()), (provider({"max_wait_seconds": 1}), model())):
            seat = await enter(queues, where, "a")
            assert seat.limits == () and seat.provider == "acme"
            await queues.leave(seat, 99)
            await queues.busy(where[0], where[1], 30)
        assert spy.calls == {} and depths == [] and queues.status() == {}

    run(scenario())


# -- never more than the limits, shared fairly ---------------------------------------------------------------


def test_a_flooding_team_cannot_starve_a_quiet_one(new_store: Callable[[], Any]) -> None:
    """Concurrency 2; team a sends 50 at once, team b one at a time: never more than 2 at the provider, and each
    of b's requests is served after at most 2 of a's queued ones (a few service times), while a still waits."""

    async def scenario() -> None:
        async with new_store() as make:
            queues = ProviderQueues(await make())
            where = (provider({"concurrency": 2}), model())
            upstream = Upstream(fill=2, waiting=lambda: queues.depth("acme"))
            flood = [asyncio.create_task(upstream.serve(queues, enter(queues, where, "a"), "a")) for _ in range(50)]
            await until(lambda: queues.depth("acme") >= 40, "the flood queued")
            overtaken = []
            for _ in range(5):
                before = len(upstream.order)
                await upstream.serve(queues, enter(queues, where, "b"), "b")
                overtaken.append(upstream.order.index("b", before) - before)
            assert queues.depth("acme") > 0, "the flood was still waiting when b was done"
            await asyncio.gather(*flood)
            assert upstream.most == 2 and upstream.in_flight == 0
            assert max(overtaken) <= 2, overtaken
            assert upstream.order.count("a") == 50 and upstream.order.count("b") == 5
            assert queues.depth("acme") == 0 and queues.status() == {}
            state = await queues.store.peek([Limit("provider:acme", "concurrency", 2)])
            assert state[0].remaining == 2  # every slot given back

    run(scenario())


def test_weights_share_the_turns(new_store: Callable[[], Any]) -> None:
    """Concurrency 1, both teams backlogged: weight 2 gets two turns for each of weight 1's."""

    async def scenario() -> None:
        async with new_store() as make:
            queues = ProviderQueues(await make())
            where = (provider(), model({"concurrency": 1}))
            upstream = Upstream()
            blocker = await enter(queues, where, "x")
            heavy = [
                asyncio.create_task(upstream.serve(queues, enter(queues, where, "heavy", weight=2), "heavy"))
                for _ in range(30)
            ]
            light = [
                asyncio.create_task(upstream.serve(queues, enter(queues, where, "light"), "light")) for _ in range(30)
            ]
            await until(lambda: queues.depth("acme") == 60, "both teams queued")
            await queues.leave(blocker, None)
            await asyncio.gather(*heavy, *light)
            first = upstream.order[:30]
            assert 19 <= first.count("heavy") <= 21, first
            assert upstream.most == 1

    run(scenario())


def test_deployments_of_one_account_share_it_fairly(new_store: Callable[[], Any]) -> None:
    """The account (concurrency 1) is shared by two models: a team flooding one model does not starve a team on
    the other (their turns are compared on one clock)."""

    async def scenario() -> None:
        async with new_store() as make:
            queues = ProviderQueues(await make())
            account = provider({"concurrency": 1})
            busy_model, quiet_model = (account, model({"concurrency": 5})), (account, model(name="m2"))
            upstream = Upstream()
            flood = [
                asyncio.create_task(upstream.serve(queues, enter(queues, busy_model, "a"), "a")) for _ in range(30)
            ]
            await until(lambda: queues.depth("acme") >= 25, "the flood queued")
            for _ in range(3):
                before = len(upstream.order)
                await upstream.serve(queues, enter(queues, quiet_model, "b"), "b")
                assert upstream.order.index("b", before) - before <= 2, upstream.order[before:]
            assert queues.depth("acme") > 0
            await asyncio.gather(*flood)
            assert upstream.most == 1

    run(scenario())


def test_a_seat_given_back_is_asked_for_by_one_head(new_store: Callable[[], Any]) -> None:
    """Two deployments' heads wait for the account's one seat: when it is given back only the head whose turn it
    is asks the store (both asking at once, on separate connections answered in any order, let the later turn
    take it: a CI run saw the quiet team overtaken three times)."""

    async def scenario() -> None:
        async with new_store() as make:
            spy = Spy(await make())
            queues = ProviderQueues(spy)
            account = provider({"concurrency": 1})
            first, second = (account, model({"concurrency": 5})), (account, model(name="m2"))  # two queues
            blocker = await enter(queues, first, "x")
            flood = [asyncio.create_task(enter(queues, first, "a")) for _ in range(3)]
            quiet = asyncio.create_task(enter(queues, second, "b"))
            # blocker + the refused first tries of the two heads (a's first, b's)
            await until(lambda: queues.depth("acme") == 4 and spy.calls.get("acquire") == 3, "both heads refused")
            spy.gate = asyncio.Event()
            await queues.leave(blocker, None)
            await spy.at_gate.wait()
            await turns(20)  # (a second head woken with the first would be at the gate by now)
            assert spy.calls["acquire"] == 4, "one head asked"
            spy.gate.set()
            spy.gate = None
            done, _ = await asyncio.wait([*flood, quiet], return_when=asyncio.FIRST_COMPLETED)
            assert len(done) == 1 and quiet not in done  # a's head arrived first: the tie was its turn
            await queues.leave(done.pop().result(), None)
            assert (await quiet).provider == "acme", "the next turn is b's, before a's second"
            assert queues.depth("acme") == 2
            for task in flood:
                task.cancel()
            await asyncio.gather(*flood, return_exceptions=True)

    run(scenario())


def test_a_head_refused_by_its_own_deployment_passes_the_turn_on(new_store: Callable[[], Any]) -> None:
    """The account has room but the head whose turn it is cannot use it (its deployment is full): the next head,
    another deployment's, asks and gets it, without waiting for a second release."""

    async def scenario() -> None:
        async with new_store() as make:
            queues = ProviderQueues(await make())
            account = provider({"concurrency": 2})
            narrow, wide = (account, model({"concurrency": 1})), (account, model(name="m2"))
            on_narrow, on_wide = await enter(queues, narrow, "x"), await enter(queues, wide, "y")
            waiting_narrow = asyncio.create_task(enter(queues, narrow, "a"))
            await until(lambda: queues.depth("acme") == 1, "a queued")
            waiting_wide = asyncio.create_task(enter(queues, wide, "b"))
            await until(lambda: queues.depth("acme") == 2, "b queued")
            await queues.leave(on_wide, None)  # a's turn first, but m1 is full: the turn goes on to b
            seat = await waiting_wide
            assert seat.provider == "acme" and not waiting_narrow.done()
            await queues.leave(on_narrow, None)
            await queues.leave(await waiting_narrow, None)
            await queues.leave(seat, None)
            assert queues.status() == {}

    run(scenario())


def test_two_nodes_never_exceed_the_shared_concurrency(new_store: Callable[[], Any]) -> None:
    """Two ProviderQueues (two nodes) on one store: together never more than its concurrency; everyone served
    (a node hears nothing of the other's releases: its head polls)."""

    async def scenario() -> None:
        async with new_store() as make:
            one, two = ProviderQueues(await make()), ProviderQueues(await make())
            where = (provider({"concurrency": 2}), model())
            upstream = Upstream(fill=2, waiting=lambda: one.depth("acme") + two.depth("acme"))
            tasks = [
                asyncio.create_task(upstream.serve(node, enter(node, where, team), team))
                for _ in range(20)
                for node, team in ((one, "a"), (two, "b"))
            ]
            await asyncio.gather(*tasks)
            assert upstream.most == 2 and len(upstream.order) == 40
            assert one.depth("acme") == two.depth("acme") == 0

    run(scenario())


# -- rates ------------------------------------------------------------------------------------------------


def test_rpm_paces_requests_and_refuses_at_once_what_cannot_fit(new_store: Callable[[], Any]) -> None:
    """120 RPM: a minute's burst (120) goes at once; the next waits for the rate (its interval is 0.5 s); one whose
    max_wait is shorter than its wait is refused at once, asking the store once, with the store's Retry-After."""

    async def scenario() -> None:
        async with new_store() as make:
            spy = Spy(await make())
            queues = ProviderQueues(spy)
            where = (provider({"rpm": 120}), model())
            for _ in range(120):
                await queues.leave(await enter(queues, where, "a"), None)
            assert spy.calls["acquire"] == 120  # each got in at its first try
            spy.calls.clear()
            seat = await enter(queues, where, "a", max_wait=5)
            assert seat.waited > 0 and spy.calls["acquire"] >= 2  # it waited for its turn of the rate
            spy.calls.clear()
            with pytest.raises(QueueTimeout) as refused:
                await enter(queues, where, "a", max_wait=0.1)
            assert refused.value.limit == Limit("provider:acme", "rpm", 120)
            assert 0.1 < refused.value.retry_after <= 0.5 and not refused.value.too_large
            assert spy.calls == {"acquire": 1}

    run(scenario())


def test_a_cost_larger_than_the_limit_is_refused_at_once(new_store: Callable[[], Any]) -> None:
    async def scenario() -> None:
        async with new_store() as make:
            queues = ProviderQueues(await make())
            where = (provider(), model({"tpm": 1000}))
            with pytest.raises(QueueTimeout) as refused:
                await enter(queues, where, "a", tokens=1001)
            assert refused.value.too_large and refused.value.limit == Limit("deployment:acme:m1", "tpm", 1000)
            assert queues.depth("acme") == 0

    run(scenario())


def test_leave_settles_tokens_and_gives_the_slot_back_once(new_store: Callable[[], Any]) -> None:
    async def scenario() -> None:
        async with new_store() as make:
            spy = Spy(await make())
            queues = ProviderQueues(spy)
            where = (provider({"tpm": 6000, "concurrency": 1}), model())
            tpm, slots = Limit("provider:acme", "tpm", 6000), Limit("provider:acme", "concurrency", 1)
            started = time.monotonic()
            seat = await enter(queues, where, "a", tokens=3000)
            held = [s.remaining for s in await spy.peek([tpm, slots])]

            def refilled() -> int:  # the rate refills as time passes (100 tokens a second)
                return math.ceil((time.monotonic() - started) * 6000 / 60)

            assert 3000 <= held[0] <= 3000 + refilled() and held[1] == 0
            await queues.leave(seat, 1000)  # used 1000 of the 3000 reserved: 2000 back
            await queues.leave(seat, 1000)
            remaining = [s.remaining for s in await spy.peek([tpm, slots])]
            assert 4900 <= remaining[0] <= 5000 + refilled() and remaining[1] == 1
            assert spy.calls["release"] == 1 and spy.calls["settle"] == 1
            assert queues.status() == {}

    run(scenario())


# -- waiting bounded, giving up cleanly ---------------------------------------------------------------------


def test_no_capacity_in_time_is_a_queue_timeout(new_store: Callable[[], Any]) -> None:
    async def scenario() -> None:
        async with new_store() as make:
            waits: list[float] = []
            queues = ProviderQueues(await make(), on_wait=lambda p, s: waits.append(s))
            where = (provider({"concurrency": 1}), model())
            held = await enter(queues, where, "a")
            with pytest.raises(QueueTimeout) as at_once:
                await enter(queues, where, "b", max_wait=0)
            with pytest.raises(QueueTimeout) as later:
                await enter(queues, where, "b", max_wait=0.05)
            for refused in (at_once.value, later.value):
                assert refused.limit == Limit("provider:acme", "concurrency", 1) and refused.retry_after > 0
            assert len(waits) == 3 and waits[2] >= 0.05
            assert queues.depth("acme") == 0
            await queues.leave(held, None)
            await queues.leave(await enter(queues, where, "b", max_wait=0), None)  # free again

    run(scenario())


def test_cancelled_waiters_leave_the_queue_moving(new_store: Callable[[], Any]) -> None:
    async def scenario() -> None:
        async with new_store() as make:
            queues = ProviderQueues(await make())
            where = (provider({"concurrency": 1}), model())
            upstream = Upstream()
            held = await enter(queues, where, "x")
            waiters = [
                asyncio.create_task(upstream.serve(queues, enter(queues, where, f"t{i}"), f"t{i}")) for i in range(6)
            ]
            await until(lambda: queues.depth("acme") == 6, "all queued")
            for index in (0, 2, 3):  # the head among them
                waiters[index].cancel()
            await until(lambda: queues.depth("acme") == 3, "the cancelled left")
            await queues.leave(held, None)
            await asyncio.gather(*(waiters[i] for i in (1, 4, 5)))
            assert upstream.order == ["t1", "t4", "t5"] and upstream.most == 1
            for index in (0, 2, 3):
                assert waiters[index].cancelled()
            state = await queues.store.peek([Limit("provider:acme", "concurrency", 1)])
            assert state[0].remaining == 1 and queues.depth("acme") == 0

    run(scenario())


def test_a_waiter_cancelled_while_the_store_answers_leaks_nothing(new_store: Callable[[], Any]) -> None:
    async def scenario() -> None:
        async with new_store() as make:
            spy = Spy(await make())
            queues = ProviderQueues(spy)
            where = (provider({"concurrency": 1, "rpm": 100}), model())
            spy.gate = asyncio.Event()
            waiter = asyncio.create_task(enter(queues, where, "a"))
            await spy.at_gate.wait()
            waiter.cancel()
            await until(lambda: queues.depth("acme") == 0, "the waiter left")
            spy.gate.set()  # the store answers after all: granted, to nobody
            await until(lambda: spy.calls.get("release", 0) == 1, "the grant given back")
            await queues.close()
            slots, rpm = Limit("provider:acme", "concurrency", 1), Limit("provider:acme", "rpm", 100)
            assert [s.remaining for s in await spy.peek([slots, rpm])] == [1, 100]
            spy.gate = None
            await queues.leave(await enter(queues, where, "b", max_wait=0), None)

    run(scenario())


# -- a provider that says it is full ------------------------------------------------------------------------


def test_busy_blocks_the_provider_for_every_waiter(new_store: Callable[[], Any]) -> None:
    async def scenario() -> None:
        async with new_store() as make:
            one, two = ProviderQueues(await make()), ProviderQueues(await make())
            where = (provider({"concurrency": 2, "rpm": 600}), model({"concurrency": 1}))
            held = await enter(one, where, "a")
            waiter = asyncio.create_task(enter(one, where, "b", max_wait=5))
            await until(lambda: one.depth("acme") == 1, "b queued")
            await one.busy(where[0], where[1], 30)
            with pytest.raises(QueueTimeout) as woken:
                await waiter  # it cannot get in within its 5 s: it gives up now
            assert woken.value.retry_after > 5
            with pytest.raises(QueueTimeout) as elsewhere:
                await enter(two, where, "c", max_wait=5)  # the other node sees the block through the store
            assert elsewhere.value.retry_after > 5
            await one.leave(held, None)

    run(scenario())


def test_callbacks_report_depth_wait_and_capacity(new_store: Callable[[], Any]) -> None:
    async def scenario() -> None:
        async with new_store() as make:
            depths: list[int] = []
            waits: list[float] = []
            used: dict[str, float] = {}
            queues = ProviderQueues(
                await make(),
                on_depth=lambda p, d: depths.append(d),
                on_wait=lambda p, s: waits.append(s),
                on_capacity=lambda p, kind, ratio: used.__setitem__(kind, ratio),
            )
            where = (provider({"concurrency": 2, "rpm": 600}), model())
            first = await enter(queues, where, "a")
            assert used["concurrency"] == 0.5 and 0 < used["rpm"] < 0.01
            second = await enter(queues, where, "a")
            assert used["concurrency"] == 1.0
            third = asyncio.create_task(enter(queues, where, "b"))
            await until(lambda: queues.depth("acme") == 1, "queued")
            assert queues.status() == {"acme": {"waiting": 1, "seats": 2}}
            await queues.leave(first, None)
            await queues.leave(await third, None)
            await queues.leave(second, None)
            assert used["concurrency"] == 0.0
            assert depths[-1] == 0 and max(depths) == 1 and len(waits) == 3
            assert queues.status() == {}

    run(scenario())
