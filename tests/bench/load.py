"""Request bodies, a correctness check per target, and wrk runs."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from upstream import CONTENT, STREAM100_CONTENT, STREAM100_MARKER, STREAM100_PARTS

HERE = Path(__file__).resolve().parent
LUA = HERE / "post.lua"
MODEL = "bench-model"
EXPECTED = CONTENT  # what upstream.py answers: "Hello from the bench upstream."
BODY_SIZES = {"2KB": 2 * 1024, "200KB": 200 * 1024, "4MB": 4 * 1024 * 1024}
# Request modes: JSON answer; SSE stream in one upstream write; SSE stream of 100 content
# chunks, one upstream write each (upstream.py picks it by a marker in the system message).
MODES = ("json", "stream", "stream100")
MODE_BODIES = {"json": tuple(BODY_SIZES), "stream": tuple(BODY_SIZES), "stream100": ("2KB",)}
# Front doors (issue 14): the same request in each door's format, posted to its path. The translating doors
# turn it into the chat request the chat door gets, so the upstream sees the same body from all three.
DOORS = ("chat", "messages", "responses")
DOOR_PATHS = {"chat": "/v1/chat/completions", "messages": "/v1/messages", "responses": "/v1/responses"}

_WORDS = [
    "the",
    "gateway",
    "forwards",
    "each",
    "request",
    "to",
    "its",
    "provider",
    "and",
    "relays",
    "the",
    "answer",
    "while",
    "it",
    "counts",
    "tokens",
    "budgets",
    "routes",
    "regions",
    "latency",
    "streaming",
    "prompt",
    "completion",
    "context",
    "window",
    "model",
    "usage",
    "price",
]


def _text(size: int) -> str:
    """Deterministic prose-like ASCII text of exactly `size` characters, with some newlines."""
    parts, n, i = [], 0, 0
    while n < size:
        word = _WORDS[i % len(_WORDS)] + ("\n" if i % 23 == 22 else " ")
        parts.append(word)
        n += len(word)
        i += 1
    return "".join(parts)[:size]


def door_body(door: str, system: str, text: str) -> dict:
    """One system text and one user text as `door`'s request (without `stream`).

    Messages and Responses bodies are shaped as Claude Code and Codex CLI send them (content blocks; Codex's
    `instructions` and `store: false`, so the Responses door keeps no copy of the conversation, as for Codex)."""
    if door == "messages":  # Anthropic Messages: https://docs.anthropic.com/en/api/messages
        return {
            "model": MODEL,
            "system": system,
            "messages": [{"role": "user", "content": [{"type": "text", "text": text}]}],
            "max_tokens": 64,
            "temperature": 0,
        }
    if door == "responses":  # OpenAI Responses: https://platform.openai.com/docs/api-reference/responses/create
        return {
            "model": MODEL,
            "instructions": system,
            "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}],
            "max_output_tokens": 64,
            "temperature": 0,
            "store": False,
        }
    return {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": text},
        ],
        "max_tokens": 64,
        "temperature": 0,
    }


def make_body(size: int, mode: str, door: str = "chat") -> bytes:
    """A request of `door` whose JSON encoding is `size` bytes (give or take a few)."""
    stream = mode != "json"
    system = "You are a terse assistant."
    if mode == "stream100":  # read by upstream.py; in a message so that every proxy forwards it
        system += f" [{STREAM100_MARKER}]"

    def build(text: str) -> bytes:
        body = door_body(door, system, text)
        if stream:
            body["stream"] = True
        return json.dumps(body, separators=(",", ":")).encode()

    overhead = len(build(""))
    text = _text(max(0, size - overhead))
    # Newlines are escaped as two bytes: trim until the encoding fits.
    raw = build(text)
    while len(raw) > size and text:
        text = text[: len(text) - (len(raw) - size)]
        raw = build(text)
    return raw


def write_bodies(folder: Path, door: str = "chat") -> dict[tuple[str, str], Path]:
    """The request body files of `door`, keyed by (mode, body size name)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for mode in MODES:
        for name in MODE_BODIES[mode]:
            path = folder / f"{door}-{name}-{mode}.json"
            raw = make_body(BODY_SIZES[name], mode, door)
            if not path.exists() or path.read_bytes() != raw:
                path.write_bytes(raw)
            out[(mode, name)] = path
    return out


def _sse_datas(raw: bytes) -> list[bytes]:
    """The `data:` payloads of an SSE body, in order (an event's `event:` line is also in its JSON `type`)."""
    datas = []
    for event in raw.replace(b"\r\n", b"\n").split(b"\n\n"):
        for line in event.split(b"\n"):
            if line.startswith(b"data:"):
                datas.append(line[5:].strip())
    return datas


def _reply_text(door: str, reply: dict) -> str:
    """The text of a complete answer in `door`'s format (KeyError/TypeError/ValueError if it is not one)."""
    if door == "messages":
        if reply["type"] != "message":
            raise ValueError(f"type {reply['type']!r}, not 'message'")
        return "".join(block["text"] for block in reply["content"] if block["type"] == "text")
    if door == "responses":
        if reply["object"] != "response" or reply["status"] != "completed":
            raise ValueError(f"object {reply['object']!r}, status {reply.get('status')!r}")
        return "".join(
            part["text"]
            for item in reply["output"]
            if item["type"] == "message"
            for part in item["content"]
            if part["type"] == "output_text"
        )
    return reply["choices"][0]["message"]["content"]


