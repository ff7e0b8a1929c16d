"""A fixed-response OpenAI-compatible upstream, as cheap as Python can make it.

A raw asyncio Protocol speaking just enough HTTP/1.1 (keep-alive, pipelining,
Content-Length bodies) so that the upstream is not what a benchmark measures:

- `POST /v1/chat/completions` reads the whole body (so large bodies really
  cross the socket), then answers a fixed `chat.completion`; if the body holds
  `"stream": true` (a byte search of the body's first and last 16 KB, where
  top-level keys other than `messages` are; no JSON parsing) it answers a fixed
  SSE stream instead, in one write: a role chunk, four content chunks, a final
  chunk with `finish_reason` and `usage`, and `data: [DONE]`.
- If a streaming body also holds the marker `bench-stream100` (put in the system
  message by load.py, so that every proxy forwards it), it streams per chunk
  instead: the response head, a role chunk, 100 content chunks of a few
  characters each, the final chunk with `finish_reason` and `usage`, and
  `data: [DONE]`, each SSE event its own HTTP chunk and its own socket write
  (uvloop sets TCP_NODELAY, so each leaves as its own segment).
- `GET /v1/models` lists `bench-model`; `GET /health` answers 200.

Run: python tests/bench/upstream.py --port 18000 [--host 127.0.0.1]
Uses uvloop when it is importable.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal

MODEL = "bench-model"
CONTENT_PARTS = ["Hello", " from", " the", " bench upstream."]
CONTENT = "".join(CONTENT_PARTS)
MAX_HEAD = 64 * 1024
MAX_BODY = 64 * 1024 * 1024
STREAM_MARKERS = (b'"stream":true', b'"stream": true')
STREAM100_MARKER = "bench-stream100"  # in the body: stream per chunk (see the module docstring)
STREAM100_PARTS = [f"tok{i:02d} " for i in range(100)]  # 100 content chunks of 6 characters
STREAM100_CONTENT = "".join(STREAM100_PARTS)
EDGE = 16 * 1024
READ_SIZE = 256 * 1024


def _json(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


USAGE = {"prompt_tokens": 12, "completion_tokens": 6, "total_tokens": 18}
COMPLETION = _json(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1700000000,
        "model": MODEL,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": CONTENT}, "finish_reason": "stop"}],
        "usage": USAGE,
    }
)


def _chunk(delta: dict, finish: str | None = None, usage: dict | None = None) -> bytes:
    obj = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": MODEL,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    if usage is not None:
        obj["usage"] = usage
    return b"data: " + _json(obj) + b"\n\n"


SSE = b"".join(
    [_chunk({"role": "assistant", "content": ""})]
    + [_chunk({"content": part}) for part in CONTENT_PARTS]
    + [_chunk({}, "stop", USAGE), b"data: [DONE]\n\n"]
)
MODELS = _json(
    {"object": "list", "data": [{"id": MODEL, "object": "model", "created": 1700000000, "owned_by": "bench"}]}
)


def _response(status: str, ctype: bytes, body: bytes, close: bool = False) -> bytes:
    head = b"HTTP/1.1 " + status.encode() + b"\r\nContent-Type: " + ctype + b"\r\nContent-Length: "
    head += str(len(body)).encode() + (b"\r\nConnection: close" if close else b"") + b"\r\n\r\n"
    return head + body


R_COMPLETION = _response("200 OK", b"application/json", COMPLETION)
STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)
R_STREAM = STREAM_HEAD + f"{len(SSE):x}".encode() + b"\r\n" + SSE + b"\r\n0\r\n\r\n"
_MARK100 = STREAM100_MARKER.encode()


def _http_chunk(data: bytes) -> bytes:
    return f"{len(data):x}".encode() + b"\r\n" + data + b"\r\n"


USAGE100 = {"prompt_tokens": 12, "completion_tokens": len(STREAM100_PARTS), "total_tokens": 12 + len(STREAM100_PARTS)}
# One socket write each: the head, the role chunk, 100 content chunks, the final chunk, [DONE] (+ the end).
R_STREAM100 = (
    [STREAM_HEAD, _http_chunk(_chunk({"role": "assistant", "content": ""}))]
    + [_http_chunk(_chunk({"content": part})) for part in STREAM100_PARTS]
    + [_http_chunk(_chunk({}, "stop", USAGE100)), _http_chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n"]
)
R_MODELS = _response("200 OK", b"application/json", MODELS)
R_HEALTH = _response("200 OK", b"application/json", b'{"status":"ok"}')
R_404 = _response("404 Not Found", b"application/json", b'{"error":{"message":"not found","type":"not_found"}}')
R_400 = _response("400 Bad Request", b"application/json", b'{"error":{"message":"bad request"}}', close=True)
R_411 = _response(
    "411 Length Required", b"application/json", b'{"error":{"message":"send Content-Length"}}', close=True
)
R_413 = _response("413 Payload Too Large", b"application/json", b'{"error":{"message":"too large"}}', close=True)


class Upstream(asyncio.BufferedProtocol):
    """Reads into one reusable buffer: a large body costs no allocation (and no page faults)."""

    __slots__ = (
        "transport",
        "buffer",
        "view",
        "head",
        "need",
        "first",
        "tail",
        "seen",
        "stream",
        "stream100",
        "route",
        "close",
    )

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.buffer = bytearray(READ_SIZE)
        self.view = memoryview(self.buffer)
        self.head = b""
        self.need = 0  # body bytes still to read for the current request
        self.first = b""  # the first EDGE bytes of the current body
        self.tail = b""  # the last EDGE bytes of the current body (so far)
        self.seen = 0
        self.stream = False
        self.stream100 = False
        self.route = b""
        self.close = False

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.view

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(self.buffer, nbytes)

    def data_received(self, data: bytes | bytearray, end: int) -> None:
        pos = 0
        while pos < end or (self.need == 0 and self.route):
            if self.need:
                take = min(self.need, end - pos)
                # "stream" is a top-level key: it sits before or after the (large) messages,
                # so only the first and last EDGE bytes of the body need a look.
                if self.seen < EDGE:
                    self.first += data[pos : pos + min(take, EDGE - self.seen)]
                if take >= EDGE:
                    self.tail = data[pos + take - EDGE : pos + take]
                else:
                    self.tail = (self.tail + data[pos : pos + take])[-EDGE:]
                self.seen += take
                self.need -= take
                pos += take
                if self.need:
                    return
                self.stream = any(m in self.first or m in self.tail for m in STREAM_MARKERS)
                self.stream100 = self.stream and (_MARK100 in self.first or _MARK100 in self.tail)
            if self.route:  # a whole request (head and body) has arrived
                self._answer()
                if self.close:
                    return
                continue
            # Reading a request head.
            self.head += data[pos:end]
            pos = end
            cut = self.head.find(b"\r\n\r\n")
            if cut < 0:
                if len(self.head) > MAX_HEAD:
                    self._fail(R_400)
                return
            head, rest = self.head[:cut], self.head[cut + 4 :]
            self.head = b""
            if not self._parse(head):
                return
            data, pos, end = rest, 0, len(rest)

    def _parse(self, head: bytes) -> bool:
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ")
        if len(parts) != 3:
            self._fail(R_400)
            return False
        method, target, version = parts
        length = 0
        close = version == b"HTTP/1.0"
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    self._fail(R_400)
                    return False
            elif name == b"transfer-encoding":
                self._fail(R_411)
                return False
            elif name == b"connection":
                token = value.strip().lower()
                close = token == b"close" or (close and token != b"keep-alive")
        if length < 0 or length > MAX_BODY:
            self._fail(R_413)
            return False
        self.route = method + b" " + target.split(b"?", 1)[0]
        self.need = length
        self.first = self.tail = b""
        self.seen = 0
        self.stream = self.stream100 = False
        self.close = close
        return True

    def _answer(self) -> None:
        route, self.route = self.route, b""
        if route == b"POST /v1/chat/completions":
            if self.stream100:
                write = self.transport.write
                for part in R_STREAM100:  # one write (one send) per SSE event
                    write(part)
                if self.close:
                    self.transport.close()
                return
            reply = R_STREAM if self.stream else R_COMPLETION
        elif route == b"GET /v1/models":
            reply = R_MODELS
        elif route in (b"GET /health", b"GET /healthz"):
            reply = R_HEALTH
        else:
            reply = R_404
        self.transport.write(reply)
        if self.close:
            self.transport.close()

    def _fail(self, reply: bytes) -> None:
        self.close = True
        self.route = b""
        self.need = 0
        self.transport.write(reply)
        self.transport.close()


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Upstream, host, port, backlog=1024, reuse_address=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"upstream: listening on http://{host}:{port}/v1", flush=True)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=18000)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
