"""relay_events (gateway/providers/sse.py): a provider's server-sent events relayed to the client.

The provider's response is a fake with aiohttp's surface (`content.iter_any()`, `close()`, `release()`): each
test chooses the reads, so an event split at any byte, a CR at a read's end, a cut or a timeout is exact.

These tests pin what stays whoever ends a good stream: which events are relayed (as the provider's bytes,
or re-encoded when the adapter changed them), what the outcome records, and that a stream which did not
complete has its connection closed (the provider stops generating) rather than released to the pool. The end
of a good stream (the settled usage chunk and [DONE]) is moving out of relay_events into the pipeline; the
helpers here accept either (`relayed_events` drops a final [DONE]), and the two tests of the end itself are
at the bottom, each skipped on the side of the move it does not apply to.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import orjson
import pytest

from gateway.http.legacy import as_text_completion
from gateway.providers import sse
from gateway.providers.base import ChunkAction, StreamOutcome
from gateway.providers.sse import DONE, MALFORMED_TOLERANCE, relay_events
from gateway.types import Json, Usage

WAIT = 5.0  # seconds: a bound on a hang, never a synchronisation


class FakeContent:
    def __init__(self, reads: list[bytes], end: BaseException | None, hang: asyncio.Future[None] | None) -> None:
        self.reads = reads
        self.end = end
        self.hang = hang
        self.taken = 0  # reads handed out

    async def iter_any(self) -> AsyncIterator[bytes]:
        for data in self.reads:
            self.taken += 1
            yield data
        if self.hang is not None:
            await self.hang  # a provider that sends nothing more
        if self.end is not None:
            raise self.end


class FakeResponse:
    """What relay_events uses of an aiohttp.ClientResponse."""

    def __init__(
        self, reads: list[bytes], end: BaseException | None = None, hang: asyncio.Future[None] | None = None
    ) -> None:
        self.content = FakeContent(reads, end, hang)
        self.closed = 0
        self.released = 0

    def close(self) -> None:
        self.closed += 1

    def release(self) -> None:
        self.released += 1


def capture_usage(chunk: Json, outcome: StreamOutcome) -> ChunkAction:
    """An adapter's fix_chunk, as the OpenAI-compatible ones do it: usage is captured, a usage-only chunk
    dropped (the gateway sends its own), finish reasons noted."""
    action = ChunkAction.KEEP
    if "usage" in chunk:
        usage = chunk["usage"]
        outcome.usage = Usage(prompt_tokens=usage["prompt_tokens"], completion_tokens=usage["completion_tokens"])
        if not chunk.get("choices"):
            return ChunkAction.DROP
        chunk.pop("usage")
        action = ChunkAction.CHANGED
    for choice in chunk.get("choices") or ():
        if choice.get("finish_reason"):
            outcome.finish_reason = choice["finish_reason"]
    return action


async def collect(
    response: FakeResponse,
    outcome: StreamOutcome,
    fix_chunk: Callable[[Json, StreamOutcome], ChunkAction] = capture_usage,
    provider: str = "mistral",
    **options: Any,
) -> list[bytes]:
    """Every write relay_events makes (one per read that produced output)."""
    return [piece async for piece in relay_events(response, provider, fix_chunk, outcome, **options)]  # type: ignore[arg-type]


def relay(reads: list[bytes], **options: Any) -> tuple[list[bytes], StreamOutcome, FakeResponse]:
    """Relay `reads` in an event loop of its own: (writes, outcome, response)."""
    outcome = StreamOutcome()
    response = FakeResponse(reads, options.pop("end", None))
    writes = asyncio.run(asyncio.wait_for(collect(response, outcome, **options), WAIT))
    return writes, outcome, response


def relayed_events(writes: list[bytes]) -> list[bytes]:
    """The events written, each with its trailing blank line, without a final [DONE] (relay_events may or
    may not send it: that is moving to the pipeline)."""
    data = b"".join(writes)
    if data.endswith(DONE):
        data = data[: -len(DONE)]
    assert DONE not in data, "nothing may follow [DONE]"
    return [event + b"\n\n" for event in data.split(b"\n\n")[:-1]]


def error_of(event: bytes) -> Json:
    assert event.startswith(b"data: ") and event.endswith(b"\n\n")
    body = orjson.loads(event[6:-2])
    assert set(body) == {"error"} and body["error"]["type"] == "upstream_error"
    return body["error"]


def chunk(text: str, finish: str | None = None, **extra: Any) -> bytes:
    body = {
        "id": "cmpl-1",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": "mistral-small-latest",
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}],
        **extra,
    }
    return orjson.dumps(body)


USAGE = orjson.dumps({"id": "cmpl-1", "choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 3}})
FIRST, SECOND = chunk("Hel"), chunk("lo", "stop")
# A provider's stream as it is on the wire: two chunks, the usage chunk, the end.
STREAM = b"data: " + FIRST + b"\n\ndata: " + SECOND + b"\n\ndata: " + USAGE + b"\n\ndata: [DONE]\n\n"
RELAYED = [b"data: " + FIRST + b"\n\n", b"data: " + SECOND + b"\n\n"]  # the usage chunk is the gateway's to send


def assert_completed(outcome: StreamOutcome, response: FakeResponse) -> None:
    assert (outcome.completed, outcome.error) == (True, None)
    assert (response.released, response.closed) == (1, 0)  # a finished response goes back to the pool


def assert_failed(outcome: StreamOutcome, response: FakeResponse, error: str) -> None:
    assert (outcome.completed, outcome.error) == (False, error)
    assert (response.closed, response.released) == (1, 0)  # closed: the provider stops generating


# -- a good stream, however it is cut into reads -------------------------------------------------------


def test_a_good_stream_in_one_read_is_relayed_in_one_write() -> None:
    writes, outcome, response = relay([STREAM])
    assert relayed_events(writes) == RELAYED
    assert len(writes) == 1  # what arrived in one read leaves in one write
    assert_completed(outcome, response)
    assert outcome.usage == Usage(prompt_tokens=7, completion_tokens=3)
    assert (outcome.chunks, outcome.malformed_chunks, outcome.finish_reason) == (2, 0, "stop")
    assert outcome.completion_chars == len("Hello")
    assert outcome.first_chunk_at is not None


def splits_of(stream: bytes) -> list[list[bytes]]:
    """The stream in two reads at every offset, one byte per read, and some seeded random cuttings."""
    cuts = [[stream[:i], stream[i:]] for i in range(1, len(stream))]
    cuts.append([stream[i : i + 1] for i in range(len(stream))])
    rng = random.Random(13)
    for _ in range(200):
        points = sorted(rng.sample(range(1, len(stream)), rng.randint(2, 12)))
        cuts.append([stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)])
    return cuts


async def relay_each(cuttings: list[list[bytes]]) -> list[tuple[list[bytes], StreamOutcome, FakeResponse]]:
    results = []
    for reads in cuttings:
        outcome, response = StreamOutcome(), FakeResponse(reads)
        results.append((await collect(response, outcome), outcome, response))
    return results


@pytest.mark.parametrize("line_end", [b"\n", b"\r\n"], ids=["lf", "crlf"])
def test_an_event_split_at_any_byte_is_relayed_whole(line_end: bytes) -> None:
    stream = STREAM.replace(b"\n", line_end)
    cuttings = splits_of(stream)
    if line_end == b"\r\n":  # a CR at a read's end, its LF the next read's first byte, at every line end
        assert any(reads[0].endswith(b"\r") for reads in cuttings)
    for reads, (writes, outcome, response) in zip(
        cuttings, asyncio.run(asyncio.wait_for(relay_each(cuttings), 30)), strict=True
    ):
        assert relayed_events(writes) == RELAYED, reads  # CRLF goes out as LF, the provider's JSON as it was
        assert_completed(outcome, response)
        assert outcome.usage == Usage(prompt_tokens=7, completion_tokens=3)
        assert outcome.chunks == 2


def test_a_lone_cr_read_and_blank_lines_between_events() -> None:
    reads = [b"\r\n\r\n", b"data: " + FIRST, b"\r", b"\n\r", b"\n\n\n", b"data: [DONE]\r\n\r\n"]
    writes, outcome, response = relay(reads)
    assert relayed_events(writes) == [b"data: " + FIRST + b"\n\n"]
    assert_completed(outcome, response)


def test_sse_fields_other_than_data_and_comments_are_ignored() -> None:
    reads = [
        b": keep-alive\n\n",
        b"event: message\nid: 1\nretry: 5000\ndata: " + FIRST + b"\n\n",
        b"data:" + SECOND + b"\n\n",  # no space after the colon
        b"data:  [DONE]  \n\n",
    ]
    writes, outcome, response = relay(reads)
    assert relayed_events(writes) == [b"data: " + FIRST + b"\n\n", b"data: " + SECOND + b"\n\n"]
    assert outcome.malformed_chunks == 0
    assert_completed(outcome, response)


def test_a_multi_line_data_event_is_relayed_as_one_valid_event() -> None:
    body = {"id": "cmpl-1", "choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": None}]}
    text = orjson.dumps(body, option=orjson.OPT_INDENT_2)  # JSON over several lines, one data line each
    event = b"".join(b"data: " + line + b"\n" for line in text.split(b"\n")) + b"\n"
    writes, outcome, response = relay([event, b"data: [DONE]\n\n"])
    assert (outcome.chunks, outcome.malformed_chunks) == (1, 0)  # parsed as one chunk (this holds already)
    assert_completed(outcome, response)
    (relayed,) = relayed_events(writes)
    # What a client's SSE parser makes of it: the data lines of the event, joined with "\n".
    data = b"\n".join(line[5:].removeprefix(b" ") for line in relayed.split(b"\n") if line.startswith(b"data:"))
    assert orjson.loads(data) == body


def test_a_multi_line_data_event_is_parsed_as_one_chunk() -> None:
    # What the relay sees in a multi-line event.
    lines = [b'{"id": "cmpl-1",', b'"choices": [{"index": 0, "delta": {"content": "Hi"}}]}']
    event = b"".join(b"data: " + line + b"\n" for line in lines) + b"\n"
    seen: list[Json] = []

    def fix(chunk: Json, outcome: StreamOutcome) -> ChunkAction:
        seen.append(chunk)
        return ChunkAction.CHANGED  # re-encoded: one line

    writes, outcome, response = relay([event, b"data: [DONE]\n\n"], fix_chunk=fix)
    assert seen == [{"id": "cmpl-1", "choices": [{"index": 0, "delta": {"content": "Hi"}}]}]
    assert relayed_events(writes) == [sse.sse(seen[0])]
    assert (outcome.chunks, outcome.completion_chars) == (1, 2)
    assert_completed(outcome, response)


# -- what the adapter decides, and what the outcome records ---------------------------------------------


def test_changed_chunks_are_re_encoded_dropped_ones_neither_sent_nor_counted_and_reshape_applies() -> None:
    def fix(chunk: Json, outcome: StreamOutcome) -> ChunkAction:
        text = chunk["choices"][0]["delta"]["content"]
        if text == "drop":
            return ChunkAction.DROP
        if text == "fix":
            chunk["choices"][0]["delta"]["content"] = "fixed"
            return ChunkAction.CHANGED
        return ChunkAction.KEEP

    reads = [b"data: " + chunk(t) + b"\n\n" for t in ("keep", "drop", "fix")] + [b"data: [DONE]\n\n"]
    writes, outcome, _ = relay(reads, fix_chunk=fix)
    fixed = orjson.loads(chunk("fix"))
    fixed["choices"][0]["delta"]["content"] = "fixed"
    assert relayed_events(writes) == [b"data: " + chunk("keep") + b"\n\n", sse.sse(fixed)]
    assert outcome.chunks == 2
    assert outcome.completion_chars == len("keep") + len("fixed")

    def reshape(chunk: Json) -> Json:
        return {"reshaped": chunk["choices"][0]["delta"]["content"]}

    writes, _, _ = relay(reads, fix_chunk=fix, reshape=reshape)
    assert relayed_events(writes) == [sse.sse({"reshaped": "keep"}), sse.sse({"reshaped": "fixed"})]


def test_a_reshaper_returning_bytes_renders_the_doors_own_events_from_the_parsed_chunk() -> None:
    """A translating door's renderer (the Messages and Responses doors) gets each chunk the relay parsed, and its
    bytes go out as they are; the settled usage chunk reaches it with the cost, and [DONE] follows."""
    seen: list[Json] = []

    def render(chunk: Json) -> bytes:
        seen.append(chunk)
        text = chunk["choices"][0]["delta"]["content"] if chunk["choices"] else "usage"
        return b"event: door\ndata: " + orjson.dumps({"text": text}) + b"\n\n"

    reads = [b"data: " + chunk(t) + b"\n\n" for t in ("one", "two")] + [b"data: [DONE]\n\n"]
    writes, outcome, _ = relay(reads, reshape=render)
    assert b"".join(writes) == b"".join(b'event: door\ndata: {"text":"%s"}\n\n' % t for t in (b"one", b"two"))
    assert [c["choices"][0]["delta"]["content"] for c in seen] == ["one", "two"] and outcome.chunks == 2
    outcome.usage = Usage(prompt_tokens=3, completion_tokens=2)
    end = sse.stream_end(outcome, True, render, {"cost_usd": 0.5})
    assert end == b'event: door\ndata: {"text":"usage"}\n\n' + sse.DONE
    assert seen[-1]["x_gateway"] == {"cost_usd": 0.5} and seen[-1]["usage"]["completion_tokens"] == 2


def test_the_outcome_counts_text_reasoning_and_tool_arguments_and_keeps_a_transcript() -> None:
    body = {
        "id": "c",
        "choices": [
            {
                "index": 0,
                "delta": {
                    "reasoning_content": "think",
                    "content": "say",
                    "tool_calls": [{"index": 0, "function": {"name": "f", "arguments": '{"a":1}'}}],
                },
            }
        ],
    }
    outcome = StreamOutcome(transcript=[])
    response = FakeResponse([b"data: " + orjson.dumps(body) + b"\n\ndata: [DONE]\n\n"])
    asyncio.run(collect(response, outcome))
    assert outcome.completion_chars == len("think") + len("say") + len('{"a":1}')
    assert outcome.transcript == ["say", "think"]  # content, then reasoning, per chunk


def test_a_usage_only_chunk_is_captured_not_counted_and_not_malformed() -> None:
    writes, outcome, response = relay([b"data: " + USAGE + b"\n\n", b"data: [DONE]\n\n"])
    assert relayed_events(writes) == []
    assert outcome.usage == Usage(prompt_tokens=7, completion_tokens=3)
    assert (outcome.chunks, outcome.malformed_chunks) == (0, 0)
    assert_completed(outcome, response)


def test_nothing_after_done_is_read_or_relayed() -> None:
    after = b"data: " + chunk("late") + b"\n\n"
    writes, outcome, response = relay([b"data: " + FIRST + b"\n\ndata: [DONE]\n\n" + after, after])
    assert relayed_events(writes) == [b"data: " + FIRST + b"\n\n"]
    assert response.content.taken == 1  # the read after [DONE] was never taken
    assert_completed(outcome, response)


# -- malformed events ---------------------------------------------------------------------------------

GARBAGE = [b"data: not json\n\n", b'data: {"no": "choices"}\n\n', b"data: [1, 2]\n\n", b'data: "text"\n\n']


def garbage(n: int) -> list[bytes]:
    return [GARBAGE[i % len(GARBAGE)] for i in range(n)]


def test_up_to_the_tolerance_malformed_events_are_skipped() -> None:
    reads = [*garbage(MALFORMED_TOLERANCE), b"data: " + FIRST + b"\n\n", b"data: [DONE]\n\n"]
    writes, outcome, response = relay(reads)
    assert relayed_events(writes) == [b"data: " + FIRST + b"\n\n"]
    assert (outcome.malformed_chunks, outcome.chunks) == (MALFORMED_TOLERANCE, 1)
    assert_completed(outcome, response)


def test_more_malformed_than_tolerated_and_than_valid_ends_the_stream() -> None:
    reads = [b"data: " + FIRST + b"\n\n", *garbage(MALFORMED_TOLERANCE + 1), b"data: " + SECOND + b"\n\n"]
    writes, outcome, response = relay(reads)
    *relayed, last = relayed_events(writes)
    assert relayed == [b"data: " + FIRST + b"\n\n"]
    assert error_of(last)["code"] == "upstream_malformed"
    assert error_of(last)["message"] == "mistral sent a stream of malformed events (9 malformed, 1 valid)"
    assert response.content.taken == len(reads) - 1  # it stopped at once
    assert_failed(outcome, response, "malformed")


def test_malformed_events_among_more_valid_ones_are_tolerated_past_the_tolerance() -> None:
    valid = [b"data: " + chunk(str(i)) + b"\n\n" for i in range(2 * MALFORMED_TOLERANCE)]
    reads = [*valid, *garbage(2 * MALFORMED_TOLERANCE - 1), b"data: [DONE]\n\n"]
    writes, outcome, response = relay(reads)
    assert relayed_events(writes) == valid
    assert outcome.malformed_chunks == 2 * MALFORMED_TOLERANCE - 1
    assert_completed(outcome, response)


def test_a_stream_of_only_malformed_events_is_malformed_even_with_done() -> None:
    writes, outcome, response = relay([*garbage(2), b"data: [DONE]\n\n"])
    (event,) = relayed_events(writes)
    assert error_of(event)["code"] == "upstream_malformed"
    assert_failed(outcome, response, "malformed")


# -- errors the provider sends in the stream --------------------------------------------------------


@pytest.mark.parametrize(
    ("provider", "event", "message"),
    [
        (  # Mistral's error body, sent as an event
            "mistral",
            {"object": "error", "message": "Service unavailable", "type": "internal", "param": None, "code": "3000"},
            "mistral failed mid-stream: Service unavailable (code 3000)",
        ),
        (  # Moonshot's
            "moonshot",
            {"error": {"message": "The engine is overloaded", "type": "engine_overloaded_error"}},
            "moonshot failed mid-stream: The engine is overloaded",
        ),
        ("vllm", {"error": "out of memory"}, "out of memory"),  # (the message is the repr of the dict)
        (  # with an empty choices list, as some OpenAI-compatible servers send it
            "openrouter",
            {"error": {"message": "upstream died", "code": 502}, "choices": []},
            "openrouter failed mid-stream: upstream died",
        ),
    ],
)
def test_an_in_band_error_ends_the_stream_with_the_providers_message(provider: str, event: Json, message: str) -> None:
    reads = [b"data: " + FIRST + b"\n\ndata: " + orjson.dumps(event) + b"\n\n", b"data: " + SECOND + b"\n\n"]
    writes, outcome, response = relay(reads, provider=provider)
    relayed, last = relayed_events(writes)
    assert relayed == b"data: " + FIRST + b"\n\n"
    assert error_of(last)["code"] == "upstream_stream_error"
    assert error_of(last)["message"].startswith(f"{provider} failed mid-stream: ")
    assert message in error_of(last)["message"]
    assert response.content.taken == 1
    assert outcome.malformed_chunks == 0
    assert_failed(outcome, response, "upstream_error")


def test_a_chunk_with_choices_is_a_chunk_whatever_else_it_carries() -> None:
    odd = chunk("fine", error=None)  # an "error" key beside real choices
    writes, outcome, response = relay([b"data: " + odd + b"\n\ndata: [DONE]\n\n"])
    assert relayed_events(writes) == [b"data: " + odd + b"\n\n"]
    assert_completed(outcome, response)


def test_mistrals_finish_reason_error_ends_the_stream_as_an_error() -> None:
    reads = [b"data: " + FIRST + b"\n\ndata: " + chunk("", "error") + b"\n\ndata: [DONE]\n\n"]
    writes, outcome, response = relay(reads)
    relayed, last = relayed_events(writes)
    assert relayed == b"data: " + FIRST + b"\n\n"
    assert error_of(last) == {
        "message": "mistral ended the answer with an error",
        "type": "upstream_error",
        "param": None,
        "code": "upstream_stream_error",
    }
    assert outcome.chunks == 1  # the failed chunk is not relayed
    assert_failed(outcome, response, "upstream_error")


# -- size limit ---------------------------------------------------------------------------------------


def big_event(size: int) -> bytes:
    """A data event of exactly `size` bytes, without its blank line."""
    head = b"data: " + chunk("")[:-1] + b', "pad": "'
    return head + b"x" * (size - len(head) - 2) + b'"}'


@pytest.mark.parametrize("reads_of", ["one read", "two reads"])
def test_an_event_over_max_event_bytes_ends_the_stream(reads_of: str) -> None:
    event = big_event(600) + b"\n\n"
    reads = [event] if reads_of == "one read" else [event[:300], event[300:]]
    writes, outcome, response = relay([b"data: " + FIRST + b"\n\n", *reads, DONE], max_event_bytes=599)
    relayed, last = relayed_events(writes)
    assert relayed == b"data: " + FIRST + b"\n\n"
    assert error_of(last)["code"] == "upstream_event_too_large"
    assert "larger than 599 bytes" in error_of(last)["message"]
    assert outcome.malformed_chunks == 1
    assert_failed(outcome, response, "malformed")


def test_an_event_growing_past_the_limit_is_refused_before_its_end_arrives() -> None:
    reads = [b"data: " + b"x" * 100, b"x" * 100, b"x" * 100, b"never read\n\n"]
    writes, outcome, response = relay(reads, max_event_bytes=250)
    (last,) = relayed_events(writes)
    assert error_of(last)["code"] == "upstream_event_too_large"
    assert response.content.taken == 3  # the limit was crossed on the third read
    assert_failed(outcome, response, "malformed")


def test_an_event_of_exactly_max_event_bytes_passes() -> None:
    event = big_event(600)
    for reads in ([event + b"\n\n"], [event[:300], event[300:] + b"\n\n"], [event, b"\n\n"]):
        writes, outcome, response = relay([*reads, DONE], max_event_bytes=600)
        assert relayed_events(writes) == [event + b"\n\n"]
        assert_completed(outcome, response)


def test_an_event_of_exactly_max_event_bytes_passes_when_a_read_ends_inside_its_blank_line() -> None:
    event = big_event(600)
    writes, outcome, response = relay([event + b"\n", b"\n", DONE], max_event_bytes=600)
    assert relayed_events(writes) == [event + b"\n\n"]
    assert_completed(outcome, response)


# -- a stream that does not finish --------------------------------------------------------------------


@pytest.mark.parametrize(
    "end",
    [None, aiohttp.ClientPayloadError("cut"), aiohttp.ServerDisconnectedError()],
    ids=["eof", "payload_error", "disconnected"],
)
def test_a_cut_stream_ends_with_stream_cut(end: BaseException | None) -> None:
    writes, outcome, response = relay([b"data: " + FIRST + b"\n\n", b"data: " + SECOND[:20]], end=end)
    relayed, last = relayed_events(writes)
    assert relayed == b"data: " + FIRST + b"\n\n"
    assert error_of(last) == {
        "message": "mistral closed the stream before it finished",
        "type": "upstream_error",
        "param": None,
        "code": "upstream_stream_cut",
    }
    assert outcome.usage is None
    assert_failed(outcome, response, "stream_cut")


def test_a_timeout_ends_with_upstream_timeout() -> None:
    writes, outcome, response = relay([b"data: " + FIRST + b"\n\n"], end=TimeoutError())
    relayed, last = relayed_events(writes)
    assert relayed == b"data: " + FIRST + b"\n\n"
    assert error_of(last)["code"] == "upstream_timeout"
    assert error_of(last)["message"] == "mistral stopped sending before the stream finished (timeout)"
    assert_failed(outcome, response, "timeout")


def test_a_client_that_leaves_closes_the_providers_connection() -> None:
    async def main() -> tuple[StreamOutcome, FakeResponse, list[bytes]]:
        outcome = StreamOutcome()
        response = FakeResponse([b"data: " + FIRST + b"\n\n"], hang=asyncio.get_running_loop().create_future())
        got: list[bytes] = []
        first = asyncio.Event()

        async def client() -> None:
            async for piece in relay_events(response, "mistral", capture_usage, outcome):  # type: ignore[arg-type]
                got.append(piece)
                first.set()

        task = asyncio.ensure_future(client())
        await first.wait()
        task.cancel()  # the client went away while the provider was still generating
        with pytest.raises(asyncio.CancelledError):
            await task
        return outcome, response, got

    outcome, response, got = asyncio.run(asyncio.wait_for(main(), WAIT))
    assert got == [b"data: " + FIRST + b"\n\n"]
    assert_failed(outcome, response, "client_gone")


def test_a_client_that_stops_reading_closes_the_providers_connection() -> None:
    async def main() -> tuple[StreamOutcome, FakeResponse]:
        outcome = StreamOutcome()
        response = FakeResponse([b"data: " + FIRST + b"\n\n", b"data: " + SECOND + b"\n\n", DONE])
        events = relay_events(response, "mistral", capture_usage, outcome)  # type: ignore[arg-type]
        await events.__anext__()
        await events.aclose()  # e.g. the response was abandoned
        return outcome, response

    outcome, response = asyncio.run(asyncio.wait_for(main(), WAIT))
    assert (outcome.completed, response.closed, response.released) == (False, 1, 0)


# -- the end of a good stream (sent by the pipeline once settled: sse.stream_end) --------------------------


def test_stream_end_sends_the_usage_chunk_only_if_asked_then_done() -> None:
    writes, outcome, _ = relay([STREAM])
    assert outcome.completed
    end = sse.stream_end  # type: ignore[attr-defined]
    assert end(outcome, False, None, {"cost_usd": 1.0}) == DONE
    usage_event, done = end(outcome, True, None, {"cost_usd": 0.25}).split(b"\n\n", 1)
    assert done == DONE
    assert orjson.loads(usage_event.removeprefix(b"data: ")) == {
        "id": "cmpl-1",  # the stream's own id, created and model
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": "mistral-small-latest",
        "choices": [],
        "usage": {
            "prompt_tokens": 7,
            "completion_tokens": 3,
            "total_tokens": 10,
            "prompt_tokens_details": {"cached_tokens": 0},
        },
        "x_gateway": {"cost_usd": 0.25},
    }
    no_usage = StreamOutcome(completed=True)
    assert end(no_usage, True, None, None) == DONE  # the provider reported none: nothing to send
    # A reshaped stream (legacy text completions) keeps the settled cost on its usage chunk.
    legacy, _ = end(outcome, True, as_text_completion, {"cost_usd": 0.25}).split(b"\n\n", 1)
    shaped = orjson.loads(legacy.removeprefix(b"data: "))
    assert shaped["object"] == "text_completion" and shaped["x_gateway"] == {"cost_usd": 0.25}
    assert shaped["usage"]["completion_tokens"] == 3
