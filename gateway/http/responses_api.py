"""`POST /v1/responses`: OpenAI's Responses API (what Codex CLI speaks), as a thin door into the one pipeline.

The body is translated into the canonical chat request (gateway/translate/responses.py), validated as every chat
request is, and served by the pipeline; the answer, or each event of its stream, is rendered back into the
Responses format (gateway/translate/responses_reply.py). Errors before a stream keep OpenAI's shape (the guard's
default); a failure inside a stream is a `response.failed` event.

`previous_response_id`: a response asked without `store: false` is kept in a bounded store of recent responses, per
team, in this process's memory (gateway/http/response_store.py: lost on restart, not shared between workers or
nodes); a follow-up naming it gets its turns put before its own input. One not found (another team's, evicted, or
kept by another process) is a 404 that says to send the whole conversation. Codex sends `store: false` and replays
the whole conversation itself. GET/DELETE /v1/responses/{id}, /v1/responses/{id}/input_items,
/v1/responses/input_tokens and /v1/responses/compact are not served (404).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from starlette.requests import Request
from starlette.routing import Route as HttpRoute

from gateway.auth.principal import Principal
from gateway.errors import GatewayError, invalid_request
from gateway.http.doors import Renderer, translated_door
from gateway.http.guard import Guard
from gateway.http.response_store import ResponseStore
from gateway.pipeline.request import InferenceRequest
from gateway.pipeline.validation import check_chat
from gateway.translate.responses import translate_request
from gateway.translate.responses_reply import ReplyContext, ResponseStream, response_from_chat
from gateway.translate.responses_tools import dropped_header
from gateway.types import Json

PATH = "/v1/responses"


@dataclass(frozen=True, slots=True)
class Keep:
    """Where a response is kept once answered: the store, the team, and the conversation it ends."""

    store: ResponseStore
    team: str
    conversation: list[Json]

    def save(self, response: Json) -> None:
        if response.get("status") in ("completed", "incomplete"):
            self.store.put(self.team, response["id"], [*self.conversation, *response["output"]])


class ResponsesRenderer:
    """One request's answer as a Responses `response` object or event stream (`doors.Renderer`)."""

    def __init__(self, context: ReplyContext, dropped: list[str], keep: Keep | None = None) -> None:
        self.context, self.keep = context, keep
        self.stream = ResponseStream(context)
        self.headers: dict[str, str] = dict(dropped_header(dropped))

    def reply(self, chat: Json) -> Json:
        response = response_from_chat(chat, self.context)
        if self.keep is not None:
            self.keep.save(response)
        return response

    def chunk(self, chunk: Json) -> bytes:
        return self.stream.chunk(chunk)

    def end(self) -> bytes:
        data = self.stream.end()
        if self.keep is not None and self.stream.final is not None:
            self.keep.save(self.stream.final)
        return data

    def error(self, error: Json) -> bytes:
        return self.stream.error(error)


def store_of(http: Request) -> ResponseStore | None:
    """The app's store of recent responses (create_app makes it from the settings), if it keeps any."""
    store = getattr(http.app.state, "responses", None) if "app" in http.scope else None
    return store if isinstance(store, ResponseStore) and store.enabled else None


def _history(store: ResponseStore | None, body: Json, team: str) -> list[Json] | None:
    previous = body.get("previous_response_id")
    if not isinstance(previous, str):
        return None  # absent (a wrong type is refused by the translation)
    if store is None:
        raise invalid_request(
            "This gateway keeps no responses (GATEWAY_RESPONSES_KEPT=0), so 'previous_response_id' cannot be "
            "used: send the whole conversation in 'input'.",
            param="previous_response_id",
            code="unsupported_parameter",
        )
    history = store.get(team, previous)
    if history is None:
        raise GatewayError(
            404,
            f"Previous response with id {previous!r} not found. Responses are kept for a while in the memory of the "
            "gateway process that answered them (not after a restart, nor on another worker or node): send the "
            "whole conversation in 'input' instead.",
            "invalid_request_error",
            "previous_response_not_found",
            "previous_response_id",
        )
    return history


def parse_request(http: Request, body: Json, size: int, principal: Principal) -> tuple[InferenceRequest, Renderer]:
    store, team = store_of(http), principal.team.name
    translated = translate_request(body, _history(store, body, team))
    kept = store is not None and body.get("store") is not False
    translated.echo["store"] = kept
    params = check_chat(translated.chat)
    context = ReplyContext(
        response_id=f"resp_{uuid.uuid4().hex}",
        created_at=int(time.time()),
        model=params.model,
        names=translated.names,
        echo=translated.echo,
        encrypted_reasoning=translated.encrypted_reasoning,
    )
    request = InferenceRequest(
        principal, "chat", params, translated.chat, size, http.headers, endpoint="responses", output_ceiling=True
    )
    keep = Keep(store, team, translated.conversation) if kept and store is not None else None
    return request, ResponsesRenderer(context, translated.dropped_tools, keep)


def routes(guard: Guard) -> list[HttpRoute]:
    return [HttpRoute(PATH, guard(translated_door(parse_request), inference=True), methods=["POST"])]
