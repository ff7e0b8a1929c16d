"""The algorithm alone, over simulated time: GCRA does not over-block steady traffic (the issue's two cases), admits
a minute's burst and then the steady rate, gives back what a settlement returns, refuses what can never fit, and
a block holds until it ends; concurrency leases end on their own; several wants are all or nothing."""

from __future__ import annotations

import random

import pytest

from gateway.limits import gcra
from gateway.limits.base import Grant, Limit, LimitKind, Want

# A time of today's magnitude (time.time()), where a double's step is 2.4e-7 s: the rates must be exact there.
START = 1_760_000_000.123


def take(cell: gcra.Cell, amount: int, cost: int, now: float, kind: LimitKind = "rpm") -> tuple[gcra.Cell, Grant]:
    """One request on one rate limit; the cell after it."""
    limit = Limit("key:k", kind, amount)
    grant, cells = gcra.acquire({limit.key: cell}, [Want(limit, cost)], "r", 30, now)
    return cells[limit.key], grant


def test_60_rpm_sent_once_a_second_with_jitter_is_never_refused() -> None:
    rng = random.Random(15)
    cell = gcra.Cell()
    for second in range(10_000):
        cell, grant = take(cell, 60, 1, START + second + rng.uniform(-0.2, 0.2))
        assert grant.ok, f"refused at second {second} (retry after {grant.retry_after})"


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_10000_tpm_of_steady_requests_of_random_sizes_gets_at_least_95_percent(seed: int) -> None:
    """Requests of 50..950 tokens (mean 500) every 3 s: 10,000 tokens a minute offered, for 30 minutes. What is
    refused is lost (the client does not retry), so this is the worst case for over-blocking."""
    rng = random.Random(seed)
    minutes, amount, every = 30, 10_000, 3.0
    cell, admitted, offered, now = gcra.Cell(), 0, 0, START
    while now < START + minutes * 60:
        cost = rng.randint(50, 950)
        offered += cost
        cell, grant = take(cell, amount, cost, now, "tpm")
        admitted += cost if grant.ok else 0
        now += every
    assert offered == pytest.approx(amount * minutes, rel=0.05)
    assert admitted >= 0.95 * amount * minutes


def test_a_fresh_limit_admits_a_minute_at_once_then_the_steady_rate() -> None:
    cell = gcra.Cell()
    for left in range(59, -1, -1):
        cell, grant = take(cell, 60, 1, START)
        assert grant.ok and grant.states[0].remaining == left
    refused = take(cell, 60, 1, START)[1]
    assert not refused.ok and refused.retry_after == pytest.approx(1.0, abs=1e-9)
    assert not take(cell, 60, 1, START + 0.999)[1].ok
    cell, grant = take(cell, 60, 1, START + 1.0)
    assert grant.ok
    assert take(cell, 60, 1, START + 1.0)[1].retry_after == pytest.approx(1.0, abs=1e-9)  # one, not a new burst
    assert gcra.state(cell, Limit("key:k", "rpm", 60), START + 1.0).reset_seconds == pytest.approx(60.0, abs=1e-9)


@pytest.mark.parametrize("amount", [*range(1, 200), 500, 1000, 3000, 10_000])
def test_a_burst_at_one_instant_admits_exactly_the_amount(amount: int) -> None:
    """At today's times a TAT computed in absolute seconds is rounded to 2.4e-7 s per request and a burst of
    14 at 14 RPM got 13; on `ahead`, whatever the amount, exactly the amount fits (17 times 60 / 17 is not 60)."""
    cell, admitted, now = gcra.Cell(), 0, START + random.Random(amount).uniform(0, 1e6)
    while True:
        cell, grant = take(cell, amount, 1, now)
        if not grant.ok:
            break
        admitted += 1
        assert grant.states[0].remaining == amount - admitted
    assert admitted == amount


