"""The trace store: finished spans in DuckDB, written in batches, queried as Arrow tables.

One `TraceStore` owns one DuckDB database (a file by default, `:memory:` allowed). Spans arrive
through `submit` from any thread and are written by a background `BatchWriter` as Arrow batches;
queries run on a per-thread cursor so the store can be shared by a thread pool.

DuckDB lets one process open a file for writing; a second process (say `coachrec traces list`
while the server runs) gets a clear `TraceStoreError` rather than a lock error.

Retention (`Retention(max_age=..., max_spans=...)`) runs on the writer thread after a batch, at
most once per `every` seconds: spans older than `max_age`, then the oldest beyond `max_spans`,
are deleted with their span metrics, and a checkpoint lets DuckDB reuse the freed blocks, so a
server traced on every request keeps a bounded file.
"""

from __future__ import annotations

import atexit
import datetime as dt
import math
import os
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from coachrec.tracing.jsonenc import to_json
from coachrec.tracing.model import SPAN_COLUMNS, SpanKind, SpanRecord, SpanStatus
from coachrec.tracing.schema import LATEST_VERSION, current_version, migrate
from coachrec.tracing.writer import BatchWriter, OnFull, WriterStats

DEFAULT_DB = Path(".coachrec") / "traces.duckdb"

SPAN_SCHEMA = pa.schema(
    [
        ("trace_id", pa.string()),
        ("span_id", pa.string()),
        ("parent_span_id", pa.string()),
        ("name", pa.string()),
        ("kind", pa.string()),
        ("start_ns", pa.int64()),
        ("end_ns", pa.int64()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("input", pa.string()),
        ("output", pa.string()),
        ("attributes", pa.string()),
        ("input_tokens", pa.int32()),
        ("output_tokens", pa.int32()),
        ("cost", pa.float64()),
        ("user_id", pa.string()),
        ("request_id", pa.string()),
    ]
)
assert tuple(SPAN_SCHEMA.names) == SPAN_COLUMNS

TimeLike = dt.datetime | dt.timedelta | int
"""A point in time: an aware or naive (local) datetime, nanoseconds since the epoch, or a
timedelta meaning that long before now."""


class TraceStoreError(RuntimeError):
    """The trace store could not be opened or used."""


@dataclass(frozen=True)
class Retention:
    """How long spans are kept: `max_age` (None: forever) and at most `max_spans` (None: no
    bound), checked at most once per `every` seconds."""

    max_age: dt.timedelta | None = dt.timedelta(days=30)
    max_spans: int | None = 10_000_000
    every: float = 60.0

    def __post_init__(self) -> None:
        if self.max_age is not None and self.max_age <= dt.timedelta(0):
            raise ValueError(f"max_age must be positive, got {self.max_age}")
        if self.max_spans is not None and self.max_spans < 1:
            raise ValueError(f"max_spans must be >= 1, got {self.max_spans}")
        if not self.every > 0:
            raise ValueError(f"every must be > 0 seconds, got {self.every}")


def default_db_path() -> Path:
    """`$COACHREC_DB` if set, else `.coachrec/traces.duckdb` in the working directory."""
    env = os.environ.get("COACHREC_DB")
    return Path(env) if env else DEFAULT_DB


def to_ns(t: TimeLike) -> int:
    """Nanoseconds since the epoch for any `TimeLike`."""
    if isinstance(t, bool):
        raise TypeError("a time must be a datetime, a timedelta or nanoseconds, not a bool")
    if isinstance(t, int):
        return t
    if isinstance(t, dt.timedelta):
        return time.time_ns() - int(t.total_seconds() * 1e9)
    if isinstance(t, dt.datetime):
        return int(t.timestamp() * 1_000_000) * 1000
    raise TypeError(f"a time must be a datetime, a timedelta or nanoseconds, got {type(t).__name__}")


def records_to_arrow(batch: Sequence[SpanRecord]) -> pa.Table:
    """Turn span records into an Arrow table, column by column."""
    if not batch:
        return SPAN_SCHEMA.empty_table()
    columns = zip(*batch, strict=False)
    return pa.Table.from_arrays(
        [pa.array(col, type=field.type) for col, field in zip(columns, SPAN_SCHEMA, strict=False)], schema=SPAN_SCHEMA
    )


def _warm_arrow() -> None:
    """The first `pa.array` of strings imports pandas (~0.5 s); pay that before spans arrive."""
    pa.array(["warm"], type=pa.string())


def _arrow(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] = ()) -> pa.Table:
    relation = con.sql(sql, params=list(params))
    assert relation is not None  # a SELECT always gives a relation
    return relation.to_arrow_table()


