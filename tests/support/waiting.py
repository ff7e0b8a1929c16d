"""Waiting for something another thread or process makes true on its own (a background settlement, a
reconnect, a sweep, a server starting): polled, with a bound, never a sleep that hopes it happened."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any


def wait_until(
    condition: Callable[[], Any],
    seconds: float = 15.0,
    what: str = "condition",
    *,
    every: float = 0.025,
    ignoring: tuple[type[BaseException], ...] = (),
) -> Any:
    """The first truthy value of `condition()`, checked every `every` seconds; AssertionError after `seconds`.
    Exceptions of the `ignoring` types (a server still starting) count as not yet."""
    deadline = time.monotonic() + seconds
    last: Any = None
    while True:
        try:
            value = last = condition()
        except ignoring as exc:
            value, last = None, exc
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} not reached in {seconds:g} s (last: {last!r})")
        threading.Event().wait(every)