def test_retry_after_is_exactly_when_the_request_fits() -> None:
    cell = take(gcra.Cell(), 1000, 900, START, "tpm")[0]
    grant = take(cell, 1000, 300, START, "tpm")[1]
    assert not grant.ok and grant.retry_after == pytest.approx(200 * 60 / 1000, abs=1e-9)
    assert not take(cell, 1000, 300, START + grant.retry_after - 0.01, "tpm")[1].ok
    assert take(cell, 1000, 300, START + grant.retry_after, "tpm")[1].ok


def test_settle_gives_back_what_was_not_used_but_never_the_past() -> None:
    limit = Limit("key:k", "tpm", 1000)
    grant, cells = gcra.acquire({}, [Want(limit, 1000)], "r1", 30, START)
    assert grant.ok and grant.states[0].remaining == 0
    cell = gcra.settle(cells[limit.key], limit, -600, START)
    assert gcra.state(cell, limit, START).remaining == 600
    cell = gcra.settle(cell, limit, +100, START)
    assert gcra.state(cell, limit, START).remaining == 500
    # An idle limit is whole; giving back more does not make it more than whole (no credit for the past).
    idle = gcra.settle(gcra.Cell(), limit, -5000, START)
    assert idle.ahead(START) == 0
    assert gcra.state(idle, limit, START).remaining == 1000
    assert take(idle, 1000, 1000, START, "tpm")[1].ok


def test_a_settlement_past_the_limit_is_owed_by_the_next_requests() -> None:
    limit = Limit("key:k", "tpm", 1000)
    _, cells = gcra.acquire({}, [Want(limit, 500)], "r1", 30, START)
    cell = gcra.settle(cells[limit.key], limit, +1000, START)  # used 1,500: more than a minute's worth
    assert gcra.state(cell, limit, START).remaining == 0
    grant, _ = gcra.acquire({limit.key: cell}, [Want(limit, 1)], "r2", 30, START)
    assert not grant.ok and grant.retry_after == pytest.approx(30.0 + 0.06, abs=1e-9)


def test_a_cost_larger_than_the_limit_is_too_large_and_takes_nothing() -> None:
    small, rpm = Limit("key:k", "tpm", 100), Limit("key:k", "rpm", 10)
    grant, cells = gcra.acquire({}, [Want(rpm, 1), Want(small, 101)], "r1", 30, START)
    assert not grant.ok and grant.too_large and grant.refused == small and grant.retry_after == 0
    assert [s.remaining for s in grant.states] == [10, 100]
    assert all(cell == gcra.Cell() for cell in cells.values())


def test_too_large_wins_over_a_limit_that_is_only_full_now() -> None:
    """Reported first, so that a client is not told to retry something that can never fit."""
    full, small = Limit("key:k", "rpm", 1), Limit("key:k", "tpm", 10)
    _, cells = gcra.acquire({}, [Want(full, 1)], "r1", 30, START)
    grant, _ = gcra.acquire(cells, [Want(full, 1), Want(small, 11)], "r2", 30, START)
    assert grant.too_large and grant.refused == small


def test_a_blocked_rate_admits_nothing_until_the_block_ends_then_the_steady_rate() -> None:
    limit = Limit("provider:p", "rpm", 60)
    cell = gcra.block(gcra.Cell(), limit, 10.0, START)
    grant, _ = gcra.acquire({limit.key: cell}, [Want(limit, 1)], "r", 30, START + 9.5)
    assert not grant.ok and grant.retry_after == pytest.approx(1.5)
    assert gcra.state(cell, limit, START + 10.0).remaining == 0
    grant, cells = gcra.acquire({limit.key: cell}, [Want(limit, 1)], "r", 30, START + 11.0)
    assert grant.ok
    assert not gcra.acquire(cells, [Want(limit, 1)], "r", 30, START + 11.0)[0].ok
    # A shorter block does not shorten a longer one.
    assert gcra.block(cell, limit, 1.0, START) == cell


