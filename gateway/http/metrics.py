"""`GET /metrics` on the gateway's port, and optionally on a port of its own (`GATEWAY_METRICS_PORT`).

The budget gauges name every team with its limit, spend and what remains, so the gateway's own port does not
answer them to anyone: with `GATEWAY_MASTER_KEY` set, a scrape there needs `Authorization: Bearer` with the
master key or the metrics token (`GATEWAY_METRICS_TOKEN`); without a master key, the token if one is set, else
nothing (an open gateway, as its /v1 is). The separate port needs the metrics token if one is set. Every
comparison is in constant time. The separate port is a minimal HTTP/1.1 responder on the same event loop, bound with SO_REUSEPORT so that
each of N workers can serve it (any worker's scrape covers all of them).
"""

from __future__ import annotations

import asyncio
import hmac
import logging

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.errors import GatewayError
from gateway.http.exposition import CONTENT_TYPE_LATEST, render
from gateway.http.responses import error_response
from gateway.state import Gateway

log = logging.getLogger("gateway")
MAX_REQUEST_HEAD = 16 * 1024


def _authorized(gateway: Gateway, authorization: str | None, main_port: bool) -> bool:
    """Whether `authorization` may scrape: on the main port (`main_port`) the master key or the metrics token
    when a master key is set; elsewhere, or without a master key, the metrics token if one is set."""
    settings = gateway.settings
    accepted = [secret for secret in (settings.metrics_token, settings.master_key if main_port else None) if secret]
    if not accepted:
        return True
    given = (authorization or "").encode()
    # Every candidate is compared (no early exit), each in constant time.
    matches = [hmac.compare_digest(given, b"Bearer " + secret.get_secret_value().encode()) for secret in accepted]
    return any(matches)


def _unauthorized(main_port: bool, gateway: Gateway) -> GatewayError:
    needs = "the master key or the metrics token" if main_port and gateway.settings.master_key else "the metrics token"
    return GatewayError(
        401, f"Scraping /metrics needs {needs} (Authorization: Bearer ...).", "invalid_request_error", "invalid_api_key"
    )


def routes(gateway: Gateway) -> list[Route]:
    async def metrics(request: Request) -> Response:
        if not _authorized(gateway, request.headers.get("authorization"), main_port=True):
            return error_response(_unauthorized(True, gateway))
        return Response(await render(gateway), media_type=CONTENT_TYPE_LATEST)

    return [Route("/metrics", metrics, methods=["GET"])]


async def serve_metrics_port(gateway: Gateway, host: str, port: int) -> asyncio.base_events.Server:
    """Serve `GET /metrics` alone on `host:port` (close the returned server to stop)."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
            lines = head[:MAX_REQUEST_HEAD].decode("latin-1").split("\r\n")
            method, path, *_ = lines[0].split(" ") + ["", ""]
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
            if method != "GET" or path.split("?")[0] != "/metrics":
                status, body, kind = (
                    "404 Not Found",
                    b'{"error":{"message":"Only GET /metrics here.","type":"invalid_request_error","param":null,"code":"not_found"}}',
                    "application/json",
                )
            elif not _authorized(gateway, headers.get("authorization"), main_port=False):
                status, body, kind = "401 Unauthorized", _unauthorized(False, gateway).body(), "application/json"
            else:
                status, body, kind = "200 OK", await render(gateway), CONTENT_TYPE_LATEST
            writer.write(
                f"HTTP/1.1 {status}\r\ncontent-type: {kind}\r\ncontent-length: {len(body)}\r\nconnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        except Exception:
            log.exception("metrics port: scrape failed")
        finally:
            writer.close()

    return await asyncio.start_server(answer, host, port, reuse_port=True, limit=MAX_REQUEST_HEAD)
