"""Batches end to end (issue 16, point 7): the `openai` SDK's files and batches calls against real `gateway serve`
processes whose providers are the emulators of Mistral's batch jobs and Moonshot's batches.

- A JSONL file routed line by line: named models go to their providers' batch APIs, `auto` to the cheapest at batch
  prices, an invalid line ends in the error file (the others still run), and every answered line is one ledger row
  with its batch id and custom_id, charged at the batch price (half of Mistral's list price).
- Residency: an eu-only team's batch never reaches Moonshot (its Kimi line refused, its `auto` lines on Mistral).
- Budgets: a batch whose worst case does not fit is refused with 429 `budget_exceeded` and writes nothing; a batch
  that fits reserves, then settles to what it used and releases the rest.
- Cancel, a provider job that expires, a gateway SIGKILLed mid-batch and another finishing it, two nodes with one
  poller.
"""

from __future__ import annotations

import io
import json
import signal
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import openai
import pytest

from gateway.emulators import EmulatorOptions, start_emulator
from gateway.http.servers import ThreadedServer
from tests.support.admin import MASTER_KEY, Admin
from tests.support.emulators import MISTRAL_KEY, MOONSHOT_KEY, provider_env
from tests.support.http import auth, request
from tests.support.limits import GatewayProcess, gateway_processes, make_key, make_team, start_gateway_process
from tests.support.metrics import scrape, total
from tests.support.postgres import fresh_database
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow

DONE = ("completed", "failed", "expired", "cancelled")
FAST = {"GATEWAY_BATCH_POLL_SECONDS": "0.1", "GATEWAY_BATCH_LEASE_SECONDS": "2"}


@pytest.fixture()
def emulators() -> Iterator[tuple[ThreadedServer, ThreadedServer]]:
    with ExitStack() as stack:
        mistral = stack.enter_context(start_emulator("mistral", EmulatorOptions(api_key=MISTRAL_KEY)))
        moonshot = stack.enter_context(start_emulator("moonshot", EmulatorOptions(api_key=MOONSHOT_KEY)))
        yield mistral, moonshot


def environment(tmp_path: Path, emulators: tuple[ThreadedServer, ThreadedServer], **extra: str) -> dict[str, str]:
    return {**provider_env(*emulators), "GATEWAY_DATA_DIR": str(tmp_path / "data"), **FAST, **extra}


def sqlite(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'gateway.db'}"


def line(custom_id: str, model: str, content: str = "Say hello.", **body: Any) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": 16, **body},
    }


def jsonl(lines: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(item).encode() + b"\n" for item in lines)


def client(gateway: GatewayProcess, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0, timeout=30)


def submit(sdk: openai.OpenAI, lines: list[dict[str, Any]], window: str = "24h") -> Any:
    uploaded = sdk.files.create(file=("input.jsonl", io.BytesIO(jsonl(lines))), purpose="batch")
    return sdk.batches.create(
        input_file_id=uploaded.id,
        endpoint="/v1/chat/completions",
        completion_window=window,  # type: ignore[arg-type]  # (the SDK types only "24h"; the gateway takes 1h-7d)
        metadata={"purpose": "test"},
    )


def finished(sdk: openai.OpenAI, batch_id: str, seconds: float = 60) -> Any:
    return wait_until(
        lambda: (b := sdk.batches.retrieve(batch_id)).status in DONE and b, seconds, f"batch {batch_id} finished"
    )


def results(sdk: openai.OpenAI, file_id: str | None) -> dict[str, dict[str, Any]]:
    if file_id is None:
        return {}
    text = sdk.files.content(file_id).text
    return {item["custom_id"]: item for item in map(json.loads, text.splitlines())}


def emulator_jobs(server: ThreadedServer) -> list[dict[str, Any]]:
    answer = request(server.url, "GET", "/_emulator/batches", timeout=10)
    assert answer.status == 200, answer.body
    data = answer.json()
    return data["jobs"] if isinstance(data, dict) else data


def emulator_control(server: ThreadedServer, body: dict[str, Any], job: str | None = None) -> None:
    path = "/_emulator/batches" + (f"/{job}" if job else "")
    answer = request(server.url, "POST", path, json.dumps(body).encode(), {"content-type": "application/json"})
    assert answer.status == 200, answer.body


