"""OpenAI's file and batch objects, and the output and error files, from what the database holds.

Shapes: https://platform.openai.com/docs/api-reference/files/object, .../batch/object and .../batch/request-output.
Output and error files are not stored: they are rendered from the batch's lines when read, under ids derived
from the batch's (`output_file_id`, `error_file_id`), and belong to the batch's team like the batch.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.money import usd_text
from gateway.store.batches import BatchLine, BatchRecord, FileRecord

OUTPUT_PREFIX, ERROR_PREFIX = "file-batch_out_", "file-batch_err_"
# What OpenAI writes in the error file for a request that never ran (request-output, `error.code`).
NOT_RUN = {
    "expired": ("batch_expired", "This request could not be executed before the completion window expired."),
    "cancelled": ("batch_cancelled", "This request was not executed because the batch was cancelled."),
}


def output_file_id(batch_id: str) -> str:
    return OUTPUT_PREFIX + batch_id.removeprefix("batch_")


def error_file_id(batch_id: str) -> str:
    return ERROR_PREFIX + batch_id.removeprefix("batch_")


def generated_file(file_id: str) -> tuple[str, str] | None:
    """(batch id, "output" or "error") for a rendered file's id; None for an uploaded file."""
    for prefix, kind in ((OUTPUT_PREFIX, "output"), (ERROR_PREFIX, "error")):
        if file_id.startswith(prefix) and len(file_id) > len(prefix):
            return "batch_" + file_id[len(prefix) :], kind
    return None


def file_object(record: FileRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "object": "file",
        "bytes": record.bytes,
        "created_at": record.created_at,
        "filename": record.filename,
        "purpose": record.purpose,
        "status": "processed",
        "status_details": None,
        "expires_at": None,
    }


def generated_file_object(batch: BatchRecord, kind: str, size: int | None = None) -> dict[str, Any]:
    file_id = output_file_id(batch.id) if kind == "output" else error_file_id(batch.id)
    return {
        "id": file_id,
        "object": "file",
        "bytes": size,
        "created_at": batch.completed_at or batch.expired_at or batch.cancelled_at or batch.created_at,
        "filename": f"{batch.id}_{kind}.jsonl",
        "purpose": "batch_output",
        "status": "processed",
        "status_details": None,
        "expires_at": None,
    }


def request_id(batch_id: str, index: int) -> str:
    """The ledger row id of a batch line answered on a provider's batch API (`request_id` in the output file)."""
    return f"breq_{batch_id.removeprefix('batch_')}_{index}"


def result_line(line: BatchLine) -> tuple[str, bytes] | None:
    """("output" or "error", the JSONL line) for a line that ended; None for one still running."""
    if line.state in ("pending", "submitted"):
        return None
    item: dict[str, Any] = {
        "id": f"batch_req_{line.batch_id.removeprefix('batch_')}_{line.index}",
        "custom_id": line.custom_id,
    }
    if line.state in NOT_RUN:
        code, message = NOT_RUN[line.state]
        item["response"] = None
        item["error"] = {"code": code, "message": message}
        return "error", orjson.dumps(item) + b"\n"
    body = orjson.loads(line.response) if line.response is not None else None
    item["response"] = {
        "status_code": line.status_code,
        "request_id": request_id(line.batch_id, line.index),
        "body": body,
    }
    item["error"] = None
    return ("output" if line.status_code == 200 else "error"), orjson.dumps(item) + b"\n"


def batch_object(batch: BatchRecord, has_output: bool, has_errors: bool, usage: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's batch object, plus `x_gateway` (what routing chose, the reservation, the cost and the saving)."""
    ended = batch.status in ("completed", "expired", "cancelled", "failed")
    errors = {"object": "list", "data": batch.errors} if batch.errors else None
    return {
        "id": batch.id,
        "object": "batch",
        "endpoint": batch.endpoint,
        "errors": errors,
        "input_file_id": batch.input_file_id,
        "completion_window": batch.completion_window,
        "status": batch.status,
        "output_file_id": output_file_id(batch.id) if ended and has_output else None,
        "error_file_id": error_file_id(batch.id) if ended and has_errors else None,
        "created_at": batch.created_at,
        "in_progress_at": batch.in_progress_at,
        "expires_at": batch.expires_at,
        "finalizing_at": batch.finalizing_at,
        "completed_at": batch.completed_at,
        "failed_at": batch.failed_at,
        "expired_at": batch.expired_at,
        "cancelling_at": batch.cancelling_at,
        "cancelled_at": batch.cancelled_at,
        "request_counts": {"total": batch.total, "completed": batch.completed, "failed": batch.failed},
        "metadata": batch.metadata,
        "usage": {
            "input_tokens": usage["prompt_tokens"],
            "input_tokens_details": {"cached_tokens": usage["cached_tokens"]},
            "output_tokens": usage["completion_tokens"],
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": usage["prompt_tokens"] + usage["completion_tokens"],
        },
        "x_gateway": {
            "plan": batch.plan,
            "reserved_usd": usd_text(batch.reserved_nanos),
            "cost_usd": usd_text(usage["cost_nanos"]),
            "cost_nanos": usage["cost_nanos"],
            "interactive_cost_nanos": usage["list_cost_nanos"],
            "interactive_cost_usd": usd_text(usage["list_cost_nanos"]),
            "saved_usd": usd_text(max(usage["list_cost_nanos"] - usage["cost_nanos"], 0)),
        },
    }
