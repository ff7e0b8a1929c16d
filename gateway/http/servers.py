"""The gateway's HTTP protocol (uvicorn's httptools protocol with read deadlines), and `ThreadedServer`, which
runs an ASGI app under uvicorn on a background thread.

uvicorn closes a kept-alive connection after `timeout_keep_alive`, but only once a response was sent: a
connection that never sends a byte, or sends half a request head, or half a body, stays open for as long as the
client wants. `GatewayHttpProtocol` gives every connection a deadline in each phase: a new connection must send
its request head within `header_timeout_seconds`, a kept-alive one its next head within the same time from its
first byte (and its first byte within `keepalive_seconds`), and a request its whole body within
`body_timeout_seconds` of its head. A missed deadline closes the connection (with a 408 when the client had
started a request and nothing was answered yet). While the application works on a request there is no deadline:
a streamed answer may take minutes.

`ThreadedServer` is used by demo mode (the built-in emulators run beside the gateway) and by tests (emulators and
gateways are real servers on 127.0.0.1). Start-up is awaited on uvicorn's own `started` flag through a
threading.Event, never by sleeping. A gateway app (one built by `gateway.http.app.create_app`) is served with
`GatewayHttpProtocol`, as `gateway serve` does.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

log = logging.getLogger("gateway")


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    keepalive: float = 15.0
    header: float = 10.0
    body: float = 60.0
    max_connections: int | None = None


def _gateway_of(app: Any) -> Any:
    """The Gateway an ASGI `app` serves (through uvicorn's wrappers, which keep the wrapped app in `.app`), or
    None for another app. Read from the app itself, not from globals, so that every worker process and every
    test gateway uses its own."""
    for _ in range(8):
        gateway = getattr(getattr(app, "state", None), "gateway", None)
        if gateway is not None:
            return gateway
        app = getattr(app, "app", None)
        if app is None:
            break
    return None


def _limits_of(app: Any) -> ConnectionLimits:
    """The limits in the settings of the gateway `app` serves, or the defaults for another app."""
    gateway = _gateway_of(app)
    if gateway is None:
        return ConnectionLimits()
    s = gateway.settings
    return ConnectionLimits(s.keepalive_seconds, s.header_timeout_seconds, s.body_timeout_seconds, s.max_connections)


def is_gateway_app(app: Any) -> bool:
    return getattr(getattr(app, "state", None), "gateway", None) is not None


# The ASGI scope extension whose "protocol" offers `subscribe_lost`/`unsubscribe_lost` (the gateway's protocol).
CONNECTION_EXTENSION = "gateway.connection"


class GatewayHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with deadlines for the idle, request-head and request-body phases."""

    def __init__(self, config: uvicorn.Config, server_state: Any, app_state: dict[str, Any], _loop: Any = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        limits = _limits_of(config.loaded_app)
        # (uvicorn's own timer after a response, kept in step.) uvicorn annotates the attribute int, but only ever
        # hands it to loop.call_later, which takes float seconds.
        self.timeout_keep_alive = limits.keepalive  # type: ignore[assignment]
        if limits.max_connections is not None:
            self.limit_concurrency = limits.max_connections
        self.limits = limits
        self._deadline: asyncio.TimerHandle | None = None
        self._phase = "idle"  # idle | head | body | app
        self._head_started = False  # a byte of a request head arrived (then a timeout is answered with 408)
        # Called when the client's connection is lost: a request waiting on its provider (or streaming) learns
        # it at once, without a task of its own reading `receive` (see http/disconnect.py).
        self._on_lost: set[Callable[[], None]] = set()

    # -- deadlines

    def _arm(self, phase: str, seconds: float) -> None:
        self._disarm()
        self._phase = phase
        self._deadline = self.loop.call_later(seconds, self._expired)

    def _disarm(self, phase: str | None = None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        if phase is not None:
            self._phase = phase

    def _expired(self) -> None:
        self._deadline = None
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        cycle: RequestResponseCycle | None = self.cycle
        idle_cycle = cycle is None or cycle.response_complete
        message = None
        if self._phase == "head" and self._head_started and idle_cycle:
            message = f"The request head was not received within {self.limits.header:g} s."
        elif self._phase == "body" and cycle is not None and not cycle.response_started:
            message = f"The request body was not received within {self.limits.body:g} s."
            cycle.disconnected = True  # the application sees http.disconnect and writes nothing more
            cycle.message_event.set()
        log.debug("closing a connection from %s: %s deadline passed", self.client, self._phase)
        if message is not None:
            body = orjson.dumps(
                {
                    "error": {
                        "message": message,
                        "type": "invalid_request_error",
                        "param": None,
                        "code": "request_timeout",
                    }
                }
            )
            transport.write(
                b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\ncontent-length: "
                + str(len(body)).encode()
                + b"\r\nconnection: close\r\n\r\n"
                + body
            )
        transport.close()

    # -- uvicorn's callbacks, each moving the connection to its next phase

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm("head", self.limits.header)  # a new connection must send its first request head in time

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)
        callbacks, self._on_lost = self._on_lost, set()
        for callback in callbacks:
            callback()

    def subscribe_lost(self, callback: Callable[[], None]) -> None:
        """Call `callback` when the connection is lost (at once if it is already)."""
        if self.transport is None or self.transport.is_closing():
            self.loop.call_soon(callback)
        else:
            self._on_lost.add(callback)

    def unsubscribe_lost(self, callback: Callable[[], None]) -> None:
        self._on_lost.discard(callback)

    def shutdown(self) -> None:
        """uvicorn's graceful shutdown began (SIGTERM) and reaches each open connection: the gateway drains."""
        gateway = _gateway_of(self.app)
        if gateway is not None:
            gateway.begin_drain()
        super().shutdown()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_started = True
        if self._phase != "head":  # a head on a kept-alive connection (a new connection's deadline runs on)
            self._arm("head", self.limits.header)

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._head_started = False
        if self._phase == "head":  # a pipelined request waits for the one before it: no deadline while queued
            self._disarm("app")

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        cycle.scope.setdefault("extensions", {})[CONNECTION_EXTENSION] = {"protocol": self}
        super()._start_asgi_task(cycle, app)
        if cycle is self.cycle and cycle.more_body:
            self._arm("body", self.limits.body)  # the whole body must follow the head in time
        else:
            self._disarm("app")

    def on_message_complete(self) -> None:
        super().on_message_complete()
        if self._phase == "body":
            self._disarm("app")  # the application has the request; it may take as long as it needs

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.timeout_keep_alive_task is not None:  # uvicorn armed its idle timer: nothing else is pending
            self._arm("idle", self.limits.keepalive)


def server_options(settings: Any) -> dict[str, Any]:
    """uvicorn options for a gateway with these settings (`gateway serve` and test gateways)."""
    return {
        "http": GatewayHttpProtocol,
        "ws": "none",  # no WebSocket endpoints: an upgrade request is answered as plain HTTP
        "timeout_keep_alive": settings.keepalive_seconds,
        "limit_concurrency": settings.max_connections,
    }


class ThreadedServer:
    """A uvicorn server on its own thread and event loop; a context manager."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, **uvicorn_options: Any) -> None:
        self.app = app
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self.host = host
        self.port: int = self._sock.getsockname()[1]
        options: dict[str, Any] = {"log_level": "warning", "lifespan": "on", "access_log": False}
        if is_gateway_app(app):
            options.update(server_options(app.state.gateway.settings))
        options.update(uvicorn_options)
        self._server = uvicorn.Server(uvicorn.Config(app, **options))
        self._thread = threading.Thread(target=self._run, name=f"uvicorn:{self.port}", daemon=True)
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _run(self) -> None:
        loop = self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # reported to start() instead of dying silently
            self._error = exc
        finally:
            self._ready.set()
            loop.close()

    async def _serve(self) -> None:
        config = self._server.config
        if not config.loaded:
            config.load()
        self._server.lifespan = config.lifespan_class(config)
        watcher = asyncio.ensure_future(self._signal_when_started())
        try:
            await self._server.serve(sockets=[self._sock])
        finally:
            watcher.cancel()

    async def _signal_when_started(self) -> None:
        while not self._server.started:
            await asyncio.sleep(0.005)  # polls uvicorn's flag inside the server's own loop
        self._ready.set()

    def start(self, timeout: float = 30.0) -> ThreadedServer:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError(f"server on port {self.port} did not start within {timeout} s")
        if self._error is not None or not self._server.started:
            raise RuntimeError(f"server on port {self.port} failed to start: {self._error!r}")
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout)
        self._sock.close()

    def __enter__(self) -> ThreadedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
