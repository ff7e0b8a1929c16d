"""Mistral's batch client against a fake La Plateforme that checks the wire format of Mistral's references (the
batch guide, the mistralai SDK's CreateBatchJobRequest, BatchJob and batch reader) and feeds back jobs and result
files, including lines the client must survive."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
import uuid
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from gateway.errors import GatewayError
from gateway.http.servers import ThreadedServer
from gateway.providers.batches import build_batch_api
from gateway.providers.batches.base import GATEWAY_JOB, JobStatus, UpstreamLine
from gateway.providers.batches.mistral import MistralBatchApi, job_status
from gateway.providers.mistral import MistralAdapter
from gateway.providers.openai_compatible import OpenAICompatibleAdapter
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
from tests.support.emulators import MISTRAL_KEY

UPSTREAM = "mistral-medium-2508"
JOB_ID = "b888f774-3e7c-4135-a18c-6b985523c4bc"
JOB = {
    "id": JOB_ID,
    "object": "batch",
    "input_files": ["file-in-1"],
    "endpoint": "/v1/chat/completions",
    "model": UPSTREAM,
    "errors": [],
    "status": "QUEUED",
    "created_at": 1,
    "total_requests": 0,
    "completed_requests": 0,
    "succeeded_requests": 0,
    "failed_requests": 0,
}


def api(base_url: str) -> MistralBatchApi:
    p = provider("mistral", base_url)
    built = build_batch_api(p, MistralAdapter(p))
    assert isinstance(built, MistralBatchApi)
    return built


def fake() -> FakeProvider:
    return FakeProvider(job_path="/v1/batch/jobs", created=dict(JOB))


CHAT_LINES = [
    UpstreamLine(
        "line-0",
        {
            "messages": [{"role": "developer", "content": "be brief"}, {"role": "user", "content": "hi"}],
            "seed": 7,
            "max_completion_tokens": 50,
            "stream": False,
            "user": "someone",
        },
    ),
    UpstreamLine("line-3", {"messages": [{"role": "user", "content": "again"}], "temperature": 0.2}),
]


@pytest.mark.slow
def test_submit_uploads_mistral_lines_and_creates_one_job() -> None:
    async def main() -> None:
        provider_ = fake()
        async with serving(provider_) as url:
            client = api(url)
            try:
                submitted = await client.submit(
                    "/v1/chat/completions", model(UPSTREAM), CHAT_LINES, 36, {"gateway_batch": "batch_1"}
                )
            finally:
                await client.close()
        assert (submitted.file_id, submitted.job_id) == ("file-in-1", JOB_ID)
        (upload,) = provider_.of("POST", "/v1/files")
        # Multipart with exactly Mistral's fields: purpose=batch and the JSONL file.
        assert upload.headers["content-type"].startswith("multipart/form-data")
        assert set(upload.fields) == {"purpose", "file"} and upload.fields["purpose"] == "batch"
        filename, _, _ = upload.fields["file"]
        assert filename.endswith(".jsonl")
        lines = provider_.uploaded_lines()
        # Lines are `{"custom_id", "body"}`, the body as the interactive path sends it, with no model.
        assert [set(line) for line in lines] == [{"custom_id", "body"}, {"custom_id", "body"}]
        assert [line["custom_id"] for line in lines] == ["line-0", "line-3"]
        first = lines[0]["body"]
        assert "model" not in first and "model" not in lines[1]["body"]
        assert first["messages"][0] == {"role": "system", "content": "be brief"}
        assert first["random_seed"] == 7 and first["max_tokens"] == 50
        assert not {"seed", "max_completion_tokens", "stream", "user"} & set(first)
        assert lines[1]["body"] == {"messages": [{"role": "user", "content": "again"}], "temperature": 0.2}
        (create,) = provider_.of("POST", "/v1/batch/jobs")
        assert create.json == {
            "input_files": ["file-in-1"],
            "endpoint": "/v1/chat/completions",
            "model": UPSTREAM,
            "metadata": {"gateway_batch": "batch_1"},
            "timeout_hours": 36,
        }
        for request in provider_.received:
            assert request.headers["authorization"] == f"Bearer {KEY}"
            assert set(request.headers) <= ALLOWED_HEADERS, request.headers

    asyncio.run(main())


@pytest.mark.slow
def test_embeddings_lines_are_translated_and_an_unknown_line_id_is_refused() -> None:
    async def main() -> None:
        provider_ = fake()
        async with serving(provider_) as url:
            client = api(url)
            try:
                line = UpstreamLine("line-1", {"input": ["a", "b"], "dimensions": 256, "encoding_format": "float"})
                await client.submit("/v1/embeddings", model("mistral-embed"), [line], 0, {})
                await client.submit("/v1/embeddings", model("mistral-embed"), [line], 500, {})
                with pytest.raises(ValueError):
                    await client.submit("/v1/embeddings", model("mistral-embed"), [UpstreamLine("x", {})], 24, {})
            finally:
                await client.close()
        assert len(provider_.of("POST", "/v1/files")) == 2  # the refused line id: nothing uploaded
        assert provider_.uploaded_lines() == [
            {"custom_id": "line-1", "body": {"input": ["a", "b"], "output_dimension": 256}}
        ]
        create, longest = provider_.of("POST", "/v1/batch/jobs")
        assert create.json["endpoint"] == "/v1/embeddings" and create.json["timeout_hours"] == 1  # at least an hour
        assert longest.json["timeout_hours"] == 167  # "lower than 7 days" (Mistral's batch guide)
        assert "metadata" not in create.json

    asyncio.run(main())


@pytest.mark.slow
def test_a_refused_job_is_mapped_without_the_key_and_its_file_deleted() -> None:
    async def main() -> None:
        provider_ = fake()
        # A provider that echoes the key it was sent must not get it into the gateway's error.
        provider_.refuse["POST /v1/batch/jobs"] = (401, {"detail": f"Invalid API Key {KEY}"})
        async with serving(provider_) as url:
            client = api(url)
            try:
                with pytest.raises(GatewayError) as refused:
                    await client.submit("/v1/chat/completions", model(UPSTREAM), CHAT_LINES, 24, {})
            finally:
                await client.close()
        assert refused.value.status == 502 and refused.value.code == "upstream_auth_failed"
        assert KEY not in refused.value.message and KEY not in str(refused.value)
        assert provider_.of("DELETE", "/v1/files/file-in-1"), "the unused input file is deleted"

    asyncio.run(main())


@pytest.mark.slow
def test_rate_limit_and_redirect_are_errors() -> None:
    async def main() -> None:
        provider_ = fake()
        provider_.refuse[f"GET /v1/batch/jobs/{JOB_ID}"] = (
            429,
            {"object": "error", "message": "Rate limit exceeded", "type": "rate_limited", "code": "1300"},
        )
        provider_.redirect["POST /v1/files"] = "http://127.0.0.1:9/steal"
        async with serving(provider_) as url:
            client = api(url)
            try:
                with pytest.raises(GatewayError) as limited:
                    await client.status(JOB_ID)
                with pytest.raises(GatewayError) as moved:
                    await client.submit("/v1/chat/completions", model(UPSTREAM), CHAT_LINES, 24, {})
            finally:
                await client.close()
        assert limited.value.status == 429 and "Rate limit exceeded" in limited.value.message
        assert moved.value.status == 502  # a redirect is not followed: the key goes to the catalog's URL only
        assert not provider_.of("POST", "/v1/batch/jobs")

    asyncio.run(main())


def test_an_unreachable_provider_is_upstream_unreachable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again below: nothing listens there

    async def main() -> None:
        client = api(f"http://127.0.0.1:{port}/v1")
        try:
            with pytest.raises(GatewayError) as refused:
                await client.status("job")
        finally:
            await client.close()
        assert refused.value.status == 502 and refused.value.code == "upstream_unreachable"

    asyncio.run(main())


@pytest.mark.slow
def test_poll_cancel_and_status_words() -> None:
    async def main() -> None:
        provider_ = fake()
        provider_.statuses = [
            dict(JOB, status="RUNNING", total_requests=2, completed_requests=1, succeeded_requests=1),
            dict(
                JOB,
                status="SUCCESS",
                output_file="file-out",
                error_file="file-err",
                total_requests=2,
                completed_requests=2,
                succeeded_requests=1,
                failed_requests=1,
            ),
        ]
        provider_.cancelled = dict(JOB, status="CANCELLATION_REQUESTED")
        async with serving(provider_) as url:
            client = api(url)
            try:
                running = await client.status(JOB_ID)
                done = await client.status(JOB_ID)
                cancelling = await client.cancel("weird/../id")
            finally:
                await client.close()
        assert (running.state, running.upstream_status, running.total, running.completed) == (
            "running",
            "RUNNING",
            2,
            1,
        )
        assert done == JobStatus("succeeded", "SUCCESS", "file-out", "file-err", None, 2, 1, 1, job_id=JOB_ID)
        assert cancelling.state == "cancelling"
        # An id is one quoted path segment: it cannot reach another path.
        assert provider_.of("POST", "/v1/batch/jobs/weird%2F..%2Fid/cancel")

    asyncio.run(main())


@pytest.mark.parametrize(
    ("word", "state"),
    [
        ("QUEUED", "queued"),
        ("RUNNING", "running"),
        ("SUCCESS", "succeeded"),
        ("FAILED", "failed"),
        ("TIMEOUT_EXCEEDED", "expired"),
        ("CANCELLATION_REQUESTED", "cancelling"),
        ("CANCELLED", "cancelled"),
        ("SOMETHING_NEW", "running"),
    ],
)
def test_status_words(word: str, state: str) -> None:
    assert job_status("mistral", dict(JOB, status=word)).state == state


NOW = 1_700_000_000  # 2023-11-14T22:13:20Z


def listed_job(index: int, created_at: int, metadata: Any, **more: Any) -> dict[str, Any]:
    return dict(JOB, id=f"job-{index}", created_at=created_at, metadata=metadata, **more)


def mistral_list(jobs: list[Any]) -> Callable[[dict[str, str]], dict[str, Any]]:
    """Mistral's job list over `jobs` (newest first), by `page` and `page_size`, with `total`; it applies no filter,
    as a provider that ignored one would, so the client's own checks are what the tests see."""

    def answer(query: dict[str, str]) -> dict[str, Any]:
        page, size = int(query["page"]), int(query["page_size"])
        return {"object": "list", "data": jobs[page * size : (page + 1) * size], "total": len(jobs)}

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
def test_find_job_pages_to_the_tagged_job() -> None:
    tag = "job_7"
    others = [
        "not a job",
        listed_job(1, NOW + 900, None),
        listed_job(2, NOW + 800, {"gateway_batch": tag}),  # the tag's value under another key
        listed_job(3, NOW + 700, {GATEWAY_JOB: tag + "x"}),
    ] + [listed_job(10 + i, NOW + 600 - i, {"gateway_batch": "b", GATEWAY_JOB: f"other-{i}"}) for i in range(226)]
    target = listed_job(99, NOW + 5, {"gateway_batch": "b", GATEWAY_JOB: tag}, status="RUNNING", total_requests=4)
    older_twin = listed_job(98, NOW + 1, {"gateway_batch": "b", GATEWAY_JOB: tag}, status="QUEUED")
    provider_ = fake()
    provider_.listing = mistral_list([*others, target, older_twin])
    found = find(provider_, tag)
    assert found is not None
    assert (found.job_id, found.state, found.upstream_status, found.total) == ("job-99", "running", "RUNNING", 4)
    queries = provider_.listed()
    assert [q["page"] for q in queries] == ["0", "1", "2"]  # the target is the 231st job: page 2 of 100
    for query in queries:
        # The tag as a metadata filter (a key of its own, as the guide's curl writes `job_type=testing`); the time
        # a second early (Mistral does not say whether "after" includes the instant), as the SDK writes it.
        assert query == {
            GATEWAY_JOB: tag,
            "created_after": "2023-11-14T22:13:19Z",
            "order_by": "-created",
            "page_size": "100",
            "page": query["page"],
        }


