"""A fake provider batch API for the batch clients' tests: an aiohttp app on 127.0.0.1 (in the test's own event
loop) that records every request exactly as it arrived (method, raw path, headers, multipart fields or JSON) and
answers from what the test set: the job's statuses in turn, the result files' bytes, a refusal for one path."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson
from aiohttp import BodyPartReader, web
from aiohttp.test_utils import TestServer
from pydantic import SecretStr

from gateway.catalog import ModelConfig, Price, Provider, Timeouts
from gateway.providers.batches.base import BatchApi, JobStatus

KEY = "sk-fake-provider-key-0123456789"
# What the batch client may send, and nothing else (no header a line or a client could have set).
ALLOWED_HEADERS = frozenset(
    {"host", "authorization", "user-agent", "accept", "accept-encoding", "content-type", "content-length"}
)


@dataclass
class Received:
    method: str
    path: str  # raw, as sent (still quoted)
    headers: dict[str, str]
    json: Any = None
    fields: dict[str, Any] = field(default_factory=dict)  # multipart: name -> str, or (filename, type, bytes)
    query: dict[str, str] = field(default_factory=dict)  # decoded, one value per name


@dataclass
class FakeProvider:
    """What the fake answers. `job_path` is "/v1/batch/jobs" (Mistral) or "/v1/batches" (OpenAI, Moonshot)."""

    job_path: str
    statuses: list[Json] = field(default_factory=list)  # GET job answers, one per poll (the last repeats)
    created: Json = field(default_factory=dict)  # POST job answer
    cancelled: Json = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)  # file id -> content
    refuse: dict[str, tuple[int, Json]] = field(default_factory=dict)  # "METHOD path" -> (status, body)
    redirect: dict[str, str] = field(default_factory=dict)  # "METHOD path" -> Location
    received: list[Received] = field(default_factory=list)
    uploaded_id: str = "file-in-1"
    # GET `job_path` (the job list): the answer to the query it was sent with.
    listing: Callable[[dict[str, str]], Json] | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    def of(self, method: str, path: str) -> list[Received]:
        return [r for r in self.received if r.method == method and r.path == path]

    def listed(self) -> list[dict[str, str]]:
        """The queries of the job list's requests, in order."""
        return [r.query for r in self.received if r.method == "GET" and r.path.split("?")[0] == self.job_path]

    def uploaded_lines(self, which: int = 0) -> list[Json]:
        """The lines of the `which`-th uploaded file."""
        _, _, content = self.of("POST", "/v1/files")[which].fields["file"]
        return [orjson.loads(line) for line in content.splitlines()]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        record = Received(
            request.method,
            request.raw_path,
            {k.lower(): v for k, v in request.headers.items()},
            query=dict(request.query),
        )
        self.received.append(record)
        if request.content_type == "multipart/form-data":
            reader = await request.multipart()
            async for part in reader:
                assert isinstance(part, BodyPartReader) and part.name is not None
                data = bytes(await part.read())
                if part.filename is not None:
                    record.fields[part.name] = (part.filename, part.headers.get("Content-Type"), data)
                else:
                    record.fields[part.name] = data.decode()
        elif request.body_exists:
            record.json = orjson.loads(await request.read())
        where = f"{request.method} {request.raw_path}"
        if where in self.redirect:
            raise web.HTTPTemporaryRedirect(self.redirect[where])
        if where in self.refuse:
            status, body = self.refuse[where]
            return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")
        path = request.raw_path
        if request.method == "GET" and request.rel_url.raw_path == self.job_path and self.listing is not None:
            return _json(self.listing(dict(request.query)))
        if request.method == "POST" and path == "/v1/files":
            return _json({"id": self.uploaded_id, "object": "file", "purpose": "batch", "filename": "x.jsonl"})
        if request.method == "DELETE" and path.startswith("/v1/files/"):
            return _json({"id": path.rsplit("/", 1)[1], "object": "file", "deleted": True})
        if request.method == "GET" and path.startswith("/v1/files/") and path.endswith("/content"):
            file_id = path.split("/")[3]
            if file_id not in self.files:
                return web.Response(status=404, body=b'{"detail": "not found"}', content_type="application/json")
            return web.Response(body=self.files[file_id], content_type="application/octet-stream")
        if request.method == "POST" and path == self.job_path:
            return _json(self.created)
        if request.method == "POST" and path.startswith(self.job_path + "/") and path.endswith("/cancel"):
            return _json(self.cancelled)
        if request.method == "GET" and path.startswith(self.job_path + "/"):
            answer = self.statuses[0] if len(self.statuses) == 1 else self.statuses.pop(0)
            return _json(answer)
        return web.Response(status=404, body=b'{"detail": "no route"}', content_type="application/json")


Json = dict[str, Any]


def _json(body: Json) -> web.Response:
    return web.Response(body=orjson.dumps(body), content_type="application/json")


@asynccontextmanager
async def serving(fake: FakeProvider) -> AsyncIterator[str]:
    """The fake on 127.0.0.1, an ephemeral port; its base URL (with /v1, as the catalog writes it)."""
    server = TestServer(fake.app(), host="127.0.0.1")
    await server.start_server()
    try:
        yield f"http://127.0.0.1:{server.port}/v1"
    finally:
        await server.close()


def provider(kind: str, base_url: str, key: str | None = KEY) -> Provider:
    return Provider(
        name=kind,
        kind=kind,  # type: ignore[arg-type]
        region="eu",
        base_url=base_url,
        api_key=SecretStr(key) if key else None,
        litellm_provider=None,
        max_connections=8,
        timeouts=Timeouts(connect=5, first_byte=10, total=30),
    )


def model(upstream: str, **extra: Any) -> ModelConfig:
    return ModelConfig(
        name="m",
        provider="p",
        upstream_model=upstream,
        context_window=100_000,
        max_output_tokens=1000,
        price=Price(input=Decimal(1), output=Decimal(2)),
        **extra,
    )


def jsonl(*items: Any) -> bytes:
    return b"".join((item if isinstance(item, bytes) else orjson.dumps(item)) + b"\n" for item in items)


async def poll_until_done(client: BatchApi, job_id: str, seconds: float = 15.0) -> JobStatus:
    """The job's status once it ended, read every 20 ms; AssertionError after `seconds`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        status = await client.status(job_id)
        if status.state in ("succeeded", "failed", "expired", "cancelled"):
            return status
        assert loop.time() < deadline, f"job {job_id} still {status.upstream_status} after {seconds} s"
        await asyncio.sleep(0.02)