def _values(value: Any, enum: type[SpanKind] | type[SpanStatus]) -> list[str]:
    items = [value] if isinstance(value, str) else list(value)
    return [enum(v).value for v in items]


class TraceStore:
    """Spans, span metrics and evaluations in one DuckDB database.

    >>> store = TraceStore(":memory:")
    >>> tracer = Tracer(store=store)          # doctest: +SKIP
    >>> store.spans(since=timedelta(hours=1))  # a pyarrow.Table  # doctest: +SKIP
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        read_only: bool = False,
        max_queue: int = 100_000,
        batch_size: int = 10_000,
        flush_interval: float = 0.5,
        on_full: OnFull = "block",
        max_wait: float = 0.5,
        retention: Retention | None = None,
    ) -> None:
        self.path = str(default_db_path() if path is None else path)
        self.retention = retention
        self._retained_at = time.monotonic()
        self._deleted = 0
        in_memory = self.path == ":memory:"
        if read_only and in_memory:
            raise TraceStoreError("a read-only trace store needs a database file, not ':memory:'")
        if read_only and not Path(self.path).exists():
            raise TraceStoreError(f"no trace store at {self.path}")
        if not in_memory and not read_only:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self._con = duckdb.connect(self.path, read_only=read_only)
        except duckdb.IOException as exc:
            raise TraceStoreError(
                f"cannot open trace store {self.path}: {exc}. DuckDB allows one writing process per "
                "file; stop the process holding it or point COACHREC_DB at another file"
            ) from exc
        self.read_only = read_only
        if read_only:
            version = current_version(self._con)
            if version != LATEST_VERSION:
                self._con.close()
                raise TraceStoreError(
                    f"trace store {self.path} has schema version {version}, this coachrec needs "
                    f"{LATEST_VERSION}; open it once without read_only to migrate it"
                )
        else:
            migrate(self._con)
        self._local = threading.local()
        self._closed = False
        self._writer: BatchWriter[SpanRecord] | None = None
        if not read_only:
            self._write_con = self._con.cursor()
            self._writer = BatchWriter(
                self._insert,
                max_queue=max_queue,
                batch_size=batch_size,
                flush_interval=flush_interval,
                on_full=on_full,
                max_wait=max_wait,
                name="coachrec-trace-writer",
                warmup=_warm_arrow,
            )
            self.submit = self._writer.submit  # type: ignore[method-assign]  # the writer's bound method: no extra call per span
            atexit.register(self.close)

    # -- writing -----------------------------------------------------------------------------

    def submit(self, record: SpanRecord) -> bool:  # replaced per instance by the writer's submit
        """Queue one finished span; False if the queue was full and it was dropped (counted)."""
        raise TraceStoreError(f"trace store {self.path} is read-only")

    def write(self, records: Sequence[SpanRecord]) -> None:
        """Insert records synchronously (bulk loads and tests); spans from a tracer use `submit`."""
        self._check_writable()
        self._insert(records)

    def _insert(self, batch: Sequence[SpanRecord]) -> None:
        table = records_to_arrow(batch)
        con = self._write_con
        con.register("_coachrec_span_batch", table)
        try:
            con.execute("INSERT INTO spans SELECT * FROM _coachrec_span_batch")
        finally:
            con.unregister("_coachrec_span_batch")
        if self.retention is not None and time.monotonic() - self._retained_at >= self.retention.every:
            self.apply_retention()

    def apply_retention(self, now_ns: int | None = None) -> int:
        """Delete spans (and their metrics) beyond the retention policy now; returns how many."""
        self._check_writable()
        policy = self.retention
        self._retained_at = time.monotonic()
        if policy is None:
            return 0
        con = self._write_con
        cutoffs = []
        if policy.max_age is not None:
            cutoffs.append((now_ns or time.time_ns()) - int(policy.max_age.total_seconds() * 1e9))
        if (
            policy.max_spans is not None
            and con.execute("SELECT count(*) FROM spans").fetchall()[0][0] > policy.max_spans
        ):
            rows = con.execute(  # fetchall: the writer's connection must hold no open result
                "SELECT start_ns FROM spans ORDER BY start_ns DESC LIMIT 1 OFFSET ?", [policy.max_spans - 1]
            ).fetchall()
            if rows:
                cutoffs.append(int(rows[0][0]))  # keep the newest max_spans (ties at the cutoff kept)
        if not cutoffs:
            return 0
        cutoff = max(cutoffs)
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute(
                "DELETE FROM span_metrics WHERE span_id IN (SELECT span_id FROM spans WHERE start_ns < ?)", [cutoff]
            )
            rows = con.execute("DELETE FROM spans WHERE start_ns < ?", [cutoff]).fetchall()
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise
        deleted = int(rows[0][0]) if rows else 0
        if deleted:
            con.execute("CHECKPOINT")
            self._deleted += deleted
        return deleted

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every span submitted so far is written. False if `timeout` ran out."""
        return True if self._writer is None else self._writer.flush(timeout)

    def stats(self) -> WriterStats:
        """Writer counters: submitted, written, dropped, failed, queued, blocked."""
        if self._writer is None:
            return WriterStats(0, 0, 0, 0, 0, 0, None)
        return self._writer.stats()

    @property
    def deleted(self) -> int:
        """Spans deleted by retention since this store was opened."""
        return self._deleted

    @property
    def dropped(self) -> int:
        """Spans dropped because the queue was full (only with `on_full='drop'`)."""
        return self.stats().dropped

    def close(self) -> None:
        """Write every queued span and close the database. Idempotent; also runs at exit."""
        if self._closed:
            return
        self._closed = True
        if self._writer is not None:
            self._writer.close()
            atexit.unregister(self.close)
        self._con.close()

    def __enter__(self) -> TraceStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- span metrics and evaluations --------------------------------------------------------

    def add_span_metrics(self, span_id: str, metrics: Mapping[str, float], *, protocol: str = "") -> None:
        """Attach named metrics (e.g. `{"ndcg@10": 0.41}`) to a stored span.

        `protocol` says how they were computed (full ranking or N sampled negatives, the K, the
        relevance signal), so the numbers never travel without it.
        """
        self._check_writable()
        if not metrics:
            raise ValueError("add_span_metrics needs at least one metric")
        for name, value in metrics.items():
            if not isinstance(name, str) or not name:
                raise ValueError(f"metric names must be non-empty strings, got {name!r}")
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"metric {name!r} must be a finite number, got {value!r}")
        self._require_span(span_id)
        now = time.time_ns()
        self._cursor().executemany(
            "INSERT INTO span_metrics VALUES (?, ?, ?, ?, ?)",
            [[span_id, name, float(value), protocol, now] for name, value in metrics.items()],
        )

    def span_metrics(
        self, *, span_id: str | None = None, request_id: str | None = None, trace_id: str | None = None
    ) -> pa.Table:
        """Span metrics joined with their span's name, kind, trace and request id."""
        where, params = [], []
        for column, value in (("m.span_id", span_id), ("s.request_id", request_id), ("s.trace_id", trace_id)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        sql = (
            "SELECT m.span_id, s.trace_id, s.request_id, s.name AS span_name, s.kind, m.name, m.value, "
            "m.protocol, m.created_ns FROM span_metrics m JOIN spans s USING (span_id)"
        )
        if where:
            sql += " WHERE " + " AND ".join(where)
        return _arrow(self._cursor(), sql + " ORDER BY m.created_ns, m.name", params)

    def add_evaluation(
        self,
        span_id: str,
        name: str,
        *,
        score: float | None = None,
        label: str | None = None,
        explanation: str | None = None,
        evaluator: str | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> str:
        """Record a judgment of a stored span (a teacher verdict, a guardrail check); returns its id.

        Exported over OTLP as a `gen_ai.evaluation.result` event on the judged span.
        """
        self._check_writable()
        if not name:
            raise ValueError("an evaluation needs a name (what was judged, e.g. 'relevance')")
        if score is None and label is None:
            raise ValueError(f"evaluation {name!r} needs a score, a label or both")
        if score is not None and not math.isfinite(score):
            raise ValueError(f"evaluation {name!r} score must be finite, got {score!r}")
        trace_id = self._require_span(span_id)
        evaluation_id = uuid.uuid4().hex
        self._cursor().execute(
            "INSERT INTO evaluations VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                evaluation_id,
                span_id,
                trace_id,
                name,
                score,
                label,
                explanation,
                evaluator,
                to_json(dict(attributes)) if attributes else None,
                time.time_ns(),
            ],
        )
        return evaluation_id

    def evaluations(
        self, *, span_id: str | None = None, trace_id: str | None = None, name: str | None = None
    ) -> pa.Table:
        """Stored evaluations, oldest first, optionally of one span, trace or evaluation name."""
        where, params = [], []
        for column, value in (("span_id", span_id), ("trace_id", trace_id), ("name", name)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        sql = "SELECT * FROM evaluations" + (" WHERE " + " AND ".join(where) if where else "")
        return _arrow(self._cursor(), sql + " ORDER BY created_ns", params)

    # -- span queries ------------------------------------------------------------------------

    def trace(self, trace_id: str) -> list[SpanRecord]:
        """Every span of one trace, in start order (empty if the id is unknown)."""
        rows = (
            self._cursor()
            .execute("SELECT * FROM spans WHERE trace_id = ? ORDER BY start_ns, span_id", [trace_id])
            .fetchall()
        )
        return [SpanRecord._make(r) for r in rows]

    def trace_id_for_request(self, request_id: str) -> str | None:
        """The trace id recorded for a request id, if any."""
        rows = (
            self._cursor().execute("SELECT trace_id FROM spans WHERE request_id = ? LIMIT 1", [request_id]).fetchall()
        )
        return str(rows[0][0]) if rows else None

    def spans(
        self,
        *,
        trace_id: str | None = None,
        since: TimeLike | None = None,
        until: TimeLike | None = None,
        kind: SpanKind | str | Iterable[SpanKind | str] | None = None,
        status: SpanStatus | str | Iterable[SpanStatus | str] | None = None,
        user_id: str | None = None,
        request_id: str | None = None,
        name: str | None = None,
        limit: int | None = None,
        columns: Sequence[str] | None = None,
    ) -> pa.Table:
        """Spans matching every given filter, newest first, as an Arrow table.

        `since`/`until` bound the span start time (`since=timedelta(hours=1)` is the last hour).
        """
        where, params = self._filters(trace_id, since, until, kind, status, user_id, request_id, name)
        if columns is not None:
            unknown = [c for c in columns if c not in SPAN_COLUMNS]
            if unknown:
                raise ValueError(f"unknown span columns {unknown}; known: {list(SPAN_COLUMNS)}")
        select = "*" if columns is None else ", ".join(columns)
        sql = f"SELECT {select} FROM spans" + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY start_ns DESC"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return _arrow(self._cursor(), sql, params)

    def traces(
        self,
        *,
        since: TimeLike | None = None,
        until: TimeLike | None = None,
        kind: SpanKind | str | Iterable[SpanKind | str] | None = None,
        status: SpanStatus | str | Iterable[SpanStatus | str] | None = None,
        user_id: str | None = None,
        request_id: str | None = None,
        name: str | None = None,
        limit: int | None = 100,
    ) -> pa.Table:
        """One summary row per trace having a span that matches the filters, newest first."""
        where, params = self._filters(None, since, until, kind, status, user_id, request_id, name)
        sql = """
            SELECT trace_id,
                   any_value(request_id) AS request_id,
                   any_value(user_id) AS user_id,
                   coalesce(any_value(name) FILTER (WHERE parent_span_id IS NULL), arg_min(name, start_ns)) AS root,
                   min(start_ns) AS start_ns,
                   max(end_ns) - min(start_ns) AS duration_ns,
                   count(*) AS spans,
                   count(*) FILTER (WHERE status = 'ERROR') AS errors,
                   sum(input_tokens)::BIGINT AS input_tokens,
                   sum(output_tokens)::BIGINT AS output_tokens,
                   sum(cost) AS cost
            FROM spans"""
        if where:
            sql += " WHERE trace_id IN (SELECT trace_id FROM spans WHERE " + " AND ".join(where) + ")"
        sql += " GROUP BY trace_id ORDER BY start_ns DESC"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return _arrow(self._cursor(), sql, params)

    def count(self) -> int:
        """How many spans are stored (queued spans not included; `flush()` first)."""
        rows = self._cursor().execute("SELECT count(*) FROM spans").fetchall()  # fetchall: leave no open result
        return int(rows[0][0]) if rows else 0

    def export_parquet(
        self,
        path: str | os.PathLike[str],
        *,
        table: str = "spans",
        since: TimeLike | None = None,
        until: TimeLike | None = None,
    ) -> int:
        """Write `spans`, `span_metrics` or `evaluations` to a Parquet file; returns rows written."""
        if table not in ("spans", "span_metrics", "evaluations"):
            raise ValueError(f"table must be spans, span_metrics or evaluations, got {table!r}")
        self.flush()
        time_column = "start_ns" if table == "spans" else "created_ns"
        where, params = [], []
        if since is not None:
            where.append(f"{time_column} >= ?")
            params.append(to_ns(since))
        if until is not None:
            where.append(f"{time_column} < ?")
            params.append(to_ns(until))
        query = f"SELECT * FROM {table}" + (" WHERE " + " AND ".join(where) if where else "")
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        quoted = str(out).replace("'", "''")  # COPY takes a literal file name, not a parameter
        result = self._cursor().execute(f"COPY ({query}) TO '{quoted}' (FORMAT parquet)", params).fetchall()
        return int(result[0][0]) if result else 0

    # -- helpers -----------------------------------------------------------------------------

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        """This thread's cursor: DuckDB connections must not be shared between threads."""
        if self._closed:
            raise TraceStoreError(f"trace store {self.path} is closed")
        cur = getattr(self._local, "cursor", None)
        if cur is None:
            cur = self._local.cursor = self._con.cursor()
        return cur

    def _check_writable(self) -> None:
        if self.read_only:
            raise TraceStoreError(f"trace store {self.path} is read-only")
        if self._closed:
            raise TraceStoreError(f"trace store {self.path} is closed")

    def _require_span(self, span_id: str) -> str:
        """The trace id of a stored span; flushes first so just-finished spans count."""
        self.flush()
        rows = self._cursor().execute("SELECT trace_id FROM spans WHERE span_id = ? LIMIT 1", [span_id]).fetchall()
        if not rows:
            raise KeyError(f"no span {span_id!r} in trace store {self.path}")
        return str(rows[0][0])

    @staticmethod
    def _filters(
        trace_id: str | None,
        since: TimeLike | None,
        until: TimeLike | None,
        kind: Any,
        status: Any,
        user_id: str | None,
        request_id: str | None,
        name: str | None,
    ) -> tuple[list[str], list[Any]]:
        where: list[str] = []
        params: list[Any] = []
        for column, value in (("trace_id", trace_id), ("user_id", user_id), ("request_id", request_id), ("name", name)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if since is not None:
            where.append("start_ns >= ?")
            params.append(to_ns(since))
        if until is not None:
            where.append("start_ns < ?")
            params.append(to_ns(until))
        for column, value, enum in (("kind", kind, SpanKind), ("status", status, SpanStatus)):
            if value is not None:
                values = _values(value, enum)
                where.append(f"{column} IN ({', '.join('?' * len(values))})")
                params.extend(values)
        return where, params
