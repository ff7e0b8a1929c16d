"""Read a JSON request body once: content type, size limit, UTF-8, nesting depth, object shape."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import ClientDisconnect, Request

from gateway.errors import GatewayError, invalid_request

# orjson.loads accepts 1,024 levels of nesting but orjson.dumps refuses more than 254, so a deeper
# body parses and then fails when it is serialised upstream (or into the ledger): a 500 for bad
# input. 128 is far beyond any real tool schema or metadata and leaves room for the levels the
# gateway itself adds around a body (the ledger's {"request": ...}, functions -> tools wrapping).
MAX_DEPTH = 128


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
        raise invalid_request(
            "The client disconnected before sending the whole body.", code="client_disconnected"
        ) from exc
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
        raise invalid_request(f"Request body must be a JSON object, not {type(body).__name__}.", code="invalid_json")
    if too_deep(body):
        raise invalid_request(f"Request body is nested more than {MAX_DEPTH} levels deep.", code="invalid_json")
    return body, size


def too_deep(body: Any) -> bool:
    """Whether `body` nests containers more than MAX_DEPTH levels (the body itself is level 1).

    Cost, measured on one core: counting b"[" and b"{" in the raw bytes would take 3.1 ms for a 4 MB
    body (more than parsing it, 3.6 ms); a Python walk costs nothing for text-heavy bodies but about
    0.1 us per element for 10,000 messages; orjson.dumps is C speed (0.3 ms for 10,000 messages).
    So: walk while the elements seen stay under _WALK_BUDGET (a typical body), and past that let
    orjson.dumps itself answer, the body wrapped so that it fails exactly when the body is deeper
    than MAX_DEPTH. Measured added time: 0.001 ms for a 4 MB chat body, 0.34 ms for 10,000 messages.
    """
    stack: list[tuple[Any, int]] = [(body, 1)]
    pop, push = stack.pop, stack.append
    budget = _WALK_BUDGET
    while stack:
        node, depth = pop()
        if depth > MAX_DEPTH:
            return True
        budget -= len(node)  # the children this step looks at
        if budget < 0:
            return _too_deep_to_serialise(body)
        deeper = depth + 1
        for child in node.values() if type(node) is dict else node:
            kind = type(child)
            if kind is dict or kind is list:
                push((child, deeper))
    return False


_WALK_BUDGET = 512
_ORJSON_MAX_DEPTH = 254  # orjson.dumps: "Recursion limit reached" at 255 levels


def _too_deep_to_serialise(body: Any) -> bool:
    wrapped = body
    for _ in range(_ORJSON_MAX_DEPTH - MAX_DEPTH):
        wrapped = [wrapped]
    try:
        orjson.dumps(wrapped)
    except orjson.JSONEncodeError:
        return True  # parsed values are always serialisable (big ints became floats), so only depth fails
    return False


def _too_large(limit: int) -> GatewayError:
    return GatewayError(
        413,
        f"Request body is larger than the limit of {limit} bytes.",
        "invalid_request_error",
        "request_too_large",
    )
