"""The batch runner in-process (gateway/batches/runner.py), in front of a provider batch API answered in-process:
jobs submitted once per model, results settled once, and a job left `submitting` by a node that stopped taken over
(or submitted again) according to what the provider says, never sent twice."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.batches.service import Batches
from gateway.catalog import ModelConfig
from gateway.errors import GatewayError
from gateway.providers.batches.base import BatchApi, JobStatus, LineOutcome, Submitted, UpstreamLine
from gateway.state import Gateway
from gateway.store.batches import ProviderJob
from gateway.types import Usage
from tests.support.inprocess import bearer, ledger, run, team_key

CHAT = "/v1/chat/completions"


class FakeBatchApi(BatchApi):
    """A provider's batch API in memory: what was submitted, and what a lookup by tag answers."""

    def __init__(self) -> None:
        self.submitted: list[tuple[str, list[UpstreamLine], dict[str, str]]] = []
        self.lookup: JobStatus | None | GatewayError = None
        self.state = "running"
        self.lines: dict[str, list[str]] = {}

    async def submit(
        self, endpoint: Any, model: ModelConfig, lines: list[UpstreamLine], window_hours: int, metadata: dict[str, str]
    ) -> Submitted:
        job = f"up-{len(self.submitted) + 1}"
        self.submitted.append((model.name, lines, metadata))
        self.lines[job] = [line.id for line in lines]
        return Submitted("file-up", job)

    async def status(self, job_id: str) -> JobStatus:
        return JobStatus(self.state, self.state.upper(), job_id=job_id)  # type: ignore[arg-type]

    async def cancel(self, job_id: str) -> JobStatus:
        return JobStatus("cancelling", "CANCELLING", job_id=job_id)

    async def find_job(self, gateway_job: str, created_after: int) -> JobStatus | None:
        if isinstance(self.lookup, GatewayError):
            raise self.lookup
        return self.lookup

    async def results(self, status: JobStatus) -> list[LineOutcome]:
        ids = self.lines.get(status.job_id or "", [])
        body = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}]}
        return [LineOutcome(line_id, 200, body, Usage(prompt_tokens=100, completion_tokens=10)) for line_id in ids]


def lines_file(count: int) -> bytes:
    return b"".join(
        json.dumps(
            {
                "custom_id": f"l{i}",
                "url": CHAT,
                "body": {"model": "mistral-medium-3.5", "messages": [{"role": "user", "content": "hi"}]},
            }
        ).encode()
        + b"\n"
        for i in range(count)
    )


async def started(
    gateway: Gateway, client: httpx.AsyncClient, fake: FakeBatchApi, count: int = 3
) -> tuple[Batches, str, str]:
    """A batch of `count` Mistral lines created with the fake as Mistral's batch API; (service, key, batch id)."""
    batches: Batches = client._transport.app.state.batches  # type: ignore[attr-defined]

    async def for_provider(name: str) -> BatchApi | None:
        return fake if name == "mistral" else None

    batches.apis.for_provider = for_provider  # type: ignore[method-assign]
    batches.apis.windows = lambda: {"mistral": 1}  # type: ignore[method-assign]
    key = await team_key(gateway, budget_usd="5")
    uploaded = await client.post(
        "/v1/files", headers=bearer(key), files={"file": ("in.jsonl", lines_file(count))}, data={"purpose": "batch"}
    )
    created = await client.post(
        "/v1/batches", headers=bearer(key), json={"input_file_id": uploaded.json()["id"], "endpoint": CHAT}
    )
    assert created.status_code == 200, created.text
    return batches, key, created.json()["id"]


async def left_submitting(batches: Batches, batch_id: str) -> ProviderJob:
    """What a node killed inside `submit` leaves: the job's row, `submitting`, without the provider's id."""
    now = int(time.time())
    job = ProviderJob("bjob_dead", batch_id, "mistral", "mistral-medium-3.5", "submitting", 3, now, now)
    await batches.store.save_job(job)
    return job


def test_one_job_per_model_and_each_line_settled_once(tmp_path: Path) -> None:
    async def scenario(gateway: Gateway, client: httpx.AsyncClient, calls: Any) -> None:
        fake = FakeBatchApi()
        batches, key, batch_id = await started(gateway, client, fake)
        await batches.runner.round()
        assert len(fake.submitted) == 1 and [line.id for line in fake.submitted[0][1]] == ["line-0", "line-1", "line-2"]
        assert all("model" not in line.body for line in fake.submitted[0][1])
        assert fake.submitted[0][2]["gateway_batch"] == batch_id
        fake.state = "succeeded"
        await batches.runner.round()
        await batches.runner.round()  # a second reading of the same results settles nothing twice
        view = (await client.get(f"/v1/batches/{batch_id}", headers=bearer(key))).json()
        assert view["status"] == "completed" and view["request_counts"]["completed"] == 3
        rows = [row for row in await ledger(gateway) if row.batch_id == batch_id]
        assert sorted(row.custom_id for row in rows) == ["l0", "l1", "l2"]
        assert len(fake.submitted) == 1

    run(tmp_path, {}, scenario)


