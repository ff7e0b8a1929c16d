"""A provider account's capacity (`limits:` in the catalog), shared fairly, proved against real `gateway serve`
processes on 127.0.0.1 and counted at the provider emulator itself (issue 15, point 5).

The catalog is the built-in one with Mistral's account limited to 2 concurrent requests; `mistral-medium-3.5`
waits at most `SHORT_WAIT` for a seat (its entry's `max_wait_seconds`), every other Mistral model the gateway's
`GATEWAY_PROVIDER_QUEUE_WAIT_SECONDS` (`LONG_WAIT`, generous).

- A team flooding Mistral with 50 requests at once and a team sending one at a time: Mistral never has more than
  2 in flight, nothing is refused, and the quiet team's requests wait at most a few of Mistral's response times.
- At capacity, a request that cannot wait goes to the next candidate of its decision (Kimi, for the default
  policy), or gets 429 with Retry-After when it has none; an `eu-only` team never reaches Moonshot: it waits.
- Mistral answering 429 with Retry-After holds every node off Mistral for that long (two nodes on Redis): the
  emulator receives nothing meanwhile; requests go to Kimi or wait.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.emulators import EmulatorOptions, start_emulator
from tests.support.admin import MASTER_KEY
from tests.support.emulators import MISTRAL_KEY, MOONSHOT_KEY, EmulatorControl, provider_env
from tests.support.http import Answer, auth
from tests.support.limits import (
    GatewayProcess,
    Timed,
    catalog_with_limits,
    chat,
    chat_body,
    gateway_processes,
    make_key,
    make_team,
    percentile,
    timed,
)
from tests.support.metrics import scrape, total
from tests.support.postgres import fresh_database
from tests.support.redis_keys import REDIS_URL, redis_prefix
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow

CONCURRENCY = 2
SHORT_WAIT = 0.3  # mistral-medium-3.5's max_wait_seconds
LONG_WAIT = 60.0  # every other model's (GATEWAY_PROVIDER_QUEUE_WAIT_SECONDS)
LATENCY = 0.3  # seconds the Mistral emulator takes to answer, in the fairness test


@dataclass
class Setup:
    mistral: EmulatorControl
    moonshot: EmulatorControl
    env: dict[str, str]
    database: str


@contextmanager
def setup(tmp_path: Path, mistral_latency: float = 0.0) -> Iterator[Setup]:
    """The emulators, a fresh PostgreSQL database and the environment of a gateway whose catalog limits
    Mistral's account."""
    catalog = catalog_with_limits(
        tmp_path,
        providers={"mistral": {"concurrency": CONCURRENCY}},
        models={"mistral-medium-3.5": {"max_wait_seconds": SHORT_WAIT}},
    )
    with ExitStack() as stack:
        mistral = stack.enter_context(
            start_emulator("mistral", EmulatorOptions(api_key=MISTRAL_KEY, latency_ms=mistral_latency * 1000))
        )
        moonshot = stack.enter_context(start_emulator("moonshot", EmulatorOptions(api_key=MOONSHOT_KEY)))
        database = stack.enter_context(fresh_database("gateway_capacity_e2e"))
        env = {
            **provider_env(mistral, moonshot),
            "GATEWAY_CONFIG": str(catalog),
            "GATEWAY_DATA_DIR": str(tmp_path / "data"),
            "GATEWAY_PROVIDER_QUEUE_WAIT_SECONDS": str(LONG_WAIT),
        }
        yield Setup(EmulatorControl(mistral.url), EmulatorControl(moonshot.url), env, database)


def _waiting(node: GatewayProcess, provider: str = "mistral") -> int:
    return int(node.readyz().json()["provider_queues"].get(provider, {}).get("waiting", 0))


def _served_by(answer: Answer, model: str, provider: str) -> None:
    assert answer.status == 200, (answer.status, answer.body)
    assert answer.headers["x-gateway-model"] == model, answer.headers
    assert answer.headers["x-gateway-provider"] == provider, answer.headers


def _capacity_refusal(answer: Answer) -> None:
    assert answer.status == 429, (answer.status, answer.body)
    error = answer.error
    assert error["code"] == "rate_limit_exceeded", error
    assert "provider 'mistral' limit of 2 concurrent requests" in error["message"], error
    assert int(answer.headers["retry-after"]) >= 1, answer.headers


def _capacity_refusals(node: GatewayProcess) -> float:
    """Requests for which Mistral's capacity had no room in time (a route skipped, or a 429)."""
    return total(scrape(node.url, auth(MASTER_KEY)), "gateway_rate_limited_total", scope="provider")


