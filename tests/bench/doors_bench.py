"""What a translating front door (issue 14) adds to a request, in-process: the door's own work, without HTTP.

    .venv/bin/python tests/bench/doors_bench.py [--runs N]

The end-to-end cells of `run.sh --doors` carry the whole request (server, pipeline, relay, ledger) and the noise
of the machine; this measures only what the Messages and Responses doors do that the chat door does not, with
the benchmark's own request bodies (load.make_body: 2 KB, 200 KB, 4 MB) and upstream answers (upstream.py):

- **request**: the door's parser on the parsed JSON body (gateway/http/anthropic.py and responses_api.py
  `parse_request`: translation to the chat body, `check_chat`, the renderer) next to the chat door's
  (gateway/http/openai.py `chat_request`: `check_chat`). Reading and parsing the body is common to all three.
- **answer**: a complete answer: the chat door sends the pipeline's bytes as they are; a translating door parses
  them, renders (`Renderer.reply`) and serialises (gateway/http/doors.py `serve_http`).
- **stream**, **stream100**: each chunk the relay parsed (a parse every door pays, not counted) through the door's
  renderer (`Renderer.chunk`, the request's `reshape`), as the relay yields them (`stream`: the upstream's 6 events
  in one piece; stream100: one piece per event, 102 of them), then the settled usage chunk and [DONE] the pipeline
  adds, all through doors.py `rendered_events` (which passes the door's events on and renders [DONE]). The chat
  door relays the provider's bytes untouched.

Each figure is the best of --runs rounds of the median time per call (µs): the machine's other load adds to a
median, not to the best round.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
from starlette.requests import Request

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from load import BODY_SIZES, DOORS, MODEL, make_body  # noqa: E402
from upstream import COMPLETION, R_STREAM100, SSE, USAGE  # noqa: E402

from gateway.auth.principal import Principal  # noqa: E402
from gateway.http import anthropic, openai, responses_api  # noqa: E402
from gateway.http.doors import Renderer, rendered_events  # noqa: E402
from gateway.store.base import Team  # noqa: E402

PARSERS: dict[str, Callable[..., Any]] = {
    "chat": openai.chat_request,
    "messages": anthropic.parse_request,
    "responses": responses_api.parse_request,
}
# The pipeline's last chunk before [DONE] (gateway/pipeline/settle.py): empty choices, the settled usage, the cost.
SETTLED = (
    b"data: "
    + orjson.dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": 1700000000,
            "model": MODEL,
            "choices": [],
            "usage": USAGE,
            "x_gateway": {"cost_usd": 0.0000123, "model": MODEL, "provider": "bench"},
        }
    )
    + b"\n\n"
)
DONE = b"data: [DONE]\n\n"


def _http() -> Request:
    """A request as the door's parser sees it (headers; no app: the Responses door keeps no response)."""
    return Request({"type": "http", "method": "POST", "path": "/", "headers": [(b"content-type", b"application/json")]})


def _stream_pieces(mode: str) -> list[bytes]:
    """The pipeline's SSE pieces for one answer, as the relay yields them (one per upstream read)."""
    if mode == "stream":
        return [SSE.replace(DONE, b""), SETTLED + DONE]
    # R_STREAM100: the head, then one HTTP chunk (size, CRLF, data, CRLF) per event, [DONE] last.
    events = [part.split(b"\r\n", 1)[1].rsplit(b"\r\n", 1)[0] for part in R_STREAM100[1:-1]]
    return [*events, SETTLED + DONE]


async def _pieces(pieces: list[bytes]) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece


def _parsed(pieces: list[bytes]) -> list[list[Any]]:
    """Each piece's events as the relay has them: parsed once (for every door: the chat door parses them too), or
    the bytes it passes on as they are ([DONE])."""
    out: list[list[Any]] = []
    for piece in pieces:
        events: list[Any] = []
        for event in piece.split(b"\n\n"):
            if event.startswith(b"data:"):
                payload = event[5:].strip()
                events.append(event + b"\n\n" if payload == b"[DONE]" else orjson.loads(payload))
        out.append(events)
    return out