@pytest.mark.slow
def test_find_job_ignores_other_tags_and_older_jobs_and_stops_there() -> None:
    tag = "job_7"
    jobs = [listed_job(i, NOW + 500 - i, {GATEWAY_JOB: f"other-{i}"}) for i in range(120)]
    # Tagged, but created a second before the bound (a provider whose "after" includes that second lists it).
    jobs.append(listed_job(200, NOW - 1, {GATEWAY_JOB: tag}))
    jobs += [listed_job(300 + i, NOW - 10 - i, {GATEWAY_JOB: tag}) for i in range(200)]
    provider_ = fake()
    provider_.listing = mistral_list(jobs)
    assert find(provider_, tag) is None
    # Newest first: once a job older than the bound is listed, every later page is older still.
    assert [q["page"] for q in provider_.listed()] == ["0", "1"]


@pytest.mark.slow
def test_find_job_not_found_ends_with_the_list() -> None:
    provider_ = fake()
    provider_.listing = mistral_list([listed_job(i, NOW + i, {GATEWAY_JOB: f"other-{i}"}) for i in range(200)])
    assert find(provider_, "job_7") is None
    assert [q["page"] for q in provider_.listed()] == ["0", "1"]  # total 200: two full pages, not a third
    empty = fake()
    empty.listing = mistral_list([])
    assert find(empty, "job_7") is None
    assert len(empty.listed()) == 1


