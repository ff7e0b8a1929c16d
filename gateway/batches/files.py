"""Uploaded files (`POST /v1/files`, purpose `batch`): kept whole, owned by the uploading team, never lost on restart.

A file up to `batch_file_inline_bytes` goes into the database in parts (every node can read it); a larger one into
the data directory (`files/<id>`), written to a temporary name, flushed to disk and renamed before its row is
committed, so a row never points at a file that is not all there. A file of another team is not found (404), as
if it did not exist.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import time
from pathlib import Path
from typing import BinaryIO

from gateway.auth.principal import Principal
from gateway.errors import GatewayError, invalid_request
from gateway.settings import Settings
from gateway.store.batches import BatchStore, FileRecord

PART_BYTES = 1024 * 1024  # one row of `file_parts`
PURPOSES = ("batch",)


def not_found(file_id: str) -> GatewayError:
    return GatewayError(404, f"No such File object: {file_id}", "invalid_request_error", "file_not_found", "file_id")


def owner_of(principal: Principal) -> str | None:
    """The team whose files and batches a caller sees: its own; the master key sees every team's (None)."""
    return None if principal.is_admin else principal.team.name


class Files:
    def __init__(self, store: BatchStore, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self.directory = settings.data_dir / "files"

    async def upload(
        self, principal: Principal, purpose: str, filename: str, source: BinaryIO, size: int
    ) -> FileRecord:
        """Store an uploaded file (already received whole, `size` bytes, in `source`)."""
        if purpose not in PURPOSES:
            raise invalid_request(
                f"Invalid 'purpose' {purpose!r}: this gateway stores files for batches only ('batch').",
                param="purpose",
                code="invalid_value",
            )
        if size > self.settings.batch_file_max_bytes:
            raise file_too_large(self.settings.batch_file_max_bytes)
        if size == 0:
            raise invalid_request("The file is empty.", param="file", code="invalid_value")
        file_id = "file-" + secrets.token_hex(12)
        inline = size <= self.settings.batch_file_inline_bytes
        digest = hashlib.sha256()
        lines = 0
        parts: list[bytes] = []
        path = self.directory / file_id
        if inline:
            while chunk := source.read(PART_BYTES):
                digest.update(chunk)
                lines += _count_lines(chunk)
                parts.append(chunk)
        else:
            lines = await asyncio.to_thread(self._write, source, path, digest)
        key = principal.key
        record = FileRecord(
            id=file_id,
            team=principal.team.name,
            key_id=key.id if key is not None else None,
            purpose=purpose,
            filename=_safe_name(filename),
            bytes=size,
            created_at=int(time.time()),
            location="db" if inline else "disk",
            sha256=digest.hexdigest(),
            lines=lines,
        )
        try:
            await self.store.create_file(record, parts)
        except BaseException:
            if not inline:
                path.unlink(missing_ok=True)
            raise
        return record

    def _write(self, source: BinaryIO, path: Path, digest: hashlib._Hash) -> int:
        self.directory.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(path.name + ".part")
        lines = 0
        with open(temporary, "wb") as out:
            while chunk := source.read(PART_BYTES):
                digest.update(chunk)
                lines += _count_lines(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
        return lines

    async def get(self, principal: Principal, file_id: str) -> FileRecord:
        record = await self.store.get_file(file_id)
        owner = owner_of(principal)
        if record is None or (owner is not None and record.team != owner):
            raise not_found(file_id)
        return record

    async def content(self, record: FileRecord) -> bytes:
        if record.location == "db":
            return b"".join(await self.store.file_parts(record.id))
        try:
            return await asyncio.to_thread((self.directory / record.id).read_bytes)
        except OSError as exc:
            raise GatewayError(
                503,
                f"The content of {record.id} is not in this node's data directory ({type(exc).__name__}); with several"
                " nodes, share the data directory or raise GATEWAY_BATCH_FILE_INLINE_BYTES so files are kept in the"
                " database.",
                "server_error",
                "file_unavailable",
            ) from exc

    async def delete(self, principal: Principal, file_id: str) -> None:
        record = await self.get(principal, file_id)
        await self.store.delete_file(record.id)
        if record.location == "disk":
            (self.directory / record.id).unlink(missing_ok=True)


def file_too_large(limit: int) -> GatewayError:
    return GatewayError(
        413,
        f"The file is larger than this gateway's limit of {limit:,} bytes (GATEWAY_BATCH_FILE_MAX_BYTES).",
        "invalid_request_error",
        "file_too_large",
        "file",
    )


def _count_lines(chunk: bytes) -> int:
    return chunk.count(b"\n")


def _safe_name(name: str) -> str:
    """The client's file name as shown back (no path, bounded, printable)."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = "".join(ch for ch in base if ch.isprintable())[:255]
    return cleaned or "upload.jsonl"
