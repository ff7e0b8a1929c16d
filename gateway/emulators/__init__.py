"""Faithful local emulators of the Mistral and Moonshot (Kimi) APIs.

Real HTTP servers used by demo mode, by the test suite and by `gateway emulate`.
Everything mutable lives on the app (app.state.emulator), so one process can run
many emulators. Control endpoints under /_emulator/ queue faults and show what the
emulator received; see app.py and faults.py. Each also serves its provider's Files and Batch APIs, whose jobs
progress by time or by the /_emulator/batches control endpoints; see batch_jobs.py.
"""

from __future__ import annotations

import uvicorn
from starlette.applications import Starlette

from gateway.emulators.app import EmulatorApp, EmulatorState, build_app
from gateway.emulators.mistral_batch import MistralWithBatches
from gateway.emulators.moonshot_batch import MoonshotWithBatches
from gateway.emulators.options import KINDS, EmulatorOptions
from gateway.http.servers import ThreadedServer

__all__ = ["KINDS", "EmulatorOptions", "EmulatorServer", "create_app", "serve", "start_emulator"]

# Hanging requests are ended on stop; this only bounds a shutdown that something else delays.
GRACEFUL_SHUTDOWN_S = 3


def _build(kind: str, options: EmulatorOptions | None) -> EmulatorApp:
    # Each provider's interactive API with its Files and Batch APIs (mistral_batch.py, moonshot_batch.py).
    providers = {"mistral": MistralWithBatches, "moonshot": MoonshotWithBatches}
    if kind not in providers:
        raise ValueError(f"unknown emulator kind {kind!r}; expected one of {', '.join(KINDS)}")
    return build_app(providers[kind](), options or EmulatorOptions())


def create_app(kind: str, options: EmulatorOptions | None = None) -> Starlette:
    """A fresh emulator app of `kind` ("mistral" or "moonshot"); its state is app.state.emulator."""
    return _build(kind, options)


class EmulatorServer(ThreadedServer):
    """A ThreadedServer that also ends hanging requests when it stops."""

    def __init__(self, app: EmulatorApp, host: str, port: int) -> None:
        super().__init__(app, host, port, timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S)
        self.app = app
        self._running = False

    @property
    def state(self) -> EmulatorState:
        return self.app.state.emulator

    @property
    def base_url(self) -> str:
        """What a client uses as the provider base URL."""
        return self.url + "/v1"

    @property
    def api_key(self) -> str:
        return self.state.api_key

    def start(self, timeout: float = 30.0) -> EmulatorServer:
        # start_emulator() returns a running server; `with start_emulator(...)` must not start it twice.
        if not self._running:
            super().start(timeout)
            self._running = True
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self.state.request_stop()
        super().stop(timeout)
        self._running = False


def start_emulator(
    kind: str, options: EmulatorOptions | None = None, host: str = "127.0.0.1", port: int = 0
) -> EmulatorServer:
    """Start an emulator on a background thread; returns once it accepts connections.

    The provider base URL is `server.url + "/v1"` (also `server.base_url`); `server.api_key`
    is the key it expects. Usable as a context manager; stop() ends hanging requests too.
    """
    return EmulatorServer(_build(kind, options), host, port).start()


def serve(kind: str, options: EmulatorOptions | None = None, host: str = "127.0.0.1", port: int = 8001) -> None:
    """Run an emulator in the foreground until interrupted (for `gateway emulate`)."""
    uvicorn.run(
        create_app(kind, options),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
    )