@pytest.mark.slow
def test_find_job_searches_a_bounded_number_of_pages(caplog: pytest.LogCaptureFixture) -> None:
    provider_ = fake()
    page = [listed_job(i, NOW + 1000, {GATEWAY_JOB: "other"}) for i in range(100)]
    provider_.listing = lambda query: {"object": "list", "data": page, "total": 10**6}
    with caplog.at_level(logging.WARNING, logger="gateway.batches"):
        assert find(provider_, "job_7") is None
    assert len(provider_.listed()) == 20
    assert "no batch job tagged job_7 among the newest 2000" in caplog.text


@pytest.mark.slow
def test_find_job_refuses_a_list_it_cannot_read() -> None:
    provider_ = fake()
    provider_.listing = lambda query: {"object": "list", "total": 3}
    with pytest.raises(GatewayError) as unreadable:
        find(provider_, "job_7")
    assert unreadable.value.status == 502 and unreadable.value.code == "upstream_malformed"


def test_a_failed_job_says_why() -> None:
    failed = job_status(
        "mistral", dict(JOB, status="FAILED", errors=[{"message": "invalid file", "count": 3}, {"message": "x"}])
    )
    assert failed.error == "invalid file (x3); x"
    with pytest.raises(GatewayError):
        job_status("mistral", {"id": "j"})


