"""The serving service: pipeline, trace store and feedback log behind one object.

The HTTP API is a thin layer over this, so everything it does is also usable in-process:

    service = Service.open(Stack.fit(data), db="traces.duckdb")
    result = service.recommend(RecommendRequest(user_id="1", k=10))
    service.record_feedback([FeedbackEvent(result.request_id, result.items[0], "click", position=0)])
    service.update_span_metrics([result.request_id])
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from coachrec.serve.feedback import FeedbackEvent, FeedbackLog, Relevance, feedback_path_for
from coachrec.serve.pipeline import Pipeline, RecommendRequest, RecommendResult
from coachrec.serve.span_metrics import update_span_metrics
from coachrec.serve.stack import Stack
from coachrec.tracing import Tracer, TraceStore
from coachrec.tracing.store import Retention

DEFAULT_RETENTION = Retention()
"""Spans kept 30 days, at most ten million."""
DEGRADED_WINDOW_S = 300.0
"""`/health` says `degraded` while a span failed to be written or was dropped this recently."""

log = logging.getLogger(__name__)


def adopt_legacy_feedback(store: TraceStore, feedback: FeedbackLog) -> int:
    """Copy feedback an older coachrec kept inside the trace store into the feedback file, once
    (when the file is still empty); the old table is left as it was. Returns the events copied."""
    if store.read_only or store.path == ":memory:" or feedback.count():
        return 0
    cur = store._cursor()
    found = cur.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'serve_feedback'").fetchall()
    if not found[0][0]:
        return 0
    table = cur.sql("SELECT * FROM serve_feedback ORDER BY received_ns, event_id").to_arrow_table()
    if table.num_rows:
        feedback.insert_table(table)
    return int(table.num_rows)


class Service:
    def __init__(
        self,
        pipeline: Pipeline,
        store: TraceStore,
        feedback: FeedbackLog,
        *,
        source: str = "",
        relevance: Relevance = Relevance(),
    ) -> None:
        self.pipeline = pipeline
        self.store = store
        self.feedback = feedback
        self.source = source
        self.relevance = relevance
        self.closers: list[Callable[[], None]] = []
        """Extra resources to release on close (the LLM stages' model backends)."""

    @classmethod
    def open(
        cls,
        stack: Stack,
        db: str | Path | None = None,
        *,
        sample_rate: float = 1.0,
        warm: bool = True,
        retention: Retention | None = DEFAULT_RETENTION,
        max_wait: float = 0.5,
    ) -> Service:
        """Open the trace store at `db` (and the feedback file beside it, `feedback_path_for`) and
        serve `stack`'s pipeline (LLM tiers included when the stack has them; their models load on
        first use). `warm` loads what the text stages need (item embeddings, query encoder) now, so
        the first request with text is not slow. A full span queue makes a request wait at most
        `max_wait` seconds, then drops its span (counted in /health); feedback is never dropped."""
        # spans reach disk within flush_interval; feedback, in its own file, is committed before each reply
        store = TraceStore(db, flush_interval=0.2, retention=retention, max_wait=max_wait)
        feedback = FeedbackLog(feedback_path_for(store.path))
        moved = adopt_legacy_feedback(store, feedback)
        if moved:
            log.warning("copied %d feedback events from %s into %s (feedback has its own file now)", moved,
                        store.path, feedback.path)  # fmt: skip
        pipeline = stack.pipeline(Tracer(store, sample_rate=sample_rate))
        if warm:
            pipeline.warm()
        service = cls(pipeline, store, feedback, source=stack.source or stack.describe())
        service.closers.append(pipeline.close)
        return service

    def recommend(self, request: RecommendRequest) -> RecommendResult:
        return self.pipeline.recommend(request)

    def record_feedback(self, events: Sequence[FeedbackEvent]) -> list[str]:
        """Durably store events; returns their ids (only after the commit)."""
        return self.feedback.append(events)

    def record_feedback_once(
        self, events: Sequence[FeedbackEvent], idempotency_key: str | None
    ) -> tuple[list[str], bool]:
        """`record_feedback` with a client's idempotency key: the ids, and True when this repeats an
        earlier batch with the same key (nothing new stored)."""
        return self.feedback.append_once(events, idempotency_key)

    def update_span_metrics(self, request_ids: Iterable[str]) -> dict[str, dict[str, dict[str, float]]]:
        """Recompute span metrics of each request from all of its feedback so far."""
        out = {}
        for request_id in dict.fromkeys(request_ids):
            try:
                out[request_id] = update_span_metrics(self.store, self.feedback, request_id, relevance=self.relevance)
            except Exception:  # metrics are derived data: log, never fail the caller's request
                log.exception("span metrics for request %s failed", request_id)
        return out

    def health(self) -> dict[str, Any]:
        stats = self.store.stats()
        degraded = stats.troubled_since(DEGRADED_WINDOW_S)
        return {
            "status": "degraded" if degraded else "ok",
            "problem": (
                f"spans failed ({stats.failed}) or were dropped ({stats.dropped}) in the last "
                f"{DEGRADED_WINDOW_S:.0f} s; last error: {stats.last_error}"
                if degraded
                else None
            ),
            "models": [m.name for m in self.pipeline.models],
            "source": self.source,
            "items": len(self.pipeline.catalog),
            "store": self.store.path,
            "feedback_store": self.feedback.path,
            "spans": {
                "submitted": stats.submitted,
                "written": stats.written,
                "dropped": stats.dropped,
                "failed": stats.failed,
                "queued": stats.queued,
                "waited_for_room": stats.blocked,
                "deleted_by_retention": self.store.deleted,
            },
            "feedback_events": self.feedback.count(),
        }

    def close(self) -> None:
        """Write queued spans and close the database (feedback is already on disk)."""
        for close in self.closers:
            close()
        self.store.close()
        self.feedback.close()