async def _relayed(parsed: list[list[Any]], renderer: Renderer) -> AsyncIterator[bytes]:
    """What the relay and the pipeline yield for a translating door: each parsed chunk through the door's renderer
    (its `reshape`), what is no chunk as it is."""
    for events in parsed:
        yield b"".join(event if isinstance(event, bytes) else renderer.chunk(event) for event in events)


async def _render_stream(parsed: list[list[Any]], renderer: Renderer) -> int:
    size = 0
    async for data in rendered_events(_relayed(parsed, renderer), renderer):
        size += len(data)
    return size


def _time(call: Callable[[], object], runs: int, budget_s: float = 0.25) -> float:
    """The best, over `runs` rounds, of the median µs per call in a round of about `budget_s`."""
    start = time.perf_counter()
    call()
    once = max(time.perf_counter() - start, 1e-7)
    n = max(3, min(2000, int(budget_s / once)))
    best = float("inf")
    for _ in range(runs):
        samples = []
        for _ in range(n):
            t0 = time.perf_counter()
            call()
            samples.append(time.perf_counter() - t0)
        best = min(best, statistics.median(samples))
    return best * 1e6


def _door_parts(door: str, http: Request, principal: Principal, loop: asyncio.AbstractEventLoop, runs: int) -> dict:
    """A translating door's answer, stream and stream100 work (µs); a stream needs a fresh renderer, so the parser's
    time is taken out of it."""
    parse = PARSERS[door]
    out = {}
    for mode in ("json", "stream", "stream100"):
        body = orjson.loads(make_body(BODY_SIZES["2KB"], mode, door))
        if mode == "json":  # one renderer: rendering a complete answer changes nothing in it
            _, renderer = parse(http, body, 2048, principal)
            out["answer"] = _time(lambda: orjson.dumps(renderer.reply(orjson.loads(COMPLETION))), runs)  # noqa: B023
            continue
        parsed = _parsed(_stream_pieces(mode))
        base = _time(lambda: parse(http, body, 2048, principal), runs)  # noqa: B023 (called before the loop moves)

        def work() -> object:
            _, renderer = parse(http, body, 2048, principal)  # noqa: B023
            return loop.run_until_complete(_render_stream(parsed, renderer))  # noqa: B023

        out[mode] = max(0.0, _time(work, runs) - base)
    return out


def measure(runs: int) -> list[tuple[str, str, str, float]]:
    """(part, body size, door, µs) for every door, body size and part."""
    principal = Principal(Team("bench"), None, True)
    http = _http()
    loop = asyncio.new_event_loop()
    rows: list[tuple[str, str, str, float]] = []
    try:
        for size_name, size in BODY_SIZES.items():
            for door in DOORS:
                raw = make_body(size, "json", door)
                body = orjson.loads(raw)
                parse = PARSERS[door]
                us = _time(lambda: parse(http, body, len(raw), principal), runs)  # noqa: B023
                rows.append(("request", size_name, door, us))
        for door in DOORS[1:]:
            for part, us in _door_parts(door, http, principal, loop, runs).items():
                rows.append((part, "2KB", door, us))
    finally:
        loop.close()
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="in-process cost of the translating front doors (issue 14)")
    p.add_argument("--runs", type=int, default=5, help="rounds per figure (the best round's median is shown)")
    args = p.parse_args(argv)
    rows = measure(args.runs)
    print("| part | body | " + " | ".join(f"{d} µs" for d in DOORS) + " |")
    print("|---|---|" + "---:|" * len(DOORS))
    for part in ("request", "answer", "stream", "stream100"):
        for size in BODY_SIZES:
            got = {d: us for p_, s, d, us in rows if (p_, s) == (part, size)}
            if not got:
                continue
            cells = [f"{got[d]:.1f}" if d in got else "0 (bytes as they are)" for d in DOORS]
            print(f"| {part} | {size} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