def jobs_recorded(sdk: openai.OpenAI, batch_id: str) -> bool:
    """The gateway has recorded its provider jobs as accepted (their ids are in its database)."""
    jobs = (sdk.batches.retrieve(batch_id).model_extra or {})["x_gateway"]["jobs"]
    return bool(jobs) and all(job["state"] in ("queued", "running") for job in jobs)


def ledger(gateway: GatewayProcess, batch_id: str) -> list[dict[str, Any]]:
    """The ledger's rows of one batch, grouped by batch (one group)."""
    report = Admin(gateway.url).ok("GET", f"/admin/spend?group_by=batch&batch={batch_id}")
    rows: list[dict[str, Any]] = report["rows"]
    return rows


def reserved(gateway: GatewayProcess, team: str) -> int:
    nanos: int = Admin(gateway.url).ok("GET", f"/admin/teams/{team}")["reserved_nanos"]
    return nanos


def test_openai_sdk_batch_runs_on_both_batch_apis_at_batch_prices(
    tmp_path: Path, emulators: tuple[ThreadedServer, ThreadedServer]
) -> None:
    mistral, moonshot = emulators
    with gateway_processes(sqlite(tmp_path), environment(tmp_path, emulators)) as (gateway,):
        team = make_team(gateway.url, "batch", budget_usd="10")
        sdk = client(gateway, make_key(gateway.url, team))
        lines = [
            line("m1", "mistral-medium-3.5"),
            line("m2", "mistral-medium-3.5", "Write a haiku."),
            line("k1", "kimi-k2.6", temperature=0.3),  # a fixed sampling value: the adapter leaves it out, as live
            line("a1", "auto"),  # the cheapest at batch prices: Kimi ($0.60/$1.80) before Mistral ($0.75/$3.75)
            {"custom_id": "bad", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "auto"}},
            line("dup", "mistral-medium-3.5"),
            line("dup", "mistral-medium-3.5"),
        ]
        batch = submit(sdk, lines)
        assert batch.status in ("validating", "in_progress")
        assert batch.request_counts is not None and batch.request_counts.total == 7
        done = finished(sdk, batch.id)
        assert done.status == "completed"
        assert done.request_counts.completed == 5 and done.request_counts.failed == 2
        out = results(sdk, done.output_file_id)
        errors = results(sdk, done.error_file_id)
        assert set(out) == {"m1", "m2", "k1", "a1", "dup"}
        assert set(errors) == {"bad", "dup"}
        assert errors["bad"]["response"]["status_code"] == 400
        assert "messages" in errors["bad"]["response"]["body"]["error"]["message"]
        assert errors["dup"]["response"]["body"]["error"]["code"] == "duplicate_custom_id"
        for item in out.values():
            body = item["response"]["body"]
            assert item["response"]["status_code"] == 200 and body["choices"][0]["message"]["content"]
            assert body["usage"]["prompt_tokens"] > 0 and body["usage"]["completion_tokens"] > 0
        # What reached each provider: one job per model, bodies without the gateway's or the client's ids.
        mistral_jobs, moonshot_jobs = emulator_jobs(mistral), emulator_jobs(moonshot)
        assert [job["line_count"] if "line_count" in job else job["lines"] for job in mistral_jobs] == [3]
        assert len(moonshot_jobs) == 1
        extra = done.model_extra or {}
        gateway_view = extra["x_gateway"]
        assert float(gateway_view["saved_usd"]) > 0  # Mistral's lines at half price
        assert float(gateway_view["cost_usd"]) < float(gateway_view["interactive_cost_usd"])
        # The ledger: one row per answered line, with its batch and custom_id, at the batch price.
        rows = ledger(gateway, batch.id)
        assert len(rows) == 1 and rows[0]["batch"] == batch.id and rows[0]["requests"] == 5
        assert rows[0]["cost_nanos"] == gateway_view["cost_nanos"]
        samples = scrape(gateway.url, auth(MASTER_KEY))
        assert total(samples, "gateway_batch_lines_total", provider="mistral", mode="batch", outcome="answered") == 3
        assert total(samples, "gateway_batch_lines_total", provider="moonshot", mode="batch", outcome="answered") == 2
        assert total(samples, "gateway_batch_lines_total", mode="invalid", outcome="failed") == 2
        assert total(samples, "gateway_batches_total", state="created") == 1
        assert total(samples, "gateway_batches_total", state="completed") == 1
        saved = total(samples, "gateway_batch_saved_usd_total", provider="mistral")
        assert abs(saved - float(gateway_view["saved_usd"])) < 1e-6
        team_view = Admin(gateway.url).ok("GET", f"/admin/teams/{team}")
        assert team_view["reserved_nanos"] == 0  # the batch's hold is released
        assert team_view["spent_nanos"] == gateway_view["cost_nanos"]


