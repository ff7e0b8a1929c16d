"""A two-minute soak of a real `gateway serve` on SQLite: no errors, flat memory, and a bounded write-ahead log.

Before, the WAL only grew under steady load (passive checkpoints from another thread never restart the log
while writers append): 140 MB after five minutes against a 14 MB database. The writer now empties it between
batches once it passes GATEWAY_SQLITE_WAL_LIMIT_BYTES (set small here, so the bound is exercised often).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import aiohttp
import pytest

from gateway.http.servers import ThreadedServer
from tests.support.emulators import provider_env
from tests.support.gateways import start_cli_gateway
from tests.support.http import auth
from tests.support.store import make_key, make_team

SOAK_SECONDS = float(os.environ.get("GATEWAY_SOAK_SECONDS", "120"))
WAL_LIMIT = 1024 * 1024
CONCURRENCY = 16
BODY = {"model": "kimi-k2.6", "messages": [{"role": "user", "content": "soak " * 50}], "max_tokens": 16}

pytestmark = pytest.mark.slow


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_two_minute_soak_keeps_memory_flat_and_the_wal_bounded(
    tmp_path: Path, mistral: ThreadedServer, moonshot: ThreadedServer
) -> None:
    path = tmp_path / "soak.db"
    db = f"sqlite:///{path}"
    make_team(db, "soak", "1000")
    key, _ = make_key(db, "soak")
    env = {
        **provider_env(mistral, moonshot),
        "GATEWAY_SQLITE_WAL_LIMIT_BYTES": str(WAL_LIMIT),
        "GATEWAY_REQUEST_LOG": "false",
    }
    process, url = start_cli_gateway(db, env)
    wal = Path(str(path) + "-wal")
    samples: list[tuple[float, int, int]] = []  # (seconds, rss KiB, wal bytes)
    statuses: dict[int, int] = {}

    async def load() -> None:
        headers = auth(key)
        deadline = time.monotonic() + SOAK_SECONDS
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONCURRENCY)) as session:

            async def worker() -> None:
                while time.monotonic() < deadline:
                    async with session.post(url + "/v1/chat/completions", json=BODY, headers=headers) as response:
                        await response.read()
                        statuses[response.status] = statuses.get(response.status, 0) + 1

            async def sampler() -> None:
                start = time.monotonic()
                while time.monotonic() < deadline:
                    samples.append(
                        (time.monotonic() - start, _rss_kib(process.pid), wal.stat().st_size if wal.exists() else 0)
                    )
                    await asyncio.sleep(1.0)  # a sampling period, not synchronisation

            await asyncio.gather(sampler(), *(worker() for _ in range(CONCURRENCY)))

    try:
        asyncio.run(load())
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    served = statuses.get(200, 0)
    assert set(statuses) == {200} and served > 1000, statuses
    largest_wal = max(w for _, _, w in samples)
    # The limit plus what one batch writes before the next check (a batch is at most 512 settlements).
    assert largest_wal <= WAL_LIMIT + 8 * 1024 * 1024, f"WAL reached {largest_wal} bytes ({served} requests)"
    warm = [rss for t, rss, _ in samples if SOAK_SECONDS * 0.2 <= t <= SOAK_SECONDS * 0.3]
    late = [rss for t, rss, _ in samples if t >= SOAK_SECONDS * 0.9]
    assert warm and late
    # Flat: the last tenth's memory within 15% (and 24 MB) of what it was once warm.
    assert max(late) <= max(warm) * 1.15 + 24 * 1024, f"RSS grew from {max(warm)} KiB to {max(late)} KiB"
