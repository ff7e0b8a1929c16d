"""Raw-HTTP helpers for the emulator conformance tests (http.client: nothing hides the wire)."""

from __future__ import annotations

import http.client
import json
import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from gateway.emulators import EmulatorOptions, start_emulator

_DEFAULT = object()


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    text: str

    @property
    def json(self) -> Any:
        return json.loads(self.text)


@dataclass
class StreamReply:
    status: int
    headers: dict[str, str]
    frames: list[str]  # the payload after "data: " of every event, in order
    complete: bool  # False when the connection dropped mid-body
    raw: bytes = b""

    @property
    def done(self) -> bool:
        return bool(self.frames) and self.frames[-1] == "[DONE]"

    @property
    def chunks(self) -> list[dict]:
        return [json.loads(f) for f in self.frames if f != "[DONE]"]

    def content(self) -> str:
        """The string deltas of choice 0 joined (thinking arrays and usage-only chunks skipped)."""
        pieces = [c["choices"][0]["delta"].get("content") for c in self.chunks if c.get("choices")]
        return "".join(p for p in pieces if isinstance(p, str))


def _frames(raw: bytes) -> list[str]:
    frames = []
    for block in raw.decode().split("\n\n"):
        if block.startswith("data: "):
            frames.append(block[len("data: ") :])
    return frames


class EmulatorClient:
    """Talks to one running emulator. `key=None` sends no Authorization header."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.key = server.api_key

    def _send(
        self, method: str, path: str, body: Any, key: Any, headers: dict | None, timeout: float
    ) -> http.client.HTTPResponse:
        conn = http.client.HTTPConnection(self.server.host, self.server.port, timeout=timeout)
        sent = dict(headers or {})
        key = self.key if key is _DEFAULT else key
        if key is not None:
            sent["Authorization"] = f"Bearer {key}"
        payload = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        if payload is not None:
            sent.setdefault("Content-Type", "application/json")
        conn.request(method, path, body=payload, headers=sent)
        return conn.getresponse()

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        key: Any = _DEFAULT,
        headers: dict | None = None,
        timeout: float = 10,
    ) -> Reply:
        response = self._send(method, path, body, key, headers, timeout)
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read().decode())

    def post(self, path: str, body: Any, **kw: Any) -> Reply:
        return self.call("POST", path, body, **kw)

    def chat(self, body: Any, **kw: Any) -> Reply:
        return self.call("POST", "/v1/chat/completions", body, **kw)

    def stream(self, body: dict, path: str = "/v1/chat/completions", **kw: Any) -> StreamReply:
        key, headers = kw.pop("key", _DEFAULT), kw.pop("headers", None)
        response = self._send("POST", path, {**body, "stream": True}, key, headers, 10)
        headers = {k.lower(): v for k, v in response.getheaders()}
        try:
            raw, complete = response.read(), True
        except http.client.IncompleteRead as exc:
            raw, complete = exc.partial, False
        return StreamReply(response.status, headers, _frames(raw), complete, raw)

    def control(self, method: str, path: str, body: Any = None) -> Reply:
        return self.call(method, "/_emulator/" + path, body, key=None)

    def reset(self) -> None:
        self.control("DELETE", "faults")
        self.control("DELETE", "requests")

    def raw_request(self, path: str, body: dict, headers: dict) -> socket.socket:
        """Send a request on a bare socket and return the socket, unread."""
        data = json.dumps(body).encode()
        lines = [
            f"POST {path} HTTP/1.1",
            f"Host: {self.server.host}",
            f"Authorization: Bearer {self.key}",
            "Content-Type: application/json",
            f"Content-Length: {len(data)}",
        ]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        sock = socket.create_connection((self.server.host, self.server.port), timeout=10)
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + data)
        return sock

    def wait_hanging(self, count: int, attempts: int = 2000) -> bool:
        """Poll (request by request, no sleeping) until `count` requests are hanging."""
        for _ in range(attempts):
            if self.control("GET", "faults").json["hanging"] == count:
                return True
        return False


@contextmanager
def running(kind: str, **options: Any) -> Iterator[tuple[Any, EmulatorClient]]:
    server = start_emulator(kind, EmulatorOptions(**options))
    try:
        yield server, EmulatorClient(server)
    finally:
        server.stop()


# The documented emulator token-counting rule, restated here independently of text.py.
RULE_PER_MESSAGE = 4
RULE_PER_IMAGE = 85


def rule_count(text: str) -> int:
    return len(re.findall(r"\w+|[^\w\s]", text))
