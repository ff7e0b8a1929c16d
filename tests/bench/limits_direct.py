"""Issue 15: what the rate limits' own code costs, in-process: no HTTP, no server, one event loop (uvloop).

    .venv/bin/python tests/bench/limits_direct.py        # about 15 s; needs the machine's Redis (127.0.0.1:6379)

The end-to-end figures (limits_bench.py) carry the whole request and the machine's noise, and what the limits do to
the gateway's batching (a request that waits longer leaves the event loop and the store's writer less to do per
wake-up); this measures only what the pipeline calls, with the benchmark's limits (limits_bench.TEAM_LIMITS, ...):

- **team + key limits**: what `RequestLimits` does for a request with the team's and the key's rpm, tpm and
  max_concurrent: one `acquire` of the six limits, then one `give_back` of the two slots and of each tpm limit (the
  tokens reserved corrected to the real usage): in memory, and on Redis (as the gateway has it: a
  `GuardedLimitStore` over a `RedisLimitStore`), with 0, 32 and 1,000 other requests holding a slot in each
  concurrency limit;
- **provider capacity**: `ProviderQueues.enter` and `leave` for a provider with concurrency, rpm and tpm limits;
  and how many seats per second one queue gives, one request at a time and 32 at a time.

Gateway CPU: this process's CPU time per request (user + system: the redis-py client and the kernel's loopback
TCP); the best of three rounds. Redis: the time Redis says it spent in EVALSHA per request (INFO commandstats:
server-wide, so another user of the machine's Redis at the same moment adds to it). The run's keys (a prefix of its
own) are deleted at the end; nothing else in Redis is touched.
"""

from __future__ import annotations

import asyncio
import secrets
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from limits_bench import (  # noqa: E402
    KEY_LIMITS,
    PROVIDER,
    PROVIDER_LIMITS,
    REDIS_URL,
    TEAM,
    TEAM_LIMITS,
    delete_redis_keys,
    redis_client,
)

DIRECT_LEASES = (0, 32, 1000)  # other requests in flight: live leases in each concurrency limit


def _caller_limits() -> list[Any]:
    from gateway.limits.base import Limit

    team, key = f"team:{TEAM}", "key:bench"
    return [
        Limit(team, "rpm", TEAM_LIMITS["rpm"]),
        Limit(team, "tpm", TEAM_LIMITS["tpm"]),
        Limit(team, "concurrency", TEAM_LIMITS["max_concurrent"]),
        Limit(key, "rpm", KEY_LIMITS["rpm"]),
        Limit(key, "tpm", KEY_LIMITS["tpm"]),
        Limit(key, "concurrency", KEY_LIMITS["max_concurrent"]),
    ]


def _redis_script_usec() -> tuple[int, int]:
    """(EVALSHA calls, µs Redis spent in them) so far, server-wide (INFO commandstats)."""
    stats = redis_client().info("commandstats").get("cmdstat_evalsha", {"calls": 0, "usec": 0})
    return int(stats["calls"]), int(stats["usec"])


