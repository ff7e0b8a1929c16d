"""Run an ASGI app under uvicorn on a background thread.

Used by demo mode (the built-in emulators run beside the gateway) and by tests
(emulators and gateways are real servers on 127.0.0.1). Start-up is awaited on
uvicorn's own `started` flag through a threading.Event, never by sleeping.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Any

import uvicorn


class ThreadedServer:
    """A uvicorn server on its own thread and event loop; a context manager."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, **uvicorn_options: Any) -> None:
        self.app = app
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self.host = host
        self.port: int = self._sock.getsockname()[1]
        options = {"log_level": "warning", "lifespan": "on", "access_log": False}
        options.update(uvicorn_options)
        self._server = uvicorn.Server(uvicorn.Config(app, **options))
        self._thread = threading.Thread(target=self._run, name=f"uvicorn:{self.port}", daemon=True)
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
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

    def start(self, timeout: float = 30.0) -> "ThreadedServer":
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

    def __enter__(self) -> "ThreadedServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