def test_eu_team_batch_never_reaches_moonshot(tmp_path: Path, emulators: tuple[ThreadedServer, ThreadedServer]) -> None:
    mistral, moonshot = emulators
    with gateway_processes(sqlite(tmp_path), environment(tmp_path, emulators)) as (gateway,):
        team = make_team(gateway.url, "eu", policy="eu-only", regions=["eu"])
        sdk = client(gateway, make_key(gateway.url, team))
        done = finished(sdk, submit(sdk, [line("a", "auto"), line("b", "auto"), line("k", "kimi-k2.6")]).id)
        assert done.status == "completed"
        errors = results(sdk, done.error_file_id)
        assert set(errors) == {"k"} and errors["k"]["response"]["status_code"] == 403
        assert set(results(sdk, done.output_file_id)) == {"a", "b"}
        assert emulator_jobs(moonshot) == []
        assert not [r for r in request(moonshot.url, "GET", "/_emulator/requests").json() if "/files" in r["path"]]
        assert [job["model"] for job in emulator_jobs(mistral)] == ["mistral-medium-3.5"]


def test_budget_too_small_refuses_the_batch_and_writes_nothing(
    tmp_path: Path, emulators: tuple[ThreadedServer, ThreadedServer]
) -> None:
    with gateway_processes(sqlite(tmp_path), environment(tmp_path, emulators)) as (gateway,):
        team = make_team(gateway.url, "poor", budget_usd="0.0001", policy="eu-only", regions=["eu"])
        sdk = client(gateway, make_key(gateway.url, team))
        lines = [line(f"l{i}", "mistral-medium-3.5", max_tokens=4000) for i in range(20)]
        with pytest.raises(openai.RateLimitError) as refused:
            submit(sdk, lines)
        assert refused.value.code == "budget_exceeded"
        assert sdk.batches.list().data == []
        assert reserved(gateway, team) == 0


def test_cancel_keeps_what_was_answered_and_releases_the_rest(
    tmp_path: Path, emulators: tuple[ThreadedServer, ThreadedServer]
) -> None:
    mistral, _ = emulators
    emulator_control(mistral, {"batch_hold": True})
    with gateway_processes(sqlite(tmp_path), environment(tmp_path, emulators)) as (gateway,):
        team = make_team(gateway.url, "cancel", budget_usd="5", policy="eu-only", regions=["eu"])
        sdk = client(gateway, make_key(gateway.url, team))
        batch = submit(sdk, [line(f"l{i}", "mistral-medium-3.5") for i in range(4)])
        wait_until(lambda: emulator_jobs(mistral), 30, "the job reached Mistral")
        assert reserved(gateway, team) > 0
        cancelled = sdk.batches.cancel(batch.id)
        assert cancelled.status in ("cancelling", "cancelled")
        job = emulator_jobs(mistral)[0]
        wait_until(
            lambda: emulator_jobs(mistral)[0]["state"] in ("cancelling", "cancelled"), 30, "cancel reached Mistral"
        )
        emulator_control(mistral, {"action": "complete"}, job["id"])
        done = finished(sdk, batch.id)
        assert done.status == "cancelled"
        errors = results(sdk, done.error_file_id)
        assert set(errors) == {f"l{i}" for i in range(4)}
        assert {e["error"]["code"] for e in errors.values()} == {"batch_cancelled"}
        assert reserved(gateway, team) == 0


