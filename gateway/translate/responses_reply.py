"""The canonical OpenAI chat answer -> an OpenAI Responses answer: the complete `response` object, or the stream of
Responses events built from the chat stream's chunks.

Sources: the `openai` Python SDK's types (`openai/types/responses/response.py`, `response_stream_event.py` and the
event types it lists, `response_usage.py`) and its stream helper (`openai/lib/streaming/responses/_responses.py`:
an item's `output_item.added` comes before its deltas, and `added` and `done` carry the same id); what Codex reads
(openai/codex `codex-rs/codex-api/src/sse/responses.rs`: `response.created`, `response.output_item.added`/`done`,
`response.output_text.delta`, `response.reasoning_summary_text.delta` with `summary_index`,
`response.reasoning_summary_part.added`, `response.completed` with `id` and `usage`, `response.failed` with
`response.error` {code, message}); and `codex-rs/core/src/tools/router.rs` for a call's `name` plus `namespace`.

Reasoning (`reasoning_content` in the chat answer, Kimi's and Mistral's thinking) becomes a reasoning item whose
summary is that text; with `include: ["reasoning.encrypted_content"]` the text is also put in `encrypted_content`
(translate.responses.encode_reasoning) so that a client replaying it restores the provider's reasoning exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.translate.common import json_object
from gateway.translate.responses_items import encode_reasoning
from gateway.translate.responses_tools import ToolNames
from gateway.types import Json

# Chat finish reasons that end a response early (`incomplete_details.reason` in Response).
INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


@dataclass(slots=True)
class ReplyContext:
    """What one request's answer is rendered with."""

    response_id: str  # "resp_..."
    created_at: int
    model: str  # the model the client asked for (`auto` stays `auto`; the served one is in x-gateway-model)
    names: ToolNames
    echo: Json
    encrypted_reasoning: bool

    def item_id(self, prefix: str, index: int) -> str:
        return f"{prefix}_{self.response_id.removeprefix('resp_')}{index}"

    def response(self, status: str, output: list[Json], usage: Json | None, **extra: Any) -> Json:
        # `store` and `previous_response_id` come with `echo` (the door says whether it keeps the response).
        """The `response` object (every field the SDK's `Response` requires, and the request's settings)."""
        body: Json = {
            "id": self.response_id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "model": self.model,
            "output": output,
            "error": None,
            "incomplete_details": None,
            "usage": usage,
            "store": False,
            **self.echo,
        }
        body.update(extra)
        return body


def usage_of(usage: Any) -> Json | None:
    """Chat usage -> Responses usage."""
    if not isinstance(usage, dict):
        return None
    prompt = _int(usage.get("prompt_tokens"))
    completion = _int(usage.get("completion_tokens"))
    prompt_details = usage.get("prompt_tokens_details")
    completion_details = usage.get("completion_tokens_details")
    cached = _int(prompt_details.get("cached_tokens")) if isinstance(prompt_details, dict) else 0
    reasoning = _int(completion_details.get("reasoning_tokens")) if isinstance(completion_details, dict) else 0
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": _int(usage.get("total_tokens")) or prompt + completion,
    }


def _dict(value: Any) -> Json:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _status(finish: Any) -> tuple[str, Json | None]:
    reason = INCOMPLETE.get(finish) if isinstance(finish, str) else None
    return ("incomplete", {"reason": reason}) if reason else ("completed", None)


def reasoning_item(context: ReplyContext, index: int, text: str, status: str = "completed") -> Json:
    item: Json = {
        "id": context.item_id("rs", index),
        "type": "reasoning",
        "summary": [{"type": "summary_text", "text": text}] if text else [],
        "status": status,
    }
    if context.encrypted_reasoning:
        item["encrypted_content"] = encode_reasoning(text)
    return item


def message_item(context: ReplyContext, index: int, text: str, status: str = "completed") -> Json:
    return {
        "id": context.item_id("msg", index),
        "type": "message",
        "role": "assistant",
        "status": status,
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
    }


def custom_input(arguments: str) -> str:
    """A custom tool's input from the arguments of the function it was sent as (`{"input": "..."}`); arguments
    that are not that shape are given as they are."""
    parsed = json_object(arguments)
    text = parsed.get("input") if parsed is not None else None
    return text if isinstance(text, str) else arguments


