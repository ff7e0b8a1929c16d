"""Reading a batch's input file: one request per JSONL line, each validated on its own.

A line is OpenAI's batch request, `{"custom_id", "method": "POST", "url", "body"}`
(https://platform.openai.com/docs/api-reference/batch/request-input), whose `url` is the batch's endpoint. Its
body is checked exactly as the same request on that endpoint would be (gateway.pipeline.validation: forbidden
fields, types, `n`, output limits), so a line that the endpoint would refuse gets the same 400 as its result, in
the error file, and every other line still runs: one bad line never costs the batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.errors import GatewayError, invalid_request
from gateway.pipeline.request import Endpoint, Operation
from gateway.pipeline.validation import Request, check_chat, check_embeddings

# The endpoints a batch may run, as OpenAI names them, with the pipeline's operation and door for each.
ENDPOINTS: dict[str, tuple[Operation, Endpoint]] = {
    "/v1/chat/completions": ("chat", "chat"),
    "/v1/embeddings": ("embeddings", "embeddings"),
}
MAX_CUSTOM_ID = 512  # characters: a client's own key, kept as it is in the ledger and the output file


@dataclass(slots=True)
class ParsedLine:
    """One non-empty line of the input file: valid (`body` and `params` set) or not (`error`)."""

    index: int  # among the file's non-empty lines, from 0
    custom_id: str | None
    size: int  # bytes of the line (the prompt's count is estimated from it)
    body: dict[str, Any] | None = None
    params: Request | None = None
    error: GatewayError | None = None


def checked_body(endpoint: str, body: dict[str, Any]) -> Request:
    """The body validated as its endpoint validates it (400 GatewayError naming the parameter)."""
    operation, _ = ENDPOINTS[endpoint]
    if body.get("stream") is True:
        raise invalid_request(
            "Batch requests cannot stream: leave 'stream' out (the answer is written to the output file).",
            param="stream",
            code="invalid_value",
        )
    body.pop("stream", None)
    body.pop("stream_options", None)
    return check_chat(body) if operation == "chat" else check_embeddings(body)


def _non_empty(content: bytes) -> Iterator[bytes]:
    for raw in content.split(b"\n"):
        if raw.strip():
            yield raw


def count_lines(content: bytes) -> int:
    return sum(1 for _ in _non_empty(content))


def parse_lines(content: bytes, endpoint: str) -> list[ParsedLine]:
    """Every non-empty line of `content`, validated for `endpoint`; custom_id must be unique within the file."""
    seen: set[str] = set()
    out: list[ParsedLine] = []
    for index, raw in enumerate(_non_empty(content)):
        line = ParsedLine(index, None, len(raw))
        out.append(line)
        try:
            item = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            line.error = invalid_request(f"Line {index + 1} is not valid JSON: {exc}.", code="invalid_json")
            continue
        if not isinstance(item, dict):
            line.error = invalid_request(f"Line {index + 1} must be a JSON object.", code="invalid_type")
            continue
        custom_id = item.get("custom_id")
        if isinstance(custom_id, str) and 0 < len(custom_id) <= MAX_CUSTOM_ID:
            line.custom_id = custom_id
        try:
            line.body, line.params = _check(item, endpoint, seen)
        except GatewayError as error:
            line.error = error
        if line.custom_id is not None and line.error is None:
            seen.add(line.custom_id)
    return out


def _check(item: dict[str, Any], endpoint: str, seen: set[str]) -> tuple[dict[str, Any], Request]:
    custom_id = item.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id or len(custom_id) > MAX_CUSTOM_ID:
        raise invalid_request(
            f"'custom_id' must be a non-empty string of at most {MAX_CUSTOM_ID} characters.",
            param="custom_id",
            code="invalid_value",
        )
    if custom_id in seen:
        raise invalid_request(
            f"Duplicate 'custom_id' {custom_id!r}: every line of a batch needs its own.",
            param="custom_id",
            code="duplicate_custom_id",
        )
    method = item.get("method", "POST")
    if method != "POST":
        raise invalid_request("'method' must be 'POST'.", param="method", code="invalid_value")
    url = item.get("url", endpoint)
    if url != endpoint:
        raise invalid_request(
            f"'url' {url!r} is not the batch's endpoint {endpoint!r}: a batch runs one endpoint.",
            param="url",
            code="invalid_value",
        )
    body = item.get("body")
    if not isinstance(body, dict):
        raise invalid_request("'body' must be a JSON object (the request).", param="body", code="invalid_type")
    params = checked_body(endpoint, body)
    try:  # orjson reads 1,024 levels of nesting but writes 254: a deeper body could be read and never sent
        orjson.dumps(body)
    except orjson.JSONEncodeError as exc:
        raise invalid_request("'body' is nested too deeply.", param="body", code="invalid_json") from exc
    return body, params