def test_a_gateway_killed_mid_batch_is_replaced_by_another_that_finishes_it(
    tmp_path: Path, emulators: tuple[ThreadedServer, ThreadedServer]
) -> None:
    mistral, _ = emulators
    emulator_control(mistral, {"batch_hold": True})
    env = environment(tmp_path, emulators)
    first = start_gateway_process(sqlite(tmp_path), env)
    try:
        team = make_team(first.url, "restart", policy="eu-only", regions=["eu"])
        key = make_key(first.url, team)
        sdk = client(first, key)
        batch = submit(sdk, [line(f"l{i}", "mistral-medium-3.5") for i in range(3)])
        wait_until(lambda: jobs_recorded(sdk, batch.id), 30, "the gateway recorded Mistral's job")
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(30)
    finally:
        first.stop()
    job = emulator_jobs(mistral)[0]
    emulator_control(mistral, {"action": "complete"}, job["id"])
    with gateway_processes(sqlite(tmp_path), env) as (second,):
        sdk = client(second, key)
        try:
            done = finished(sdk, batch.id)
        except AssertionError:
            print("\n".join(second.log))
            raise
        assert done.status == "completed" and done.request_counts.completed == 3
        assert len(emulator_jobs(mistral)) == 1  # taken over, not submitted again
        assert set(results(sdk, done.output_file_id)) == {"l0", "l1", "l2"}


def test_two_nodes_one_poller_each_line_settled_once(
    emulators: tuple[ThreadedServer, ThreadedServer], tmp_path: Path
) -> None:
    mistral, moonshot = emulators
    with (
        fresh_database("gateway_batches") as database,
        gateway_processes(database, environment(tmp_path, emulators), count=2) as (one, two),
    ):
        team = make_team(one.url, "nodes")
        key = make_key(one.url, team)
        lines = [line(f"m{i}", "mistral-medium-3.5") for i in range(5)] + [line(f"k{i}", "kimi-k2.6") for i in range(5)]
        batch = submit(client(one, key), lines)
        done = finished(client(two, key), batch.id)
        assert done.status == "completed" and done.request_counts.completed == 10
        assert len(emulator_jobs(mistral)) == 1 and len(emulator_jobs(moonshot)) == 1
        assert ledger(one, batch.id)[0]["requests"] == 10


def test_a_provider_job_that_expires_expires_its_unanswered_lines(
    tmp_path: Path, emulators: tuple[ThreadedServer, ThreadedServer]
) -> None:
    mistral, _ = emulators
    emulator_control(mistral, {"batch_hold": True})
    with gateway_processes(sqlite(tmp_path), environment(tmp_path, emulators)) as (gateway,):
        team = make_team(gateway.url, "expire", budget_usd="5", policy="eu-only", regions=["eu"])
        sdk = client(gateway, make_key(gateway.url, team))
        batch = submit(sdk, [line(f"l{i}", "mistral-medium-3.5") for i in range(3)])
        job = wait_until(lambda: emulator_jobs(mistral), 30, "the job reached Mistral")[0]
        emulator_control(mistral, {"action": "expire"}, job["id"])
        done = finished(sdk, batch.id)
        assert done.status == "completed"  # the batch's own window has not passed: its lines ended, unanswered
        errors = results(sdk, done.error_file_id)
        assert {e["error"]["code"] for e in errors.values()} == {"batch_expired"}
        assert reserved(gateway, team) == 0


