"""What recording a request's decision inputs on its ledger row (issue 17, policy replay) costs on the request path.

    .venv/bin/python tests/bench/ledger_inputs_bench.py [--requests N] [--runs R]

Two figures, each the best of --runs rounds of a median (µs), so the machine's other load adds to a median and
not to the best round:

- **request**: one non-streaming chat request (`model: auto`, a 2 KB body) through the whole in-process gateway
  (tests/support/inprocess.py: the real app, routing, budget, settlement and its SQLite commit, in front of a
  `MockAdapter`), sequentially; this is the figure to compare before and after the change.
- **inputs**: building the decision inputs of one request and dumping them to JSON (what
  `gateway.pipeline.settle.Settlement` adds per request: one dict and one orjson dump), on the same request's
  counts; absent before the change.

After the change, **request** is measured twice in alternating rounds of the same process: as it is, and with the
recording switched off (`Settlement._inputs` patched to return None, so the row's `decision` column is NULL), which
compares the two without the drift of a busy machine between two runs.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT))

from tests.support import inprocess  # noqa: E402

BODY = {
    "model": "auto",
    "messages": [
        {"role": "system", "content": "You are a careful assistant. " * 20},
        {"role": "user", "content": "Summarise this paragraph, please. " * 40},
    ],
    "max_tokens": 256,
}


def request_round(requests: int) -> float:
    """The median µs of `requests` sequential requests through an in-process gateway."""
    times: list[float] = []

    async def scenario(gateway: Any, client: Any, calls: Any) -> None:
        key = await inprocess.team_key(gateway, "bench")
        headers = inprocess.bearer(key)
        for _ in range(20):  # warm up: tokenizer tables, first commit, code paths
            (await client.post("/v1/chat/completions", json=BODY, headers=headers)).raise_for_status()
        for _ in range(requests):
            started = time.perf_counter()
            response = await client.post("/v1/chat/completions", json=BODY, headers=headers)
            times.append((time.perf_counter() - started) * 1e6)
            response.raise_for_status()

    with tempfile.TemporaryDirectory() as directory:
        inprocess.run(Path(directory), {}, scenario)
    return statistics.median(times)


def inputs_round(calls: int) -> float | None:
    """The median µs of building and dumping one request's decision inputs (None before the change)."""
    try:
        from gateway.replay.inputs import encode_inputs
    except ImportError:
        return None
    from gateway.catalog import load_catalog
    from gateway.routing.counting import PromptCounts
    from gateway.tokens import TokenCounter

    catalog = load_catalog(None, inprocess.ENV)
    counts = PromptCounts(TokenCounter(), catalog, BODY, 2048)
    times: list[float] = []
    for _ in range(calls):
        started = time.perf_counter()
        encode_inputs(counts.by_model, counts.tokens, frozenset({"chat"}), 256, 1, None, 256)
        times.append((time.perf_counter() - started) * 1e6)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description="the request-path cost of recording decision inputs (issue 17)")
    parser.add_argument("--requests", type=int, default=1000, help="requests per round")
    parser.add_argument("--runs", type=int, default=3, help="rounds per figure (the best round's median is shown)")
    args = parser.parse_args()
    asyncio.set_event_loop_policy(None)
    inputs = [inputs_round(10_000) for _ in range(args.runs)]
    if inputs[0] is None:
        request = min(request_round(args.requests) for _ in range(args.runs))
        print(f"request (in-process, 2 KB chat, median): {request:8.1f} µs")
    else:
        from gateway.pipeline.settle import Settlement

        recording = Settlement._inputs
        on: list[float] = []
        off: list[float] = []
        for _ in range(args.runs):
            Settlement._inputs = lambda self: None  # type: ignore[assignment,method-assign,return-value]
            off.append(request_round(args.requests))
            Settlement._inputs = recording  # type: ignore[method-assign]
            on.append(request_round(args.requests))
        print(f"request without inputs (median):         {min(off):8.1f} µs")
        print(f"request with inputs (median):            {min(on):8.1f} µs")
    if inputs[0] is None:
        print("inputs (dict + orjson dump, median):     (not recorded in this version)")
    else:
        print(f"inputs (dict + orjson dump, median):     {min(i for i in inputs if i is not None):8.2f} µs")


if __name__ == "__main__":
    main()
