"""The emulators' Files and Batch APIs (gateway/emulators/batch_jobs.py, batch_api.py, mistral_batch.py,
moonshot_batch.py), in-process through httpx's ASGI transport: upload, create, poll, read the result files;
lines answered by the interactive handlers (their refusals in the error file, their usage in the results); a
job driven by time (a clock the test moves) and by the control endpoints; the providers' refusals."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import openai
import orjson
import pytest
from mistralai.client import Mistral

from gateway.emulators import EmulatorOptions, create_app, start_emulator
from gateway.emulators.app import EmulatorState

MISTRAL_MODEL, KIMI = "mistral-small-latest", "kimi-k2.6"


class Clock:
    """Time as a test drives it."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Emulator:
    def __init__(self, client: httpx.AsyncClient, state: EmulatorState, clock: Clock) -> None:
        self.client, self.state, self.clock = client, state, clock

    async def upload(
        self, lines: list[Any] | bytes, purpose: str | None = "batch", name: str = "in.jsonl"
    ) -> httpx.Response:
        content = lines if isinstance(lines, bytes) else b"".join(orjson.dumps(line) + b"\n" for line in lines)
        data = {"purpose": purpose} if purpose is not None else {}
        return await self.client.post("/v1/files", files={"file": (name, content, "application/jsonl")}, data=data)

    async def content(self, file_id: str) -> list[dict]:
        answer = await self.client.get(f"/v1/files/{file_id}/content")
        assert answer.status_code == 200, answer.text
        return [orjson.loads(line) for line in answer.content.splitlines()]

    async def control(self, method: str, path: str, body: Any = None) -> httpx.Response:
        return await self.client.request(method, "/_emulator/" + path, json=body, headers={"authorization": ""})


@asynccontextmanager
async def emulator(kind: str, **options: Any) -> AsyncIterator[Emulator]:
    app = create_app(kind, EmulatorOptions(seed=5, **options))
    state: EmulatorState = app.state.emulator
    clock = Clock()
    state.batches.clock = clock
    transport = httpx.ASGITransport(app=app)
    headers = {"Authorization": f"Bearer {state.api_key}"}
    async with httpx.AsyncClient(transport=transport, base_url="http://emulator", headers=headers) as client:
        yield Emulator(client, state, clock)


def run(kind: str, scenario: Callable[[Emulator], Awaitable[None]], **options: Any) -> None:
    async def main() -> None:
        async with emulator(kind, **options) as emu:
            await scenario(emu)

    asyncio.run(main())


async def interactive(kind: str, path: str, body: dict) -> httpx.Response:
    """The same body on the interactive endpoint of a fresh emulator (nothing cached yet, same seed)."""
    async with emulator(kind) as emu:
        return await emu.client.post(path, json=body)


def ask(text: str, **more: Any) -> dict:
    return {"messages": [{"role": "user", "content": text}], "max_tokens": 12, **more}


def mistral_lines(count: int) -> list[dict]:
    return [{"custom_id": f"q{n}", "body": ask(f"question number {n}")} for n in range(count)]


def kimi_line(custom_id: str, text: str, **more: Any) -> dict:
    body = {"model": KIMI, "messages": [{"role": "user", "content": text}], **more}
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}


def kimi_lines(count: int) -> list[dict]:
    return [kimi_line(f"q{n}", f"question number {n}") for n in range(count)]


async def mistral_job(emu: Emulator, lines: list[dict], **more: Any) -> dict:
    uploaded = await emu.upload(lines)
    assert uploaded.status_code == 200, uploaded.text
    body = {"input_files": [uploaded.json()["id"]], "endpoint": "/v1/chat/completions", "model": MISTRAL_MODEL, **more}
    created = await emu.client.post("/v1/batch/jobs", json=body)
    assert created.status_code == 200, created.text
    return created.json()


async def kimi_batch(emu: Emulator, lines: list[dict], window: str = "24h") -> dict:
    uploaded = await emu.upload(lines)
    assert uploaded.status_code == 200, uploaded.text
    body = {"input_file_id": uploaded.json()["id"], "endpoint": "/v1/chat/completions", "completion_window": window}
    created = await emu.client.post("/v1/batches", json=body)
    assert created.status_code == 200, created.text
    return created.json()


async def mistral_status(emu: Emulator, job_id: str) -> dict:
    answer = await emu.client.get(f"/v1/batch/jobs/{job_id}")
    assert answer.status_code == 200, answer.text
    return answer.json()


async def kimi_status(emu: Emulator, batch_id: str) -> dict:
    answer = await emu.client.get(f"/v1/batches/{batch_id}")
    assert answer.status_code == 200, answer.text
    return answer.json()


