"""Settlements the database could not take, kept on local disk until it can.

A provider that answered has billed the request; if the ledger row cannot be written then (the database is
unreachable), the settlement is appended here, fsynced, and written to the database once it is back. The
ledger row's id is its primary key, so a settlement written twice (the database committed it but the answer
was lost on the way back) is recognised and counted once.

One file per process (`journal-PID-RANDOM.jsonl` in the data directory), locked while the process lives;
files left by a process that died (SIGKILL) are unlocked, so the next process to look replays them too.
The journal is bounded (`max_bytes` per file): past it, a settlement is refused and the caller reports that
the request could not be made durable.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import secrets
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Any

import orjson

from gateway.store import Store
from gateway.store.base import Conflict, HoldRequest, LedgerRow, Scope, Settlement

log = logging.getLogger("gateway.budget")


class JournalFull(Exception):
    """The journal reached its size limit: this settlement cannot be made durable now."""


def _encode(settlement: Settlement) -> bytes:
    hold = settlement.hold
    return (
        orjson.dumps(
            {
                "row": asdict(settlement.row),
                "scopes": [asdict(s) for s in settlement.scopes],
                "hold": None if hold is None else {**asdict(hold), "scopes": [asdict(s) for s in hold.scopes]},
            }
        )
        + b"\n"
    )


def _decode(line: bytes) -> Settlement:
    data = orjson.loads(line)
    hold = data["hold"]
    return Settlement(
        LedgerRow(**data["row"]),
        [Scope(**s) for s in data["scopes"]],
        None if hold is None else HoldRequest(**{**hold, "scopes": [Scope(**s) for s in hold["scopes"]]}),
    )


class SettlementJournal:
    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.path = directory / f"journal-{os.getpid()}-{secrets.token_hex(4)}.jsonl"
        self._file: Any = None
        self._size = 0
        self.pending = 0  # settlements written here and not yet in the database (this process's file)
        self._lock = asyncio.Lock()  # one replay at a time
        self._file_lock = threading.Lock()  # appends (on threads: they fsync) against a replay's rewrite

    def _open(self) -> Any:
        if self._file is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o600)
            self._file = os.fdopen(fd, "ab")
            fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # ours while we live
            self._size = os.fstat(fd).st_size
        return self._file

    def append(self, settlement: Settlement) -> None:
        """Make one settlement durable on disk (blocking: a write and an fsync), or raise JournalFull/OSError."""
        line = _encode(settlement)
        with self._file_lock:
            file = self._open()
            if self._size + len(line) > self.max_bytes:
                raise JournalFull(f"{self.path} holds {self._size} bytes (limit {self.max_bytes})")
            file.write(line)
            file.flush()
            os.fsync(file.fileno())
            self._size += len(line)
            self.pending += 1

    async def replay(self, store: Store) -> int:
        """Write every journaled settlement (this process's and those of processes that died) to the database;
        returns how many reached it. Stops at the first one the database cannot take (it is still down)."""
        async with self._lock:
            written = 0
            for path in sorted(self.directory.glob("journal-*.jsonl")):
                if path == self.path:
                    written += await self._replay_own(store)
                else:
                    written += await self._replay_orphan(store, path)
            return written

    async def _replay_own(self, store: Store) -> int:
        with self._file_lock:
            if self._file is None or self._size == 0:
                return 0
            lines = self.path.read_bytes().splitlines()
        done = await _write_all(store, lines)
        if not done:
            return 0
        with self._file_lock:  # appends only add at the end: drop the first `done` lines, keep the rest
            remaining = self.path.read_bytes().splitlines()[done:]
            self._file.seek(0)
            self._file.truncate()
            self._file.write(b"".join(line + b"\n" for line in remaining))
            self._file.flush()
            os.fsync(self._file.fileno())
            self._size = sum(len(line) + 1 for line in remaining)
            self.pending = len(remaining)
        return done

    async def _replay_orphan(self, store: Store, path: Path) -> int:
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError:
            return 0
        with os.fdopen(fd, "r+b") as file:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return 0  # a live process's journal: it replays its own
            lines = file.read().splitlines()
            done = await _write_all(store, lines)
            if done == len(lines):
                path.unlink()
            else:
                file.seek(0)
                file.truncate()
                file.write(b"".join(line + b"\n" for line in lines[done:]))
                file.flush()
                os.fsync(fd)
            if done:
                log.warning("wrote %d journaled settlements left by an earlier process (%s)", done, path.name)
            return done

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
            if self._size == 0:
                self.path.unlink(missing_ok=True)


async def _write_all(store: Store, lines: list[bytes]) -> int:
    """Record `lines` in order; how many are in the database (a Conflict means it was already)."""
    done = 0
    for line in lines:
        try:
            settlement = _decode(line) if line.strip() else None
        except (ValueError, TypeError, KeyError):  # a line cut by a crash mid-append: it was never acknowledged
            log.error("dropping an unreadable journal line (%d bytes)", len(line))
            settlement = None
        if settlement is None:
            done += 1
            continue
        try:
            await store.record(settlement)
        except Conflict:
            pass  # committed before, its answer lost on the way back: counted once
        except Exception:
            break  # still unreachable: the rest stays for the next round
        done += 1
    return done
