"""RequestRecord, RequestIds and RequestLog (gateway/http/record.py): one request's record and its log line."""

from __future__ import annotations

import asyncio
import logging
import os
import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
import pytest
from pydantic import SecretStr
from starlette.datastructures import Headers

from gateway.auth.principal import Principal
from gateway.budget.accounting import Charged
from gateway.catalog import ModelConfig, Price, Provider, Timeouts
from gateway.http.record import REQUEST_ID_HEADER, RequestIds, RequestLog, RequestRecord
from gateway.routing.route import Route
from gateway.store.base import KeyRecord, Team
from gateway.types import Usage

# The log line's fields, all of them: never prompt text, answers or keys.
LOG_FIELDS = {
    "time",
    "request_id",
    "path",
    "endpoint",
    "team",
    "key_prefix",
    "requested_model",
    "model",
    "provider",
    "region",
    "route_reason",
    "status",
    "error_code",
    "stream",
    "attempts",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "cost_usd",
    "cost_estimated",
    "latency_ms",
    "ttft_ms",
    "upstream_ms",
    "pid",
}


def route() -> Route:
    model = ModelConfig(
        name="mistral-small",
        provider="mistral",
        upstream_model="mistral-small-latest",
        context_window=32_000,
        max_output_tokens=4_096,
        price=Price(input=Decimal("0.1"), output=Decimal("0.3")),
    )
    provider = Provider("mistral", "mistral", "eu", "https://api.example/v1", SecretStr("k"), None, 8, Timeouts())
    return Route(model, provider, "cheapest")


def key(prefix: str = "sk-gw-abcd") -> KeyRecord:
    return KeyRecord("k1", "eng", "ci", prefix, "hash")


def record(**fields: Any) -> RequestRecord:
    return RequestRecord("req-1", "/v1/chat/completions", True, **fields)


# -- RequestRecord -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("principal", "prefix"),
    [
        (Principal(Team("eng"), key("sk-gw-abcd"), False), "sk-gw-abcd"),
        (Principal(Team("admin"), None, True), "master"),  # the master key has no prefix of its own
        (Principal(Team("open"), None, False), None),  # a gateway without keys
    ],
)
def test_identify_takes_the_team_and_the_key_prefix(principal: Principal, prefix: str | None) -> None:
    rec = record()
    rec.identify(principal)
    assert (rec.team, rec.key_prefix) == (principal.team.name, prefix)


def test_routed_waited_and_settled_fill_the_record() -> None:
    rec = record()
    assert rec.waited is None  # no provider called yet
    rec.routed(route())
    rec.waited_for(0.25)
    rec.waited_for(0.5)
    rec.settled(Charged(1_250, Usage(prompt_tokens=100, completion_tokens=20, cached_tokens=60), estimated=True))
    assert (rec.model, rec.provider, rec.region, rec.reason) == ("mistral-small", "mistral", "eu", "cheapest")
    assert rec.waited == 0.75
    assert (rec.prompt_tokens, rec.completion_tokens, rec.cached_tokens) == (100, 20, 60)
    assert (rec.cost_nanos, rec.estimated) == (1_250, True)


@pytest.mark.parametrize("code", ["no_route", "model_not_allowed", "context_length_exceeded", "budget_exceeded"])
def test_a_routing_refusal_before_any_route_is_the_route_reason(code: str) -> None:
    rec = record()
    rec.failed(400 if code != "budget_exceeded" else 429, code)
    assert (rec.error_code, rec.reason) == (code, code)


def test_a_failure_keeps_the_route_reason_of_a_routed_request_and_other_codes_set_none() -> None:
    routed = record()
    routed.routed(route())
    routed.failed(429, "budget_exceeded")  # refused after routing: the route's reason stays
    assert (routed.status, routed.error_code, routed.reason) == (429, "budget_exceeded", "cheapest")

    unrouted = record()
    unrouted.failed(502, "upstream_error")  # not a routing refusal
    assert (unrouted.status, unrouted.error_code, unrouted.reason) == (502, "upstream_error", None)