# --- Mistral ---------------------------------------------------------------------------------------------------


def test_mistral_batch_answers_each_line_with_the_chat_handler() -> None:
    """Upload, create, poll, read: a line mistral-common refuses is in the error file with the interactive refusal,
    the others in the output file with the interactive answer and usage."""
    refused = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    lines = [*mistral_lines(2), {"custom_id": "bad", "body": refused}]

    async def scenario(emu: Emulator) -> None:
        uploaded = await emu.upload(lines)
        assert uploaded.status_code == 200, uploaded.text
        file = uploaded.json()
        uuid.UUID(file["id"])
        assert {k: file[k] for k in ("object", "purpose", "sample_type", "source", "num_lines", "filename")} == {
            "object": "file",
            "purpose": "batch",
            "sample_type": "batch_request",
            "source": "upload",
            "num_lines": 3,
            "filename": "in.jsonl",
        }
        assert file["bytes"] == len(b"".join(orjson.dumps(line) + b"\n" for line in lines))
        body = {
            "input_files": [file["id"]],
            "endpoint": "/v1/chat/completions",
            "model": MISTRAL_MODEL,
            "metadata": {"job_type": "test"},
        }
        created = (await emu.client.post("/v1/batch/jobs", json=body)).json()
        assert created["status"] == "QUEUED" and created["total_requests"] == 3 and created["output_file"] is None
        assert (
            created["metadata"] == {"job_type": "test"}
            and created["errors"] == []
            and created["model"] == MISTRAL_MODEL
        )
        done = await mistral_status(emu, created["id"])
        assert done["status"] == "SUCCESS"
        counts = {k: done[k] for k in ("completed_requests", "succeeded_requests", "failed_requests")}
        assert counts == {"completed_requests": 3, "succeeded_requests": 2, "failed_requests": 1}
        assert done["started_at"] is not None and done["completed_at"] is not None
        output, errors = await emu.content(done["output_file"]), await emu.content(done["error_file"])
        assert [row["custom_id"] for row in output] == ["q0", "q1"]
        for row, line in zip(output, lines, strict=False):
            assert set(row) == {"id", "custom_id", "response", "error"} and row["error"] is None
            assert row["response"]["status_code"] == 200
            alone = await interactive("mistral", "/v1/chat/completions", {**line["body"], "model": MISTRAL_MODEL})
            assert row["response"]["body"]["usage"] == alone.json()["usage"]
            assert row["response"]["body"]["choices"] == alone.json()["choices"]
        (error,) = errors
        alone = await interactive("mistral", "/v1/chat/completions", {**refused, "model": MISTRAL_MODEL})
        assert alone.status_code == 400
        assert error["custom_id"] == "bad"
        assert error["response"] == {"status_code": 400, "body": alone.json()}
        assert "Expected last role User or Tool" in error["response"]["body"]["message"]
        output_file = (await emu.client.get(f"/v1/files/{done['output_file']}")).json()
        assert output_file["sample_type"] == "batch_result" and output_file["source"] == "mistral"
        assert output_file["num_lines"] == 2 and output_file["deleted"] is False
        (seen,) = (await emu.control("GET", "batches")).json()
        assert (seen["provider"], seen["model"], seen["endpoint"], seen["lines"]) == (
            "mistral",
            MISTRAL_MODEL,
            "/v1/chat/completions",
            3,
        )
        assert seen["bodies"] == [line["body"] for line in lines]  # as uploaded: no model in them
        assert seen["custom_ids"] == ["q0", "q1", "bad"] and seen["status"] == "SUCCESS"

    run("mistral", scenario)


def test_mistral_batch_runs_embeddings_and_fim_with_their_handlers() -> None:
    async def scenario(emu: Emulator) -> None:
        for endpoint, model, body in (
            ("/v1/embeddings", "mistral-embed", {"input": ["one text", "another"]}),
            ("/v1/fim/completions", "codestral-latest", {"prompt": "def f(", "suffix": "return 1", "max_tokens": 8}),
        ):
            file_id = (await emu.upload([{"custom_id": "a", "body": body}])).json()["id"]
            job = {"input_files": [file_id], "endpoint": endpoint, "model": model}
            created = (await emu.client.post("/v1/batch/jobs", json=job)).json()
            done = await mistral_status(emu, created["id"])
            assert done["status"] == "SUCCESS" and done["error_file"] is None, done
            (row,) = await emu.content(done["output_file"])
            alone = await interactive("mistral", endpoint, {**body, "model": model})
            assert row["response"]["body"]["usage"] == alone.json()["usage"]
            assert row["response"]["body"]["model"] == model

    run("mistral", scenario)


