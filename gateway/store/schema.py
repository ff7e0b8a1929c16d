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
]

LATEST = MIGRATIONS[-1][0]