def test_lines_that_cannot_wait_run_through_the_pipeline_at_list_price(
    tmp_path: Path, emulators: tuple[ThreadedServer, ThreadedServer]
) -> None:
    """A one-hour window is shorter than Moonshot's shortest (12 h): Kimi's lines run interactively, Mistral's on
    its batch API."""
    mistral, moonshot = emulators
    with gateway_processes(sqlite(tmp_path), environment(tmp_path, emulators)) as (gateway,):
        team = make_team(gateway.url, "hurry", budget_usd="5")
        sdk = client(gateway, make_key(gateway.url, team))
        lines = [line(f"k{i}", "kimi-k2.6") for i in range(3)] + [line("m", "mistral-medium-3.5")]
        batch = submit(sdk, lines, window="1h")
        done = finished(sdk, batch.id)
        assert done.status == "completed" and done.request_counts.completed == 4
        assert set(results(sdk, done.output_file_id)) == {"k0", "k1", "k2", "m"}
        assert emulator_jobs(moonshot) == []
        chats = [
            r
            for r in request(moonshot.url, "GET", "/_emulator/requests").json()
            if r["path"].endswith("/chat/completions")
        ]
        assert len(chats) == 3
        assert len(emulator_jobs(mistral)) == 1
        plan = (done.model_extra or {})["x_gateway"]["plan"]
        modes = {m["model"]: (m["batch_api_lines"], m["interactive_lines"]) for m in plan["models"]}
        assert modes == {"kimi-k2.6": (0, 3), "mistral-medium-3.5": (1, 0)}
        assert ledger(gateway, batch.id)[0]["requests"] == 4
        assert reserved(gateway, team) == 0


def test_a_batch_past_its_window_expires_what_is_unfinished(
    tmp_path: Path, emulators: tuple[ThreadedServer, ThreadedServer]
) -> None:
    """The batch's own window passes (its expiry moved to now in the database: time driven explicitly): its job is
    cancelled at the provider, its lines end `batch_expired`, its hold is released."""
    import sqlite3

    mistral, _ = emulators
    emulator_control(mistral, {"batch_hold": True})
    with gateway_processes(sqlite(tmp_path), environment(tmp_path, emulators)) as (gateway,):
        team = make_team(gateway.url, "late", budget_usd="5", policy="eu-only", regions=["eu"])
        sdk = client(gateway, make_key(gateway.url, team))
        batch = submit(sdk, [line(f"l{i}", "mistral-medium-3.5") for i in range(3)])
        wait_until(lambda: jobs_recorded(sdk, batch.id), 30, "the gateway recorded Mistral's job")
        with sqlite3.connect(tmp_path / "gateway.db") as db:
            db.execute("UPDATE batches SET expires_at = created_at WHERE id = ?", (batch.id,))
        job = emulator_jobs(mistral)[0]
        wait_until(lambda: emulator_jobs(mistral)[0]["state"] != "queued", 30, "the expired batch's job was cancelled")
        emulator_control(mistral, {"action": "run"}, job["id"])
        done = finished(sdk, batch.id)
        assert done.status == "expired" and done.expired_at is not None
        errors = results(sdk, done.error_file_id)
        assert {e["error"]["code"] for e in errors.values()} == {"batch_expired"} and len(errors) == 3
        assert reserved(gateway, team) == 0
        assert ledger(gateway, batch.id) == [] or ledger(gateway, batch.id)[0]["requests"] == 0


def test_files_and_batches_belong_to_their_team(
    tmp_path: Path, emulators: tuple[ThreadedServer, ThreadedServer]
) -> None:
    """Another team's key finds nothing (404, empty lists); the master key sees every team's. Files above the
    inline limit live in the data directory, survive a restart, and go when deleted."""
    env = environment(tmp_path, emulators, GATEWAY_BATCH_FILE_INLINE_BYTES="0")
    with gateway_processes(sqlite(tmp_path), env) as (gateway,):
        owner = client(gateway, make_key(gateway.url, make_team(gateway.url, "owner")))
        other = client(gateway, make_key(gateway.url, make_team(gateway.url, "other")))
        content = jsonl([line("a", "mistral-medium-3.5")])
        uploaded = owner.files.create(file=("in.jsonl", io.BytesIO(content)), purpose="batch")
        batch = owner.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        for call in (
            lambda: other.files.retrieve(uploaded.id),
            lambda: other.files.content(uploaded.id),
            lambda: other.files.delete(uploaded.id),
            lambda: other.batches.retrieve(batch.id),
            lambda: other.batches.cancel(batch.id),
            lambda: other.batches.create(
                input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
            ),
        ):
            with pytest.raises(openai.NotFoundError):
                call()
        assert other.batches.list().data == [] and other.files.list().data == []
        admin = client(gateway, MASTER_KEY)
        assert batch.id in {b.id for b in admin.batches.list().data}
        assert (tmp_path / "data" / "files" / uploaded.id).is_file()
    with gateway_processes(sqlite(tmp_path), env) as (gateway,):
        owner_again = openai.OpenAI(base_url=gateway.url + "/v1", api_key=owner.api_key, max_retries=0)
        assert owner_again.files.content(uploaded.id).content == content
        assert owner_again.files.delete(uploaded.id).deleted
        with pytest.raises(openai.NotFoundError):
            owner_again.files.retrieve(uploaded.id)
        assert not (tmp_path / "data" / "files" / uploaded.id).exists()