def test_mistral_job_model_is_the_one_run_and_lines_go_through_its_validation() -> None:
    """The job names the model; a body field Mistral does not take is the line's own 422."""
    lines = [
        {"custom_id": "a", "body": {**ask("hello"), "model": "mistral-medium-3.5"}},
        {"custom_id": "b", "body": ask("hello again", seed=3)},
    ]

    async def scenario(emu: Emulator) -> None:
        done = await mistral_status(emu, (await mistral_job(emu, lines))["id"])
        (ok,), (refused,) = await emu.content(done["output_file"]), await emu.content(done["error_file"])
        assert ok["response"]["body"]["model"] == MISTRAL_MODEL
        assert refused["custom_id"] == "b" and refused["response"]["status_code"] == 422
        assert refused["response"]["body"]["message"]["detail"][0]["type"] == "extra_forbidden"

    run("mistral", scenario)


def test_mistral_upload_and_job_refusals() -> None:
    async def scenario(emu: Emulator) -> None:
        wrong = await emu.upload(mistral_lines(1), purpose="assistants")
        assert wrong.status_code == 422
        assert wrong.json()["message"]["detail"][0]["type"] == "enum"
        assert wrong.json()["message"]["detail"][0]["loc"] == ["body", "purpose"]
        missing = await emu.client.post("/v1/files", data={"purpose": "batch"}, files={"other": ("x", b"{}")})
        assert missing.status_code == 422 and missing.json()["message"]["detail"][0]["loc"] == ["body", "file"]
        for content, problem in (
            (b'{"custom_id": "a", "body": {}}\nnot json\n', "line 2: not valid JSON"),
            (b'{"custom_id": "a"}\n', "line 1: 'body' must be an object"),
            (
                b'{"custom_id": "a", "body": {}}\n{"custom_id": "a", "body": {}}\n',
                "line 2: custom_id 'a' is not unique",
            ),
            (b"\n", "the file holds no request"),
        ):
            refused = await emu.upload(content)
            assert refused.status_code == 400, content
            assert refused.json()["type"] == "invalid_request_error"
            assert problem in refused.json()["message"], refused.json()
        file_id = (await emu.upload(mistral_lines(1))).json()["id"]
        fine_tune = (await emu.upload(mistral_lines(1), purpose="fine-tune")).json()["id"]
        base = {"input_files": [file_id], "endpoint": "/v1/chat/completions", "model": MISTRAL_MODEL}
        for body, status, check in (
            ({**base, "seed": 1}, 422, "extra_forbidden"),
            ({**base, "endpoint": "/v1/responses"}, 422, "enum"),
            ({**base, "timeout_hours": 168}, 422, "less_than"),
            ({**base, "timeout_hours": 0}, 422, "greater_than_equal"),
            ({**base, "input_files": ["not-a-uuid"]}, 422, "uuid_parsing"),
            ({**base, "model": "gpt-4o"}, 400, "Invalid model: gpt-4o"),
            ({**base, "endpoint": "/v1/ocr"}, 400, "not emulated"),
            ({**base, "input_files": [fine_tune]}, 400, "is not a batch file"),
            ({**base, "input_files": [str(uuid.uuid4())]}, 404, "not found"),
        ):
            refused = await emu.client.post("/v1/batch/jobs", json=body)
            assert refused.status_code == status, (body, refused.text)
            assert check in refused.text, refused.text
        assert (await emu.client.get("/v1/batch/jobs/nope")).status_code == 422
        assert (await emu.client.get(f"/v1/batch/jobs/{uuid.uuid4()}")).status_code == 404
        assert (await emu.client.post(f"/v1/batch/jobs/{uuid.uuid4()}/cancel")).status_code == 404

    run("mistral", scenario)


def test_mistral_job_list_filters_and_pages() -> None:
    async def scenario(emu: Emulator) -> None:
        first = await mistral_job(emu, mistral_lines(1), metadata={"job_type": "a"})
        emu.clock.now += 1
        second = await mistral_job(emu, mistral_lines(1), metadata={"job_type": "b"})
        await emu.control("POST", f"batches/{second['id']}", {"action": "hold"})
        listed = (await emu.client.get("/v1/batch/jobs")).json()
        assert listed["object"] == "list" and listed["total"] == 2
        assert [job["id"] for job in listed["data"]] == [second["id"], first["id"]]  # -created by default
        assert [job["status"] for job in listed["data"]] == ["QUEUED", "SUCCESS"]  # the listing is a status read
        by_status = (await emu.client.get("/v1/batch/jobs", params={"status": "SUCCESS"})).json()
        assert [job["id"] for job in by_status["data"]] == [first["id"]]
        by_metadata = (await emu.client.get("/v1/batch/jobs", params={"job_type": "b"})).json()
        assert [job["id"] for job in by_metadata["data"]] == [second["id"]]
        paged = (
            await emu.client.get("/v1/batch/jobs", params={"page": 1, "page_size": 1, "order_by": "created"})
        ).json()
        assert [job["id"] for job in paged["data"]] == [second["id"]] and paged["total"] == 2
        assert (await emu.client.get("/v1/batch/jobs", params={"page": "x"})).status_code == 422

    run("mistral", scenario)


