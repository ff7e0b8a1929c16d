"""HTTP for the tests: one client, on http.client, so that nothing hides the wire (exact bytes, headers, framing).

- `request` / `post_json`: one request, the whole answer read (`Answer`: status, lower-cased headers, body bytes;
  `.json()`, `.error` for an OpenAI-style error, and the SSE views of a streamed body through `tests.support.sse`);
- `begin` / `begin_post_json`: send a request and return the connection with the answer still unread (a test that
  acts while the request is in flight, then calls `getresponse()`, or leaves);
- `post_all`: many requests at once (aiohttp), for tests of concurrency;
- `read_request`: the server side, one request read off a socket, for the hand-written upstreams.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from tests.support import sse


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    complete: bool = True  # False: the connection dropped mid-body (only with `request(..., incomplete_ok=True)`)

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode()

    @property
    def error(self) -> dict[str, Any]:
        """The OpenAI-style error of the body, checked for exactly the four fields."""
        data = self.json()
        assert set(data) == {"error"}, data
        assert set(data["error"]) == {"message", "type", "param", "code"}, data
        return data["error"]

    # -- a streamed body (text/event-stream), read with tests.support.sse

    @property
    def frames(self) -> list[str]:
        """The data of every event, in order."""
        return sse.frames(self.body)

    @property
    def events(self) -> list[Any]:
        """Every event's data decoded as JSON, and the string '[DONE]'."""
        return sse.events(self.body)

    @property
    def chunks(self) -> list[dict[str, Any]]:
        """The JSON events (without '[DONE]')."""
        return sse.chunks(self.body)

    @property
    def done(self) -> bool:
        """The stream's last event is '[DONE]'."""
        frames = self.frames
        return bool(frames) and frames[-1] == sse.DONE

    def content(self) -> str:
        """The string content deltas of choice 0, joined."""
        return sse.text(self.events)


def host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname and parts.port, url
    return parts.hostname, parts.port


def auth(key: str, **extra: str) -> dict[str, str]:
    """Headers with `authorization: Bearer KEY` (and any others)."""
    return {"authorization": f"Bearer {key}", **extra}


def begin(
    url: str,
    method: str,
    path: str,
    body: bytes | Iterable[bytes] | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30,
) -> http.client.HTTPConnection:
    """Send a request (an iterable body goes chunked) and return the connection, its answer not read yet."""
    host, port = host_port(url)
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request(
            method, path, body=body, headers=headers or {}, encode_chunked=not isinstance(body, (bytes, type(None)))
        )
    except BaseException:
        connection.close()
        raise
    return connection


def begin_post_json(
    url: str, path: str, payload: Any, headers: dict[str, str] | None = None, timeout: float = 30
) -> http.client.HTTPConnection:
    return begin(url, "POST", path, _json_body(payload), _json_headers(headers), timeout)


def request(
    url: str,
    method: str,
    path: str,
    body: bytes | Iterable[bytes] | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30,
    *,
    incomplete_ok: bool = False,
) -> Answer:
    """One request and its whole answer. A body cut short raises, unless `incomplete_ok` (then `complete` is False
    and `body` is what arrived)."""
    connection = begin(url, method, path, body, headers, timeout)
    try:
        response = connection.getresponse()
        headers_ = {k.lower(): v for k, v in response.getheaders()}
        try:
            return Answer(response.status, headers_, response.read())
        except http.client.IncompleteRead as exc:
            if not incomplete_ok:
                raise
            return Answer(response.status, headers_, exc.partial, complete=False)
    finally:
        connection.close()


def post_json(url: str, path: str, payload: Any, headers: dict[str, str] | None = None, timeout: float = 30) -> Answer:
    return request(url, "POST", path, _json_body(payload), _json_headers(headers), timeout)


def _json_body(payload: Any) -> bytes:
    return json.dumps(payload).encode()


def _json_headers(headers: dict[str, str] | None) -> dict[str, str]:
    return {"content-type": "application/json", **(headers or {})}


async def post_all(
    urls: str | Sequence[str],
    path: str,
    bodies: Sequence[Any],
    headers: dict[str, str] | Sequence[dict[str, str]] | None = None,
    *,
    limit: int | None = None,
    new_connections: bool = False,
    timeout: float = 120,
) -> list[Answer]:
    """POST every body at once (JSON), the i-th to `urls[i % len(urls)]` with `headers` (or `headers[i]`); at most
    `limit` in flight. `new_connections`: a connection per request (so that the kernel spreads them over workers).
    The answers, in the order of `bodies`."""
    import aiohttp

    targets = [urls] if isinstance(urls, str) else list(urls)
    each = headers if isinstance(headers, Sequence) else [headers or {}] * len(bodies)
    gate = asyncio.Semaphore(limit or max(len(bodies), 1))
    connector = aiohttp.TCPConnector(limit=limit or max(len(bodies), 1), force_close=new_connections)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout)) as session:

        async def one(index: int) -> Answer:
            async with gate:
                url = targets[index % len(targets)] + path
                async with session.post(url, json=bodies[index], headers=each[index]) as response:
                    data = await response.read()
                    return Answer(response.status, {k.lower(): v for k, v in response.headers.items()}, data)

        return list(await asyncio.gather(*(one(i) for i in range(len(bodies)))))


def read_request(connection: socket.socket) -> tuple[bytes, bytes]:
    """One HTTP/1.1 request with a content-length body, read off a server-side socket: (head, body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(65536)
        if not chunk:
            raise ConnectionError(f"the client closed before a whole request head: {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        (int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")), 0
    )
    while len(body) < length:
        chunk = connection.recv(65536)
        if not chunk:
            raise ConnectionError("the client closed mid-body")
        body += chunk
    return head, body


def post_at_once(
    urls: str | Sequence[str], path: str, body: Any, count: int, headers: dict[str, str] | None = None, **options: Any
) -> list[Answer]:
    """`count` copies of `body` sent at once (`post_all`), every answer read."""
    return asyncio.run(post_all(urls, path, [body] * count, headers, **options))
