"""The provider emulators from a test's side: their keys, their control endpoints, and a client that talks to
one emulator directly (emulator conformance tests), all on tests.support.http."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from gateway.emulators import EmulatorOptions, start_emulator
from gateway.http.servers import ThreadedServer
from tests.support.http import Answer, host_port, request

MISTRAL_KEY = "test-mistral-key-0123456789"
MOONSHOT_KEY = "test-moonshot-key-0123456789"


def provider_env(mistral: ThreadedServer, moonshot: ThreadedServer) -> dict[str, str]:
    """The environment that points the built-in catalog's providers at the two emulators."""
    return {
        "MISTRAL_API_KEY": MISTRAL_KEY,
        "MISTRAL_API_BASE": mistral.url + "/v1",
        "MOONSHOT_API_KEY": MOONSHOT_KEY,
        "MOONSHOT_API_BASE": moonshot.url + "/v1",
    }


class EmulatorControl:
    """The emulators' control endpoints: what reached the provider, and faults to inject."""

    def __init__(self, url: str) -> None:
        self.url = url

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        answer = request(self.url, method, path, data, {"content-type": "application/json"}, timeout=10)
        assert answer.status < 400, (method, path, answer.status, answer.body)
        return answer.json() if answer.body else None

    def reset(self) -> None:
        self._call("DELETE", "/_emulator/requests")
        self._call("DELETE", "/_emulator/faults")

    def requests(self) -> list[dict[str, Any]]:
        return self._call("GET", "/_emulator/requests")

    def last(self) -> dict[str, Any]:
        received = self.requests()
        assert received, "the emulator received no request"
        return received[-1]

    def fault(self, fault: str, count: int = 1) -> None:
        self._call("POST", "/_emulator/faults", {"fault": fault, "count": count})

    def stats(self) -> dict[str, Any]:
        """/v1 requests in flight now, the most at once and the count since `reset_stats`; `held` at the gate."""
        return self._call("GET", "/_emulator/stats")

    def reset_stats(self) -> None:
        self._call("DELETE", "/_emulator/stats")

    def hold(self, closed: bool = True) -> None:
        """Close the gate (requests stay in flight, unanswered) or, with closed=False, open it."""
        self._call("POST" if closed else "DELETE", "/_emulator/hold")


class Script(EmulatorControl):
    """An emulator's control endpoints: scripted replies, and (inherited) the log of what reached it and faults."""

    def queue(self, *replies: dict[str, Any]) -> None:
        self._call("POST", "/_emulator/script", {"replies": list(replies)})

    def state(self) -> dict[str, list]:
        return self._call("GET", "/_emulator/script")

    def clear(self) -> None:
        self._call("DELETE", "/_emulator/script")
        self._call("DELETE", "/_emulator/requests")
        self._call("DELETE", "/_emulator/faults")  # a test's faults must not reach the next test

    def chats(self) -> list[dict[str, Any]]:
        return [r["body"] for r in self.requests() if r["path"] == "/v1/chat/completions"]


_DEFAULT = object()


class EmulatorClient:
    """Talks to one running emulator, with its key unless told (`key=None` sends no Authorization header)."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.key = server.api_key

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        key: Any = _DEFAULT,
        headers: dict | None = None,
        timeout: float = 10,
        incomplete_ok: bool = False,
    ) -> Answer:
        sent = dict(headers or {})
        key = self.key if key is _DEFAULT else key
        if key is not None:
            sent["Authorization"] = f"Bearer {key}"
        payload = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        if payload is not None:
            sent.setdefault("Content-Type", "application/json")
        return request(self.server.url, method, path, payload, sent, timeout, incomplete_ok=incomplete_ok)

    def post(self, path: str, body: Any, **kw: Any) -> Answer:
        return self.call("POST", path, body, **kw)

    def chat(self, body: Any, **kw: Any) -> Answer:
        return self.call("POST", "/v1/chat/completions", body, **kw)

    def stream(self, body: dict, path: str = "/v1/chat/completions", **kw: Any) -> Answer:
        """A streamed answer, read to its end; `complete` is False when the connection dropped mid-body."""
        return self.call("POST", path, {**body, "stream": True}, incomplete_ok=True, **kw)

    def control(self, method: str, path: str, body: Any = None) -> Answer:
        return self.call(method, "/_emulator/" + path, body, key=None)

    def reset(self) -> None:
        self.control("DELETE", "faults")
        self.control("DELETE", "requests")

    def raw_request(self, path: str, body: dict, headers: dict) -> socket.socket:
        """Send a request on a bare socket and return the socket, unread."""
        data = json.dumps(body).encode()
        host, port = host_port(self.server.url)
        lines = [
            f"POST {path} HTTP/1.1",
            f"Host: {host}",
            f"Authorization: Bearer {self.key}",
            "Content-Type: application/json",
            f"Content-Length: {len(data)}",
        ]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        sock = socket.create_connection((host, port), timeout=10)
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + data)
        return sock

    def wait_hanging(self, count: int, attempts: int = 2000) -> bool:
        """Poll (request by request, no sleeping) until `count` requests are hanging."""
        return any(self.control("GET", "faults").json()["hanging"] == count for _ in range(attempts))


@contextmanager
def running(kind: str, **options: Any) -> Iterator[tuple[Any, EmulatorClient]]:
    """An emulator of its own (a real server on 127.0.0.1) and a client for it."""
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