def test_mistral_files_get_delete_and_content() -> None:
    async def scenario(emu: Emulator) -> None:
        lines = mistral_lines(2)
        file_id = (await emu.upload(lines)).json()["id"]
        got = (await emu.client.get(f"/v1/files/{file_id}")).json()
        assert got["id"] == file_id and got["deleted"] is False
        assert await emu.content(file_id) == lines
        deleted = await emu.client.delete(f"/v1/files/{file_id}")
        assert deleted.json() == {"id": file_id, "object": "file", "deleted": True}
        assert (await emu.client.get(f"/v1/files/{file_id}")).status_code == 404
        assert (await emu.client.get("/v1/files/not-a-uuid")).status_code == 422

    run("mistral", scenario)


# --- Moonshot --------------------------------------------------------------------------------------------------


def test_moonshot_batch_answers_each_line_with_the_chat_handler() -> None:
    """K2.6 refuses a temperature of 0.3 in thinking mode: that line is in the error file with the chat API's 400,
    the others succeed with the interactive answer and usage."""
    lines = [*kimi_lines(2), kimi_line("hot", "tell me something", temperature=0.3)]

    async def scenario(emu: Emulator) -> None:
        uploaded = await emu.upload(lines)
        file = uploaded.json()
        assert set(file) == {"id", "object", "bytes", "created_at", "filename", "purpose", "status", "status_details"}
        assert (file["object"], file["purpose"], file["status"], file["filename"]) == (
            "file",
            "batch",
            "ok",
            "in.jsonl",
        )
        body = {
            "input_file_id": file["id"],
            "endpoint": "/v1/chat/completions",
            "completion_window": "1d",
            "metadata": {"job": "test"},
        }
        created = (await emu.client.post("/v1/batches", json=body)).json()
        assert created["object"] == "batch" and created["status"] == "validating"
        assert created["request_counts"] == {"total": 3, "completed": 0, "failed": 0}
        assert created["expires_at"] == created["created_at"] + 24 * 3600
        assert (created["completion_window"], created["metadata"]) == ("1d", {"job": "test"})
        done = await kimi_status(emu, created["id"])
        assert done["status"] == "completed" and done["request_counts"] == {"total": 3, "completed": 2, "failed": 1}
        assert done["completed_at"] is not None and done["in_progress_at"] is not None
        output, errors = await emu.content(done["output_file_id"]), await emu.content(done["error_file_id"])
        assert [row["custom_id"] for row in output] == ["q0", "q1"]
        for row, line in zip(output, lines, strict=False):
            assert set(row) == {"id", "custom_id", "response", "error"} and row["error"] is None
            assert set(row["response"]) == {"status_code", "request_id", "body"}
            alone = (await interactive("moonshot", "/v1/chat/completions", line["body"])).json()
            assert row["response"]["body"]["usage"] == alone["usage"]
            assert row["response"]["body"]["choices"] == alone["choices"]
            assert "reasoning_content" in row["response"]["body"]["choices"][0]["message"]  # K2.6 thinks by default
        (error,) = errors
        alone = await interactive("moonshot", "/v1/chat/completions", lines[2]["body"])
        assert error["custom_id"] == "hot" and error["error"] is None
        assert error["response"]["status_code"] == 400 == alone.status_code
        assert error["response"]["body"] == alone.json()
        assert error["response"]["body"]["error"]["message"] == "invalid temperature: only 1 is allowed for this model"
        output_file = (await emu.client.get(f"/v1/files/{done['output_file_id']}")).json()
        assert output_file["purpose"] == "batch_output"
        (seen,) = (await emu.control("GET", "batches")).json()
        assert (seen["provider"], seen["model"], seen["lines"], seen["status"]) == ("moonshot", KIMI, 3, "completed")
        assert seen["bodies"] == [line["body"] for line in lines]

    run("moonshot", scenario)


