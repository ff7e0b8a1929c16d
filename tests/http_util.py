"""Raw HTTP for tests that need exact control over bytes, headers and framing."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def error(self) -> dict[str, Any]:
        data = self.json()
        assert set(data) == {"error"}, data
        assert set(data["error"]) == {"message", "type", "param", "code"}, data
        return data["error"]


def request(
    url: str,
    method: str,
    path: str,
    body: bytes | Iterable[bytes] | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30,
) -> Answer:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        connection.request(
            method, path, body=body, headers=headers or {}, encode_chunked=not isinstance(body, (bytes, type(None)))
        )
        response = connection.getresponse()
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
    finally:
        connection.close()


def post_json(url: str, path: str, payload: Any, headers: dict[str, str] | None = None) -> Answer:
    return request(
        url, "POST", path, json.dumps(payload).encode(), {"content-type": "application/json", **(headers or {})}
    )


def sse_events(body: bytes) -> list[Any]:
    """Parse an SSE body into JSON objects (and the string '[DONE]')."""
    events = []
    for block in body.decode().split("\n\n"):
        block = block.strip()
        if not block.startswith("data:"):
            continue
        data = block[5:].strip()
        events.append(data if data == "[DONE]" else json.loads(data))
    return events
