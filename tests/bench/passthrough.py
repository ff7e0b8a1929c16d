"""The floor a Python gateway stands on: a bare Starlette + uvicorn + aiohttp passthrough.

`POST /v1/chat/completions` reads the request body whole and forwards it unchanged, with one pooled
aiohttp ClientSession, to the upstream stub (tests/bench/upstream.py) the gateway and LiteLLM use; the
upstream's status and body go back to the client. An SSE answer (`text/event-stream` from the upstream)
is streamed through as the bytes arrive (`StreamingResponse` over `iter_any()`); anything else is read
whole and sent with a Content-Length. Nothing else: no auth (the client's Authorization header is not
read), no JSON parsing, no metrics, no logging; a client that leaves mid-upload is dropped quietly, as
the gateway does. `GET /readyz` answers 200 once the session exists.

uvicorn runs it as `gateway serve` runs the gateway: uvloop, httptools, one worker, access log off, no
server header, no proxy headers, no WebSocket. The aiohttp session is set up like the gateway's
openai-compatible adapter's: a prebuilt URL, the upstream key and Content-Type as session headers, no
User-Agent, no cookie jar, no raise_for_status.

The benchmark driver runs it as the target `passthrough`, so every run shows the gateway's CPU per
request and added latency next to this floor's.

Run: python tests/bench/passthrough.py --port 18001 --upstream http://127.0.0.1:18000/v1
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import AsyncIterator

import aiohttp
import uvicorn
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from yarl import URL

UPSTREAM_KEY = "sk-bench-upstream"


def build_app(upstream: str, key: str = UPSTREAM_KEY) -> Starlette:
    url = URL(upstream.rstrip("/") + "/chat/completions")
    state: dict[str, aiohttp.ClientSession] = {}

    async def chat(request: Request) -> Response:
        try:
            body = await request.body()
        except ClientDisconnect:  # wrk stopped mid-upload at the end of a cell: nobody to answer (as the gateway)
            return Response(status_code=400)
        upstream_response = await state["session"].post(url, data=body)
        if upstream_response.content_type == "text/event-stream":

            async def relay() -> AsyncIterator[bytes]:
                try:
                    async for data in upstream_response.content.iter_any():
                        yield data
                finally:
                    upstream_response.release()

            return StreamingResponse(relay(), status_code=upstream_response.status, media_type="text/event-stream")
        try:
            data = await upstream_response.read()
        finally:
            upstream_response.release()
        return Response(data, status_code=upstream_response.status, media_type="application/json")

    async def ready(request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=1000, keepalive_timeout=60),
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
            skip_auto_headers=("User-Agent",),
            raise_for_status=False,
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        state["session"] = session
        try:
            yield
        finally:
            await session.close()

    return Starlette(
        routes=[Route("/v1/chat/completions", chat, methods=["POST"]), Route("/readyz", ready)],
        lifespan=lifespan,
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--upstream", required=True, help="the upstream's base URL, e.g. http://127.0.0.1:18000/v1")
    args = p.parse_args()
    uvicorn.run(
        build_app(args.upstream),
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        ws="none",
        workers=1,
        access_log=False,
        log_level="warning",
        proxy_headers=False,
        server_header=False,
    )


if __name__ == "__main__":
    main()
