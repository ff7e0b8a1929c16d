"""Knobs of one emulator instance; every emulator gets its own copy."""

from __future__ import annotations

from dataclasses import dataclass

KINDS = ("mistral", "moonshot")


@dataclass
class EmulatorOptions:
    """How an emulator behaves. Immutable in practice: the app reads it, never writes it."""

    api_key: str | None = None  # None: "demo-key-<kind>"
    seed: int = 0  # mixed into every generated reply, so two emulators can disagree on purpose
    latency_ms: float = 0  # before any response
    first_token_ms: float = 0  # before the first stream chunk
    chunk_delay_ms: float = 0  # between stream chunks
    tokens_per_chunk: int = 1
    fault: str | None = None  # server-wide fault, same syntax as the x-emulator-fault header
    default_max_tokens: int = 64  # reply length cap when the request gives no max_tokens
    # Batch jobs (batch_jobs.py): how long a job runs after its creation (0: it ends on the first status read),
    # and whether new jobs start held (they stay queued until a test lets them run).
    batch_seconds: float = 0
    batch_hold: bool = False

    def key_for(self, kind: str) -> str:
        return self.api_key if self.api_key is not None else f"demo-key-{kind}"
