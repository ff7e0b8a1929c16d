"""What both emulators share: per-app state, the /v1 request pipeline, control endpoints.

Every /v1 request goes through the same steps, in the order a real deployment shows them:
log it, pick its fault, wait at the gate if a test closed it, wait the latency, hang / drop / fail
on demand, check the key, refuse unparsable JSON, then hand it to the provider's handler. A provider's upload
routes (`Provider.upload_routes`, e.g. `POST /v1/files`) take multipart/form-data instead of JSON: the same
steps, with the form (fields as text, files as `Upload`) as the handler's body and no JSON parse.

`/_emulator/stats` counts the /v1 requests in flight (from the request's arrival to the last byte of
its answer, streams included), the most ever in flight at once and the requests since the last reset,
so a test can check that the gateway never sent a provider more than its concurrency limit;
`/_emulator/hold` closes a gate that keeps /v1 requests in flight (unanswered) until it is opened.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from gateway.emulators.batch_jobs import BATCH_ROUTES, BatchBook
from gateway.emulators.cache import PrefixCache
from gateway.emulators.faults import NO_FAULT, DropConnection, Fault, FaultQueue, FaultSyntaxError, parse_fault
from gateway.emulators.options import EmulatorOptions
from gateway.emulators.script import SCRIPT_ROUTES
from gateway.emulators.sse import Event, sleep_ms, sse_body

REQUEST_LOG_SIZE = 50
# Returned (not raised) from the ASGI callable: uvicorn answers a non-None return by
# closing the transport without writing anything, the only way to drop a connection
# before a response has started (an exception there would become a tidy 500).
CONNECTION_DROPPED = "emulator-fault:connection-dropped"


@dataclass
class Stream:
    events: list[Event]


Reply = dict | list | Response | Stream


@dataclass(frozen=True)
class Upload:
    """A file part of a multipart/form-data body (an upload route's `Call.body` maps field names to text or these)."""

    filename: str
    content: bytes
    content_type: str | None


@dataclass
class Call:
    """One /v1 request as a handler sees it."""

    request: Request
    body: Any
    fault: Fault
    emu: EmulatorState


Handler = Callable[[Call], Awaitable[Reply]]


class Provider(ABC):
    """The provider-specific half of an emulator: routes, error bodies, headers."""

    kind: str

    @abstractmethod
    def routes(self) -> list[tuple[str, str, Handler]]: ...  # (method, path, handler)

    def upload_routes(self) -> list[tuple[str, str, Handler]]:
        """Routes whose body is multipart/form-data (file uploads): their handler gets the form, never a JSON
        parse error."""
        return []

    @abstractmethod
    def auth_error(self, key_sent: bool) -> Response: ...

    @abstractmethod
    def status_error(self, status: int) -> Response: ...

    @abstractmethod
    def malformed_json(self, error: str) -> Response: ...

    @abstractmethod
    def not_found(self, path: str) -> Response: ...

    @abstractmethod
    def stream_error_event(self) -> dict: ...

    def response_headers(self) -> dict[str, str]:
        return {}

    def fault_error(self, status: int, error_type: str | None) -> tuple[Response, bool]:
        """The answer to a `status=CODE[,error=TYPE]` fault, and whether it is transient (then a 429 or 503
        carries Retry-After). A provider with several bodies for one status picks by `error_type`."""
        return self.status_error(status), True


@dataclass
class EmulatorState:
    """Everything mutable about one emulator; lives on app.state.emulator."""

    provider: Provider
    options: EmulatorOptions
    api_key: str
    default_fault: Fault
    requests: deque = field(default_factory=lambda: deque(maxlen=REQUEST_LOG_SIZE))
    faults: FaultQueue = field(default_factory=FaultQueue)
    cache: PrefixCache = field(default_factory=PrefixCache)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    loop: asyncio.AbstractEventLoop | None = None
    hanging: int = 0
    in_flight: int = 0  # /v1 requests arrived and not yet fully answered
    max_in_flight: int = 0  # the most at once since the last reset
    served: int = 0  # /v1 requests since the last reset
    gate: asyncio.Event = field(default_factory=asyncio.Event)  # set: open (requests pass); cleared by /hold
    held: int = 0  # requests waiting at the closed gate
    batches: BatchBook = field(init=False)  # files and batch jobs (batch_jobs.py), set from the options

    def __post_init__(self) -> None:
        self.gate.set()
        self.batches = BatchBook(self.options.batch_seconds, self.options.batch_hold)

    def arrived(self) -> None:
        self.in_flight += 1
        self.served += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def answered(self) -> None:
        self.in_flight -= 1

    def stats(self) -> dict[str, int | bool]:
        return {
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "requests": self.served,
            "held": self.held,
            "holding": not self.gate.is_set(),
        }

    def next_fault(self, header: str | None) -> Fault:
        """Header first, then the control queue, then the server-wide option."""
        if header:
            return parse_fault(header)
        queued = self.faults.pop()
        return queued if queued is not None else self.default_fault

    def request_stop(self) -> None:
        """Thread-safe: end hanging requests so the server can shut down."""
        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.stopping.set)
        else:
            self.stopping.set()


