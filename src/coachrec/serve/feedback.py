"""Durable feedback: impressions, clicks, watch fractions, ratings, thumbs, linked to requests.

`FeedbackLog.append` returns only after its DuckDB transaction committed, and DuckDB syncs its
write-ahead log to disk on commit, so an event the API acknowledged survives SIGKILL or power
loss. The server keeps feedback in its own file beside the trace store (`feedback_path_for`):
traces, which grow with every request, cannot fill the file durable feedback is written to or
hold its lock; feedback joins spans by `request_id`.

An append may carry an idempotency key: the first append with a key stores its events and the
key in one transaction; a retry with the same key and the same events returns the first ids and
stores nothing; the same key with different events is a ValueError.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

KINDS = ("impression", "click", "watch", "rating", "thumbs_up", "thumbs_down")

_SCHEMA = """CREATE TABLE IF NOT EXISTS serve_feedback (
    event_id VARCHAR NOT NULL,
    request_id VARCHAR NOT NULL,
    user_id VARCHAR,
    item VARCHAR NOT NULL,
    kind VARCHAR NOT NULL,
    position INTEGER,
    value DOUBLE,
    time_ns BIGINT NOT NULL,
    received_ns BIGINT NOT NULL
)"""

_BATCHES = """CREATE TABLE IF NOT EXISTS serve_feedback_batches (
    idempotency_key VARCHAR PRIMARY KEY,
    digest VARCHAR NOT NULL,
    event_ids VARCHAR NOT NULL,
    received_ns BIGINT NOT NULL
)"""


def feedback_path_for(trace_path: str | Path) -> str:
    """The feedback file beside a trace store: `traces.duckdb` -> `traces.feedback.duckdb`."""
    if str(trace_path) == ":memory:":
        return ":memory:"
    p = Path(trace_path)
    return str(p.with_name(f"{p.stem}.feedback{p.suffix or '.duckdb'}"))


@dataclass(frozen=True)
class FeedbackEvent:
    """One piece of feedback on an item shown by request `request_id`.

    `position` is the 0-based slot the item was shown at; `value` is the watch fraction for
    `watch` (0..1) and the rating for `rating`.
    """

    request_id: str
    item: str
    kind: str
    position: int | None = None
    value: float | None = None
    user_id: str | None = None
    time_ns: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind: unknown feedback kind {self.kind!r}; use one of {list(KINDS)}")
        if self.kind in ("watch", "rating") and (self.value is None or not math.isfinite(self.value)):
            raise ValueError(f"value: a {self.kind} event needs a finite value")
        if self.kind == "watch" and self.value is not None and not 0.0 <= self.value <= 1.0:
            raise ValueError(f"value: a watch fraction must be between 0 and 1, got {self.value}")
        if self.position is not None and self.position < 0:
            raise ValueError(f"position: must be >= 0, got {self.position}")


@dataclass(frozen=True)
class Relevance:
    """Which feedback counts as engagement when scoring a request's spans."""

    min_watch: float = 0.5
    min_rating: float = 4.0

    def describe(self) -> str:
        return f"click | thumbs_up | watch>={self.min_watch} | rating>={self.min_rating}"

    def sql(self) -> str:
        return "kind IN ('click', 'thumbs_up') OR (kind = 'watch' AND value >= ?) OR (kind = 'rating' AND value >= ?)"

    def params(self) -> list[float]:
        return [self.min_watch, self.min_rating]


