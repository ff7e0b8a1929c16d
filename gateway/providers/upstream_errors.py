"""Turn a provider's error answer into an OpenAI-style GatewayError.

Statuses: 429 stays 429 (with Retry-After); 401/403 from a provider mean the
gateway's own key is wrong, so the client gets 502, not an auth error about its
own key; 5xx becomes 502, except 503 which stays 503; a timeout becomes 504.
The provider's own message is kept.
"""

from __future__ import annotations

from typing import Any, Mapping

import orjson

from gateway.errors import GatewayError


def provider_message(body: bytes) -> tuple[str, str | None, str | None]:
    """(message, type, code) from any of the error shapes providers send."""
    try:
        data: Any = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        text = body[:500].decode("utf-8", "replace").strip()
        return (text or "no error body"), None, None
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        data = data["error"]
    if not isinstance(data, dict):
        return str(data)[:500], None, None
    message: Any = data.get("message", data.get("detail", data.get("msg")))
    if isinstance(message, dict) and "detail" in message:
        message = message["detail"]
    if isinstance(message, list):  # pydantic-style details (Mistral 422)
        message = "; ".join(_detail_text(item) for item in message)
    etype = data.get("type") if isinstance(data.get("type"), str) else None
    code = data.get("code")
    return str(message if message is not None else data)[:2000], etype, (str(code) if code is not None else None)


def _detail_text(item: Any) -> str:
    if not isinstance(item, dict):
        return str(item)
    loc = ".".join(str(part) for part in item.get("loc", []))
    return f"{loc}: {item.get('msg', item.get('type', 'invalid'))}" if loc else str(item.get("msg", item))


def map_status_error(provider: str, status: int, body: bytes, headers: Mapping[str, str]) -> GatewayError:
    error = _map_status(provider, status, body, headers)
    error.upstream_status = status
    return error


def _map_status(provider: str, status: int, body: bytes, headers: Mapping[str, str]) -> GatewayError:
    message, etype, code = provider_message(body)
    text = f"{provider} returned {status}: {message}"
    if status == 429:
        extra = {"Retry-After": headers["Retry-After"]} if "Retry-After" in headers else {}
        return GatewayError(429, text, etype or "rate_limit_error", code or "rate_limited", headers=extra)
    if status in (401, 403):
        return GatewayError(502, text, "upstream_error", "upstream_auth_failed")
    if status == 503:
        return GatewayError(503, text, "upstream_error", code or "upstream_unavailable")
    if status >= 500:
        return GatewayError(502, text, "upstream_error", code or "upstream_error")
    if status in (400, 404, 413, 422):
        return GatewayError(400, text, etype or "invalid_request_error", code)
    return GatewayError(status if 400 <= status < 500 else 502, text, etype or "upstream_error", code)


def timeout_error(provider: str, what: str) -> GatewayError:
    return GatewayError(504, f"{provider} did not answer in time ({what})", "upstream_error", "upstream_timeout")


def connect_error(provider: str, exc: BaseException) -> GatewayError:
    # The exception text can include the upstream address; that is configuration, not a secret.
    return GatewayError(502, f"cannot reach {provider}: {type(exc).__name__}", "upstream_error", "upstream_unreachable")
