"""The HTTP layer: a Starlette app over a `Gateway`."""

from gateway.http.app import create_app

__all__ = ["create_app"]
