"""Read a JSON request body once: content type, size limit, UTF-8, object shape."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import ClientDisconnect, Request

from gateway.errors import GatewayError, invalid_request


async def read_json_object(request: Request, limit: int) -> tuple[dict[str, Any], int]:
    """The parsed body and its size in bytes."""
    content_type = request.headers.get("content-type", "")
    media = content_type.split(";", 1)[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        raise GatewayError(
            415,
            f"Content-Type must be application/json (got {media or 'none'!r}).",
            "invalid_request_error",
            "unsupported_media_type",
        )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            chunks.append(chunk)
    except ClientDisconnect as exc:  # the client left mid-upload: nobody to answer, nothing to log
        raise invalid_request("The client disconnected before sending the whole body.", code="client_disconnected") from exc
    raw = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    if not raw:
        raise invalid_request("Request body is empty; expected a JSON object.", code="invalid_json")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if "UTF-8" in str(exc) or "utf-8" in str(exc):
            raise invalid_request("Request body is not valid UTF-8.", code="invalid_encoding") from exc
        raise invalid_request(f"Request body is not valid JSON: {exc}", code="invalid_json") from exc
    if not isinstance(body, dict):
        raise invalid_request(
            f"Request body must be a JSON object, not {type(body).__name__}.", code="invalid_json"
        )
    return body, size


def _too_large(limit: int) -> GatewayError:
    return GatewayError(
        413,
        f"Request body is larger than the limit of {limit} bytes.",
        "invalid_request_error",
        "request_too_large",
    )