def _in_background(pool: ThreadPoolExecutor, call: Callable[[], Answer]) -> Future[Timed]:
    return pool.submit(timed, call)


# -- fair sharing ------------------------------------------------------------------------------------------------


def test_a_flooding_team_never_gets_mistral_past_2_at_once_and_the_quiet_team_s_p95_wait_stays_within_4_response_times(
    tmp_path: Path,
) -> None:
    """Team A sends 50 requests at once, team B 10 one after the other while A's wait. Mistral (0.3 s per answer,
    2 at once) never has more than 2 in flight and nothing is refused (the queue's wait bound is generous). B's
    wait (its latency less Mistral's 0.3 s) has a p95 of at most 4 x 0.3 s: weighted fair queueing puts each of
    its requests after at most about one of A's, however many of A's wait; A's own requests wait seconds."""
    with setup(tmp_path, mistral_latency=LATENCY) as world, gateway_processes(world.database, world.env) as (node,):
        key_a = make_key(node.url, make_team(node.url, "flood"))
        key_b = make_key(node.url, make_team(node.url, "quiet"))
        body = chat_body("codestral")
        world.mistral.reset_stats()

        with ThreadPoolExecutor(max_workers=50) as pool:
            flooding = [_in_background(pool, lambda: chat(node.url, key_a, body)) for _ in range(50)]
            wait_until(lambda: _waiting(node) >= 40, 15, "team A's flood queued")
            quiet = [timed(lambda: chat(node.url, key_b, body)) for _ in range(10)]
            still_waiting = _waiting(node)
            flood = [future.result(60) for future in flooding]

        for answer in [t.answer for t in quiet] + [t.answer for t in flood]:
            _served_by(answer, "codestral", "mistral")
        assert len(flood) == 50
        assert still_waiting > 0, "team A's flood must still have been queued when B's last request was answered"
        stats = world.mistral.stats()
        assert stats["max_in_flight"] == CONCURRENCY, stats  # never more; and the capacity was used
        assert stats["requests"] == 60, stats
        assert world.moonshot.stats()["requests"] == 0
        waits = [t.seconds - LATENCY for t in quiet]
        assert percentile(waits, 95) <= 4 * LATENCY, sorted(waits)
        flood_waits = [t.seconds - LATENCY for t in flood]
        assert statistics.median(flood_waits) > percentile(waits, 95), (statistics.median(flood_waits), waits)


# -- at capacity: the next candidate, 429, or wait ------------------------------------------------------------------


def test_at_capacity_a_request_moves_to_the_next_candidate_or_gets_429_and_an_eu_only_team_waits_for_mistral(
    tmp_path: Path,
) -> None:
    with (
        setup(tmp_path) as world,
        gateway_processes(world.database, world.env) as (node,),
        ThreadPoolExecutor(max_workers=4) as pool,
    ):
        key = make_key(node.url, make_team(node.url, "default"))
        eu_key = make_key(node.url, make_team(node.url, "eu", policy="eu-only"))
        world.mistral.hold()  # Mistral keeps what it gets, unanswered: its 2 seats stay taken
        held = [_in_background(pool, lambda: chat(node.url, key, chat_body("codestral"))) for _ in range(2)]
        try:
            wait_until(lambda: world.mistral.stats()["held"] == CONCURRENCY, 15, "Mistral's 2 seats taken")

            # Named, so the policy has no other candidate: 429 once its short wait is over; nothing sent.
            pinned = timed(lambda: chat(node.url, key, chat_body("mistral-medium-3.5")))
            _capacity_refusal(pinned.answer)
            assert SHORT_WAIT <= pinned.seconds <= SHORT_WAIT + 2, pinned.seconds
            assert world.mistral.stats()["requests"] == CONCURRENCY

            # `auto`: mistral-medium-3.5 cannot take it in time, so the next candidate of the default policy does.
            moved = chat(node.url, key, chat_body("auto"))
            _served_by(moved, "kimi-k2.6", "moonshot")
            # (which fallback it names: test_a_request_moved_for_want_of_capacity_does_not_say_the_circuit_was_open)
            assert moved.headers["x-gateway-route-reason"].startswith("fallback:"), moved.headers
            assert world.moonshot.stats()["requests"] == 1

            # eu-only: its candidates are Mistral's alone (mistral-medium-3.5, then codestral, which may wait
            # long): it waits for a seat and never reaches Moonshot.
            eu = _in_background(pool, lambda: chat(node.url, eu_key, chat_body("auto")))
            wait_until(
                lambda: _capacity_refusals(node) == 3 and _waiting(node) == 1,
                15,
                "the eu-only request past mistral-medium-3.5's short wait, waiting for codestral",
            )
            assert world.moonshot.stats()["requests"] == 1 and not eu.done()
        finally:
            world.mistral.hold(closed=False)
        for future in held:
            _served_by(future.result(30).answer, "codestral", "mistral")
        answer = eu.result(30).answer
        _served_by(answer, "codestral", "mistral")
        assert answer.headers["x-gateway-region"] == "eu"
        assert world.moonshot.stats()["requests"] == 1
        assert world.mistral.stats()["max_in_flight"] == CONCURRENCY