ANSWER = {
    "id": "cmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": UPSTREAM,
    "choices": [
        {
            "index": 0,
            "finish_reason": "model_length",
            "message": {
                "role": "assistant",
                "tool_calls": None,
                "content": [
                    {"type": "thinking", "thinking": [{"type": "text", "text": "hmm"}], "closed": True},
                    {"type": "text", "text": "Bonjour"},
                ],
            },
        }
    ],
    "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17, "num_cached_tokens": 4},
}


@pytest.mark.slow
def test_results_read_both_files_and_survive_bad_lines(caplog: pytest.LogCaptureFixture) -> None:
    output = jsonl(
        {"id": "r1", "custom_id": "line-0", "response": {"status_code": 200, "body": ANSWER}, "error": None},
        b"{not json",
        {"id": "r2", "custom_id": "client-id-7", "response": {"status_code": 200, "body": ANSWER}, "error": None},
        b"",
        {"id": "r3", "custom_id": "line-9", "response": {"status_code": 200, "body": None}, "error": None},
        # An answer the reply fixes cannot read (usage not an object of numbers): that line fails, not the job.
        {
            "custom_id": "line-10",
            "response": {"status_code": 200, "body": {"choices": [], "usage": {"prompt_tokens": "x"}}},
        },
    )
    errors = jsonl(
        # The SDK's own example of a failed line (mistralai extra/tests/test_batch.py): no body, a string error.
        {"id": "r4", "custom_id": "line-3", "response": {"status_code": 429, "body": None}, "error": "rate limited"},
        {"id": "r5", "custom_id": "line-4", "response": None, "error": "internal failure"},
        {
            "id": "r6",
            "custom_id": "line-5",
            "response": {
                "status_code": 422,
                "body": {
                    "object": "error",
                    "message": {"detail": [{"loc": ["body", "n"], "msg": "bad"}]},
                    "type": "invalid_request_error",
                },
            },
            "error": None,
        },
        {"id": "r7", "custom_id": "line-0", "response": {"status_code": 500, "body": None}, "error": "dup"},
        [1, 2],
    )

    async def main() -> list:
        provider_ = fake()
        provider_.files = {"file-out": output, "file-err": errors}
        async with serving(provider_) as url:
            client = api(url)
            try:
                return await client.results(JobStatus("succeeded", "SUCCESS", "file-out", "file-err"))
            finally:
                await client.close()

    with caplog.at_level(logging.WARNING, logger="gateway.batches"):
        outcomes = {o.id: o for o in asyncio.run(main())}
    assert set(outcomes) == {"line-0", "line-3", "line-4", "line-5", "line-9", "line-10"}
    assert outcomes["line-10"].status_code == 502
    answered = outcomes["line-0"]
    assert answered.status_code == 200
    # Mistral's reply fixes, as on the interactive path: text content, OpenAI's finish reason, usage normalised.
    message = answered.body["choices"][0]["message"]
    assert message["content"] == "Bonjour" and message["reasoning_content"] == "hmm" and "tool_calls" not in message
    assert answered.body["choices"][0]["finish_reason"] == "length"
    assert answered.usage is not None and (answered.usage.prompt_tokens, answered.usage.cached_tokens) == (12, 4)
    assert answered.body["usage"] == answered.usage.as_openai()
    limited = outcomes["line-3"]
    assert limited.status_code == 429 and limited.usage is None
    assert limited.body == {
        "error": {
            "message": "mistral returned 429: rate limited",
            "type": "rate_limit_error",
            "param": None,
            "code": None,
        }
    }
    assert outcomes["line-4"].status_code == 500 and "internal failure" in outcomes["line-4"].body["error"]["message"]
    invalid = outcomes["line-5"]
    assert invalid.status_code == 422 and invalid.body["error"]["message"] == "mistral returned 422: body.n: bad"
    assert invalid.body["error"]["type"] == "invalid_request_error"
    assert outcomes["line-9"].status_code == 502 and outcomes["line-9"].body["error"]["code"] == "upstream_malformed"
    said = caplog.text
    assert "not a JSON object" in said and "never sent" in said and "repeats line-0" in said