async def _direct_async(prefix: str) -> list[tuple[str, str, str, str, str]]:
    """Rows (what, store, in flight, gateway CPU µs, Redis µs) of the in-process measurements."""
    from types import SimpleNamespace

    from gateway.catalog import CapacityLimits
    from gateway.limits.base import Want
    from gateway.limits.guarded import GuardedLimitStore
    from gateway.limits.memory import MemoryLimitStore
    from gateway.limits.provider_queue import ProviderQueues
    from gateway.limits.redis_store import RedisLimitStore

    limits = _caller_limits()
    slots = [limit for limit in limits if limit.kind == "concurrency"]
    tokens, used = 600, 20  # reserved (2 KB prompt + max_tokens), then the upstream's usage
    rows: list[tuple[str, str, str, str, str]] = []

    async def caller_round(store: Any, holder: str) -> None:
        """What RequestLimits does for the team's and the key's limits: take all; at the end give the slots back
        and correct each tokens-per-minute limit, in one `give_back` (one round trip on Redis)."""
        grant = await store.acquire([Want(lm, tokens if lm.kind == "tpm" else 1) for lm in limits], holder, 60.0)
        assert grant.ok, grant
        await store.give_back(holder, slots, [(lm, used - tokens) for lm in limits if lm.kind == "tpm"])

    def timed(n: int, redis: bool, call: Callable[[int], Awaitable[None]]) -> Awaitable[tuple[float, float | None]]:
        async def run() -> tuple[float, float | None]:
            for i in range(20):
                await call(-i - 1)
            best, best_redis = float("inf"), None
            for _ in range(3):  # the best of three rounds: the machine's other load adds, never subtracts
                calls0, usec0 = _redis_script_usec() if redis else (0, 0)
                cpu0 = time.process_time()
                for i in range(n):
                    await call(i)
                cpu = (time.process_time() - cpu0) * 1e6 / n
                if cpu < best:
                    best = cpu
                    if redis:
                        calls1, usec1 = _redis_script_usec()
                        best_redis = (usec1 - usec0) / n
            return best, best_redis

        return run()

    redis_store = RedisLimitStore(REDIS_URL, prefix, 0.25)
    stores = [("memory", MemoryLimitStore()), ("Redis", GuardedLimitStore(redis_store, "fail_open", 1.0))]
    for name, store in stores:
        await store.open()
        held = 0
        for in_flight in DIRECT_LEASES:
            while held < in_flight:  # other requests' slots, held for the whole measurement
                await store.acquire([Want(limit, 1) for limit in slots], f"other-{held}", 3600.0)
                held += 1
            n = 3000 if name == "memory" else 500
            cpu, rds = await timed(n, name == "Redis", lambda i, s=store: caller_round(s, f"req-{i}"))
            rows.append(
                (
                    "team + key limits: acquire (6 limits), give back (2 slots, 2 tpm corrections)",
                    name,
                    str(in_flight),
                    f"{cpu:.0f}",
                    "-" if rds is None else f"{rds:.0f}",
                )
            )
        await store.release(slots, "x")  # (no-op: keeps the calls symmetrical)
        for i in range(held):
            await store.release(slots, f"other-{i}")
    provider = SimpleNamespace(name=PROVIDER, limits=CapacityLimits(**PROVIDER_LIMITS))
    model = SimpleNamespace(name="bench-model", limits=None)
    for name, store in stores:
        queues = ProviderQueues(store)

        async def seat(i: int, queues: Any = queues) -> None:
            taken = await queues.enter(provider, model, TEAM, 1.0, tokens, f"seat-{i}", 10.0, 60.0)
            await queues.leave(taken, used)

        n = 3000 if name == "memory" else 500
        cpu, rds = await timed(n, name == "Redis", seat)
        rows.append(
            (
                "provider capacity: enter the queue (3 limits), leave (give back)",
                name,
                "0",
                f"{cpu:.0f}",
                "-" if rds is None else f"{rds:.0f}",
            )
        )
        for conc in (1, 32):  # seats per second through one queue: one store call at a time, or several?
            gate = asyncio.Semaphore(conc)

            async def one(i: int, gate: asyncio.Semaphore = gate, seat: Any = seat) -> None:
                async with gate:
                    await seat(i)

            count = 3000 if name == "memory" else 1000
            start = time.perf_counter()
            await asyncio.gather(*(one(i) for i in range(count)))
            rate = count / (time.perf_counter() - start)
            rows.append((f"provider capacity: seats per second, {conc} at a time", name, "-", f"{rate:,.0f}/s", "-"))
        await queues.close()
    for _, store in stores:
        await store.close()
    return rows


def direct_costs() -> str:
    """The limit stores and the provider queue in-process (uvloop, one thread, no HTTP): CPU per request of what
    the pipeline calls, and Redis's own time (INFO commandstats for EVALSHA: server-wide, so other users of the
    machine's Redis add to it), with 0, 32 and 1,000 other requests holding slots."""

    import uvloop

    prefix = f"bench-limits-direct-{secrets.token_hex(4)}"
    try:
        rows = uvloop.run(_direct_async(prefix))
    finally:
        delete_redis_keys(prefix)
    out = [
        "| what | store | other requests in flight | gateway CPU µs per request | Redis µs per request |",
        "|---|---|---:|---:|---:|",
    ]
    out += [f"| {' | '.join(row)} |" for row in rows]
    return "\n".join(out) + "\n"


def main() -> int:
    print(direct_costs(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
