"""The schema and its migrations, in SQL that SQLite and PostgreSQL both accept.

Money is BIGINT nano-dollars; times are Unix seconds. Migrations are
append-only: never edit a released one, add the next.
"""

from __future__ import annotations

MIGRATIONS: list[tuple[int, list[str]]] = [
    (
        1,
        [
            """CREATE TABLE teams (
                name TEXT PRIMARY KEY,
                budget_nanos BIGINT,
                period TEXT NOT NULL,
                soft_limit_pct INTEGER,
                regions TEXT,
                models TEXT,
                policy TEXT NOT NULL,
                created_at BIGINT NOT NULL
            )""",
            """CREATE TABLE api_keys (
                id TEXT PRIMARY KEY,
                team TEXT NOT NULL,
                name TEXT NOT NULL,
                prefix TEXT NOT NULL,
                key_hash TEXT NOT NULL UNIQUE,
                budget_nanos BIGINT,
                models TEXT,
                expires_at BIGINT,
                created_at BIGINT NOT NULL,
                revoked_at BIGINT
            )""",
            "CREATE INDEX api_keys_team ON api_keys (team)",
            """CREATE TABLE budget_usage (
                scope TEXT NOT NULL,
                period_start BIGINT NOT NULL,
                spent_nanos BIGINT NOT NULL DEFAULT 0,
                reserved_nanos BIGINT NOT NULL DEFAULT 0,
                PRIMARY KEY (scope, period_start)
            )""",
            """CREATE TABLE holds (
                id TEXT PRIMARY KEY,
                scopes TEXT NOT NULL,
                amount_nanos BIGINT NOT NULL,
                expires_at BIGINT NOT NULL
            )""",
            "CREATE INDEX holds_expires ON holds (expires_at)",
            """CREATE TABLE ledger (
                id TEXT PRIMARY KEY,
                ts DOUBLE PRECISION NOT NULL,
                team TEXT NOT NULL,
                key_id TEXT,
                key_prefix TEXT,
                requested_model TEXT NOT NULL,
                model TEXT NOT NULL,
                provider TEXT NOT NULL,
                region TEXT NOT NULL,
                prompt_tokens BIGINT NOT NULL,
                completion_tokens BIGINT NOT NULL,
                cached_tokens BIGINT NOT NULL,
                cost_nanos BIGINT NOT NULL,
                estimated BOOLEAN NOT NULL,
                status INTEGER NOT NULL,
                latency_ms DOUBLE PRECISION NOT NULL,
                ttft_ms DOUBLE PRECISION,
                route_reason TEXT NOT NULL,
                stream BOOLEAN NOT NULL,
                content TEXT
            )""",
            "CREATE INDEX ledger_ts ON ledger (ts)",
            "CREATE INDEX ledger_team_ts ON ledger (team, ts)",
        ],
    ),
    (
        2,
        [
            # Holds belong to the process (instance) that took them; an instance whose process died (its pid is
            # gone on the same node) or whose heartbeat stopped has its holds released, long before they expire.
            "ALTER TABLE holds ADD COLUMN instance TEXT",
            "CREATE INDEX holds_instance ON holds (instance)",
            """CREATE TABLE instances (
                id TEXT PRIMARY KEY,
                node TEXT NOT NULL,
                pid INTEGER NOT NULL,
                started_at BIGINT NOT NULL,
                heartbeat_at BIGINT NOT NULL
            )""",
        ],
    ),
    (
        3,
        [
            # The front door a request came through (`chat`, `completions`, `fim`, `embeddings`, `messages`,
            # `responses`). Rows written before this migration all came through the OpenAI doors, almost all
            # chat completions, and the door was not recorded: they read as `chat`. A constant default rewrites
            # no row in either database (SQLite keeps it in the table's schema, PostgreSQL 11 and later in the
            # catalogue), so the migration is instant however long the ledger.
            "ALTER TABLE ledger ADD COLUMN endpoint TEXT NOT NULL DEFAULT 'chat'",
        ],
    ),
    (
        4,
        [
            # Rate limits (gateway/limits/): requests and tokens per minute and concurrent requests of a team and
            # of a key, NULL for no limit, and a team's limits on single models as JSON ({MODEL: {rpm, tpm,
            # max_concurrent}}, NULL for none). Nullable columns without a default rewrite no row in either
            # database: instant, and existing teams and keys read as having no limit.
            "ALTER TABLE teams ADD COLUMN rpm BIGINT",
            "ALTER TABLE teams ADD COLUMN tpm BIGINT",
            "ALTER TABLE teams ADD COLUMN max_concurrent BIGINT",
            "ALTER TABLE teams ADD COLUMN model_limits TEXT",
            "ALTER TABLE api_keys ADD COLUMN rpm BIGINT",
            "ALTER TABLE api_keys ADD COLUMN tpm BIGINT",
            "ALTER TABLE api_keys ADD COLUMN max_concurrent BIGINT",
        ],
    ),
    (
        5,
        [
            # Batches (issue 16, gateway/store/batches.py). Uploaded files: their row, and (location `db`) their
            # content in parts of `file_parts`, in order of `seq`. BYTEA is PostgreSQL's binary type; SQLite gives
            # the declared type NUMERIC affinity, which converts text but stores a blob exactly as given.
            """CREATE TABLE files (
                id TEXT PRIMARY KEY,
                team TEXT NOT NULL,
                key_id TEXT,
                purpose TEXT NOT NULL,
                filename TEXT NOT NULL,
                bytes BIGINT NOT NULL,
                created_at BIGINT NOT NULL,
                location TEXT NOT NULL,
                sha256 TEXT NOT NULL,
                lines BIGINT NOT NULL DEFAULT 0
            )""",
            "CREATE INDEX files_team_created ON files (team, created_at)",
            "CREATE INDEX files_created ON files (created_at)",
            """CREATE TABLE file_parts (
                file_id TEXT NOT NULL,
                seq INTEGER NOT NULL,
                data BYTEA NOT NULL,
                PRIMARY KEY (file_id, seq)
            )""",
            # A batch as OpenAI describes it, plus its budget and its lease. JSON text: `metadata` ({str: str}),
            # `errors` (OpenAI's `errors.data`), `plan` (routing's choice), and `scopes`, the budget scopes its
            # lines are charged to, as [[name, period_start, budget_nanos or null], ...]. `lease_owner` is the
            # gateway process advancing the batch until `lease_until` (Unix seconds; 0: never leased).
            """CREATE TABLE batches (
                id TEXT PRIMARY KEY,
                team TEXT NOT NULL,
                key_id TEXT,
                key_prefix TEXT,
                input_file_id TEXT NOT NULL,
                endpoint TEXT NOT NULL,
                completion_window TEXT NOT NULL,
                status TEXT NOT NULL,
                created_at BIGINT NOT NULL,
                expires_at BIGINT NOT NULL,
                metadata TEXT,
                in_progress_at BIGINT,
                finalizing_at BIGINT,
                completed_at BIGINT,
                failed_at BIGINT,
                expired_at BIGINT,
                cancelling_at BIGINT,
                cancelled_at BIGINT,
                errors TEXT,
                total BIGINT NOT NULL DEFAULT 0,
                completed BIGINT NOT NULL DEFAULT 0,
                failed BIGINT NOT NULL DEFAULT 0,
                hold_id TEXT,
                scopes TEXT NOT NULL,
                reserved_nanos BIGINT NOT NULL DEFAULT 0,
                lease_owner TEXT,
                lease_until BIGINT NOT NULL DEFAULT 0,
                plan TEXT
            )""",
            "CREATE INDEX batches_team_created ON batches (team, created_at)",
            "CREATE INDEX batches_created ON batches (created_at)",
            "CREATE INDEX batches_lease ON batches (status, lease_until)",
            # One row per line of the batch's input file (`idx`: 0-based among its non-empty lines).
            """CREATE TABLE batch_lines (
                batch_id TEXT NOT NULL,
                idx INTEGER NOT NULL,
                custom_id TEXT NOT NULL,
                mode TEXT NOT NULL,
                state TEXT NOT NULL,
                body TEXT,
                model TEXT,
                provider TEXT,
                region TEXT,
                route_reason TEXT,
                reserved_nanos BIGINT NOT NULL DEFAULT 0,
                job_id TEXT,
                status_code INTEGER,
                response TEXT,
                prompt_tokens BIGINT NOT NULL DEFAULT 0,
                completion_tokens BIGINT NOT NULL DEFAULT 0,
                cached_tokens BIGINT NOT NULL DEFAULT 0,
                cost_nanos BIGINT NOT NULL DEFAULT 0,
                list_cost_nanos BIGINT NOT NULL DEFAULT 0,
                PRIMARY KEY (batch_id, idx)
            )""",
            "CREATE INDEX batch_lines_state ON batch_lines (batch_id, state)",
            # The jobs on providers' batch APIs carrying a batch's lines.
            """CREATE TABLE batch_jobs (
                id TEXT PRIMARY KEY,
                batch_id TEXT NOT NULL,
                provider TEXT NOT NULL,
                model TEXT NOT NULL,
                state TEXT NOT NULL,
                lines BIGINT NOT NULL,
                created_at BIGINT NOT NULL,
                updated_at BIGINT NOT NULL,
                upstream_file_id TEXT,
                upstream_id TEXT,
                upstream_status TEXT,
                output_file_id TEXT,
                error_file_id TEXT,
                error TEXT
            )""",
            "CREATE INDEX batch_jobs_batch ON batch_jobs (batch_id)",
            # A ledger row of a batch's line names its batch and the line's custom_id (spend by batch). Nullable
            # columns without a default rewrite no row in either database: instant, and every earlier row reads as
            # no batch's.
            "ALTER TABLE ledger ADD COLUMN batch_id TEXT",
            "ALTER TABLE ledger ADD COLUMN custom_id TEXT",
            "CREATE INDEX ledger_batch ON ledger (batch_id)",
        ],
    ),
    (
        6,
        [
            # What the routing decision read, per request (issue 17, policy replay: `gateway.replay`), as JSON text:
            # {"counts": {MODEL: prompt tokens counted for it}, "tokens": the model-neutral count, "capabilities":
            # [...], "max_tokens": N or null, "n": N, "residency": [REGION, ...] or null, "expected_output": N}.
            # Never prompt text. A nullable column without a default rewrites no row in either database: instant,
            # and every earlier row reads as having no recorded inputs (replay approximates those).
            "ALTER TABLE ledger ADD COLUMN decision TEXT",
        ],
    ),
]

LATEST = MIGRATIONS[-1][0]
