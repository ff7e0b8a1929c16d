"""Batches as the HTTP endpoints and the CLI see them: create, explain, show, list, cancel, read results.

Creating a batch reads its input file, validates and routes every line (gateway.batches.planning), and writes the
batch, its lines and its budget hold in one transaction (refused: nothing written, 429 `budget_exceeded`); the
runner (gateway.batches.runner) takes it from there. A batch belongs to the team of the key that created it:
another team's key gets 404, the master key sees every team's.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.auth.principal import Principal
from gateway.batches.apis import BatchApis
from gateway.batches.files import Files, not_found, owner_of
from gateway.batches.lines import ENDPOINTS, parse_lines
from gateway.batches.planning import INVALID, BatchPlan, BatchPlanner
from gateway.batches.render import batch_object, generated_file, generated_file_object, result_line
from gateway.batches.runner import BatchRunner, error_body
from gateway.batches.windows import window_hours
from gateway.errors import GatewayError, invalid_request
from gateway.money import usd_text
from gateway.state import Gateway
from gateway.store.base import HoldRequest
from gateway.store.batches import BatchLine, BatchRecord, BatchStore, FileRecord

HOLD_GRACE_SECONDS = 24 * 3600  # a batch's hold outlives its window by this much before the sweeper may take it
MAX_METADATA = 16  # pairs, as OpenAI (keys up to 64 characters, values up to 512)


def batch_not_found(batch_id: str) -> GatewayError:
    return GatewayError(
        404, f"No such Batch object: {batch_id}", "invalid_request_error", "batch_not_found", "batch_id"
    )


@dataclass(slots=True)
class BatchRequest:
    """`POST /v1/batches`'s body, checked."""

    input_file_id: str
    endpoint: str
    completion_window: str
    hours: int
    metadata: dict[str, str] | None


def batch_request(body: Mapping[str, Any]) -> BatchRequest:
    file_id = body.get("input_file_id")
    if not isinstance(file_id, str) or not file_id:
        raise invalid_request(
            "You must provide 'input_file_id'.", param="input_file_id", code="missing_required_parameter"
        )
    endpoint = body.get("endpoint")
    if endpoint not in ENDPOINTS:
        raise invalid_request(
            f"Invalid 'endpoint' {endpoint!r}: batches run {' or '.join(ENDPOINTS)}.",
            param="endpoint",
            code="invalid_value",
        )
    window = body.get("completion_window", "24h")
    hours = window_hours(window)
    metadata = body.get("metadata")
    if metadata is not None:
        ok = isinstance(metadata, dict) and len(metadata) <= MAX_METADATA
        ok = ok and all(
            isinstance(k, str) and isinstance(v, str) and len(k) <= 64 and len(v) <= 512 for k, v in metadata.items()
        )
        if not ok:
            raise invalid_request(
                "'metadata' must be an object of at most 16 string pairs (keys up to 64 characters, values up to 512).",
                param="metadata",
                code="invalid_value",
            )
    return BatchRequest(file_id, str(endpoint), str(window), hours, metadata)


