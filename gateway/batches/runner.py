"""Moving batches forward: on every node, a loop takes the lease of the active batches nobody holds and advances them.

Exactly one node holds a batch's lease at a time (a row lock in the database); it renews the lease each round and,
while it works on it (one step can outlast a lease: a large upload, a slow provider), every third of a lease; a
node that dies (SIGKILL, a lost host) lets its lease run out, after which another node takes the batch over
where the database says it is. One round of one batch: a new batch goes `in_progress`; its pending lines are sent,
grouped by model, as jobs on their providers' batch APIs, and its interactive lines start on the pipeline (a few
at a time); each job is polled, and a finished job's results are settled line by line (ledger row at the batch
price, the line's share of the batch's hold given back); a cancelled or expired batch has its jobs cancelled and
its unsent lines closed; when no line is left running the batch ends and what remains of its hold is released.

A node killed between asking a provider to take a job and recording its answer leaves the job `submitting`; the
next round asks the provider for a job tagged with its id (metadata) before sending those lines again (`_resolve`).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import secrets
import struct
import time
from collections.abc import Iterable
from typing import Any

import orjson

from gateway.auth.principal import Principal
from gateway.batches.apis import BatchApis
from gateway.batches.lines import ENDPOINTS, checked_body
from gateway.batches.render import request_id
from gateway.budget.accounting import Charged
from gateway.errors import GatewayError
from gateway.pipeline.request import Answer, Context, InferenceRequest
from gateway.pipeline.serve import serve
from gateway.pricing import cost_nanos
from gateway.providers.batches.base import JobStatus, LineOutcome, UpstreamLine
from gateway.routing.route import Route
from gateway.state import Gateway
from gateway.store.base import LedgerRow
from gateway.store.batches import JOB_ACTIVE, BatchLine, BatchRecord, BatchStore, LineResult, ProviderJob
from gateway.types import Usage

log = logging.getLogger("gateway.batches")

LEASE_BATCHES = 50  # batches one node advances per round
LINE_PAGE = 1000
JOB_DONE = ("succeeded", "failed", "expired", "cancelled")


def error_body(error: GatewayError) -> str:
    return error.body().decode()


class _LineObserver:
    """What the pipeline tells about an interactive batch line (nothing is waiting on it but the runner)."""

    def __init__(self) -> None:
        self.attempts = 0
        self.first_token_at: float | None = None

    def routed(self, route: Route) -> None:
        pass

    def waited_for(self, seconds: float) -> None:
        pass

    def settled(self, charged: Charged) -> None:
        pass

    def retain(self) -> None:
        pass

    def release(self) -> None:
        pass


class BatchRunner:
    def __init__(self, gateway: Gateway, apis: BatchApis) -> None:
        self.gateway = gateway
        self.apis = apis
        self.store: BatchStore = gateway.store.batches
        settings = gateway.settings
        self.poll_seconds = settings.batch_poll_seconds
        self.lease_seconds = settings.batch_lease_seconds
        self._seats = asyncio.Semaphore(settings.batch_interactive_concurrency)
        self._wake = asyncio.Event()
        self._loop: asyncio.Task[None] | None = None
        self._running: dict[str, set[int]] = {}  # batch id -> interactive lines running on this node
        self._tasks: set[asyncio.Task[Any]] = set()
        self._held: set[str] = set()  # batches leased by this node's last round
        self._renewing: asyncio.Task[None] | None = None
        self._owner = "batches-" + secrets.token_hex(6)

    @property
    def owner(self) -> str:
        instance = self.gateway.accounting.instance
        return instance.id if instance is not None else self._owner

    def start(self) -> None:
        if self._loop is None:
            loop = asyncio.get_running_loop()
            self._loop = loop.create_task(self._rounds())
            self._renewing = loop.create_task(self._renewals())

    def wake(self) -> None:
        """Advance the active batches now (a batch was created or cancelled on this node)."""
        self._wake.set()

    async def close(self) -> None:
        loop, self._loop = self._loop, None
        renewing, self._renewing = self._renewing, None
        tasks = [t for t in (loop, renewing, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        owner = self.owner
        for batch_id in list(self._running):
            try:  # another node may take it at once instead of waiting for the lease to run out
                await self.store.release_lease(batch_id, owner)
            except Exception:
                log.debug("could not release the lease of %s", batch_id, exc_info=True)
        self._running.clear()

    async def _rounds(self) -> None:
        while True:
            try:
                await self.round()
            except Exception:  # the database away, a provider down: the next round tries again
                log.warning("batch round failed (retried in %.0f s)", self.poll_seconds, exc_info=True)
            try:
                await asyncio.wait_for(self._wake.wait(), self.poll_seconds)  # periodic work, or woken early
            except TimeoutError:
                pass
            self._wake.clear()

    async def round(self) -> int:
        """Advance every batch this node can lease now; how many it advanced."""
        now = int(time.time())
        leased = await self.store.lease(self.owner, now, self._lease_end(now), LEASE_BATCHES)
        self._held = {batch.id for batch in leased}
        for batch in leased:
            if batch.id not in self._held:
                continue  # its lease was lost while this round worked on others (see `_renewals`)
            try:
                await self.advance(batch)
            except Exception:
                log.warning("advancing batch %s failed (retried next round)", batch.id, exc_info=True)
        return len(leased)

    def _lease_end(self, now: float) -> int:
        return int(now + self.lease_seconds + 0.999)

    async def _renewals(self) -> None:
        """Every third of a lease, extend the leases of the batches this node is working on: those of the round
        (a step of one can take longer than a lease) and those with interactive lines running here (they outlast
        the round). Without it another node could take a batch in the middle of a long step."""
        while True:
            await asyncio.sleep(self.lease_seconds / 3)  # (a period, not a wait for another task)
            ids = self._held | set(self._running)
            if not ids:
                continue
            try:
                renewed = await self.store.renew_leases(sorted(ids), self.owner, self._lease_end(time.time()))
            except Exception:  # the database away: the next renewal, or the next round, tries again
                log.warning("could not renew batch leases (tried again in %.0f s)", self.lease_seconds / 3)
                continue
            for batch_id in ids - renewed:  # ended (lease released) or, past an outage, taken by another node
                self._held.discard(batch_id)

    # -- one batch -----------------------------------------------------------------------------------------

    async def advance(self, batch: BatchRecord) -> None:
        now = int(time.time())
        if batch.status == "validating":
            batch.status, batch.in_progress_at = "in_progress", now
            if not await self.store.update_batch(batch, expect_status="validating"):
                return  # cancelled meanwhile: the next round sees it
        jobs = await self.store.jobs(batch.id)
        ending = None
        if batch.status == "cancelling":
            ending = "cancelled"
        elif now >= batch.expires_at:
            ending = "expired"
        await self._resolve(batch, jobs)
        if ending is not None:
            await self._close_unsent(batch, ending)
            await self._cancel_jobs(jobs)
        else:
            await self._submit(batch, jobs)
            counts = await self.store.line_counts(batch.id)
            if counts.get(("interactive", "pending")) or counts.get(("interactive", "submitted")):
                self._start_interactive(batch)  # (lines submitted by a node that died run again here)
        await self._poll(batch, jobs, ending)
        await self._finish_if_done(batch, jobs, ending)

    async def _lines(self, batch: BatchRecord, states: Iterable[str]) -> list[BatchLine]:
        out: list[BatchLine] = []
        after = -1
        while True:
            page = await self.store.lines(batch.id, list(states), after_index=after, limit=LINE_PAGE)
            out.extend(page)
            if len(page) < LINE_PAGE:
                return out
            after = page[-1].index

    async def _submit(self, batch: BatchRecord, jobs: list[ProviderJob]) -> None:
        """Pending lines of batch mode: one job per model on its provider's batch API."""
        pending = [line for line in await self._lines(batch, ["pending"]) if line.mode == "batch"]
        groups: dict[str, list[BatchLine]] = {}
        for line in pending:
            groups.setdefault(line.model or "", []).append(line)
        for job in jobs:
            if job.state == "submitting" and job.model in groups:
                del groups[job.model]  # not known yet whether the provider has them: never sent twice
        window = max(1, (batch.expires_at - batch.created_at) // 3600)
        for name, lines in groups.items():
            model = self.gateway.catalog.models.get(name)
            api = await self.apis.for_provider(model.provider) if model is not None else None
            if model is None or api is None:
                error = GatewayError(
                    503,
                    f"Model {name!r} or its provider's batch API is no longer configured on this gateway.",
                    "server_error",
                    "model_removed",
                )
                await self._fail_lines(batch, lines, error)
                continue
            now = int(time.time())
            job = ProviderJob(
                id="bjob_" + secrets.token_hex(10),
                batch_id=batch.id,
                provider=model.provider,
                model=model.name,
                state="submitting",
                lines=len(lines),
                created_at=now,
                updated_at=now,
            )
            await self.store.save_job(job)
            upstream = [UpstreamLine(f"line-{line.index}", self._sent_body(line)) for line in lines]
            try:
                submitted = await api.submit(
                    batch.endpoint,  # type: ignore[arg-type]  # (one of lines.ENDPOINTS, checked at creation)
                    model,
                    upstream,
                    window,
                    {"gateway_batch": batch.id, "gateway_job": job.id},
                )
            except GatewayError as error:
                job.state, job.error, job.updated_at = "failed", error.message, int(time.time())
                await self.store.save_job(job)
                if error.status in (400, 401, 403, 404, 413, 422):  # the provider refuses these lines: it will again
                    await self._fail_lines(batch, lines, error)
                else:  # a transient failure: the lines stay pending, submitted again next round
                    log.warning(
                        "submitting %d lines of %s to %s failed: %s", len(lines), batch.id, job.provider, error.message
                    )
                continue
            job.upstream_file_id, job.upstream_id = submitted.file_id, submitted.job_id
            job.state, job.updated_at = "queued", int(time.time())
            await self.store.save_job(job)
            await self.store.assign_lines(batch.id, [line.index for line in lines], job.id, "submitted")
            jobs.append(job)

    async def _resolve(self, batch: BatchRecord, jobs: list[ProviderJob]) -> None:
        """Jobs left `submitting` (their node died, or stopped, while the provider was asked): the provider is asked
        whether it took each one (by the job's id in its metadata). Taken: the job is recorded and carries its
        model's pending lines (the lines it was made of: nothing else sends them meanwhile); not taken: it is marked
        failed and the lines are sent again. While the provider cannot say, the job stays as it is and its lines wait
        (never sent twice)."""
        stuck = [job for job in jobs if job.state == "submitting" and job.upstream_id is None]
        if not stuck:
            return
        pending = [line for line in await self._lines(batch, ["pending"]) if line.mode == "batch"]
        for job in stuck:
            api = await self.apis.for_provider(job.provider)
            try:
                found = await api.find_job(job.id, job.created_at - 300) if api is not None else None
            except GatewayError as error:
                log.warning("looking up job %s at %s failed: %s", job.id, job.provider, error.message)
                continue
            if found is None or found.job_id is None:
                job.state, job.error, job.updated_at = "failed", "the provider never created it", int(time.time())
                await self.store.save_job(job)
                continue
            self._update_job(job, found)
            job.upstream_id = found.job_id
            job.state = "queued"  # (whatever it is now: the next poll reads it, and its results if it has ended)
            await self.store.save_job(job)
            indexes = [line.index for line in pending if line.model == job.model]
            await self.store.assign_lines(batch.id, indexes, job.id, "submitted")
            log.warning(
                "job %s of %s, created at %s by a node that stopped before recording it, taken over",
                job.id,
                batch.id,
                job.provider,
            )

    @staticmethod
    def _sent_body(line: BatchLine) -> dict[str, Any]:
        body: dict[str, Any] = orjson.loads(line.body or "{}")
        body.pop("model", None)  # the job names the model
        return body

    async def _fail_lines(self, batch: BatchRecord, lines: list[BatchLine], error: GatewayError) -> None:
        for line in lines:
            await self._settle(batch, line, LineResult("failed", error.status, error_body(error)))

    async def _settle(self, batch: BatchRecord, line: BatchLine, result: LineResult) -> bool:
        """Settle one line (once: False if it had ended already) and count how it ended."""
        if not await self.store.settle_line(batch, line.index, result):
            return False
        if result.state == "done":
            outcome = "answered" if result.status_code == 200 else "failed"
        else:
            outcome = result.state
        saved = result.list_cost_nanos - result.row.cost_nanos if result.row is not None else 0
        self.gateway.metrics.batch_line(line.provider, line.mode, outcome, saved, line.model)
        return True

    async def _close_unsent(self, batch: BatchRecord, state: str) -> None:
        """A cancelled or expired batch: lines not yet sent never will be (nothing charged for them)."""
        running = self._running.get(batch.id, set())
        for line in await self._lines(batch, ["pending", "submitted"]):
            if line.state == "pending" or (line.mode == "interactive" and line.index not in running):
                await self._settle(batch, line, LineResult(state, None, None))

    async def _cancel_jobs(self, jobs: list[ProviderJob]) -> None:
        for job in jobs:
            if job.state not in ("queued", "running") or job.upstream_id is None:
                continue
            api = await self.apis.for_provider(job.provider)
            if api is None:
                continue
            try:
                status = await api.cancel(job.upstream_id)
            except GatewayError as error:
                log.warning("cancelling job %s at %s failed: %s", job.upstream_id, job.provider, error.message)
                continue
            self._update_job(job, status)
            if job.state not in JOB_DONE:
                job.state = "cancelling"
            await self.store.save_job(job)

    @staticmethod
    def _update_job(job: ProviderJob, status: JobStatus) -> None:
        job.state = status.state
        job.upstream_status = status.upstream_status
        job.output_file_id = status.output_file_id
        job.error_file_id = status.error_file_id
        job.error = status.error
        job.updated_at = int(time.time())

    async def _poll(self, batch: BatchRecord, jobs: list[ProviderJob], ending: str | None) -> None:
        for job in jobs:
            if job.state not in ("queued", "running", "cancelling") or job.upstream_id is None:
                continue
            api = await self.apis.for_provider(job.provider)
            if api is None:
                continue
            try:
                status = await api.status(job.upstream_id)
            except GatewayError as error:
                log.warning("polling job %s at %s failed: %s", job.upstream_id, job.provider, error.message)
                continue
            self._update_job(job, status)
            if job.state in JOB_DONE:
                try:
                    outcomes = await api.results(status)
                except GatewayError as error:
                    log.warning("reading the results of job %s failed: %s", job.upstream_id, error.message)
                    continue  # (the job stays running here: read again next round)
                await self._settle_job(batch, job, outcomes, ending)
            await self.store.save_job(job)

    async def _settle_job(
        self, batch: BatchRecord, job: ProviderJob, outcomes: list[LineOutcome], ending: str | None
    ) -> None:
        lines = {line.index: line for line in await self._lines(batch, ["submitted"]) if line.job_id == job.id}
        for outcome in outcomes:
            index = _line_index(outcome.id)
            line = lines.pop(index, None) if index is not None else None
            if line is not None:
                await self._settle_answer(batch, line, outcome)
        # Lines the provider gave no result for: never answered (nothing charged).
        state = ending or {"expired": "expired", "cancelled": "cancelled"}.get(job.state)
        for line in lines.values():
            if state is not None:
                await self._settle(batch, line, LineResult(state, None, None))
            else:
                error = GatewayError(
                    502,
                    f"{job.provider}'s batch job ended ({job.upstream_status}) without a result for this line"
                    + (f": {job.error}" if job.error else "."),
                    "upstream_error",
                    "no_result",
                )
                await self._settle(batch, line, LineResult("failed", 502, error_body(error)))

    async def _settle_answer(self, batch: BatchRecord, line: BatchLine, outcome: LineOutcome) -> None:
        catalog = self.gateway.catalog
        model = catalog.models.get(line.model or "")
        usage = outcome.usage or Usage()
        cost = cost_nanos(model, usage, batch=True) if model is not None else 0
        listed = cost_nanos(model, usage) if model is not None else 0
        requested = orjson.loads(line.body or "{}").get("model", line.model or "")
        operation, door = ENDPOINTS.get(batch.endpoint, ("chat", "chat"))
        now = time.time()
        row = LedgerRow(
            id=request_id(batch.id, line.index),
            ts=now,
            team=batch.team,
            key_id=batch.key_id,
            key_prefix=batch.key_prefix,
            requested_model=str(requested),
            model=line.model or "",
            provider=line.provider or "",
            region=line.region or "",
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cached_tokens=usage.cached_tokens,
            cost_nanos=cost,
            estimated=False,
            status=outcome.status_code,
            latency_ms=max(now - batch.created_at, 0) * 1000,
            ttft_ms=None,
            route_reason=line.route_reason or "batch",
            stream=False,
            content=None,
            endpoint=door,
            batch_id=batch.id,
            custom_id=line.custom_id,
        )
        body = outcome.body
        if operation == "embeddings" and outcome.status_code == 200:
            body = as_asked(orjson.loads(line.body or "{}"), body)
        result = LineResult("done", outcome.status_code, orjson.dumps(body).decode(), row, listed)
        if await self._settle(batch, line, result):
            self.gateway.metrics.settled(
                row.model, row.provider, batch.team, usage, cost, endpoint=door if operation else "chat"
            )

    # -- interactive lines ---------------------------------------------------------------------------------

    def _start_interactive(self, batch: BatchRecord) -> None:
        if batch.id in self._running:
            return  # its lines are running on this node already
        self._running[batch.id] = set()
        task = asyncio.get_running_loop().create_task(self._run_interactive(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_interactive(self, batch: BatchRecord) -> None:
        running = self._running[batch.id]
        try:
            lines = [
                line
                for line in await self._lines(batch, ["pending", "submitted"])
                if line.mode == "interactive" and line.index not in running
            ]
            if not lines:
                return
            principal = await self._principal(batch)
            await self.store.assign_lines(batch.id, [line.index for line in lines], None, "submitted")
            running.update(line.index for line in lines)
            await asyncio.gather(*(self._run_line(batch, principal, line) for line in lines))
        finally:
            self._running.pop(batch.id, None)
            self._wake.set()  # the batch may be done now

    async def _principal(self, batch: BatchRecord) -> Principal | None:
        team = await self.gateway.store.get_team(batch.team)
        if team is None:
            return None
        key = await self.gateway.store.get_key(batch.key_id) if batch.key_id is not None else None
        return Principal(team, key, False)

    async def _run_line(self, batch: BatchRecord, principal: Principal | None, line: BatchLine) -> None:
        async with self._seats:
            status, response = await self._call(batch, principal, line)
        await self._settle(batch, line, LineResult("done", status, response))

    async def _call(self, batch: BatchRecord, principal: Principal | None, line: BatchLine) -> tuple[int, str]:
        if principal is None:
            error = GatewayError(403, f"Team {batch.team!r} no longer exists.", "invalid_request_error", "team_deleted")
            return error.status, error_body(error)
        ledger_id = request_id(batch.id, line.index)
        earlier = await self.gateway.store.ledger_row(ledger_id)
        if earlier is not None:
            # Settled just before the node running it stopped (its answer went with that node): charged once, never
            # sent again.
            error = GatewayError(
                502 if earlier.status == 200 else earlier.status,
                f"This request ended (status {earlier.status}) on a gateway node that stopped before it could record "
                f"the answer; it is not sent again (ledger row {ledger_id}).",
                "upstream_error",
                "answer_lost",
            )
            return error.status, error_body(error)
        body: dict[str, Any] = orjson.loads(line.body or "{}")
        if line.model:
            body["model"] = line.model  # where the batch's plan routed it (its policy step for this line)
        operation, door = ENDPOINTS[batch.endpoint]
        residency = (batch.plan or {}).get("residency")
        headers = {"x-gateway-residency": ",".join(residency)} if isinstance(residency, list) and residency else {}
        try:
            params = checked_body(batch.endpoint, body)
            request = InferenceRequest(
                principal,
                operation,
                params,
                body,
                len(line.body or ""),
                headers,
                endpoint=door,
                batch=(batch.id, line.custom_id),
                ledger_id=ledger_id,
            )
            answer = await serve(self.gateway, request, Context(_LineObserver()))
        except GatewayError as error:
            return error.status, error_body(error)
        assert isinstance(answer, Answer)  # (batch lines never stream)
        return 200, answer.body.decode()

    async def _finish_if_done(self, batch: BatchRecord, jobs: list[ProviderJob], ending: str | None) -> None:
        if batch.id in self._running or any(job.state in JOB_ACTIVE for job in jobs):
            return
        counts = await self.store.line_counts(batch.id)
        if any(state in ("pending", "submitted") for (_, state), n in counts.items() if n):
            return
        now = int(time.time())
        fresh = await self.store.get_batch(batch.id)
        if fresh is None:
            return
        status = ending or ("cancelled" if fresh.status == "cancelling" else "completed")
        fresh.status = status
        if status == "completed":
            fresh.finalizing_at = fresh.finalizing_at or now
            fresh.completed_at = now
        elif status == "cancelled":
            fresh.cancelled_at = now
        else:
            fresh.expired_at = now
        await self.store.release_hold(fresh)
        await self.store.update_batch(fresh)
        self.gateway.metrics.batch_status(status)
        await self.store.release_lease(fresh.id, self.owner)
        log.info("batch %s %s: %d completed, %d failed", fresh.id, status, fresh.completed, fresh.failed)


def as_asked(request: dict[str, Any], answer: Any) -> Any:
    """An embeddings answer in the encoding its line asked for: a provider's batch API answers floats (Mistral's
    encodes only on its interactive endpoint, where gateway/providers/mistral.py does it), OpenAI's `base64` is
    the vector's little-endian float32 bytes."""
    if request.get("encoding_format") != "base64" or request.get("output_dtype") not in (None, "float"):
        return answer
    for item in answer.get("data") or () if isinstance(answer, dict) else ():
        vector = item.get("embedding") if isinstance(item, dict) else None
        if isinstance(vector, list) and all(isinstance(v, (int, float)) for v in vector):
            item["embedding"] = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return answer


def _line_index(upstream_id: str) -> int | None:
    prefix, _, number = upstream_id.partition("-")
    if prefix != "line" or not number.isdigit():
        return None
    return int(number)