def call_item(
    context: ReplyContext, index: int, call_id: str, chat_name: str, arguments: str, status: str = "completed"
) -> Json:
    """A chat tool call -> a `function_call` item, or a `custom_tool_call` item for a custom tool."""
    namespace, name = context.names.from_chat(chat_name)
    item: Json
    if chat_name in context.names.custom:
        text = custom_input(arguments) if status == "completed" else ""
        item = {
            "id": context.item_id("ctc", index),
            "type": "custom_tool_call",
            "call_id": call_id,
            "name": name,
            "input": text,
            "status": status,
        }
    else:
        item = {
            "id": context.item_id("fc", index),
            "type": "function_call",
            "call_id": call_id,
            "name": name,
            "arguments": arguments,
            "status": status,
        }
    if namespace is not None:
        item["namespace"] = namespace
    return item


def response_from_chat(chat: Json, context: ReplyContext) -> Json:
    """A complete chat completion -> the `response` object."""
    choices = chat.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    message = _dict(choice.get("message"))
    status, details = _status(choice.get("finish_reason"))
    item_status = "incomplete" if status == "incomplete" else "completed"
    output: list[Json] = []
    reasoning = message.get("reasoning_content")
    if isinstance(reasoning, str) and reasoning:
        output.append(reasoning_item(context, len(output), reasoning))
    content = message.get("content")
    calls = [c for c in _list(message.get("tool_calls")) if isinstance(c, dict)]
    if isinstance(content, str) and (content or not calls):
        output.append(message_item(context, len(output), content, item_status))
    for position, call in enumerate(calls):
        function = _dict(call.get("function"))
        call_id = _str(call.get("id")) or context.item_id("call", position)
        output.append(
            call_item(
                context, len(output), call_id, str(function.get("name") or ""), str(function.get("arguments") or "")
            )
        )
    return context.response(
        status, output, usage_of(chat.get("usage")), incomplete_details=details, completed_at=context.created_at
    )


def event(kind: str, sequence: int, **fields: Any) -> bytes:
    """One server-sent event as OpenAI sends them: `event:` names the type, `data:` repeats it."""
    return (
        b"event: "
        + kind.encode()
        + b"\ndata: "
        + orjson.dumps({"type": kind, "sequence_number": sequence, **fields})
        + b"\n\n"
    )


@dataclass(slots=True)
class _Call:
    output_index: int
    call_id: str
    name: str
    parts: list[str] = field(default_factory=list)  # the argument fragments sent so far (joined once, at the end)
    pending: str = ""  # argument fragments that came before the call's name (sent once it is known)
    opened: bool = False
    done: bool = False