class Batches:
    """What one gateway process does with batches; `start` runs its runner, `close` stops it."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.store: BatchStore = gateway.store.batches
        self.files = Files(self.store, gateway.settings)
        self.apis = BatchApis(gateway)
        self.runner = BatchRunner(gateway, self.apis)

    def start(self) -> None:
        self.runner.start()

    async def close(self) -> None:
        await self.runner.close()
        await self.apis.close()

    # -- planning ------------------------------------------------------------------------------------------

    async def _plan(
        self, principal: Principal, headers: Mapping[str, str], spec: BatchRequest
    ) -> tuple[FileRecord, BatchPlan]:
        record = await self.files.get(principal, spec.input_file_id)
        if record.team != principal.team.name:
            raise not_found(spec.input_file_id)  # (the master key acting for a team uses that team's files)
        content = await self.files.content(record)
        lines = parse_lines(content, spec.endpoint)
        if not lines:
            raise invalid_request("The input file has no lines.", param="input_file_id", code="empty_file")
        limit = self.gateway.settings.batch_max_lines
        if len(lines) > limit:
            raise invalid_request(
                f"The input file has {len(lines):,} lines; a batch takes at most {limit:,} (GATEWAY_BATCH_MAX_LINES).",
                param="input_file_id",
                code="too_many_lines",
            )
        planner = BatchPlanner(self.gateway, principal, headers, self.apis.windows())
        return record, await planner.plan(lines, spec.endpoint, spec.hours)

    async def explain(
        self, principal: Principal, headers: Mapping[str, str], body: Mapping[str, Any]
    ) -> dict[str, Any]:
        """What creating this batch would do now: models, lines per model and mode, estimated cost at batch and at
        interactive prices, the reservation and whether the budget takes it. Nothing is written."""
        spec = batch_request(body)
        _, plan = await self._plan(principal, headers, spec)
        out = plan.summary(self.gateway.settings.default_expected_output_tokens)
        out["team"] = principal.team.name
        out["admitted"] = plan.refusal is None
        if plan.refusal is not None:
            out["refusal"] = {"status": plan.refusal.status, "code": plan.refusal.code, "message": plan.refusal.message}
        return out

    # -- create, show, list, cancel ------------------------------------------------------------------------

    async def create(self, principal: Principal, headers: Mapping[str, str], body: Mapping[str, Any]) -> BatchRecord:
        spec = batch_request(body)
        _, plan = await self._plan(principal, headers, spec)
        if plan.refusal is not None:
            raise plan.refusal
        now = int(time.time())
        batch_id = "batch_" + secrets.token_hex(12)
        key = principal.key
        summary = plan.summary(self.gateway.settings.default_expected_output_tokens)
        reserved = plan.reserved_nanos
        budgeted = any(scope.budget_nanos is not None for scope in plan.scopes)
        expires_at = now + spec.hours * 3600
        batch = BatchRecord(
            id=batch_id,
            team=principal.team.name,
            key_id=key.id if key is not None else None,
            key_prefix=key.prefix if key is not None else None,
            input_file_id=spec.input_file_id,
            endpoint=spec.endpoint,
            completion_window=spec.completion_window,
            status="validating",
            created_at=now,
            expires_at=expires_at,
            metadata=spec.metadata,
            total=len(plan.lines),
            failed=sum(1 for line in plan.lines if line.mode == INVALID),
            hold_id=("hold_" + batch_id) if budgeted and reserved > 0 else None,
            scopes=plan.scopes,
            reserved_nanos=reserved if budgeted else 0,
            plan=summary,
        )
        lines = [self._line(batch_id, line_plan) for line_plan in plan.lines]
        hold = (
            HoldRequest(batch.hold_id, plan.scopes, reserved, expires_at + HOLD_GRACE_SECONDS)
            if batch.hold_id is not None
            else None
        )
        result = await self.store.create_batch(batch, lines, hold)
        if not result.ok:  # spent meanwhile by requests in flight: refused as admission refuses
            raise GatewayError(
                429,
                f"Budget exceeded for team {batch.team!r}: this batch needs up to ${usd_text(reserved)} and what its"
                " budget had left went to requests in flight meanwhile.",
                "insufficient_quota",
                "budget_exceeded",
            )
        metrics = self.gateway.metrics
        metrics.batch_status("created")
        for line in lines:
            if line.mode == INVALID:
                metrics.batch_line(None, INVALID, "failed")
        self.runner.wake()
        return batch

    @staticmethod
    def _line(batch_id: str, plan: Any) -> BatchLine:
        parsed = plan.line
        if plan.mode == INVALID or plan.model is None:
            error = plan.error or invalid_request("This line cannot be run.")
            return BatchLine(
                batch_id,
                parsed.index,
                parsed.custom_id or "",
                INVALID,
                "failed",
                None,
                status_code=error.status,
                response=error_body(error),
            )
        return BatchLine(
            batch_id,
            parsed.index,
            parsed.custom_id or "",
            plan.mode,
            "pending",
            orjson.dumps(parsed.body).decode(),
            model=plan.model.name,
            provider=plan.model.provider,
            region=plan.provider.region if plan.provider is not None else None,
            route_reason=plan.reason,
            reserved_nanos=plan.reserved_nanos,
        )

    async def get(self, principal: Principal, batch_id: str) -> BatchRecord:
        batch = await self.store.get_batch(batch_id)
        owner = owner_of(principal)
        if batch is None or (owner is not None and batch.team != owner):
            raise batch_not_found(batch_id)
        return batch

    async def list(self, principal: Principal, after: str | None, limit: int) -> tuple[list[BatchRecord], bool]:
        return await self.store.list_batches(owner_of(principal), after, limit)

    async def cancel(self, principal: Principal, batch_id: str) -> BatchRecord:
        batch = await self.get(principal, batch_id)
        updated = await self.store.request_cancel(batch.id, int(time.time()))
        self.runner.wake()
        return updated or batch

    async def view(self, batch: BatchRecord) -> dict[str, Any]:
        """OpenAI's batch object with the gateway's cost and saving (`x_gateway`)."""
        totals = await self.store.totals(batch.id)
        view = batch_object(batch, batch.completed > 0, batch.failed > 0, totals)
        view["x_gateway"]["jobs"] = [
            {
                "provider": job.provider,
                "model": job.model,
                "lines": job.lines,
                "state": job.state,
                "provider_status": job.upstream_status,
                "error": job.error,
            }
            for job in await self.store.jobs(batch.id)
        ]
        return view

    # -- results ---------------------------------------------------------------------------------------------

    async def generated(self, principal: Principal, file_id: str) -> tuple[BatchRecord, str] | None:
        """(batch, "output" or "error") when `file_id` names a batch's output or error file the caller may read."""
        found = generated_file(file_id)
        if found is None:
            return None
        batch_id, kind = found
        try:
            batch = await self.get(principal, batch_id)
        except GatewayError:
            raise not_found(file_id) from None
        return batch, kind

    def generated_object(self, batch: BatchRecord, kind: str) -> dict[str, Any]:
        return generated_file_object(batch, kind)

    async def results(self, batch: BatchRecord, kind: str) -> AsyncIterator[bytes]:
        """The output (answered lines) or error file's JSONL, line by line in input order, read page by page."""
        after = -1
        while True:
            page = await self.store.lines(batch.id, None, after_index=after, limit=1000)
            for line in page:
                rendered = result_line(line)
                if rendered is not None and rendered[0] == kind:
                    yield rendered[1]
            if len(page) < 1000:
                return
            after = page[-1].index
