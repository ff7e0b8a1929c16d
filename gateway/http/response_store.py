"""The recent responses of the Responses door, kept so that a follow-up may name one by `previous_response_id`.

Bounded (by count and by bytes, least recently used first out), per team (a response of another team is not
found), in this process's memory only: lost on restart and not shared between workers or nodes, so behind a
balancer a follow-up may reach a process that never saw the response (it then gets a 404 that says so, and the
client can send the whole conversation instead, as Codex does with `store: false`). A response asked with
`store: false` is not kept.

What is kept is the conversation as Responses input items: the earlier turns (when the response itself followed
one), the request's input, and the response's output. `instructions` and `tools` are not carried over (as
OpenAI's API does: a follow-up sends its own).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import orjson

from gateway.types import Json


@dataclass(frozen=True, slots=True)
class _Kept:
    team: str
    items: bytes  # serialised: measured once, and every lookup gets its own copy


class ResponseStore:
    def __init__(self, max_responses: int, max_bytes: int) -> None:
        self.max_responses, self.max_bytes = max_responses, max_bytes
        self._kept: OrderedDict[str, _Kept] = OrderedDict()
        self.bytes = 0

    @property
    def enabled(self) -> bool:
        return self.max_responses > 0 and self.max_bytes > 0

    def __len__(self) -> int:
        return len(self._kept)

    def put(self, team: str, response_id: str, items: list[Json]) -> bool:
        """Keep a response's conversation; False when it is larger than the whole store (not kept)."""
        data = orjson.dumps(items)
        if not self.enabled or len(data) > self.max_bytes:
            return False
        self._drop(response_id)
        self._kept[response_id] = _Kept(team, data)
        self.bytes += len(data)
        while len(self._kept) > self.max_responses or self.bytes > self.max_bytes:
            oldest = next(iter(self._kept))
            self._drop(oldest)
        return True

    def get(self, team: str, response_id: str) -> list[Json] | None:
        """The conversation up to and including that response, or None (unknown, evicted, or another team's)."""
        kept = self._kept.get(response_id)
        if kept is None or kept.team != team:
            return None
        self._kept.move_to_end(response_id)
        items: list[Json] = orjson.loads(kept.items)
        return items

    def _drop(self, response_id: str) -> None:
        kept = self._kept.pop(response_id, None)
        if kept is not None:
            self.bytes -= len(kept.items)