@dataclass(slots=True)
class ResponseStream:
    """The chat stream's chunks -> Responses events, item by item. One per request (it holds the stream's state).

    Items open in the order their first delta arrives: reasoning, text, then each tool call (whole in one delta, as
    Mistral sends them, or in pieces: id and name first, then argument fragments, by `index`). A new kind of item
    closes the open one; tool calls stay open until the stream ends, as their fragments may interleave."""

    context: ReplyContext
    sequence: int = 0
    started: bool = False
    finished: bool = False
    output: list[Json | None] = field(default_factory=list)  # done items by output_index (None: still open)
    open_kind: str | None = None  # "reasoning" or "message"
    # The open item's text as it came, joined once when it closes (a `+=` on an attribute copies the whole text at
    # every delta: quadratic in the answer's length), and its id (made once, not per delta).
    open_parts: list[str] = field(default_factory=list)
    open_id: str = ""
    calls: dict[int, _Call] = field(default_factory=dict)
    finish_reason: str | None = None
    usage: Json | None = None
    final: Json | None = None  # the response object of response.completed / response.incomplete
    cost: Json | None = None  # the pipeline's `x_gateway` (the settled cost), passed on in the final response

    def _event(self, kind: str, **fields: Any) -> bytes:
        data = event(kind, self.sequence, **fields)
        self.sequence += 1
        return data

    def _start(self) -> bytes:
        if self.started:
            return b""
        self.started = True
        shell = self.context.response("in_progress", [], None)
        return self._event("response.created", response=shell) + self._event("response.in_progress", response=shell)

    def chunk(self, chunk: Json) -> bytes:
        if self.finished:
            return b""
        out = [self._start()]
        if isinstance(chunk.get("usage"), dict):
            self.usage = usage_of(chunk["usage"])
        if isinstance(chunk.get("x_gateway"), dict):
            self.cost = chunk["x_gateway"]
        choices = chunk.get("choices")
        choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else None
        if choice is None:
            return b"".join(out)
        delta = _dict(choice.get("delta"))
        reasoning = delta.get("reasoning_content")
        if isinstance(reasoning, str) and reasoning:
            out.append(self._text("reasoning", reasoning))
        content = delta.get("content")
        if isinstance(content, str) and content:
            out.append(self._text("message", content))
        for call in _list(delta.get("tool_calls")):
            if isinstance(call, dict):
                out.append(self._call(call))
        if isinstance(choice.get("finish_reason"), str):
            self.finish_reason = choice["finish_reason"]
        return b"".join(out)

    def _text(self, kind: str, text: str) -> bytes:
        out = []
        if self.open_kind != kind:
            out.append(self._close_text())
            out.append(self._open_text(kind))
        index = len(self.output) - 1
        self.open_parts.append(text)
        if kind == "reasoning":
            out.append(
                self._event(
                    "response.reasoning_summary_text.delta",
                    item_id=self.open_id,
                    output_index=index,
                    summary_index=0,
                    delta=text,
                )
            )
        else:
            out.append(
                self._event(
                    "response.output_text.delta",
                    item_id=self.open_id,
                    output_index=index,
                    content_index=0,
                    delta=text,
                    logprobs=[],
                )
            )
        return b"".join(out)

    def _open_text(self, kind: str) -> bytes:
        index = len(self.output)
        self.output.append(None)
        self.open_kind, self.open_parts = kind, []
        self.open_id = self.context.item_id("rs" if kind == "reasoning" else "msg", index)
        if kind == "reasoning":
            item = {
                "id": self.open_id,
                "type": "reasoning",
                "summary": [],
                "status": "in_progress",
            }
            return self._event("response.output_item.added", output_index=index, item=item) + self._event(
                "response.reasoning_summary_part.added",
                item_id=item["id"],
                output_index=index,
                summary_index=0,
                part={"type": "summary_text", "text": ""},
            )
        item = {
            "id": self.open_id,
            "type": "message",
            "role": "assistant",
            "status": "in_progress",
            "content": [],
        }
        return self._event("response.output_item.added", output_index=index, item=item) + self._event(
            "response.content_part.added",
            item_id=item["id"],
            output_index=index,
            content_index=0,
            part={"type": "output_text", "text": "", "annotations": [], "logprobs": []},
        )

    def _close_text(self, status: str = "completed") -> bytes:
        kind = self.open_kind
        if kind is None:
            return b""
        text = "".join(self.open_parts)
        self.open_kind, self.open_parts = None, []
        index = len(self.output) - 1
        if kind == "reasoning":
            item = reasoning_item(self.context, index, text)
            self.output[index] = item
            part = {"type": "summary_text", "text": text}
            return (
                self._event(
                    "response.reasoning_summary_text.done",
                    item_id=item["id"],
                    output_index=index,
                    summary_index=0,
                    text=text,
                )
                + self._event(
                    "response.reasoning_summary_part.done",
                    item_id=item["id"],
                    output_index=index,
                    summary_index=0,
                    part=part,
                )
                + self._event("response.output_item.done", output_index=index, item=item)
            )
        item = message_item(self.context, index, text, status)
        self.output[index] = item
        return (
            self._event(
                "response.output_text.done",
                item_id=item["id"],
                output_index=index,
                content_index=0,
                text=text,
                logprobs=[],
            )
            + self._event(
                "response.content_part.done",
                item_id=item["id"],
                output_index=index,
                content_index=0,
                part=item["content"][0],
            )
            + self._event("response.output_item.done", output_index=index, item=item)
        )

    def _call(self, piece: Json) -> bytes:
        position = piece.get("index")
        if not isinstance(position, int) or isinstance(position, bool):
            position = len(self.calls)
        function = _dict(piece.get("function"))
        fragment, name = _str(function.get("arguments")), _str(function.get("name"))
        call = self.calls.get(position)
        out = []
        if call is None:
            out.append(self._close_text())
            index = len(self.output)
            self.output.append(None)
            call = _Call(index, _str(piece.get("id")) or self.context.item_id("call", index), name)
            self.calls[position] = call
        elif name and not call.opened:
            call.name += name
        if not call.opened:
            if not call.name:  # fragments before the name: kept until the name arrives
                call.pending += fragment
                return b"".join(out)
            call.opened = True
            item = call_item(self.context, call.output_index, call.call_id, call.name, "", "in_progress")
            out.append(self._event("response.output_item.added", output_index=call.output_index, item=item))
            fragment, call.pending = call.pending + fragment, ""
        if fragment:
            call.parts.append(fragment)
            if call.name in self.context.names.custom:
                return b"".join(out)  # a custom tool's input is sent whole when the call ends (it is inside JSON)
            out.append(
                self._event(
                    "response.function_call_arguments.delta",
                    item_id=self.context.item_id("fc", call.output_index),
                    output_index=call.output_index,
                    delta=fragment,
                )
            )
        return b"".join(out)

    def _close_calls(self) -> bytes:
        out = []
        for call in self.calls.values():
            if call.done:
                continue
            call.done = True
            if not call.opened:  # a call that never got a name: nothing a client could run
                call.opened = True
                item = call_item(self.context, call.output_index, call.call_id, call.name, "", "in_progress")
                out.append(self._event("response.output_item.added", output_index=call.output_index, item=item))
            item = call_item(
                self.context, call.output_index, call.call_id, call.name, "".join(call.parts) + call.pending
            )
            self.output[call.output_index] = item
            if item["type"] == "custom_tool_call":
                where = {"item_id": item["id"], "output_index": call.output_index}
                out.append(self._event("response.custom_tool_call_input.delta", **where, delta=item["input"]))
                out.append(self._event("response.custom_tool_call_input.done", **where, input=item["input"]))
            else:
                out.append(
                    self._event(
                        "response.function_call_arguments.done",
                        item_id=item["id"],
                        output_index=call.output_index,
                        name=item["name"],
                        arguments=item["arguments"],
                    )
                )
            out.append(self._event("response.output_item.done", output_index=call.output_index, item=item))
        return b"".join(out)

    def end(self) -> bytes:
        """[DONE]: close every open item, then `response.completed` (or `response.incomplete`) with the usage."""
        if self.finished:
            return b""
        status, details = _status(self.finish_reason)
        out = [self._start(), self._close_text("incomplete" if status == "incomplete" else "completed")]
        out.append(self._close_calls())
        self.finished = True
        output = [item for item in self.output if item is not None]
        extra: Json = {"x_gateway": self.cost} if self.cost is not None else {}
        self.final = final = self.context.response(
            status, output, self.usage, incomplete_details=details, completed_at=self.context.created_at, **extra
        )
        out.append(
            self._event("response.completed" if status == "completed" else "response.incomplete", response=final)
        )
        return b"".join(out)

    def error(self, error: Json) -> bytes:
        """The stream failed: `response.failed` with the error (what was done so far stays in `output`).

        It changes nothing in the stream's state: nothing follows an error event (a real one, or the farewell
        the door renders when the gateway's drain time ends, from the stream's state at that moment)."""
        if self.finished:
            return b""
        code = error.get("code") or error.get("type") or "server_error"
        message = error.get("message") if isinstance(error.get("message"), str) else "The stream failed."
        output = [item for item in self.output if item is not None]
        failed = self.context.response("failed", output, self.usage, error={"code": str(code), "message": message})
        sequence = self.sequence
        out = []
        if not self.started:
            shell = self.context.response("in_progress", [], None)
            out.append(event("response.created", sequence, response=shell))
            out.append(event("response.in_progress", sequence + 1, response=shell))
            sequence += 2
        out.append(event("response.failed", sequence, response=failed))
        return b"".join(out)
