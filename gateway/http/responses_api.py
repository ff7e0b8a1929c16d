"""`POST /v1/responses`: OpenAI's Responses API (what Codex CLI speaks), as a thin door into the one pipeline.

The body is translated into the canonical chat request (gateway/translate/responses.py), validated as every chat
request is, and served by the pipeline; the answer, or each event of its stream, is rendered back into the
Responses format (gateway/translate/responses_reply.py). Errors before a stream keep OpenAI's shape (the guard's
default); a failure inside a stream is a `response.failed` event.

Responses are not kept: `store: true` is accepted but nothing is stored, and `previous_response_id` is refused with
a 400 that says to send the whole conversation (Codex sends `store: false` and does so). GET/DELETE
/v1/responses/{id}, /v1/responses/{id}/input_items, /v1/responses/input_tokens and /v1/responses/compact are not
served (404).
"""

from __future__ import annotations

import time
import uuid

from starlette.requests import Request
from starlette.routing import Route as HttpRoute

from gateway.auth.principal import Principal
from gateway.http.doors import Renderer, translated_door
from gateway.http.guard import Guard
from gateway.pipeline.request import InferenceRequest
from gateway.pipeline.validation import check_chat
from gateway.translate.responses import dropped_header, translate_request
from gateway.translate.responses_reply import ReplyContext, ResponseStream, response_from_chat
from gateway.types import Json

PATH = "/v1/responses"


class ResponsesRenderer:
    """One request's answer as a Responses `response` object or event stream (`doors.Renderer`)."""

    def __init__(self, context: ReplyContext, dropped: list[str]) -> None:
        self.context = context
        self.stream = ResponseStream(context)
        self.headers: dict[str, str] = dict(dropped_header(dropped))

    def reply(self, chat: Json) -> Json:
        return response_from_chat(chat, self.context)

    def chunk(self, chunk: Json) -> bytes:
        return self.stream.chunk(chunk)

    def end(self) -> bytes:
        return self.stream.end()

    def error(self, error: Json) -> bytes:
        return self.stream.error(error)


def parse_request(http: Request, body: Json, size: int, principal: Principal) -> tuple[InferenceRequest, Renderer]:
    translated = translate_request(body)
    params = check_chat(translated.chat)
    context = ReplyContext(
        response_id=f"resp_{uuid.uuid4().hex}",
        created_at=int(time.time()),
        model=params.model,
        names=translated.names,
        echo=translated.echo,
        encrypted_reasoning=translated.encrypted_reasoning,
    )
    request = InferenceRequest(principal, "chat", params, translated.chat, size, http.headers, endpoint="responses")
    return request, ResponsesRenderer(context, translated.dropped_tools)


def routes(guard: Guard) -> list[HttpRoute]:
    return [HttpRoute(PATH, guard(translated_door(parse_request), inference=True), methods=["POST"])]
