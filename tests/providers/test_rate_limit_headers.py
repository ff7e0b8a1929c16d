"""A provider's rate-limit headers reach the provider queues (never the client): on a 429 always, on an answer when
its account declares limits (gateway/providers/base.py `rate_limit_headers`)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import orjson
import pytest
from aiohttp import web

from gateway.catalog import CapacityLimits, load_catalog
from gateway.errors import GatewayError
from gateway.limits.feedback import provider_feedback
from gateway.providers.base import Reply, StreamReply, rate_limit_headers
from gateway.providers.openai_compatible import OpenAICompatibleAdapter

ANSWER = {
    "id": "c",
    "object": "chat.completion",
    "created": 1,
    "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
}
SPENT = {"X-RateLimit-Remaining-Requests": "0", "X-RateLimit-Reset-Requests": "2s", "X-Request-Id": "abc"}


def test_only_rate_limit_headers_are_kept_lower_cased() -> None:
    kept = rate_limit_headers({**SPENT, "Retry-After": "3", "Content-Type": "application/json"})
    assert kept == {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "2s", "retry-after": "3"}


async def _serve(status: int, headers: dict[str, str]) -> tuple[web.AppRunner, str]:
    async def handle(request: web.Request) -> web.Response:
        await request.read()
        body = ANSWER if status == 200 else {"error": {"message": "slow down", "type": "rate_limit_reached_error"}}
        return web.Response(status=status, body=orjson.dumps(body), headers=headers, content_type="application/json")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}/v1"


async def _call(status: int, headers: dict[str, str], limited: bool) -> Any:
    runner, url = await _serve(status, headers)
    catalog = load_catalog(None, {"MOONSHOT_API_KEY": "k"})
    provider = replace(
        catalog.providers["moonshot"], base_url=url, limits=CapacityLimits(concurrency=2) if limited else None
    )
    adapter = OpenAICompatibleAdapter(provider)
    try:
        body = {"model": "kimi-k2.6", "messages": [{"role": "user", "content": "hi"}]}
        return await adapter.chat(body, catalog.models["kimi-k2.6"], stream=False, include_usage=False)
    except GatewayError as error:
        return error
    finally:
        await adapter.close()
        await runner.cleanup()


@pytest.mark.slow
def test_an_answer_saying_nothing_is_left_holds_the_provider_off_when_its_account_has_limits() -> None:
    reply = asyncio.run(_call(200, SPENT, limited=True))
    assert isinstance(reply, Reply) and reply.upstream_limits["x-ratelimit-remaining-requests"] == "0"
    assert "x-ratelimit-remaining-requests" not in reply.headers  # (what the client gets)
    assert provider_feedback(200, reply.upstream_limits) == pytest.approx(2.0)
    unlimited = asyncio.run(_call(200, SPENT, limited=False))
    assert isinstance(unlimited, Reply | StreamReply) and unlimited.upstream_limits == {}


@pytest.mark.slow
def test_a_429_carries_its_retry_after_to_the_queues() -> None:
    error = asyncio.run(_call(429, {"Retry-After": "7"}, limited=False))
    assert isinstance(error, GatewayError) and error.status == 429
    assert provider_feedback(error.upstream_status or 0, error.upstream_limits) == pytest.approx(7.0)