def test_moonshot_upload_refusals() -> None:
    async def scenario(emu: Emulator) -> None:
        two_models = [*kimi_lines(1), {**kimi_line("k25", "hi"), "body": {"model": "kimi-k2.5", "messages": []}}]
        for lines, kw, problem in (
            (kimi_lines(1), {"purpose": "assistants"}, "purpose must be one of"),
            (kimi_lines(1), {"purpose": None}, "purpose must be one of"),
            (kimi_lines(1), {"name": "in.json"}, ".jsonl extension"),
            (b"", {}, "must not be empty"),
            (b'{"custom_id": "a"\n', {}, "line 1: not valid JSON"),
            (two_models, {}, "must use the same model, found kimi-k2.6, kimi-k2.5"),
            ([{**kimi_line("a", "hi"), "method": "GET"}], {}, "method must be POST"),
            ([{**kimi_line("a", "hi"), "url": "/v1/embeddings"}], {}, "url must be /v1/chat/completions"),
            ([kimi_line("a", "hi"), kimi_line("a", "ho")], {}, "custom_id 'a' must be unique"),
            ([{"custom_id": "a", "body": {"model": KIMI}}], {}, "missing field(s) method, url"),
        ):
            refused = await emu.upload(lines, **kw)
            assert refused.status_code == 400, (lines, refused.text)
            assert refused.json()["error"]["type"] == "invalid_request_error"
            assert problem in refused.json()["error"]["message"], refused.json()
        assert not emu.state.batches.files  # nothing refused was stored

    run("moonshot", scenario)


def test_moonshot_create_refusals() -> None:
    async def scenario(emu: Emulator) -> None:
        file_id = (await emu.upload(kimi_lines(1))).json()["id"]
        k2 = [{**kimi_line("a", "hi"), "body": {"model": "kimi-k2-0905-preview", "messages": []}}]
        k2_file = (await emu.upload(k2)).json()["id"]
        unknown = [{**kimi_line("a", "hi"), "body": {"model": "kimi-k9", "messages": []}}]
        unknown_file = (await emu.upload(unknown)).json()["id"]
        extract = (await emu.upload(kimi_lines(1), purpose="file-extract", name="notes.txt")).json()["id"]
        base = {"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h"}
        for body, problem in (
            ({**base, "completion_window": "6h"}, "completion_window must be from 12h to 7d"),
            ({**base, "completion_window": "8d"}, "completion_window must be from 12h to 7d"),
            ({**base, "completion_window": "24 hours"}, "completion_window must be from 12h to 7d"),
            ({**base, "endpoint": "/v1/embeddings"}, "endpoint must be /v1/chat/completions"),
            ({**base, "input_file_id": "nope"}, "file nope not found"),
            ({**base, "input_file_id": extract}, "was not uploaded with purpose batch"),
            ({**base, "input_file_id": k2_file}, "not supported by the batch API"),
            ({**base, "input_file_id": unknown_file}, "Not found the model kimi-k9"),
            ({**base, "metadata": {f"k{n}": "v" for n in range(17)}}, "at most 16 pairs"),
            ({**base, "metadata": {"k": "v" * 513}}, "at most 512"),
            ({"endpoint": "/v1/chat/completions", "completion_window": "24h"}, "input_file_id is required"),
        ):
            refused = await emu.client.post("/v1/batches", json=body)
            assert refused.status_code == 400, (body, refused.text)
            assert problem in refused.json()["error"]["message"], refused.json()
        for window in ("12h", "3d", "7d", "168h"):
            assert (await emu.client.post("/v1/batches", json={**base, "completion_window": window})).status_code == 200
        missing = await emu.client.get("/v1/batches/batch_nope")
        assert missing.status_code == 404 and missing.json()["error"]["type"] == "resource_not_found_error"

    run("moonshot", scenario)


def test_moonshot_list_pages_with_after_and_limit() -> None:
    async def scenario(emu: Emulator) -> None:
        ids = []
        for _ in range(3):
            ids.append((await kimi_batch(emu, kimi_lines(1)))["id"])
            emu.clock.now += 1
        first = (await emu.client.get("/v1/batches", params={"limit": 2})).json()
        assert first["object"] == "list" and first["has_more"] is True
        assert [b["id"] for b in first["data"]] == [ids[2], ids[1]]
        assert {b["status"] for b in first["data"]} == {"completed"}
        rest = (await emu.client.get("/v1/batches", params={"limit": 2, "after": ids[1]})).json()
        assert [b["id"] for b in rest["data"]] == [ids[0]] and rest["has_more"] is False
        assert len((await emu.client.get("/v1/batches")).json()["data"]) == 3
        assert (await emu.client.get("/v1/batches", params={"limit": 0})).status_code == 400

    run("moonshot", scenario)


# --- progression: time, hold, control actions, cancellation ----------------------------------------------------