def _stream_pieces(door: str, raw: bytes) -> tuple[list[str], str | None]:
    """The text pieces of a stream in `door`'s format, and what is wrong with its ending (None: it ended right).

    Chat ends with `data: [DONE]`; Messages with a `message_stop` event; Responses has `response.completed` (whose
    response must hold the same text)."""
    datas = _sse_datas(raw)
    pieces: list[str] = []
    if door == "chat":
        if not datas or datas[-1] != b"[DONE]":
            return pieces, f"stream does not end with [DONE]: {raw[-200:]!r}"
        for data in datas[:-1]:
            chunk = json.loads(data)
            if "error" in chunk:
                return pieces, f"error event: {data[:200]!r}"
            for choice in chunk.get("choices") or ():
                piece = (choice.get("delta") or {}).get("content") or ""
                if piece:
                    pieces.append(piece)
        return pieces, None
    events = [json.loads(data) for data in datas]
    kinds = [event.get("type") for event in events]
    if door == "messages":
        for event in events:
            if event.get("type") == "error":
                return pieces, f"error event: {json.dumps(event)[:200]}"
            delta = event.get("delta") or {}
            if event.get("type") == "content_block_delta" and delta.get("type") == "text_delta" and delta["text"]:
                pieces.append(delta["text"])
        if not kinds or kinds[-1] != "message_stop":
            return pieces, f"stream does not end with message_stop: {raw[-200:]!r}"
        return pieces, None
    for event in events:
        if event.get("type") in ("error", "response.failed", "response.incomplete"):
            return pieces, f"{event['type']} event: {json.dumps(event)[:200]}"
        if event.get("type") == "response.output_text.delta" and event["delta"]:
            pieces.append(event["delta"])
    done = [event for event in events if event.get("type") == "response.completed"]
    if len(done) != 1:
        return pieces, f"{len(done)} response.completed events: {raw[-200:]!r}"
    final = _reply_text(door, done[0]["response"])
    if final != "".join(pieces):
        return pieces, f"response.completed holds {final[:100]!r}, the deltas {''.join(pieces)[:100]!r}"
    return pieces, None


def check_answer(port: int, body: bytes, mode: str, key: str, timeout: float = 120.0, door: str = "chat") -> str | None:
    """POST once to `door`; return None if the answer is a 200 in the door's format with the expected content,
    else what is wrong.

    For `stream100` the content must also arrive as 100 content pieces, as the upstream sent it.
    """
    stream = mode != "json"
    expected = STREAM100_CONTENT if mode == "stream100" else EXPECTED
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
        conn.request("POST", DOOR_PATHS[door], body=body, headers=headers)
        response = conn.getresponse()
        raw = response.read()
    except (OSError, http.client.HTTPException) as exc:
        return f"request failed: {exc!r}"
    finally:
        conn.close()
    if response.status != 200:
        return f"status {response.status}: {raw[:300]!r}"
    ctype = response.getheader("content-type", "")
    try:
        if not stream:
            if not ctype.startswith("application/json"):
                return f"content-type {ctype!r}"
            content = _reply_text(door, json.loads(raw))
            if content != expected:
                return f"content {content!r}"
            return None
        if not ctype.startswith("text/event-stream"):
            return f"content-type {ctype!r}: {raw[:200]!r}"
        pieces, problem = _stream_pieces(door, raw)
        if problem:
            return problem
        text = "".join(pieces)
        if text != expected:
            return f"streamed content {text[:200]!r}"
        if mode == "stream100" and len(pieces) != len(STREAM100_PARTS):
            return f"{len(pieces)} content pieces, expected {len(STREAM100_PARTS)}"
        return None
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        return f"malformed answer ({exc!r}): {raw[:200]!r}"


@dataclass
class WrkResult:
    requests: int = 0
    duration_s: float = 0.0
    rps: float = 0.0
    p50_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    non2xx: int = 0
    socket_errors: dict[str, int] = field(default_factory=dict)
    error: str | None = None

    @property
    def socket_error_count(self) -> int:
        return sum(self.socket_errors.values())


_LINE = re.compile(r"^BENCH (.*)$", re.M)


def run_wrk(
    port: int,
    body_file: Path,
    connections: int,
    duration_s: int,
    key: str,
    pin: str | None = None,
    timeout_s: int = 30,
    threads: int = 1,
    path: str = DOOR_PATHS["chat"],
) -> WrkResult:
    argv = [
        "wrk",
        f"-t{min(threads, connections)}",
        f"-c{connections}",
        f"-d{duration_s}s",
        f"--timeout={timeout_s}s",
        "-s",
        str(LUA),
        f"http://127.0.0.1:{port}{path}",
        "--",
        str(body_file),
        key,
    ]
    if pin is not None:
        argv = ["taskset", "-c", pin, *argv]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=duration_s + timeout_s + 30)
    except BaseException:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(5)
        raise
    text = out.decode(errors="replace")
    match = _LINE.search(text)
    if proc.returncode != 0 or match is None:
        return WrkResult(error=f"wrk exited {proc.returncode}: {text.strip()[-300:]}")
    values = dict(item.split("=", 1) for item in match.group(1).split())
    n = int(values["requests"])
    duration = int(values["duration_us"]) / 1e6
    ms = lambda key: int(values[key]) / 1000 if n else None  # noqa: E731
    return WrkResult(
        requests=n,
        duration_s=duration,
        rps=n / duration if duration else 0.0,
        p50_ms=ms("p50_us"),
        p90_ms=ms("p90_us"),
        p99_ms=ms("p99_us"),
        max_ms=ms("max_us"),
        non2xx=int(values["status"]),
        socket_errors={k: int(values[k]) for k in ("connect", "read", "write", "timeout") if int(values[k])},
    )