def test_the_record_closes_once_after_the_response_and_every_retainer() -> None:
    closed: list[RequestRecord] = []
    rec = record(on_close=closed.append)
    rec.retain()  # a settlement outlives the response
    rec.retain()
    rec.response_sent()
    assert rec.ended_at is not None
    assert closed == []
    rec.release()
    assert closed == []
    rec.release()
    assert closed == [rec]


def test_a_record_retained_by_nothing_closes_when_the_response_is_sent() -> None:
    closed: list[RequestRecord] = []
    rec = record(on_close=closed.append)
    rec.response_sent()
    assert closed == [rec]
    record().response_sent()  # no on_close: nothing to call, no error


def test_seconds_and_ttft_are_measured_from_arrival() -> None:
    rec = record(started=100.0)
    assert rec.ttft is None
    rec.first_token_at = 100.125
    rec.ended_at = 101.5
    assert rec.ttft == pytest.approx(0.125)
    assert rec.seconds == pytest.approx(1.5)
    running = record()  # not sent yet: counted up to now
    assert running.seconds >= 0


def test_as_log_has_exactly_the_documented_fields() -> None:
    at = datetime(2024, 3, 1, 12, 30, 45, 123_456, tzinfo=UTC).timestamp()
    rec = record(started=50.0, at=at, requested_model="auto", stream=True, attempts=2, endpoint="chat")
    rec.identify(Principal(Team("eng"), key(), False))
    rec.routed(route())
    rec.settled(Charged(1_500_000, Usage(prompt_tokens=10, completion_tokens=4, cached_tokens=3), estimated=False))
    rec.first_token_at, rec.ended_at = 50.0123456, 50.75
    rec.waited_for(0.5004)

    entry = rec.as_log()
    assert set(entry) == LOG_FIELDS
    assert entry == {
        "time": "2024-03-01T12:30:45.123+00:00",
        "request_id": "req-1",
        "path": "/v1/chat/completions",
        "endpoint": "chat",
        "team": "eng",
        "key_prefix": "sk-gw-abcd",
        "requested_model": "auto",
        "model": "mistral-small",
        "provider": "mistral",
        "region": "eu",
        "route_reason": "cheapest",
        "status": 200,
        "error_code": None,
        "stream": True,
        "attempts": 2,
        "prompt_tokens": 10,
        "completion_tokens": 4,
        "cached_tokens": 3,
        "cost_usd": 0.0015,
        "cost_estimated": False,
        "latency_ms": 750.0,
        "ttft_ms": 12.346,
        "upstream_ms": 500.4,
        "pid": os.getpid(),
    }
    orjson.dumps(entry)  # serialisable as it is


def test_as_log_of_a_request_that_never_reached_a_provider() -> None:
    rec = record(started=10.0)
    rec.failed(401, "invalid_api_key")
    rec.ended_at = 10.002
    entry = rec.as_log()
    assert (entry["ttft_ms"], entry["upstream_ms"], entry["model"], entry["team"]) == (None, None, None, None)
    assert entry["latency_ms"] == 2.0
    assert (entry["status"], entry["error_code"]) == (401, "invalid_api_key")


# -- RequestIds ------------------------------------------------------------------------------------


@pytest.mark.parametrize("given", ["abc", "A1._:/+=@-z", "7" * 128, "0f8fad5b-d9cb-469f-a165-70867728950e"])
def test_a_sane_client_request_id_is_kept(given: str) -> None:
    assert RequestIds()(Headers({REQUEST_ID_HEADER: given})) == given


@pytest.mark.parametrize(
    "given", ["", "-leading-dash", "has space", 'quote"d', "x" * 129, "tab\tbed", "naïve", "semi;colon"]
)
def test_any_other_client_request_id_is_replaced(given: str) -> None:
    made = RequestIds()(Headers({REQUEST_ID_HEADER: given}))
    assert made != given
    assert re.fullmatch(r"[0-9a-f]{32}", made)