def test_a_job_progresses_with_time_then_completes() -> None:
    async def scenario(emu: Emulator) -> None:
        job = await mistral_job(emu, mistral_lines(4))
        emu.clock.now += 5
        half = await mistral_status(emu, job["id"])
        assert half["status"] == "RUNNING" and half["completed_requests"] == 2 and half["output_file"] is None
        emu.clock.now += 5
        done = await mistral_status(emu, job["id"])
        assert done["status"] == "SUCCESS" and done["succeeded_requests"] == 4
        assert len(await emu.content(done["output_file"])) == 4

    run("mistral", scenario, batch_seconds=10)


def test_hold_run_and_complete() -> None:
    async def scenario(emu: Emulator) -> None:
        held = await kimi_batch(emu, kimi_lines(2))
        assert (await kimi_status(emu, held["id"]))["status"] == "validating"  # batch_hold: new jobs start held
        ran = (await emu.control("POST", f"batches/{held['id']}", {"action": "run"})).json()
        assert ran["status"] == "completed" and ran["succeeded"] == 2 and ran["held"] is False
        assert (await kimi_status(emu, held["id"]))["status"] == "completed"
        other = await kimi_batch(emu, kimi_lines(3))
        completed = (await emu.control("POST", f"batches/{other['id']}", {"action": "complete"})).json()
        assert (completed["status"], completed["answered"]) == ("completed", 3)
        settings = await emu.control("POST", "batches", {"batch_hold": False})
        assert settings.json() == {"batch_seconds": 0.0, "batch_hold": False}
        free = await kimi_batch(emu, kimi_lines(1))
        assert (await kimi_status(emu, free["id"]))["status"] == "completed"
        again = await emu.control("POST", f"batches/{other['id']}", {"action": "hold"})
        assert again.status_code == 409  # it has ended

    run("moonshot", scenario, batch_hold=True)


def test_hold_keeps_a_running_job_running_whatever_the_time() -> None:
    async def scenario(emu: Emulator) -> None:
        job = await mistral_job(emu, mistral_lines(4))
        emu.clock.now += 5
        assert (await mistral_status(emu, job["id"]))["completed_requests"] == 2
        await emu.control("POST", f"batches/{job['id']}", {"action": "hold"})
        emu.clock.now += 100
        held = await mistral_status(emu, job["id"])
        assert held["status"] == "RUNNING" and held["completed_requests"] == 2
        await emu.control("POST", f"batches/{job['id']}", {"action": "run"})
        assert (await mistral_status(emu, job["id"]))["status"] == "SUCCESS"

    run("mistral", scenario, batch_seconds=10)


def test_fail_ends_a_job_with_the_providers_error() -> None:
    async def mistral(emu: Emulator) -> None:
        job = await mistral_job(emu, mistral_lines(2))
        failed = await emu.control("POST", f"batches/{job['id']}", {"action": "fail", "message": "GPU fell over"})
        assert failed.json()["status"] == "FAILED"
        got = await mistral_status(emu, job["id"])
        assert got["status"] == "FAILED" and got["errors"] == [{"message": "GPU fell over", "count": 1}]
        assert got["output_file"] is None and got["completed_at"] is not None

    async def moonshot(emu: Emulator) -> None:
        batch = await kimi_batch(emu, kimi_lines(2))
        await emu.control("POST", f"batches/{batch['id']}", {"action": "fail"})
        got = await kimi_status(emu, batch["id"])
        assert got["status"] == "failed" and got["failed_at"] is not None
        assert got["errors"]["data"][0]["message"] == "The batch job failed."

    run("mistral", mistral, batch_hold=True)
    run("moonshot", moonshot, batch_hold=True)


def test_expire_keeps_the_lines_done_and_leaves_the_others_unanswered() -> None:
    async def mistral(emu: Emulator) -> None:
        job = await mistral_job(emu, mistral_lines(4))
        emu.clock.now += 5
        await mistral_status(emu, job["id"])
        await emu.control("POST", f"batches/{job['id']}", {"action": "expire"})
        got = await mistral_status(emu, job["id"])
        assert got["status"] == "TIMEOUT_EXCEEDED" and got["completed_requests"] == 2 and got["error_file"] is None
        assert [row["custom_id"] for row in await emu.content(got["output_file"])] == ["q0", "q1"]

    async def moonshot(emu: Emulator) -> None:
        batch = await kimi_batch(emu, kimi_lines(4))
        emu.clock.now += 5
        await kimi_status(emu, batch["id"])
        await emu.control("POST", f"batches/{batch['id']}", {"action": "expire"})
        got = await kimi_status(emu, batch["id"])
        assert got["status"] == "expired" and got["expired_at"] is not None
        assert got["request_counts"] == {"total": 4, "completed": 2, "failed": 0}
        assert [row["custom_id"] for row in await emu.content(got["output_file_id"])] == ["q0", "q1"]
        unanswered = await emu.content(got["error_file_id"])
        assert [row["custom_id"] for row in unanswered] == ["q2", "q3"]
        assert all(row["response"] is None and row["error"]["code"] == "batch_expired" for row in unanswered)

    run("mistral", mistral, batch_seconds=10)
    run("moonshot", moonshot, batch_seconds=10)


