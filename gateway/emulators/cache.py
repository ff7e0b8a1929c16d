"""Automatic prompt-prefix caching, as both providers do it: per emulator, bounded."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Any

from gateway.emulators.text import canonical

MAX_PREFIXES = 8192


class PrefixCache:
    """Remembers hashes of message prefixes; reports how much of a new prompt was seen before."""

    def __init__(self, max_entries: int = MAX_PREFIXES) -> None:
        self._seen: OrderedDict[bytes, None] = OrderedDict()
        self._max = max_entries

    def observe(self, scope: Any, messages: list, costs: list[int], base_cost: int) -> int:
        """Cached tokens for `messages`, then remember all their prefixes.

        scope: what must match besides the messages (model, tools); costs: tokens of each
        message; base_cost: tokens of the scope (tool definitions), part of any cached prefix.
        The answer is the cost of the longest previously seen messages[:k] with k < len.
        """
        chain = hashlib.sha256(canonical(scope)).digest()
        prefixes = []
        for message in messages:
            chain = hashlib.sha256(chain + canonical(message)).digest()
            prefixes.append(chain)
        cached = 0
        for k in range(len(messages) - 1, 0, -1):
            if prefixes[k - 1] in self._seen:
                cached = base_cost + sum(costs[:k])
                break
        for key in prefixes:
            self._seen[key] = None
            self._seen.move_to_end(key)
        while len(self._seen) > self._max:
            self._seen.popitem(last=False)
        return cached
