"""Waiting for something another thread or process makes true on its own (a background settlement, a
reconnect, a sweep): polled, with a bound, never a sleep that hopes it happened."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any


def wait_until(condition: Callable[[], Any], seconds: float = 15.0, what: str = "condition") -> Any:
    """The first truthy value of `condition()`, checked every 25 ms; AssertionError after `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} not reached in {seconds:g} s")
        threading.Event().wait(0.025)