def test_a_job_past_its_window_expires() -> None:
    async def scenario(emu: Emulator) -> None:
        batch = await kimi_batch(emu, kimi_lines(2), window="12h")
        emu.clock.now += 12 * 3600
        got = await kimi_status(emu, batch["id"])
        # 12 of the 13 hours the job needed had passed when its window ended: one of its two lines was answered.
        assert got["status"] == "expired" and got["request_counts"]["completed"] == 1
        assert [row["error"]["code"] for row in await emu.content(got["error_file_id"])] == ["batch_expired"]

    run("moonshot", scenario, batch_seconds=13 * 3600)


def test_cancel_keeps_the_lines_already_answered() -> None:
    async def mistral(emu: Emulator) -> None:
        job = await mistral_job(emu, mistral_lines(4))
        emu.clock.now += 5
        cancelling = (await emu.client.post(f"/v1/batch/jobs/{job['id']}/cancel")).json()
        assert cancelling["status"] == "CANCELLATION_REQUESTED" and cancelling["completed_requests"] == 2
        emu.clock.now += 100
        cancelled = await mistral_status(emu, job["id"])
        assert cancelled["status"] == "CANCELLED" and cancelled["completed_requests"] == 2
        assert [row["custom_id"] for row in await emu.content(cancelled["output_file"])] == ["q0", "q1"]
        again = (await emu.client.post(f"/v1/batch/jobs/{job['id']}/cancel")).json()
        assert again["status"] == "CANCELLED"  # an ended job is answered as it is

    async def moonshot(emu: Emulator) -> None:
        batch = await kimi_batch(emu, kimi_lines(4))
        emu.clock.now += 5
        cancelling = (await emu.client.post(f"/v1/batches/{batch['id']}/cancel")).json()
        assert cancelling["status"] == "cancelling" and cancelling["cancelling_at"] is not None
        cancelled = await kimi_status(emu, batch["id"])
        assert cancelled["status"] == "cancelled" and cancelled["cancelled_at"] is not None
        assert [row["custom_id"] for row in await emu.content(cancelled["output_file_id"])] == ["q0", "q1"]
        unanswered = await emu.content(cancelled["error_file_id"])
        assert [row["error"]["code"] for row in unanswered] == ["batch_cancelled", "batch_cancelled"]
        refused = await emu.client.post(f"/v1/batches/{batch['id']}/cancel")
        assert refused.status_code == 400 and "its status is cancelled" in refused.json()["error"]["message"]

    run("mistral", mistral, batch_seconds=10)
    run("moonshot", moonshot, batch_seconds=10)


def test_a_held_cancellation_waits_and_cancel_is_not_a_status_read() -> None:
    async def scenario(emu: Emulator) -> None:
        batch = await kimi_batch(emu, kimi_lines(2))
        cancelling = (await emu.client.post(f"/v1/batches/{batch['id']}/cancel")).json()
        assert cancelling["status"] == "cancelling" and cancelling["request_counts"]["completed"] == 0
        await emu.control("POST", f"batches/{batch['id']}", {"action": "hold"})
        assert (await kimi_status(emu, batch["id"]))["status"] == "cancelling"
        done = (await emu.control("POST", f"batches/{batch['id']}", {"action": "complete"})).json()
        assert done["status"] == "cancelled" and done["answered"] == 0

    run("moonshot", scenario)


def test_control_endpoint_refusals_and_reset() -> None:
    async def scenario(emu: Emulator) -> None:
        job = await mistral_job(emu, mistral_lines(1))
        assert (await emu.control("POST", f"batches/{job['id']}", {"action": "explode"})).status_code == 400
        assert (await emu.control("POST", "batches/nope", {"action": "run"})).status_code == 404
        assert (await emu.control("GET", f"batches/{job['id']}")).json()["status"] == "QUEUED"
        assert (await emu.control("POST", "batches", {"batch_seconds": -1})).status_code == 400
        assert (await emu.control("POST", "batches", {"batch_seconds": 3})).json()["batch_seconds"] == 3
        assert (await emu.control("DELETE", "batches")).json() == []
        assert (await emu.control("GET", "batches")).json() == []
        assert emu.state.batches.run_seconds == 0 and not emu.state.batches.files

    run("mistral", scenario)


# --- the /v1 pipeline: auth, the request log ----------------------------------------------------------------