def test_a_job_the_provider_took_is_taken_over_not_sent_again(tmp_path: Path) -> None:
    async def scenario(gateway: Gateway, client: httpx.AsyncClient, calls: Any) -> None:
        fake = FakeBatchApi()
        batches, key, batch_id = await started(gateway, client, fake)
        await left_submitting(batches, batch_id)
        fake.lines["up-found"] = ["line-0", "line-1", "line-2"]
        fake.lookup = JobStatus("running", "RUNNING", job_id="up-found")
        await batches.runner.round()
        assert fake.submitted == []
        jobs = await batches.store.jobs(batch_id)
        assert [(job.id, job.upstream_id) for job in jobs] == [("bjob_dead", "up-found")]
        fake.state = "succeeded"
        await batches.runner.round()
        view = (await client.get(f"/v1/batches/{batch_id}", headers=bearer(key))).json()
        assert view["status"] == "completed" and view["request_counts"]["completed"] == 3

    run(tmp_path, {}, scenario)


def test_a_job_the_provider_never_created_is_submitted_again(tmp_path: Path) -> None:
    async def scenario(gateway: Gateway, client: httpx.AsyncClient, calls: Any) -> None:
        fake = FakeBatchApi()
        batches, _, batch_id = await started(gateway, client, fake)
        await left_submitting(batches, batch_id)
        fake.lookup = None
        await batches.runner.round()
        assert len(fake.submitted) == 1
        states = {job.id: job.state for job in await batches.store.jobs(batch_id)}
        assert states["bjob_dead"] == "failed" and len(states) == 2

    run(tmp_path, {}, scenario)


def test_while_the_provider_cannot_say_nothing_is_sent(tmp_path: Path) -> None:
    async def scenario(gateway: Gateway, client: httpx.AsyncClient, calls: Any) -> None:
        fake = FakeBatchApi()
        batches, _, batch_id = await started(gateway, client, fake)
        await left_submitting(batches, batch_id)
        fake.lookup = GatewayError(503, "mistral is down", "upstream_error", "upstream_unavailable")
        await batches.runner.round()
        assert fake.submitted == []
        assert [job.state for job in await batches.store.jobs(batch_id)] == ["submitting"]

    run(tmp_path, {}, scenario)


def test_submit_refused_for_good_fails_the_lines_and_transient_keeps_them(tmp_path: Path) -> None:
    async def scenario(gateway: Gateway, client: httpx.AsyncClient, calls: Any) -> None:
        fake = FakeBatchApi()
        batches, key, batch_id = await started(gateway, client, fake)
        refusals = [
            GatewayError(503, "busy", "upstream_error", "upstream_unavailable"),
            GatewayError(400, "bad file", "invalid_request_error", "invalid_file"),
        ]
        original = fake.submit

        async def refusing(*args: Any) -> Submitted:
            if refusals:
                raise refusals.pop(0)
            return await original(*args)

        fake.submit = refusing  # type: ignore[method-assign]
        await batches.runner.round()  # 503: the lines stay pending
        view = (await client.get(f"/v1/batches/{batch_id}", headers=bearer(key))).json()
        assert view["request_counts"]["failed"] == 0
        await batches.runner.round()  # 400: the provider will refuse them again: they fail
        view = (await client.get(f"/v1/batches/{batch_id}", headers=bearer(key))).json()
        assert view["status"] == "completed" and view["request_counts"]["failed"] == 3

    run(tmp_path, {}, scenario)


@pytest.mark.slow  # (a few seconds of real time: leases are about time)
def test_a_lease_is_renewed_while_one_step_outlasts_it(tmp_path: Path) -> None:
    """The upload to the provider takes longer than a lease: the node keeps renewing it meanwhile, so another node
    does not take the batch over in the middle (it would look the job up, or send the lines a second time)."""

    async def scenario(gateway: Gateway, client: httpx.AsyncClient, calls: Any) -> None:
        fake = FakeBatchApi()
        inside, finish = asyncio.Event(), asyncio.Event()
        original = fake.submit

        async def slow(*args: Any) -> Submitted:
            inside.set()
            await finish.wait()
            return await original(*args)

        fake.submit = slow  # type: ignore[method-assign]
        batches, _, batch_id = await started(gateway, client, fake)
        runner = batches.runner
        runner.start()  # its first round leases the batch and stays inside the upload
        await asyncio.wait_for(inside.wait(), 10)
        first = await batches.store.get_batch(batch_id)
        assert first is not None and first.lease_owner == runner.owner

        async def lease_until() -> int:
            batch = await batches.store.get_batch(batch_id)
            assert batch is not None and batch.lease_owner == runner.owner
            return batch.lease_until

        deadline = time.monotonic() + 20
        while (await lease_until()) <= first.lease_until or time.time() <= first.lease_until + 1:
            assert time.monotonic() < deadline, "the lease was not renewed during the step"
            await asyncio.sleep(0.05)  # (polling the database for a state, bounded: not a wait for a task)
        now = int(time.time())  # past the first lease's end: another node finds nothing to take
        assert await batches.store.lease("another-node", now, now + 60, 10) == []
        finish.set()
        while not fake.submitted:
            assert time.monotonic() < deadline, "the upload did not end"
            await asyncio.sleep(0.01)
        assert len(fake.submitted) == 1

    run(tmp_path, {}, scenario, batch_lease_seconds=1.5, batch_poll_seconds=60)