def test_concurrency_leases_are_taken_released_and_end_on_their_own() -> None:
    limit = Limit("team:t", "concurrency", 2)
    cells: dict[str, gcra.Cell] = {}
    for holder in ("a", "b"):
        grant, cells = gcra.acquire(cells, [Want(limit, 1)], holder, 30, START)
        assert grant.ok
    assert grant.states[0].remaining == 0 and grant.states[0].reset_seconds == 0
    grant, _ = gcra.acquire(cells, [Want(limit, 1)], "c", 30, START + 1)
    assert not grant.ok and grant.refused == limit
    assert grant.retry_after == gcra.CONCURRENCY_RETRY_SECONDS  # the earliest lease ends in 29 s: capped
    # A holder renewing its own lease is not a new slot.
    assert gcra.acquire(cells, [Want(limit, 1)], "a", 30, START + 1)[0].ok
    # Released: the slot is free at once.
    released = gcra.release(cells[limit.key], "a")
    assert gcra.acquire({limit.key: released}, [Want(limit, 1)], "c", 30, START + 1)[0].ok
    # Never released (its process was killed): free when the lease ends, and not a moment before.
    grant, _ = gcra.acquire(cells, [Want(limit, 1)], "c", 30, START + 29.99)
    assert not grant.ok and grant.retry_after == pytest.approx(0.01)
    assert gcra.acquire(cells, [Want(limit, 1)], "c", 30, START + 30)[0].ok


def test_a_blocked_concurrency_limit_refuses_until_the_block_ends() -> None:
    limit = Limit("provider:p", "concurrency", 5)
    cell = gcra.block(gcra.Cell(), limit, 20.0, START)
    grant, _ = gcra.acquire({limit.key: cell}, [Want(limit, 1)], "a", 30, START + 5)
    assert not grant.ok and grant.retry_after == pytest.approx(15.0)
    assert gcra.state(cell, limit, START + 5).remaining == 0
    assert gcra.acquire({limit.key: cell}, [Want(limit, 1)], "a", 30, START + 20)[0].ok


def test_several_wants_are_all_or_nothing() -> None:
    rpm, tpm, slots = Limit("key:k", "rpm", 10), Limit("team:t", "tpm", 1000), Limit("team:t", "concurrency", 3)
    _, cells = gcra.acquire({}, [Want(tpm, 900)], "r0", 30, START)
    grant, after = gcra.acquire(cells, [Want(rpm, 1), Want(slots, 1), Want(tpm, 200)], "r1", 30, START)
    assert not grant.ok and grant.refused == tpm and grant.retry_after == pytest.approx(6.0)
    assert after[rpm.key] == gcra.Cell() and after[slots.key] == gcra.Cell()
    assert [s.remaining for s in grant.states] == [10, 3, 100]
    grant, after = gcra.acquire(cells, [Want(rpm, 1), Want(slots, 1), Want(tpm, 100)], "r1", 30, START)
    assert grant.ok and [s.remaining for s in grant.states] == [9, 2, 0]


def test_two_wants_on_one_limit_count_twice() -> None:
    limit = Limit("key:k", "tpm", 100)
    assert not gcra.acquire({}, [Want(limit, 60), Want(limit, 60)], "r", 30, START)[0].ok
    grant, _ = gcra.acquire({}, [Want(limit, 60), Want(limit, 40)], "r", 30, START)
    assert grant.ok and [s.remaining for s in grant.states] == [0, 0]


def test_programming_errors_are_refused() -> None:
    limit = Limit("key:k", "tpm", 100)
    with pytest.raises(ValueError):
        gcra.check_wants([Want(limit, -1)], "r", 30)
    with pytest.raises(ValueError):
        gcra.check_wants([Want(limit, 1)], "r", 0)
    with pytest.raises(ValueError):
        gcra.check_wants([Want(Limit("key:k", "tpm", 0), 0)], "r", 30)
    with pytest.raises(ValueError):
        gcra.block(gcra.Cell(), limit, -1, START)