def test_uploads_and_batch_calls_need_the_key() -> None:
    async def scenario(emu: Emulator) -> None:
        job = await mistral_job(emu, mistral_lines(1))
        emu.client.headers.pop("Authorization")
        content = b'{"custom_id": "a", "body": {}}\n'
        refused = await emu.client.post("/v1/files", files={"file": ("in.jsonl", content)}, data={"purpose": "batch"})
        assert refused.status_code == 401 and refused.json() == {"detail": "Unauthorized"}
        assert len(emu.state.batches.files) == 1  # the one uploaded with the key
        assert (await emu.client.get(f"/v1/batch/jobs/{job['id']}")).status_code == 401
        wrong = await emu.client.get(f"/v1/batch/jobs/{job['id']}", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        assert emu.state.batches.jobs[job["id"]].state == "queued"  # no status read happened

    async def moonshot(emu: Emulator) -> None:
        emu.client.headers.pop("Authorization")
        refused = await emu.upload(kimi_lines(1))
        assert refused.status_code == 401 and refused.json()["error"]["type"] == "invalid_authentication_error"
        assert (await emu.client.get("/v1/batches")).status_code == 401
        assert not emu.state.batches.files

    run("mistral", scenario)
    run("moonshot", moonshot)


def test_an_upload_is_logged_as_its_form_not_refused_as_json() -> None:
    async def scenario(emu: Emulator) -> None:
        lines = kimi_lines(1)
        assert (await emu.upload(lines)).status_code == 200
        (logged,) = emu.state.requests
        size = len(orjson.dumps(lines[0]) + b"\n")
        assert logged["path"] == "/v1/files"
        assert logged["body"] == {"purpose": "batch", "file": {"filename": "in.jsonl", "bytes": size}}
        faulted = await emu.client.post(
            "/v1/files",
            files={"file": ("in.jsonl", b"{}")},
            data={"purpose": "batch"},
            headers={"x-emulator-fault": "status=503"},
        )
        assert faulted.status_code == 503  # the fault pipeline applies to uploads too

    run("moonshot", scenario)


# --- the providers' own SDKs against the emulators (real servers) -----------------------------------------------


@pytest.mark.slow
def test_openais_sdk_drives_the_moonshot_batch_api() -> None:
    """Moonshot's guide uses OpenAI's SDK (files.create, batches.create / retrieve / list, files.content)."""
    with start_emulator("moonshot") as server:
        client = openai.OpenAI(base_url=server.base_url, api_key=server.api_key, max_retries=0)
        content = b"".join(orjson.dumps(line) + b"\n" for line in kimi_lines(2))
        file = client.files.create(file=("in.jsonl", content), purpose="batch")
        batch = client.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h")
        assert batch.status == "validating"
        done = client.batches.retrieve(batch.id)
        assert done.status == "completed" and done.request_counts is not None and done.request_counts.completed == 2
        assert done.output_file_id is not None
        rows = [orjson.loads(line) for line in client.files.content(done.output_file_id).text.splitlines()]
        assert [row["custom_id"] for row in rows] == ["q0", "q1"]
        assert [b.id for b in client.batches.list(limit=5)] == [batch.id]
        assert client.files.delete(file.id).deleted is True


@pytest.mark.slow
def test_mistrals_sdk_drives_the_mistral_batch_api() -> None:
    """The mistralai SDK (3.7.0) parses every answer into its own models (CreateFileResponse, BatchJob, ...)."""
    with start_emulator("mistral") as server:
        client = Mistral(api_key=server.api_key, server_url=server.url)
        content = b"".join(orjson.dumps(line) + b"\n" for line in mistral_lines(2))
        file = client.files.upload(file={"file_name": "in.jsonl", "content": content}, purpose="batch")
        assert file.num_lines == 2 and file.sample_type == "batch_request"
        job = client.batch.jobs.create(
            input_files=[file.id], model=MISTRAL_MODEL, endpoint="/v1/chat/completions", metadata={"run": "sdk"}
        )
        assert job.status == "QUEUED"
        done = client.batch.jobs.get(job_id=job.id)
        assert done.status == "SUCCESS" and done.succeeded_requests == 2 and isinstance(done.output_file, str)
        assert client.files.retrieve(file_id=done.output_file).sample_type == "batch_result"
        rows = [orjson.loads(line) for line in client.files.download(file_id=done.output_file).read().splitlines()]
        assert [row["response"]["status_code"] for row in rows] == [200, 200]
        listed = client.batch.jobs.list(status=["SUCCESS"], metadata={"run": "sdk"})
        assert listed.total == 1 and listed.data is not None and listed.data[0].id == job.id
        assert client.batch.jobs.cancel(job_id=job.id).status == "SUCCESS"
        assert client.files.delete(file_id=file.id).deleted is True
