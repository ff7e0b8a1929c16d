"""OpenAI's files and batches endpoints (https://platform.openai.com/docs/api-reference/batch), over gateway.batches.

`POST /v1/files` takes a multipart upload (`file`, `purpose=batch`) of at most `GATEWAY_BATCH_FILE_MAX_BYTES`, counted
while it arrives (a larger body is refused before it is all read); `GET /v1/files/{id}/content` returns an uploaded
file, or a batch's output or error file rendered from its lines. Files and batches are the team's: another team's
key gets 404. The master key sees every team's, and acts for one team with `x-gateway-team: NAME` (what
`gateway batch submit --team` sends): the batch is then that team's, under its policy and budget.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Message

from gateway.auth.principal import Principal
from gateway.batches.files import file_too_large
from gateway.batches.render import file_object
from gateway.batches.service import Batches
from gateway.errors import GatewayError, invalid_request
from gateway.http.body import read_json_object
from gateway.http.guard import Guard
from gateway.http.responses import json_bytes
from gateway.state import Gateway

TEAM_HEADER = "x-gateway-team"
MULTIPART_SLACK = 64 * 1024  # the form's boundaries and other fields, beyond the file itself
MAX_PAGE = 100  # OpenAI's `limit` on list endpoints: 1 to 100, default 20


def _service(request: Request) -> Batches:
    batches: Batches = request.app.state.batches
    return batches


def _json(value: Any, status: int = 200) -> Response:
    return json_bytes(orjson.dumps(value), status)


async def acting_principal(gateway: Gateway, request: Request, principal: Principal) -> Principal:
    """The caller, or the team the master key acts for (`x-gateway-team`); a gateway key cannot act for another."""
    name = request.headers.get(TEAM_HEADER)
    if name is None:
        return principal
    if not principal.is_admin:
        if name == principal.team.name:
            return principal
        raise GatewayError(
            403, f"Only the master key may act for another team ({TEAM_HEADER}).", "invalid_request_error", "forbidden"
        )
    team = await gateway.store.get_team(name)
    if team is None:
        raise GatewayError(404, f"No team named {name!r}.", "invalid_request_error", "team_not_found", TEAM_HEADER)
    return Principal(team, None, False)


def _page(request: Request) -> tuple[str | None, int]:
    after = request.query_params.get("after") or None
    raw = request.query_params.get("limit", "20")
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE:
        raise invalid_request(
            f"'limit' must be a whole number from 1 to {MAX_PAGE}.", param="limit", code="invalid_value"
        )
    return after, int(raw)


def _listing(items: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {
        "object": "list",
        "data": items,
        "first_id": items[0]["id"] if items else None,
        "last_id": items[-1]["id"] if items else None,
        "has_more": has_more,
    }


# -- files ---------------------------------------------------------------------------------------------------


async def upload_file(gateway: Gateway, request: Request, principal: Principal) -> Response:
    principal = await acting_principal(gateway, request, principal)
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media != "multipart/form-data":
        raise GatewayError(
            415,
            f"Content-Type must be multipart/form-data with 'file' and 'purpose' (got {media or 'none'!r}).",
            "invalid_request_error",
            "unsupported_media_type",
        )
    limit = gateway.settings.batch_file_max_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit + MULTIPART_SLACK:
        raise file_too_large(limit)
    received = 0
    receive = request.receive

    async def counted() -> Message:  # a chunked upload has no length to check first: count it as it arrives
        nonlocal received
        message = await receive()
        received += len(message.get("body", b""))
        if received > limit + MULTIPART_SLACK:
            raise file_too_large(limit)
        return message

    bounded = Request(request.scope, counted)
    try:
        form = await bounded.form(max_files=1, max_fields=8)
    except HTTPException as exc:  # python-multipart's refusal of a malformed form
        raise invalid_request(f"The multipart form could not be read: {exc.detail}.", code="invalid_multipart") from exc
    except ClientDisconnect as exc:
        raise invalid_request(
            "The client disconnected before sending the whole file.", code="client_disconnected"
        ) from exc
    try:
        upload = form.get("file")
        purpose = form.get("purpose")
        if not isinstance(upload, UploadFile):
            raise invalid_request(
                "You must provide 'file' (the JSONL file, as a file part).",
                param="file",
                code="missing_required_parameter",
            )
        if not isinstance(purpose, str):
            raise invalid_request(
                "You must provide 'purpose' ('batch').", param="purpose", code="missing_required_parameter"
            )
        size = upload.size if upload.size is not None else 0
        upload.file.seek(0)
        record = await _service(request).files.upload(principal, purpose, upload.filename or "", upload.file, size)
    finally:
        await form.close()
    return _json(file_object(record))


async def list_files(gateway: Gateway, request: Request, principal: Principal) -> Response:
    principal = await acting_principal(gateway, request, principal)
    after, limit = _page(request)
    purpose = request.query_params.get("purpose")
    owner = None if principal.is_admin else principal.team.name
    records, more = await gateway.store.batches.list_files(owner, purpose, after, limit)
    return _json(_listing([file_object(r) for r in records], more))


async def get_file(gateway: Gateway, request: Request, principal: Principal) -> Response:
    principal = await acting_principal(gateway, request, principal)
    file_id = request.path_params["file_id"]
    service = _service(request)
    generated = await service.generated(principal, file_id)
    if generated is not None:
        return _json(service.generated_object(*generated))
    return _json(file_object(await service.files.get(principal, file_id)))


async def file_content(gateway: Gateway, request: Request, principal: Principal) -> Response:
    principal = await acting_principal(gateway, request, principal)
    file_id = request.path_params["file_id"]
    service = _service(request)
    generated = await service.generated(principal, file_id)
    if generated is not None:
        batch, kind = generated
        return StreamingResponse(service.results(batch, kind), media_type="application/octet-stream")
    record = await service.files.get(principal, file_id)
    return Response(await service.files.content(record), media_type="application/octet-stream")


async def delete_file(gateway: Gateway, request: Request, principal: Principal) -> Response:
    principal = await acting_principal(gateway, request, principal)
    file_id = request.path_params["file_id"]
    await _service(request).files.delete(principal, file_id)
    return _json({"id": file_id, "object": "file", "deleted": True})


# -- batches -------------------------------------------------------------------------------------------------


async def _body(gateway: Gateway, request: Request) -> dict[str, Any]:
    body, _ = await read_json_object(request, gateway.settings.max_body_bytes)
    return body


async def create_batch(gateway: Gateway, request: Request, principal: Principal) -> Response:
    principal = await acting_principal(gateway, request, principal)
    body = await _body(gateway, request)
    service = _service(request)
    batch = await service.create(principal, request.headers, body)
    return _json(await service.view(batch))


async def explain_batch(gateway: Gateway, request: Request, principal: Principal) -> Response:
    principal = await acting_principal(gateway, request, principal)
    body = await _body(gateway, request)
    return _json(await _service(request).explain(principal, request.headers, body))


async def get_batch(gateway: Gateway, request: Request, principal: Principal) -> Response:
    principal = await acting_principal(gateway, request, principal)
    service = _service(request)
    return _json(await service.view(await service.get(principal, request.path_params["batch_id"])))


async def list_batches(gateway: Gateway, request: Request, principal: Principal) -> Response:
    principal = await acting_principal(gateway, request, principal)
    after, limit = _page(request)
    service = _service(request)
    batches, more = await service.list(principal, after, limit)
    return _json(_listing([await service.view(b) for b in batches], more))


async def cancel_batch(gateway: Gateway, request: Request, principal: Principal) -> Response:
    principal = await acting_principal(gateway, request, principal)
    service = _service(request)
    return _json(await service.view(await service.cancel(principal, request.path_params["batch_id"])))


def routes(guard: Guard) -> list[Route]:
    return [
        Route("/v1/files", guard(upload_file), methods=["POST"]),
        Route("/v1/files", guard(list_files), methods=["GET"]),
        Route("/v1/files/{file_id}", guard(get_file), methods=["GET"]),
        Route("/v1/files/{file_id}", guard(delete_file), methods=["DELETE"]),
        Route("/v1/files/{file_id}/content", guard(file_content), methods=["GET"]),
        Route("/v1/batches", guard(create_batch), methods=["POST"]),
        Route("/v1/batches", guard(list_batches), methods=["GET"]),
        Route("/v1/batches/explain", guard(explain_batch), methods=["POST"]),
        Route("/v1/batches/{batch_id}", guard(get_batch), methods=["GET"]),
        Route("/v1/batches/{batch_id}/cancel", guard(cancel_batch), methods=["POST"]),
    ]
