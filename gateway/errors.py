"""OpenAI-style errors: `{"error": {"message", "type", "param", "code"}}`."""

from __future__ import annotations

from collections.abc import Mapping

import orjson


class GatewayError(Exception):
    """An error that becomes an OpenAI-shaped HTTP response."""

    def __init__(
        self,
        status: int,
        message: str,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = dict(headers or {})
        self.upstream_status: int | None = None  # the provider's own status, when this maps a provider error
        # The provider's rate-limit headers (`x-ratelimit-*`, `retry-after`), for the provider queues; never sent on.
        self.upstream_limits: dict[str, str] = {}

    def body(self) -> bytes:
        return error_body(self.message, self.type, self.code, self.param)


def error_body(message: str, type: str, code: str | None = None, param: str | None = None) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": type, "param": param, "code": code}})


def invalid_request(message: str, param: str | None = None, code: str | None = None) -> GatewayError:
    return GatewayError(400, message, "invalid_request_error", code, param)


class StorageUnavailable(GatewayError):
    """The database cannot be reached (connection refused or lost, or locked past the busy timeout).

    Raised by the store; on the request path it is a 503 before any provider is called (a reservation that
    cannot be written sends nothing upstream). `detail` names the driver's error for the log, never a client."""

    def __init__(self, detail: str = "") -> None:
        super().__init__(
            503,
            "The gateway's database cannot be reached; nothing was sent to a provider. Try again shortly.",
            "server_error",
            "storage_unavailable",
            headers={"Retry-After": "2"},
        )
        self.detail = detail


def shutting_down() -> GatewayError:
    """A request still running when the drain time after SIGTERM is over."""
    return GatewayError(
        503,
        "The gateway is shutting down and its drain time is over; retry the request (another node will take it).",
        "server_error",
        "gateway_shutting_down",
        headers={"Retry-After": "1"},
    )


def internal_error() -> GatewayError:
    """What a client gets for a failure of the gateway itself: nothing about its insides (the log has the rest)."""
    return GatewayError(500, "Internal gateway error.", "server_error", "internal_error")