def test_hostile_uploads_and_bodies_get_clear_errors(
    tmp_path: Path, emulators: tuple[ThreadedServer, ThreadedServer]
) -> None:
    env = environment(tmp_path, emulators, GATEWAY_BATCH_FILE_MAX_BYTES="4096")
    with gateway_processes(sqlite(tmp_path), env) as (gateway,):
        key = make_key(gateway.url, make_team(gateway.url, "hostile"))
        sdk = client(gateway, key)
        with pytest.raises(openai.APIStatusError) as too_large:
            sdk.files.create(file=("big.jsonl", io.BytesIO(b"x" * 100_000)), purpose="batch")
        assert too_large.value.status_code == 413
        with pytest.raises(openai.BadRequestError) as purpose:
            sdk.files.create(file=("in.jsonl", io.BytesIO(b"{}\n")), purpose="fine-tune")
        assert purpose.value.code == "invalid_value"
        headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
        for body, code in (
            (b'{"input_file_id": "file-nope", "endpoint": "/v1/chat/completions"}', 404),
            (b'{"input_file_id": "x", "endpoint": "/v1/completions"}', 400),
            (b'{"input_file_id": "x", "endpoint": "/v1/chat/completions", "completion_window": "99d"}', 400),
            (b'{"input_file_id": "x", "endpoint": "/v1/chat/completions", "metadata": {"a": 1}}', 400),
            (b"[]", 400),
            (b"not json", 400),
        ):
            answer = request(gateway.url, "POST", "/v1/batches", body, headers)
            assert answer.status == code, (body, answer.status, answer.body)
            assert answer.json()["error"]["message"]
        answer = request(
            gateway.url, "POST", "/v1/files", b"junk", {**headers, "content-type": "multipart/form-data; boundary=zz"}
        )
        assert answer.status == 400 and answer.json()["error"]["message"]
        answer = request(gateway.url, "GET", "/v1/batches?limit=1000", None, headers)
        assert answer.status == 400


def test_embeddings_batch_on_mistral_in_the_encoding_each_line_asked(
    tmp_path: Path, emulators: tuple[ThreadedServer, ThreadedServer]
) -> None:
    import base64
    import struct

    mistral, _ = emulators
    with gateway_processes(sqlite(tmp_path), environment(tmp_path, emulators)) as (gateway,):
        sdk = client(gateway, make_key(gateway.url, make_team(gateway.url, "embed")))
        lines = [
            {"custom_id": "f", "url": "/v1/embeddings", "body": {"model": "auto", "input": ["a", "b"]}},
            {
                "custom_id": "b",
                "url": "/v1/embeddings",
                "body": {"model": "auto", "input": "c", "encoding_format": "base64"},
            },
        ]
        uploaded = sdk.files.create(file=("e.jsonl", io.BytesIO(jsonl(lines))), purpose="batch")
        batch = sdk.batches.create(input_file_id=uploaded.id, endpoint="/v1/embeddings", completion_window="24h")
        done = finished(sdk, batch.id)
        assert done.status == "completed" and done.request_counts.completed == 2
        out = results(sdk, done.output_file_id)
        floats = out["f"]["response"]["body"]["data"]
        assert len(floats) == 2 and all(isinstance(x, float) for x in floats[0]["embedding"])
        encoded = out["b"]["response"]["body"]["data"][0]["embedding"]
        vector = struct.unpack(f"<{len(base64.b64decode(encoded)) // 4}f", base64.b64decode(encoded))
        assert len(vector) == len(floats[0]["embedding"])
        assert [job["model"] for job in emulator_jobs(mistral)] == ["mistral-embed"]
