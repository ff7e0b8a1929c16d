"""Who is calling. Until teams and keys exist, one optional master key guards /v1.

The comparison is constant-time over fixed-length digests, so neither the
content nor the length of the master key leaks through timing.
"""

from __future__ import annotations

import hashlib
import hmac

from pydantic import SecretStr
from starlette.requests import Request

from gateway.errors import GatewayError


def presented_key(request: Request) -> str | None:
    """The bearer token, or `x-api-key` (Continue sends both for FIM)."""
    header = request.headers.get("authorization")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return request.headers.get("x-api-key") or None


class MasterKeyAuth:
    def __init__(self, master_key: SecretStr | None) -> None:
        self._digest = (
            hashlib.sha256(master_key.get_secret_value().encode()).digest() if master_key is not None else None
        )

    @property
    def open(self) -> bool:
        return self._digest is None

    def check(self, request: Request) -> None:
        """Raise a 401 GatewayError unless the request carries the master key (or the gateway is open)."""
        if self._digest is None:
            return
        key = presented_key(request)
        if key is None:
            raise GatewayError(
                401,
                "Missing API key: send it as 'Authorization: Bearer KEY'.",
                "invalid_request_error",
                "invalid_api_key",
            )
        if not hmac.compare_digest(hashlib.sha256(key.encode()).digest(), self._digest):
            raise GatewayError(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