def test_build_batch_api_by_kind() -> None:
    for kind in ("openai-compatible", "litellm"):
        p = provider(kind, "http://127.0.0.1:9/v1")
        assert build_batch_api(p, OpenAICompatibleAdapter(p)) is None
    p = provider("mistral", "http://127.0.0.1:9/v1")
    with pytest.raises(TypeError):
        build_batch_api(p, object())  # type: ignore[arg-type]


def test_batch_answer_matches_the_interactive_answer() -> None:
    """The same provider answer, through the interactive path's `_complete` and through `batch_answer`."""
    adapter = MistralAdapter(provider("mistral", "http://127.0.0.1:9/v1"))
    reply = adapter._complete(orjson.dumps(ANSWER), None)
    answer, usage = adapter.batch_answer(orjson.loads(orjson.dumps(ANSWER)))
    assert orjson.loads(reply.body) == answer and reply.usage == usage


@pytest.mark.slow
def test_end_to_end_on_the_emulator(mistral: ThreadedServer) -> None:
    """Against Mistral's emulator (gateway/emulators/mistral_batch.py): submit, poll to SUCCESS, read both files.
    A conversation ending on an assistant turn is refused by mistral-common: its line is in the error file."""
    lines = [
        UpstreamLine("line-0", {"messages": [{"role": "user", "content": "hello there"}], "max_completion_tokens": 12}),
        UpstreamLine(
            "line-1", {"messages": [{"role": "developer", "content": "brief"}, {"role": "user", "content": "hi"}]}
        ),
        UpstreamLine(
            "line-2", {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
        ),
    ]

    async def main() -> tuple[JobStatus, list, str]:
        p = provider("mistral", mistral.url + "/v1", key=MISTRAL_KEY)
        client = build_batch_api(p, MistralAdapter(p))
        assert client is not None
        try:
            submitted = await client.submit(
                "/v1/chat/completions", model("mistral-medium-3.5"), lines, 24, {"gateway_batch": "b"}
            )
            status = await poll_until_done(client, submitted.job_id)
            return status, await client.results(status), submitted.job_id
        finally:
            await client.close()

    status, outcomes, job_id = asyncio.run(main())
    assert (status.state, status.upstream_status, status.total, status.completed, status.failed) == (
        "succeeded",
        "SUCCESS",
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
        assert isinstance(answered.body["choices"][0]["message"]["content"], str)
    refused = by_id["line-2"]
    assert refused.status_code == 400 and refused.usage is None
    assert refused.body["error"]["message"].startswith("mistral returned 400: Expected last role User or Tool")
    seen = http.request(mistral.url, "GET", f"/_emulator/batches/{job_id}", None, {}, timeout=10).json()
    assert all("model" not in body for body in seen["bodies"]) and seen["model"] == "mistral-medium-3.5"


@pytest.mark.slow
def test_find_job_on_the_emulator(mistral: ThreadedServer) -> None:
    """A job submitted with the gateway's tags is found by its `gateway_job` with the id `submit` returned, and the
    status `status` reads; a tag no job carries finds nothing."""
    tag = f"job_{uuid.uuid4().hex}"
    line = UpstreamLine("line-0", {"messages": [{"role": "user", "content": "hello"}], "max_completion_tokens": 5})

    async def main() -> None:
        p = provider("mistral", mistral.url + "/v1", key=MISTRAL_KEY)
        client = build_batch_api(p, MistralAdapter(p))
        assert client is not None
        try:
            since = int(time.time())
            submitted = await client.submit(
                "/v1/chat/completions",
                model("mistral-medium-3.5"),
                [line],
                24,
                {"gateway_batch": "b", GATEWAY_JOB: tag},
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
