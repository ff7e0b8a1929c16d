"""Scripted replies: make an emulator answer as a model would, for tests that drive real clients.

A test queues replies on the control endpoint, then runs a real tool (Aider, Continue, an SDK...)
against the gateway. When a chat request reaches the emulator, the first queued reply that fits it
is taken off the queue and sent in the provider's own wire format (streaming or not, with its usage,
tool-call ids and quirks), instead of the generated words. With nothing queued, or nothing that fits,
the emulator answers as it always does.

    POST   /_emulator/script   {"replies": [REPLY, ...]}   (or a bare list) appends; answers the queue
    GET    /_emulator/script   the queue, and the replies already used
    DELETE /_emulator/script   empties both

REPLY is an object:
    content     the assistant's text (may be "" when it calls tools)
    tool_calls  [{"name": "...", "arguments": {...} or "json text"}]: one call (the emulators answer
                one call per choice, as the real models mostly do)
    match       optional: the reply fits only a request whose last user message contains this text
                (case-insensitive); without it the reply fits any chat request
    model       optional: the reply fits only a request for this upstream model
    after_tool  optional: true fits only a request whose last message is a tool result, false only one
                whose last message is not (an agent's first turn); absent: either
    tools       optional: true fits only a request that offers tools, false only one that does not (an agent's
                side requests, such as a session title, usually offer none)
    finish_reason  optional: default "stop", or "tool_calls" with tool calls
Replies are taken first-in first-out among those that fit.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.emulators.text import count_tokens

MAX_SCRIPTED = 1000
USED_LOG_SIZE = 100


class ScriptError(ValueError):
    pass


@dataclass(frozen=True)
class ScriptedReply:
    content: str
    tool_name: str | None = None
    tool_arguments: str | None = None
    match: str | None = None
    model: str | None = None
    after_tool: bool | None = None
    finish_reason: str | None = None
    tools: bool | None = None

    @staticmethod
    def parse(item: Any) -> ScriptedReply:
        if isinstance(item, str):
            return ScriptedReply(item)
        if not isinstance(item, dict):
            raise ScriptError("each reply must be an object (or a string: the assistant's text)")
        unknown = set(item) - {"content", "tool_calls", "match", "model", "after_tool", "finish_reason", "tools"}
        if unknown:
            raise ScriptError(f"unknown reply field(s): {', '.join(sorted(unknown))}")
        content = item.get("content") or ""
        if not isinstance(content, str):
            raise ScriptError("'content' must be a string")
        calls = item.get("tool_calls") or []
        if not isinstance(calls, list) or len(calls) > 1:
            raise ScriptError("'tool_calls' must be a list of at most one call")
        name = arguments = None
        if calls:
            call = calls[0]
            if not isinstance(call, dict) or not isinstance(call.get("name"), str) or not call["name"]:
                raise ScriptError("a tool call needs a 'name'")
            raw = call.get("arguments", {})
            arguments = raw if isinstance(raw, str) else orjson.dumps(raw).decode()
            name = call["name"]
        for key in ("match", "model", "finish_reason"):
            if item.get(key) is not None and not isinstance(item[key], str):
                raise ScriptError(f"'{key}' must be a string")
        for key in ("after_tool", "tools"):
            if item.get(key) is not None and not isinstance(item[key], bool):
                raise ScriptError(f"'{key}' must be true or false")
        return ScriptedReply(
            content,
            name,
            arguments,
            item.get("match"),
            item.get("model"),
            item.get("after_tool"),
            item.get("finish_reason"),
            item.get("tools"),
        )

    def fits(self, messages: list, model: str, tools: Any = None) -> bool:
        if self.model is not None and self.model != model:
            return False
        if self.tools is not None and bool(tools) != self.tools:
            return False
        last = messages[-1] if messages and isinstance(messages[-1], dict) else {}
        if self.after_tool is not None and (last.get("role") == "tool") != self.after_tool:
            return False
        if self.match is None:
            return True
        return self.match.casefold() in last_user_text(messages).casefold()

    @property
    def tokens(self) -> int:
        return count_tokens(self.content) + count_tokens(self.tool_name) + count_tokens(self.tool_arguments)

    def describe(self) -> dict[str, Any]:
        described: dict[str, Any] = {"content": self.content}
        if self.tool_name:
            described["tool_calls"] = [{"name": self.tool_name, "arguments": self.tool_arguments}]
        for key in ("match", "model", "after_tool", "finish_reason", "tools"):
            if getattr(self, key) is not None:
                described[key] = getattr(self, key)
        return described


def last_user_text(messages: list) -> str:
    for message in reversed(messages or []):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return "\n".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
            return ""
    return ""


class ScriptQueue:
    """Replies queued by the control endpoint; thread-safe (tests push from their own thread)."""

    def __init__(self) -> None:
        self._items: deque[ScriptedReply] = deque()
        self._used: deque[dict] = deque(maxlen=USED_LOG_SIZE)
        self._lock = threading.Lock()

    def push(self, replies: list[ScriptedReply]) -> None:
        with self._lock:
            if len(self._items) + len(replies) > MAX_SCRIPTED:
                raise ScriptError(f"at most {MAX_SCRIPTED} replies may be queued")
            self._items.extend(replies)

    def take(self, messages: list, model: str, tools: Any = None) -> ScriptedReply | None:
        """The first queued reply that fits this request, removed from the queue; None if none fits."""
        if not self._items:  # the common case, without the lock
            return None
        with self._lock:
            for index, reply in enumerate(self._items):
                if reply.fits(messages, model, tools):
                    del self._items[index]
                    self._used.append({**reply.describe(), "used_for_model": model})
                    return reply
        return None

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._used.clear()

    def describe(self) -> dict[str, list]:
        with self._lock:
            return {"queued": [r.describe() for r in self._items], "used": list(self._used)}


def script_of(emu: Any) -> ScriptQueue:
    """The emulator's script queue (created on first use, so EmulatorState needs no new field)."""
    queue = getattr(emu, "_script_queue", None)
    if queue is None:
        queue = ScriptQueue()
        emu._script_queue = queue
    return queue


async def _push(request: Request) -> Response:
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError as exc:
        return JSONResponse({"emulator_error": f"invalid JSON: {exc}"}, status_code=400)
    items = body.get("replies") if isinstance(body, dict) else body
    if not isinstance(items, list):
        return JSONResponse({"emulator_error": 'body must be {"replies": [...]} or a list of replies'}, status_code=400)
    try:
        replies = [ScriptedReply.parse(item) for item in items]
        queue = script_of(request.app.state.emulator)
        queue.push(replies)
    except ScriptError as exc:
        return JSONResponse({"emulator_error": str(exc)}, status_code=400)
    return JSONResponse(queue.describe())


async def _show(request: Request) -> Response:
    return JSONResponse(script_of(request.app.state.emulator).describe())


async def _clear(request: Request) -> Response:
    script_of(request.app.state.emulator).clear()
    return JSONResponse({"queued": [], "used": []})


SCRIPT_ROUTES = [
    Route("/_emulator/script", _push, methods=["POST"]),
    Route("/_emulator/script", _show, methods=["GET"]),
    Route("/_emulator/script", _clear, methods=["DELETE"]),
]
