"""Token counting speed: tokenizer load times, the estimate and exact counts for 2 KB, 200 KB and 4 MB bodies.

    .venv/bin/python tests/bench/tokens_bench.py [--runs N]

Bodies are chat requests of English prose and Python source from the standard library with JSON and
Chinese/Japanese mixed in (tests/support/token_texts.py's generators); "4 MB x1000" spreads the same size
over 1,000 messages. Times are medians. "decision" is `TokenCounter.count` with the model's prompt
budget (window - 32,768 expected output) as the limit, tokenizers already loaded; "loop stall" is
the longest an asyncio loop went without running while `count_async` made the Kimi decision.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from gateway.catalog import ModelConfig, Price  # noqa: E402
from gateway.tokens import TokenCounter, estimate  # noqa: E402
from gateway.tokens.heuristic import MISTRAL as MISTRAL_FAMILY  # noqa: E402
from gateway.tokens.heuristic import collect  # noqa: E402
from gateway.tokens.vocab import count_texts, load_o200k, load_tekken  # noqa: E402
from tests.support.token_texts import cjk, code, json_text, prose  # noqa: E402

OUTPUT = 32_768
MISTRAL = ModelConfig(
    name="mistral-medium-3.5",
    provider="mistral",
    upstream_model="mistral-medium-3.5",
    context_window=262_144,
    max_output_tokens=OUTPUT,
    price=Price(input=1, output=1),
)
KIMI = ModelConfig(
    name="kimi-k2.6",
    provider="moonshot",
    upstream_model="kimi-k2.6",
    context_window=1_048_576,
    max_output_tokens=OUTPUT,
    price=Price(input=1, output=1),
)


def text(n: int) -> str:
    """About 4 characters per token: mostly prose and code, some JSON and CJK."""
    parts = [prose(n * 45 // 100), code(n * 45 // 100), json_text(n * 6 // 100), cjk(n * 4 // 100)]
    return "\n\n".join(parts)[:n]


def bodies() -> dict[str, dict[str, Any]]:
    out = {}
    for label, size in (("2 KB", 2_000), ("200 KB", 200_000), ("4 MB", 4_000_000)):
        out[label] = {
            "model": "auto",
            "messages": [
                {"role": "system", "content": "You are a careful assistant."},
                {"role": "user", "content": text(size)},
            ],
        }
    whole = text(4_000_000)
    out["4 MB x1000"] = {
        "model": "auto",
        "messages": [
            {"role": "user" if i % 2 else "assistant", "content": whole[i * 4000 : (i + 1) * 4000]} for i in range(1000)
        ],
    }
    return out


def median(fn: Callable[[], Any], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def import_time() -> float:
    code = "import time; t = time.perf_counter(); import gateway.tokens; print(time.perf_counter() - t)"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return float(done.stdout)


def loop_stall(counter: TokenCounter, body: dict[str, Any], limit: int) -> tuple[float, str]:
    async def run() -> tuple[float, str]:
        worst, done = 0.0, False

        async def tick() -> None:
            nonlocal worst
            last = time.perf_counter()
            while not done:
                await asyncio.sleep(0.001)
                now = time.perf_counter()
                worst, last = max(worst, now - last - 0.001), now

        ticker = asyncio.create_task(tick())
        await asyncio.sleep(0.01)
        count = await counter.count_async(body, KIMI, "moonshot", limit)
        done = True
        await ticker
        return worst, count.method

    return asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per exact-count cell (the estimate runs 20x more)")
    args = parser.parse_args()

    print(f"import gateway.tokens: {import_time() * 1000:.0f} ms (loads no tokenizer)")
    tekken_s = median(load_tekken, 3)
    o200k_s = median(load_o200k, 3)
    print(f"tokenizer load, median of 3: Tekken {tekken_s * 1000:.0f} ms, o200k_base {o200k_s * 1000:.0f} ms")
    started = time.perf_counter()
    from mistral_common.tokens.tokenizers.tekken import Tekkenizer

    from gateway.tokens.vocab import tekken_path

    Tekkenizer.from_file(tekken_path())
    print(
        f"  (for comparison: importing mistral_common and Tekkenizer.from_file: {(time.perf_counter() - started) * 1000:.0f} ms)"
    )

    tekken, o200k = load_tekken(), load_o200k()
    counter = TokenCounter()
    counter.preload()
    print()

    header = (
        "body",
        "chars",
        "estimate",
        "est. time",
        "Tekken count",
        "o200k count",
        "Mistral decision",
        "Kimi decision",
    )
    rows = []
    for label, body in bodies().items():
        parts = collect(body)
        small = parts.chars < 100_000
        runs = args.runs * (4 if small else 1)
        est = estimate(body)
        est_s = median(lambda body=body: estimate(body), args.runs * 20)
        tekken_count = median(lambda parts=parts: count_texts(tekken, parts.texts), runs)
        o200k_count = median(lambda parts=parts: count_texts(o200k, parts.texts), runs)
        exact = count_texts(tekken, parts.texts) + parts.overhead(MISTRAL_FAMILY)
        cells = []
        for model, kind in ((MISTRAL, "mistral"), (KIMI, "moonshot")):
            limit = model.context_window - OUTPUT
            count = counter.count(body, model, kind, limit)
            seconds = median(lambda b=body, m=model, k=kind, n=limit: counter.count(b, m, k, n), runs)
            cells.append(f"{_t(seconds)} {count.method}{' fits' if count.fits(limit) else ' over'}")
        rows.append(
            (
                label,
                f"{parts.chars:,}",
                f"{est:,} ({est / exact - 1:+.0%})",
                _t(est_s),
                _t(tekken_count),
                _t(o200k_count),
                *cells,
            )
        )
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    print("\n(estimate: its error against Tekken's count in brackets; decision: time, method, outcome)")

    # A 1M-token request against Kimi's 1,048,576 window: the estimate straddles the limit, so o200k counts it.
    near = bodies()["4 MB"]
    limit = round(estimate(near, "kimi") * 1.02)
    stall, method = loop_stall(counter, near, limit)
    seconds = median(lambda: counter.count(near, KIMI, "moonshot", limit), args.runs)
    print(
        f"4 MB near Kimi's limit ({limit:,}): count {_t(seconds)} via {method}; count_async: longest event-loop stall {_t(stall)}"
    )


def _t(seconds: float) -> str:
    return f"{seconds * 1e6:.0f} us" if seconds < 1e-3 else f"{seconds * 1e3:.1f} ms"


if __name__ == "__main__":
    main()