def _parse_body(raw: bytes) -> tuple[Any, str | None]:
    if not raw.strip():
        return None, None
    try:
        return orjson.loads(raw), None
    except orjson.JSONDecodeError as exc:
        return None, str(exc)


async def _wait_at_gate(emu: EmulatorState) -> None:
    """While a test holds the gate closed, requests wait here (in flight, unanswered); stopping ends the wait."""
    if emu.gate.is_set():
        return
    waiters = [asyncio.ensure_future(emu.gate.wait()), asyncio.ensure_future(emu.stopping.wait())]
    emu.held += 1
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        emu.held -= 1
        for waiter in waiters:
            waiter.cancel()


async def _hang(request: Request, emu: EmulatorState) -> None:
    """Never answer: wait until the client goes away or the server stops, then drop."""

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    waiters = [asyncio.ensure_future(disconnected()), asyncio.ensure_future(emu.stopping.wait())]
    emu.hanging += 1
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        emu.hanging -= 1
        for waiter in waiters:
            waiter.cancel()
    raise DropConnection()


def _render(reply: Reply, call: Call, headers: dict[str, str]) -> Response:
    if isinstance(reply, Response):
        reply.headers.update(headers)
        return reply
    if isinstance(reply, Stream):
        body = sse_body(
            reply.events, call.fault, call.emu.options, call.emu.provider.stream_error_event(), call.emu.stopping
        )
        return StreamingResponse(body, media_type="text/event-stream", headers={"cache-control": "no-cache", **headers})
    if call.fault.pad is not None and isinstance(reply, dict) and reply.get("choices"):
        message = reply["choices"][0].get("message")
        if isinstance(message, dict) and isinstance(message.get("content"), str):
            message["content"] += "y" * call.fault.pad
    payload = orjson.dumps(reply)
    if call.fault.malformed is not None:
        payload = payload[: len(payload) // 2]  # a 200 whose JSON body is cut in half
    return Response(payload, media_type="application/json", headers=headers)


async def _parse_form(request: Request) -> dict[str, str | Upload] | None:
    """A multipart/form-data (or urlencoded) body as field name -> text or Upload; None if it cannot be read."""
    try:
        form = await request.form()
    except (MultiPartException, ValueError):
        return None
    fields: dict[str, str | Upload] = {}
    try:
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                fields[name] = Upload(value.filename or "", await value.read(), value.content_type)
            else:
                fields[name] = value
    finally:
        await form.close()
    return fields


def _logged_form(fields: dict[str, str | Upload] | None) -> Any:
    """What the request log shows of a form: its text fields, and each file's name and size."""
    if fields is None:
        return None
    return {
        name: {"filename": value.filename, "bytes": len(value.content)} if isinstance(value, Upload) else value
        for name, value in fields.items()
    }


def _v1_route(method: str, path: str, handler: Handler, upload: bool = False) -> Route:
    async def endpoint(request: Request) -> Response:
        emu: EmulatorState = request.app.state.emulator
        body: Any
        if upload:
            body, json_error = await _parse_form(request), None
            logged = _logged_form(body)
        else:
            body, json_error = _parse_body(await request.body())
            logged = body
        emu.requests.append(
            {
                "method": request.method,
                "path": request.url.path,
                "headers": dict(request.headers.items()),
                "body": logged,
            }
        )
        try:
            fault = emu.next_fault(request.headers.get("x-emulator-fault"))
        except FaultSyntaxError as exc:
            return JSONResponse({"emulator_error": str(exc)}, status_code=400)
        await _wait_at_gate(emu)
        await sleep_ms(emu.options.latency_ms + fault.latency_ms)
        if fault.hang:
            await _hang(request, emu)
        if fault.cut is not None and not (isinstance(body, dict) and body.get("stream") is True):
            raise DropConnection()
        provider = emu.provider
        headers = provider.response_headers()
        call = Call(request, body, fault, emu)
        if fault.html:
            # What a misconfigured proxy or a captive portal answers, with status 200, stream or not.
            reply: Reply = HTMLResponse("<!DOCTYPE html><html><body><h1>Welcome</h1></body></html>")
        elif fault.status is not None:
            reply, transient = provider.fault_error(fault.status, fault.error_type)
            if transient and fault.status in (429, 503):
                headers["retry-after"] = f"{fault.retry_after:g}"
        elif request.headers.get("authorization") != f"Bearer {emu.api_key}":
            reply = provider.auth_error("authorization" in request.headers)
        elif json_error is not None:
            reply = provider.malformed_json(json_error)
        else:
            reply = await handler(call)
        return _render(reply, call, headers)

    return Route(path, endpoint, methods=[method])


async def _queue_fault(request: Request) -> Response:
    emu: EmulatorState = request.app.state.emulator
    body, _ = _parse_body(await request.body())
    if not isinstance(body, dict) or not isinstance(body.get("fault"), str):
        return JSONResponse({"emulator_error": 'body must be {"fault": "...", "count": N}'}, status_code=400)
    try:
        emu.faults.push(body["fault"], int(body.get("count", 1)))
    except (FaultSyntaxError, TypeError, ValueError) as exc:
        return JSONResponse({"emulator_error": str(exc)}, status_code=400)
    return JSONResponse({"queued": emu.faults.describe()})


async def _clear_faults(request: Request) -> Response:
    request.app.state.emulator.faults.clear()
    return JSONResponse({"queued": []})


async def _show_faults(request: Request) -> Response:
    emu: EmulatorState = request.app.state.emulator
    return JSONResponse({"queued": emu.faults.describe(), "hanging": emu.hanging})


async def _list_requests(request: Request) -> Response:
    return Response(orjson.dumps(list(request.app.state.emulator.requests)), media_type="application/json")


async def _clear_requests(request: Request) -> Response:
    request.app.state.emulator.requests.clear()
    return JSONResponse([])


async def _show_stats(request: Request) -> Response:
    return JSONResponse(request.app.state.emulator.stats())


async def _reset_stats(request: Request) -> Response:
    """The counts start again: requests from 0, the most in flight from what is in flight now."""
    emu: EmulatorState = request.app.state.emulator
    emu.served = 0
    emu.max_in_flight = emu.in_flight
    return JSONResponse(emu.stats())


async def _close_gate(request: Request) -> Response:
    emu: EmulatorState = request.app.state.emulator
    emu.gate.clear()
    return JSONResponse(emu.stats())


async def _open_gate(request: Request) -> Response:
    emu: EmulatorState = request.app.state.emulator
    emu.gate.set()
    return JSONResponse(emu.stats())


CONTROL_ROUTES = [
    Route("/_emulator/faults", _queue_fault, methods=["POST"]),
    Route("/_emulator/faults", _clear_faults, methods=["DELETE"]),
    Route("/_emulator/faults", _show_faults, methods=["GET"]),
    Route("/_emulator/requests", _list_requests, methods=["GET"]),
    Route("/_emulator/requests", _clear_requests, methods=["DELETE"]),
    Route("/_emulator/stats", _show_stats, methods=["GET"]),
    Route("/_emulator/stats", _reset_stats, methods=["DELETE"]),
    Route("/_emulator/hold", _close_gate, methods=["POST"]),
    Route("/_emulator/hold", _open_gate, methods=["DELETE"]),
    *SCRIPT_ROUTES,  # scripted replies (script.py)
    *BATCH_ROUTES,  # batch jobs: list, drive, configure (batch_jobs.py)
]


def _is_drop(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return all(_is_drop(e) for e in exc.exceptions)
    return isinstance(exc, DropConnection)


class EmulatorApp(Starlette):
    """A Starlette app that turns DropConnection into a real, silent disconnect."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Counted here, around the whole exchange: a streamed answer is still in flight after its endpoint returned.
        counted = scope["type"] == "http" and scope["path"].startswith("/v1/")
        emu: EmulatorState = self.state.emulator
        if counted:
            emu.arrived()
        try:
            await super().__call__(scope, receive, send)
        except BaseException as exc:
            if not _is_drop(exc):
                raise
            return CONNECTION_DROPPED  # type: ignore[return-value]  # see CONNECTION_DROPPED
        finally:
            if counted:
                emu.answered()


class _HideDrops(logging.Filter):
    """uvicorn logs an error for every deliberate drop; those are not errors here."""

    def filter(self, record: logging.LogRecord) -> bool:
        return CONNECTION_DROPPED not in (record.args or ())


def _quiet_uvicorn() -> None:
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _HideDrops) for f in logger.filters):
        logger.addFilter(_HideDrops())


def build_app(provider: Provider, options: EmulatorOptions) -> EmulatorApp:
    default_fault = parse_fault(options.fault) if options.fault else NO_FAULT  # bad syntax fails here, at start
    emu = EmulatorState(provider, options, options.key_for(provider.kind), default_fault)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        emu.loop = asyncio.get_running_loop()
        yield
        emu.stopping.set()

    async def not_found(request: Request, exc: Exception) -> Response:
        return provider.not_found(request.url.path)

    routes = [_v1_route(method, path, handler) for method, path, handler in provider.routes()]
    routes += [_v1_route(method, path, handler, upload=True) for method, path, handler in provider.upload_routes()]
    app = EmulatorApp(
        routes=routes + CONTROL_ROUTES, lifespan=lifespan, exception_handlers={404: not_found, 405: not_found}
    )
    app.state.emulator = emu
    _quiet_uvicorn()
    return app