def test_a_request_moved_for_want_of_capacity_does_not_say_the_circuit_was_open(tmp_path: Path) -> None:
    with (
        setup(tmp_path) as world,
        gateway_processes(world.database, world.env) as (node,),
        ThreadPoolExecutor(max_workers=2) as pool,
    ):
        key = make_key(node.url, make_team(node.url, "default"))
        world.mistral.hold()
        held = [_in_background(pool, lambda: chat(node.url, key, chat_body("codestral"))) for _ in range(2)]
        try:
            wait_until(lambda: world.mistral.stats()["held"] == CONCURRENCY, 15, "Mistral's 2 seats taken")
            moved = chat(node.url, key, chat_body("auto"))
        finally:
            world.mistral.hold(closed=False)
        for future in held:
            future.result(30)
        _served_by(moved, "kimi-k2.6", "moonshot")
        assert moved.headers["x-gateway-route-reason"] == "fallback:capacity", moved.headers


# -- a provider's 429 holds every node off ----------------------------------------------------------------------

HOLD = 3  # the Retry-After of Mistral's 429
# The hold begins when node one reads the 429, a little after this test sees the emulator answer it (and the test
# may see that late on a busy machine): the window watched for silence ends this much before the hold does.
MARGIN = 0.5


def test_mistral_s_429_with_retry_after_holds_both_nodes_off_mistral_for_that_long(tmp_path: Path) -> None:
    with (
        setup(tmp_path) as world,
        redis_prefix() as prefix,
        gateway_processes(
            world.database,
            # (a slow Redis call on a loaded machine must not count as Redis away: the hold is what is tested)
            {
                **world.env,
                "GATEWAY_REDIS_URL": REDIS_URL,
                "GATEWAY_REDIS_PREFIX": prefix,
                "GATEWAY_REDIS_TIMEOUT_SECONDS": "5",
            },
            count=2,
        ) as (one, two),
        ThreadPoolExecutor(max_workers=4) as pool,
    ):
        key = make_key(one.url, make_team(one.url, "default"))
        world.mistral.reset_stats()
        world.mistral.fault(f"status=429,retry_after={HOLD}")

        # Node one's request gets the 429; its policy waits the Retry-After and tries Mistral again.
        first = _in_background(pool, lambda: chat(one.url, key, chat_body("mistral-medium-3.5")))
        wait_until(
            lambda: (s := world.mistral.stats())["requests"] == 1 and s["in_flight"] == 0, 15, "Mistral's 429 sent"
        )
        answered_429 = time.monotonic()

        # Node two, during the hold: `auto` goes to Kimi at once (mistral-medium-3.5 cannot wait 3 s) ...
        moved = timed(lambda: chat(two.url, key, chat_body("auto")))
        _served_by(moved.answer, "kimi-k2.6", "moonshot")
        assert moved.seconds < HOLD - 1, moved.seconds
        # ... and codestral (same account, long wait) waits for the hold's end.
        waits = _in_background(pool, lambda: chat(two.url, key, chat_body("codestral")))
        # Nothing reaches Mistral until then, from either node.
        while time.monotonic() < answered_429 + HOLD - MARGIN:
            assert world.mistral.stats()["requests"] == 1, time.monotonic() - answered_429
            threading.Event().wait(0.02)

        _served_by(first.result(30).answer, "mistral-medium-3.5", "mistral")
        waited = waits.result(30)
        _served_by(waited.answer, "codestral", "mistral")
        assert waited.answered >= answered_429 + HOLD - MARGIN, waited.answered - answered_429
        assert world.mistral.stats()["requests"] == 3
        assert world.moonshot.stats()["requests"] == 1