def _digest(events: Sequence[FeedbackEvent]) -> str:
    """What a retry must repeat exactly (the receive time aside) to count as the same batch."""
    payload = json.dumps([list(e.__dict__.values()) for e in events], separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()


class FeedbackLog:
    """Feedback events in the `serve_feedback` table of a DuckDB database."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._con = duckdb.connect(self.path)
        self._con.execute(_SCHEMA)
        self._con.execute(_BATCHES)
        self._con.execute("CREATE INDEX IF NOT EXISTS serve_feedback_request ON serve_feedback (request_id)")
        self._local = threading.local()

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        cur = getattr(self._local, "cursor", None)
        if cur is None:
            cur = self._local.cursor = self._con.cursor()
        return cur

    def append(self, events: Sequence[FeedbackEvent]) -> list[str]:
        """Store events in one committed transaction; returns their ids once durable."""
        return self.append_once(events, None)[0]

    def append_once(self, events: Sequence[FeedbackEvent], idempotency_key: str | None) -> tuple[list[str], bool]:
        """Like `append`; with `idempotency_key`, a repeat of an earlier append returns its ids
        and True (replayed) without storing anything."""
        digest = _digest(events) if idempotency_key is not None else ""
        if idempotency_key is not None:
            earlier = self._earlier(idempotency_key, digest)
            if earlier is not None:
                return earlier, True
        now = time.time_ns()
        ids = [uuid.uuid4().hex for _ in events]
        table = pa.table(
            {
                "event_id": pa.array(ids, pa.string()),
                "request_id": pa.array([e.request_id for e in events], pa.string()),
                "user_id": pa.array([e.user_id for e in events], pa.string()),
                "item": pa.array([e.item for e in events], pa.string()),
                "kind": pa.array([e.kind for e in events], pa.string()),
                "position": pa.array([e.position for e in events], pa.int32()),
                "value": pa.array([e.value for e in events], pa.float64()),
                "time_ns": pa.array([e.time_ns if e.time_ns is not None else now for e in events], pa.int64()),
                "received_ns": pa.array([now] * len(events), pa.int64()),
            }
        )
        cur = self._cursor()
        cur.register("_feedback_batch", table)
        try:
            cur.execute("BEGIN TRANSACTION")
            try:
                cur.execute("INSERT INTO serve_feedback SELECT * FROM _feedback_batch")
                if idempotency_key is not None:
                    cur.execute(
                        "INSERT INTO serve_feedback_batches VALUES (?, ?, ?, ?)",
                        [idempotency_key, digest, json.dumps(ids), now],
                    )
                cur.execute("COMMIT")
            except Exception:
                cur.execute("ROLLBACK")
                raise
        except (duckdb.ConstraintException, duckdb.TransactionException):
            # a concurrent append with the same key committed first: answer as its retry
            earlier = self._earlier(idempotency_key, digest) if idempotency_key is not None else None
            if earlier is None:
                raise
            return earlier, True
        finally:
            cur.unregister("_feedback_batch")
        return ids, False

    def insert_table(self, table: pa.Table) -> None:
        """Insert rows already in the `serve_feedback` layout (ids kept), in one transaction."""
        cur = self._cursor()
        cur.register("_feedback_rows", table)
        try:
            cur.execute("BEGIN TRANSACTION")
            try:
                cur.execute("INSERT INTO serve_feedback SELECT * FROM _feedback_rows")
                cur.execute("COMMIT")
            except Exception:
                cur.execute("ROLLBACK")
                raise
        finally:
            cur.unregister("_feedback_rows")

    def _earlier(self, key: str, digest: str) -> list[str] | None:
        rows = (
            self._cursor()
            .execute("SELECT digest, event_ids FROM serve_feedback_batches WHERE idempotency_key = ?", [key])
            .fetchall()  # fetch to the end: an open result would block the next register()
        )
        if not rows:
            return None
        row = rows[0]
        if row[0] != digest:
            raise ValueError(f"Idempotency-Key {key!r} was used for a different batch of events; use a new key")
        return [str(i) for i in json.loads(row[1])]

    def events(self, request_id: str | None = None) -> pa.Table:
        """Stored events (of one request), oldest first."""
        sql = "SELECT * FROM serve_feedback"
        params: list[Any] = []
        if request_id is not None:
            sql += " WHERE request_id = ?"
            params.append(request_id)
        relation = self._cursor().sql(sql + " ORDER BY received_ns, event_id", params=params)
        assert relation is not None  # a SELECT always gives a relation
        return relation.to_arrow_table()

    def engaged_items(self, request_id: str, relevance: Relevance) -> list[str]:
        """Items of a request the user engaged with, in order of first engagement."""
        rows = (
            self._cursor()
            .execute(
                f"SELECT item FROM serve_feedback WHERE request_id = ? AND ({relevance.sql()}) "
                "GROUP BY item ORDER BY min(time_ns), item",
                [request_id, *relevance.params()],
            )
            .fetchall()
        )
        return [r[0] for r in rows]

    def count(self) -> int:
        rows = self._cursor().execute("SELECT count(*) FROM serve_feedback").fetchall()  # fetchall: no result left open
        return int(rows[0][0])

    def close(self) -> None:
        self._con.close()
