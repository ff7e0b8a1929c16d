"""Moonshot's batch client against a fake Kimi platform that checks the wire format of Moonshot's batch guide and
API reference (OpenAI-shaped: OpenAI's files and batch references) and feeds back batches and result files,
including lines the client must survive."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from gateway.errors import GatewayError
from gateway.http.servers import ThreadedServer
from gateway.providers.batches import build_batch_api
from gateway.providers.batches.base import GATEWAY_JOB, JobStatus, UpstreamLine
from gateway.providers.batches.moonshot import MoonshotBatchApi, completion_window, job_status
from gateway.providers.moonshot import MoonshotAdapter
from tests.providers.batches.fake_provider import (
    ALLOWED_HEADERS,
    KEY,
    FakeProvider,
    jsonl,
    model,
    poll_until_done,
    provider,
    serving,
)
from tests.support import http
from tests.support.emulators import MOONSHOT_KEY

UPSTREAM = "kimi-k2.6"
BATCH = {
    "id": "batch_abc123",
    "object": "batch",
    "endpoint": "/v1/chat/completions",
    "input_file_id": "file-in-1",
    "completion_window": "1d",
    "status": "validating",
    "created_at": 1,
    "request_counts": {"total": 0, "completed": 0, "failed": 0},
}


def api(base_url: str) -> MoonshotBatchApi:
    p = provider("moonshot", base_url)
    built = build_batch_api(p, MoonshotAdapter(p))
    assert isinstance(built, MoonshotBatchApi)
    return built


def fake() -> FakeProvider:
    return FakeProvider(job_path="/v1/batches", created=dict(BATCH))


LINES = [
    UpstreamLine(
        "line-2",
        {
            "messages": [{"role": "developer", "content": "be brief"}, {"role": "user", "content": "hi"}],
            "temperature": 0,  # fixed on K2.6: left out, as the guide says and the interactive path does
            "max_tokens": 100,
            "stream": False,
        },
    ),
    UpstreamLine("line-5", {"messages": [{"role": "user", "content": "again"}]}),
]


@pytest.mark.slow
def test_submit_uploads_openai_shaped_lines_naming_the_model() -> None:
    async def main() -> None:
        provider_ = fake()
        async with serving(provider_) as url:
            client = api(url)
            try:
                submitted = await client.submit(
                    "/v1/chat/completions", model(UPSTREAM, fixed_sampling=True), LINES, 24, {"gateway_batch": "b1"}
                )
            finally:
                await client.close()
        assert (submitted.file_id, submitted.job_id) == ("file-in-1", "batch_abc123")
        (upload,) = provider_.of("POST", "/v1/files")
        assert upload.headers["content-type"].startswith("multipart/form-data")
        assert set(upload.fields) == {"purpose", "file"} and upload.fields["purpose"] == "batch"
        assert upload.fields["file"][0].endswith(".jsonl")  # Moonshot requires the extension
        lines = provider_.uploaded_lines()
        assert [set(line) for line in lines] == [{"custom_id", "method", "url", "body"}] * 2
        assert all(line["method"] == "POST" and line["url"] == "/v1/chat/completions" for line in lines)
        assert [line["custom_id"] for line in lines] == ["line-2", "line-5"]
        # One model per file, on every line; the body as the interactive path sends it.
        assert {line["body"]["model"] for line in lines} == {UPSTREAM}
        first = lines[0]["body"]
        assert first["messages"][0] == {"role": "system", "content": "be brief"}
        assert first["max_completion_tokens"] == 100
        assert not {"temperature", "max_tokens", "stream", "stream_options"} & set(first)
        (create,) = provider_.of("POST", "/v1/batches")
        assert create.json == {
            "input_file_id": "file-in-1",
            "endpoint": "/v1/chat/completions",
            "completion_window": "1d",
            "metadata": {"gateway_batch": "b1"},
        }
        for request in provider_.received:
            assert request.headers["authorization"] == f"Bearer {KEY}"
            assert set(request.headers) <= ALLOWED_HEADERS, request.headers

    asyncio.run(main())


@pytest.mark.parametrize(
    ("hours", "window"),
    [(0, "12h"), (1, "12h"), (12, "12h"), (20, "20h"), (24, "1d"), (36, "36h"), (72, "3d"), (168, "7d"), (1000, "7d")],
)
def test_completion_window(hours: int, window: str) -> None:
    assert completion_window(hours) == window


def test_only_chat_completions_are_batched() -> None:
    async def main() -> None:
        client = api("http://127.0.0.1:9/v1")  # refused before anything is sent
        try:
            with pytest.raises(GatewayError) as refused:
                await client.submit(
                    "/v1/embeddings", model("moonshot-embed"), [UpstreamLine("line-0", {"input": "x"})], 24, {}
                )
        finally:
            await client.close()
        assert refused.value.status == 400 and refused.value.param == "endpoint"

    asyncio.run(main())


@pytest.mark.slow
def test_a_refused_batch_is_mapped_and_its_file_deleted() -> None:
    async def main() -> None:
        provider_ = fake()
        provider_.refuse["POST /v1/batches"] = (
            403,
            {
                "error": {
                    "message": "Your account is suspended, please check your balance",
                    "type": "exceeded_current_quota_error",
                }
            },
        )
        async with serving(provider_) as url:
            client = api(url)
            try:
                with pytest.raises(GatewayError) as refused:
                    await client.submit("/v1/chat/completions", model(UPSTREAM), LINES, 24, {})
            finally:
                await client.close()
        assert refused.value.status == 503 and refused.value.code == "upstream_quota_exhausted"
        assert provider_.of("DELETE", "/v1/files/file-in-1")

    asyncio.run(main())


@pytest.mark.slow
def test_a_line_the_adapter_refuses_names_the_line() -> None:
    async def main() -> None:
        provider_ = fake()
        async with serving(provider_) as url:
            client = api(url)
            try:
                bad = UpstreamLine("line-8", {"messages": [{"role": "user", "content": "x"}], "no_such_field": 1})
                with pytest.raises(GatewayError) as refused:
                    await client.submit("/v1/chat/completions", model(UPSTREAM), [LINES[1], bad], 24, {})
            finally:
                await client.close()
        assert refused.value.status == 400 and refused.value.message.startswith("line-8: ")
        assert not provider_.received  # nothing uploaded

    asyncio.run(main())


@pytest.mark.slow
def test_poll_and_cancel() -> None:
    async def main() -> None:
        provider_ = fake()
        provider_.statuses = [
            dict(BATCH, status="in_progress", request_counts={"total": 3, "completed": 1, "failed": 0}),
            dict(BATCH, status="finalizing"),
            dict(
                BATCH,
                status="completed",
                output_file_id="file-out",
                error_file_id="file-err",
                request_counts={"total": 3, "completed": 2, "failed": 1},
            ),
        ]
        provider_.cancelled = dict(BATCH, status="cancelling")
        async with serving(provider_) as url:
            client = api(url)
            try:
                seen = [await client.status("batch_abc123") for _ in range(3)]
                cancelling = await client.cancel("batch_abc123")
            finally:
                await client.close()
        assert [s.state for s in seen] == ["running", "running", "succeeded"]
        assert seen[0].total == 3 and seen[0].completed == 1
        assert seen[2] == JobStatus(
            "succeeded", "completed", "file-out", "file-err", None, 3, 2, 1, job_id="batch_abc123"
        )
        assert cancelling.state == "cancelling"
        assert len(provider_.of("GET", "/v1/batches/batch_abc123")) == 3
        assert provider_.of("POST", "/v1/batches/batch_abc123/cancel")

    asyncio.run(main())


@pytest.mark.parametrize(
    ("word", "state"),
    [
        ("validating", "queued"),
        ("in_progress", "running"),
        ("finalizing", "running"),
        ("completed", "succeeded"),
        ("failed", "failed"),
        ("expired", "expired"),
        ("cancelling", "cancelling"),
        ("cancelled", "cancelled"),
    ],
)
def test_status_words(word: str, state: str) -> None:
    assert job_status("moonshot", dict(BATCH, status=word)).state == state


NOW = 1_700_000_000


def listed_batch(index: int, created_at: Any, metadata: Any, **more: Any) -> dict[str, Any]:
    return dict(BATCH, id=f"batch_{index}", created_at=created_at, metadata=metadata, **more)


def openai_list(batches: list[Any]) -> Callable[[dict[str, str]], dict[str, Any]]:
    """OpenAI's (Moonshot's) batch list over `batches` (newest first): `limit` batches after the `after` cursor,
    and `has_more`."""

    def answer(query: dict[str, str]) -> dict[str, Any]:
        ids = [b["id"] if isinstance(b, dict) else None for b in batches]
        start = ids.index(query["after"]) + 1 if "after" in query else 0
        page = batches[start : start + int(query["limit"])]
        return {"object": "list", "data": page, "has_more": start + len(page) < len(batches)}

    return answer


def find(provider_: FakeProvider, gateway_job: str, created_after: int = NOW) -> JobStatus | None:
    async def main() -> JobStatus | None:
        async with serving(provider_) as url:
            client = api(url)
            try:
                return await client.find_job(gateway_job, created_after)
            finally:
                await client.close()

    return asyncio.run(main())


@pytest.mark.slow
def test_find_job_pages_to_the_tagged_batch() -> None:
    tag = "job_7"
    others = [
        "not a batch",
        listed_batch(1, NOW + 900, None),
        listed_batch(2, NOW + 800, {"gateway_batch": tag}),  # the tag's value under another key
        listed_batch(3, NOW + 700, {GATEWAY_JOB: tag.upper()}),
    ] + [listed_batch(10 + i, NOW + 600 - i, {"gateway_batch": "b", GATEWAY_JOB: f"other-{i}"}) for i in range(146)]
    target = listed_batch(
        99,
        NOW,  # created at the bound itself: "at or after"
        {"gateway_batch": "b", GATEWAY_JOB: tag},
        status="in_progress",
        request_counts={"total": 4, "completed": 1, "failed": 0},
    )
    older_twin = listed_batch(98, NOW, {"gateway_batch": "b", GATEWAY_JOB: tag}, status="validating")
    provider_ = fake()
    provider_.listing = openai_list([*others, target, older_twin])
    found = find(provider_, tag)
    assert found is not None
    assert (found.job_id, found.state, found.total, found.completed) == ("batch_99", "running", 4, 1)
    # 100 a page, the next page after the last batch of the one before.
    assert provider_.listed() == [{"limit": "100"}, {"limit": "100", "after": "batch_105"}]


@pytest.mark.slow
def test_find_job_ignores_other_tags_and_stops_at_an_older_batch() -> None:
    tag = "job_7"
    batches = [listed_batch(i, NOW + 500 - i, {GATEWAY_JOB: f"other-{i}"}) for i in range(120)]
    batches.append(listed_batch(200, NOW - 1, {GATEWAY_JOB: tag}))  # tagged, but a second before the bound
    batches += [listed_batch(300 + i, NOW - 10 - i, {GATEWAY_JOB: tag}) for i in range(200)]
    provider_ = fake()
    provider_.listing = openai_list(batches)
    assert find(provider_, tag) is None
    assert len(provider_.listed()) == 2  # the older batch is on the second page: no third asked for


@pytest.mark.slow
def test_find_job_not_found_ends_with_has_more() -> None:
    provider_ = fake()
    # Batches that say nothing of their creation time are judged by their tag alone.
    provider_.listing = openai_list([listed_batch(i, None, {GATEWAY_JOB: f"other-{i}"}) for i in range(150)])
    assert find(provider_, "job_7") is None
    assert len(provider_.listed()) == 2
    untimed = fake()
    untimed.listing = openai_list([listed_batch(1, None, {GATEWAY_JOB: "job_7"})])
    found = find(untimed, "job_7")
    assert found is not None and found.job_id == "batch_1"
    empty = fake()
    empty.listing = openai_list([])
    assert find(empty, "job_7") is None and len(empty.listed()) == 1


@pytest.mark.slow
def test_find_job_searches_a_bounded_number_of_pages(caplog: pytest.LogCaptureFixture) -> None:
    provider_ = fake()
    page = [listed_batch(i, NOW + 1000, {GATEWAY_JOB: "other"}) for i in range(100)]
    provider_.listing = lambda query: {"object": "list", "data": page, "has_more": True}
    with caplog.at_level(logging.WARNING, logger="gateway.batches"):
        assert find(provider_, "job_7") is None
    assert len(provider_.listed()) == 20
    assert "no batch job tagged job_7 among the newest 2000" in caplog.text


@pytest.mark.slow
def test_find_job_refuses_a_list_it_cannot_read() -> None:
    for answer in ({"object": "list", "has_more": False}, {"object": "list", "data": [{"x": 1}], "has_more": True}):
        provider_ = fake()
        provider_.listing = lambda query, answer=answer: answer
        with pytest.raises(GatewayError) as unreadable:
            find(provider_, "job_7")
        assert unreadable.value.status == 502 and unreadable.value.code == "upstream_malformed"


def test_a_failed_batch_says_why() -> None:
    errors = {"object": "list", "data": [{"code": "invalid_model", "message": "model mismatch", "line": 2}]}
    assert (
        job_status("moonshot", dict(BATCH, status="failed", errors=errors)).error
        == "invalid_model: model mismatch (line 2)"
    )
    assert job_status("moonshot", dict(BATCH, status="failed", errors="bad file")).error == "bad file"


ANSWER = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": UPSTREAM,
    "choices": [
        {
            "index": 0,
            "finish_reason": "stop",
            "message": {"role": "assistant", "content": "Hello", "reasoning_content": "think"},
            # Moonshot's usage inside the choice (providers.md): moved out, as on the interactive path.
            "usage": {"prompt_tokens": 90, "completion_tokens": 50, "total_tokens": 140, "cached_tokens": 90},
        }
    ],
}


@pytest.mark.slow
def test_results_read_both_files_and_survive_bad_lines(caplog: pytest.LogCaptureFixture) -> None:
    output = jsonl(
        {
            "id": "batch_req_1",
            "custom_id": "line-2",
            "response": {"status_code": 200, "request_id": "req-1", "body": ANSWER},
            "error": None,
        },
        b'{"id": "batch_req_2", "custom_id": "line-',  # cut short
        {"id": "batch_req_3", "custom_id": "injected", "response": {"status_code": 200, "body": ANSWER}, "error": None},
    )
    errors = jsonl(
        # OpenAI's request-output with an error and no response.
        {
            "id": "batch_req_4",
            "custom_id": "line-5",
            "response": None,
            "error": {"code": "server_error", "message": "boom"},
        },
        # The provider's refusal of one line, its error body in the response.
        {
            "id": "batch_req_5",
            "custom_id": "line-6",
            "response": {
                "status_code": 400,
                "request_id": "req-5",
                "body": {"error": {"message": "Input token length too long", "type": "invalid_request_error"}},
            },
            "error": None,
        },
        {"id": "batch_req_6", "custom_id": "line-7"},
    )

    async def main() -> list:
        provider_ = fake()
        provider_.files = {"file-out": output, "file-err": errors}
        async with serving(provider_) as url:
            client = api(url)
            try:
                return await client.results(JobStatus("succeeded", "completed", "file-out", "file-err"))
            finally:
                await client.close()

    with caplog.at_level(logging.WARNING, logger="gateway.batches"):
        outcomes = {o.id: o for o in asyncio.run(main())}
    assert set(outcomes) == {"line-2", "line-5", "line-6"}
    answered = outcomes["line-2"]
    assert answered.status_code == 200 and "usage" not in answered.body["choices"][0]
    assert answered.usage is not None and (answered.usage.prompt_tokens, answered.usage.cached_tokens) == (90, 90)
    assert answered.body["usage"] == answered.usage.as_openai()
    assert answered.body["choices"][0]["logprobs"] is None  # OpenAI's schema, as conform_reply makes it
    failed = outcomes["line-5"]
    assert failed.status_code == 500 and failed.usage is None
    assert failed.body == {
        "error": {
            "message": "moonshot returned 500: boom",
            "type": "upstream_error",
            "param": None,
            "code": "server_error",
        }
    }
    refused = outcomes["line-6"]
    assert refused.status_code == 400
    assert refused.body["error"]["message"] == "moonshot returned 400: Input token length too long"
    assert refused.body["error"]["type"] == "invalid_request_error"
    said = caplog.text
    assert "not a JSON object" in said and "never sent" in said and "neither response nor error" in said


@pytest.mark.slow
def test_a_missing_result_file_is_an_error() -> None:
    async def main() -> None:
        provider_ = fake()
        async with serving(provider_) as url:
            client = api(url)
            try:
                with pytest.raises(GatewayError) as missing:
                    await client.results(JobStatus("succeeded", "completed", "file-gone", None))
            finally:
                await client.close()
        assert missing.value.status == 400 and missing.value.upstream_status == 404

    asyncio.run(main())


@pytest.mark.slow
def test_end_to_end_on_the_emulator(moonshot: ThreadedServer) -> None:
    """Against Moonshot's emulator (gateway/emulators/moonshot_batch.py): submit, poll to completed, read both
    files. K2.6 refuses a temperature other than its fixed one: with the model not marked `fixed_sampling` the
    line is sent as it is, and its refusal is in the error file."""
    lines = [
        UpstreamLine("line-0", {"messages": [{"role": "user", "content": "hello there"}], "max_tokens": 12}),
        UpstreamLine(
            "line-1", {"messages": [{"role": "developer", "content": "brief"}, {"role": "user", "content": "hi"}]}
        ),
        UpstreamLine("line-2", {"messages": [{"role": "user", "content": "hi"}], "temperature": 0.3}),
    ]

    async def main() -> tuple[JobStatus, list, str]:
        p = provider("moonshot", moonshot.url + "/v1", key=MOONSHOT_KEY)
        client = build_batch_api(p, MoonshotAdapter(p))
        assert client is not None
        try:
            submitted = await client.submit("/v1/chat/completions", model(UPSTREAM), lines, 36, {"gateway_batch": "b"})
            status = await poll_until_done(client, submitted.job_id)
            return status, await client.results(status), submitted.job_id
        finally:
            await client.close()

    status, outcomes, job_id = asyncio.run(main())
    assert (status.state, status.upstream_status, status.total, status.completed, status.failed) == (
        "succeeded",
        "completed",
        3,
        2,
        1,
    )
    by_id = {o.id: o for o in outcomes}
    assert set(by_id) == {"line-0", "line-1", "line-2"}
    for line_id in ("line-0", "line-1"):
        answered = by_id[line_id]
        assert answered.status_code == 200 and answered.usage is not None and answered.usage.prompt_tokens > 0
        assert answered.body["usage"] == answered.usage.as_openai()
        assert all("usage" not in choice for choice in answered.body["choices"])
    refused = by_id["line-2"]
    assert refused.status_code == 400 and refused.usage is None
    assert refused.body["error"]["message"].startswith("moonshot returned 400: invalid temperature")
    seen = http.request(moonshot.url, "GET", f"/_emulator/batches/{job_id}", None, {}, timeout=10).json()
    assert {body["model"] for body in seen["bodies"]} == {UPSTREAM}


@pytest.mark.slow
def test_find_job_on_the_emulator(moonshot: ThreadedServer) -> None:
    """A batch submitted with the gateway's tags is found by its `gateway_job` with the id `submit` returned, and
    the status `status` reads; a tag no batch carries finds nothing."""
    tag = f"job_{uuid.uuid4().hex}"
    line = UpstreamLine("line-0", {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 5})

    async def main() -> None:
        p = provider("moonshot", moonshot.url + "/v1", key=MOONSHOT_KEY)
        client = build_batch_api(p, MoonshotAdapter(p))
        assert client is not None
        try:
            since = int(time.time())
            submitted = await client.submit(
                "/v1/chat/completions", model(UPSTREAM), [line], 24, {"gateway_batch": "b", GATEWAY_JOB: tag}
            )
            found = await client.find_job(tag, since)
            assert found is not None and found.job_id == submitted.job_id
            assert found.state in ("queued", "running", "succeeded")
            done = await poll_until_done(client, submitted.job_id)
            assert await client.find_job(tag, since) == done
            assert done.job_id == submitted.job_id and done.state == "succeeded"
            assert await client.find_job(f"job_{uuid.uuid4().hex}", since) is None
            assert await client.find_job(tag, since + 3600) is None  # created before the bound
        finally:
            await client.close()

    asyncio.run(main())
