"""Turn a provider's error answer into an OpenAI-style GatewayError.

Statuses: 429 stays 429 (with Retry-After); 401/403 from a provider mean the
gateway's own key is wrong, so the client gets 502, not an auth error about its
own key; 5xx becomes 502, except 503 which stays 503; a timeout becomes 504.
The provider's own message is kept.

An account out of balance is neither a rate limit nor a wrong key: 503 `upstream_quota_exhausted`, saying so
(see `quota_exhausted`). Nothing the client does cures it, so it is not retried, and the provider is held open
for every model until an operator acts (gateway/routing/circuits.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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


QUOTA_EXHAUSTED = "upstream_quota_exhausted"
# Error types and codes meaning "the account has no balance": Moonshot's `exceeded_current_quota_error`, sent with
# 429 or 403 (providers.md, Moonshot errors: "insufficient balance: not transient, do not retry"; Moonshot's help
# centre, kimi.com/help/kimi-api: "A 403 error typically indicates insufficient account balance"), and OpenAI's
# `insufficient_quota` (429, "You exceeded your current quota, please check your plan and billing details"),
# which OpenAI-compatible servers repeat. Mistral documents no such body (its billing page says API access "can
# be suspended" at the spending limit, without a wire format), so none is matched for it.
QUOTA_TYPES = frozenset({"exceeded_current_quota_error", "insufficient_quota"})


def is_quota_exhausted(status: int, etype: str | None, code: str | None) -> bool:
    """The provider refused because its account is out of balance. 402 Payment Required is that too (OpenRouter
    answers it for "insufficient credits")."""
    return status == 402 or (status in (403, 429) and (etype in QUOTA_TYPES or code in QUOTA_TYPES))


def quota_exhausted(provider: str, detail: str | None = None) -> GatewayError:
    """What the client gets: the provider's account (the gateway's, not the caller's budget) has no balance."""
    said = f" ({detail})" if detail else ""
    return GatewayError(
        503,
        f"The {provider} provider account is out of balance{said}: it refuses every request until an operator tops "
        f"it up. The gateway sends nothing more to {provider} until POST /admin/reload, a restart or "
        "GATEWAY_QUOTA_COOLDOWN_SECONDS; requests that may use another model are routed there.",
        "upstream_error",
        QUOTA_EXHAUSTED,
    )


def map_status_error(provider: str, status: int, body: bytes, headers: Mapping[str, str]) -> GatewayError:
    error = _map_status(provider, status, body, headers)
    error.upstream_status = status
    return error


def _map_status(provider: str, status: int, body: bytes, headers: Mapping[str, str]) -> GatewayError:
    message, etype, code = provider_message(body)
    text = f"{provider} returned {status}: {message}"
    if is_quota_exhausted(status, etype, code):
        return quota_exhausted(
            provider, f"{provider} returned {status} {etype or code or ''}: {message}".replace("  ", " ")
        )
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
