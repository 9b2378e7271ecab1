"""The trace store's schema and its migrations.

`MIGRATIONS[i]` moves a database from version `i` to `i + 1`; a store applies the missing ones on
open, each in its own transaction, and records the result in `schema_version`. To change the
schema, append a migration; never edit one that has shipped.
"""

from __future__ import annotations

import time

import duckdb

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 1: spans, one row per finished span; user and request id are denormalized onto every span
    # so filters never need a join (DuckDB dictionary-compresses the repeats).
    (
        """CREATE TABLE spans (
            trace_id VARCHAR NOT NULL,
            span_id VARCHAR NOT NULL,
            parent_span_id VARCHAR,
            name VARCHAR NOT NULL,
            kind VARCHAR NOT NULL,
            start_ns BIGINT NOT NULL,
            end_ns BIGINT NOT NULL,
            status VARCHAR NOT NULL,
            error VARCHAR,
            input VARCHAR,
            output VARCHAR,
            attributes VARCHAR,
            input_tokens INTEGER,
            output_tokens INTEGER,
            cost DOUBLE,
            user_id VARCHAR,
            request_id VARCHAR
        )""",
    ),
    # 2: span metrics (ranking quality attached once feedback arrives) and evaluations (teacher
    # judgments, exported as `gen_ai.evaluation.result` events on the judged span).
    (
        """CREATE TABLE span_metrics (
            span_id VARCHAR NOT NULL,
            name VARCHAR NOT NULL,
            value DOUBLE NOT NULL,
            protocol VARCHAR NOT NULL,
            created_ns BIGINT NOT NULL
        )""",
        """CREATE TABLE evaluations (
            evaluation_id VARCHAR NOT NULL,
            span_id VARCHAR NOT NULL,
            trace_id VARCHAR NOT NULL,
            name VARCHAR NOT NULL,
            score DOUBLE,
            label VARCHAR,
            explanation VARCHAR,
            evaluator VARCHAR,
            attributes VARCHAR,
            created_ns BIGINT NOT NULL
        )""",
    ),
    # 3: point lookups. One trace by id must stay in milliseconds however large the file grows;
    # time-window scans rely on DuckDB's per-row-group min/max of start_ns instead.
    (
        "CREATE INDEX spans_trace_id ON spans (trace_id)",
        "CREATE INDEX spans_request_id ON spans (request_id)",
        "CREATE INDEX span_metrics_span_id ON span_metrics (span_id)",
        "CREATE INDEX evaluations_span_id ON evaluations (span_id)",
    ),
)

LATEST_VERSION = len(MIGRATIONS)


class SchemaVersionError(RuntimeError):
    """The database was written by a newer coachrec than this one."""


def current_version(con: duckdb.DuckDBPyConnection) -> int:
    """The schema version of the database behind `con` (0 for an empty database)."""
    exists = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_version'"
    ).fetchone()
    if not exists or not exists[0]:
        return 0
    row = con.execute("SELECT max(version) FROM schema_version").fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def migrate(con: duckdb.DuckDBPyConnection, target: int = LATEST_VERSION) -> int:
    """Apply the migrations that take the database up to `target`; returns the new version."""
    if not 0 <= target <= LATEST_VERSION:
        raise ValueError(f"schema version must be between 0 and {LATEST_VERSION}, got {target}")
    version = current_version(con)
    if version > LATEST_VERSION:
        raise SchemaVersionError(
            f"trace store schema version {version} is newer than this coachrec supports "
            f"({LATEST_VERSION}); upgrade coachrec to open it"
        )
    if version == 0 and target > 0:
        con.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL, applied_ns BIGINT NOT NULL)")
    for v in range(version, target):
        con.execute("BEGIN TRANSACTION")
        try:
            for statement in MIGRATIONS[v]:
                con.execute(statement)
            con.execute("INSERT INTO schema_version VALUES (?, ?)", [v + 1, time.time_ns()])
            con.execute("COMMIT")
        except Exception as exc:
            con.execute("ROLLBACK")
            raise RuntimeError(f"trace store migration to schema version {v + 1} failed: {exc}") from exc
    return max(version, target)
