"""The values the pipeline runs on: the one request every front door builds, what it tells as it runs, and the
answer it hands back for the front door to render.

A front door (chat completions, completions, FIM, embeddings; Messages, Responses and batch lines next) parses
its wire format into an `InferenceRequest` whose body is in the canonical shape (OpenAI's chat, completion or
embeddings request, validated by `gateway.pipeline.validation`), and renders the `Answer` or `StreamAnswer`
back into its format. Nothing in the pipeline knows which door a request came through.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

from gateway.auth.principal import Principal
from gateway.budget.accounting import Charged
from gateway.pipeline.validation import Request as RequestParams
from gateway.providers.base import ChunkReshaper
from gateway.routing.route import Route
from gateway.types import Json

# Which provider call serves a request (`Adapter.chat`, `.fim`, `.embeddings`), and the capability it needs.
Operation = Literal["chat", "fim", "embeddings"]
# The front door a request came through (the ledger's `endpoint` column and the metrics' `endpoint` label: a
# fixed set, so the label stays bounded). `/v1/chat/completions`, `/v1/completions`, `/v1/fim/completions`,
# `/v1/embeddings`, `/v1/messages` (Anthropic), `/v1/responses` (OpenAI Responses).
Endpoint = Literal["chat", "completions", "fim", "embeddings", "messages", "responses"]
ENDPOINTS: tuple[Endpoint, ...] = ("chat", "completions", "fim", "embeddings", "messages", "responses")


@dataclass(slots=True)
class InferenceRequest:
    """One request, as every step of the pipeline sees it."""

    principal: Principal
    operation: Operation
    params: RequestParams  # the validated figures: model, stream, n, max_tokens, capabilities needed...
    body: Json  # the canonical body; each attempt sends a shallow copy (adapters rewrite top-level fields)
    size: int  # bytes received: the prompt's count is estimated from it
    headers: Mapping[str, str]  # the request's headers (`x-gateway-residency` narrows the regions)
    # The front door's rendering of each answer and stream chunk (legacy completions), applied by the adapter
    # while it parses them anyway; None: the canonical shape goes out as it is.
    reshape: ChunkReshaper | None = None
    endpoint: Endpoint = "chat"
    # The output limit is a ceiling the client chose for another vendor's models (Claude Code asks Anthropic's
    # Messages door for 32,000 or 64,000 tokens, Codex's Responses for OpenAI's): on the model that serves the
    # request it is lowered to that model's own limit instead of refused (`pipeline.admit.fit_output`).
    output_ceiling: bool = False
    # A line of a batch run through the pipeline (gateway/batches/runner.py): (batch id, custom_id), written on its
    # ledger row so that spend groups by batch; None for every other request.
    batch: tuple[str, str] | None = None
    # The ledger row's id when the request has one already (a batch line: a node that takes over a batch finds the
    # row of a line answered just before another node stopped, instead of sending it again); None: a fresh id.
    ledger_id: str | None = None
    # `max_tokens` as the client asked, before admission lowers it to what the budget pays for (or to the model's
    # limit where it is a ceiling): what the routing decision priced, recorded on the ledger row for policy replay.
    asked_max_output: int | None = field(init=False)

    def __post_init__(self) -> None:
        self.asked_max_output = self.params.max_output


class Observer(Protocol):
    """What the pipeline tells about one request while it runs (the HTTP layer's `RequestRecord` listens)."""

    attempts: int
    first_token_at: float | None

    def routed(self, route: Route) -> None: ...

    def waited_for(self, seconds: float) -> None: ...

    def settled(self, charged: Charged) -> None: ...

    def retain(self) -> None:
        """A settlement outlives the response: keep the request open until `release`."""

    def release(self) -> None: ...


@dataclass(slots=True)
class Context:
    """Where a request runs: who listens to it, and how to tell that the gateway's drain time ended it."""

    observer: Observer
    shut_down: Callable[[], bool] = lambda: False  # the drain time after SIGTERM is over (a cancel is then a 503)


def route_headers(route: Route) -> dict[str, str]:
    return {
        "x-gateway-model": route.model.name,
        "x-gateway-provider": route.provider.name,
        "x-gateway-region": route.provider.region,
        "x-gateway-route-reason": route.reason,
    }


@dataclass(slots=True)
class Answer:
    """A complete answer in the canonical shape (already rendered by `reshape`), with the gateway's headers."""

    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class StreamAnswer:
    """A streaming answer: SSE bytes, settled before its end (the usage chunk carries the real cost)."""

    events: AsyncIterator[bytes]
    headers: dict[str, str] = field(default_factory=dict)