def test_generated_ids_are_unique_per_process_prefix_and_counter() -> None:
    ids = RequestIds()
    first, second = ids({}), ids(Headers({}))
    assert re.fullmatch(r"[0-9a-f]{32}", first) and re.fullmatch(r"[0-9a-f]{32}", second)
    assert first[:16] == second[:16]  # one random prefix per process ...
    assert int(second[16:], 16) == int(first[16:], 16) + 1  # ... and a counter
    assert RequestIds()({})[:16] != first[:16]  # another process, another prefix


# -- RequestLog ------------------------------------------------------------------------------------


class FakeStdout:
    def __init__(self, fail: type[Exception] | None = None) -> None:
        self.writes: list[bytes] = []
        self.flushes = 0
        self.fail = fail

    def write(self, data: bytes) -> int:
        if self.fail is not None:
            raise self.fail("stdout is gone")
        self.writes.append(data)
        return len(data)

    def flush(self) -> None:
        self.flushes += 1


async def next_turn() -> None:
    """Resume after the callbacks already scheduled with call_soon (one event-loop turn, not a delay)."""
    done = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_soon(done.set_result, None)
    await done


def test_a_log_without_stream_or_listeners_does_nothing() -> None:
    RequestLog(None).write(record())  # not even an event loop is needed


def test_listeners_get_each_entry_at_once() -> None:
    log = RequestLog(None)
    seen: list[dict[str, Any]] = []
    log.listeners.append(seen.append)
    log.write(record())
    assert [entry["request_id"] for entry in seen] == ["req-1"]


def test_entries_of_one_loop_turn_go_out_in_one_write() -> None:
    stdout = FakeStdout()
    log = RequestLog(stdout)  # type: ignore[arg-type]

    async def main() -> list[list[bytes]]:
        seen = []
        log.write(RequestRecord("a", "/v1/embeddings", True))
        log.write(RequestRecord("b", "/v1/models", False))
        seen.append(list(stdout.writes))  # nothing written yet
        await next_turn()
        seen.append(list(stdout.writes))
        log.write(RequestRecord("c", "/v1/models", False))
        await next_turn()
        seen.append(list(stdout.writes))
        return seen

    before, after, later = asyncio.run(main())
    assert before == []
    (data,) = after
    lines = data.split(b"\n")
    assert lines[-1] == b""  # every line ends with a newline
    assert [orjson.loads(line)["request_id"] for line in lines[:-1]] == ["a", "b"]
    assert len(later) == 2 and orjson.loads(later[1])["request_id"] == "c"
    assert stdout.flushes == 2


@pytest.mark.parametrize("problem", [OSError, ValueError])  # a broken pipe; a closed file
def test_a_broken_stdout_drops_the_lines_and_fails_no_request(
    problem: type[Exception], caplog: pytest.LogCaptureFixture
) -> None:
    stdout = FakeStdout(fail=problem)
    log = RequestLog(stdout)  # type: ignore[arg-type]

    async def main() -> None:
        log.write(record())
        await next_turn()
        stdout.fail = None  # stdout works again: the next line goes out, the dropped one is not replayed
        log.write(RequestRecord("req-2", "/v1/models", False))
        await next_turn()

    with caplog.at_level(logging.WARNING, logger="gateway"):
        asyncio.run(main())
    assert any("cannot write to stdout" in r.getMessage() for r in caplog.records)
    assert [orjson.loads(w)["request_id"] for w in stdout.writes] == ["req-2"]


def test_flush_with_nothing_pending_writes_nothing() -> None:
    stdout = FakeStdout()
    RequestLog(stdout).flush()  # type: ignore[arg-type]
    assert (stdout.writes, stdout.flushes) == ([], 0)
