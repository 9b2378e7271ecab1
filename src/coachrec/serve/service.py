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

from coachrec.serve.feedback import FeedbackEvent, FeedbackLog, Relevance
from coachrec.serve.pipeline import Pipeline, RecommendRequest, RecommendResult
from coachrec.serve.span_metrics import update_span_metrics
from coachrec.serve.stack import Stack
from coachrec.tracing import Tracer, TraceStore

log = logging.getLogger(__name__)


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
        cls, stack: Stack, db: str | Path | None = None, *, sample_rate: float = 1.0, warm: bool = True
    ) -> Service:
        """Open the store (and its feedback table) at `db` and serve `stack`'s pipeline
        (LLM tiers included when the stack has them; their models load on first use). `warm`
        loads what the text stages need (item embeddings, query encoder) now, so the first
        request with text is not slow."""
        # spans reach disk within flush_interval; feedback is committed before each reply
        store = TraceStore(db, flush_interval=0.2)
        feedback = FeedbackLog(store.path)
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
        return {
            "status": "ok",
            "models": [m.name for m in self.pipeline.models],
            "source": self.source,
            "items": len(self.pipeline.catalog),
            "store": self.store.path,
            "spans": {
                "submitted": stats.submitted,
                "written": stats.written,
                "dropped": stats.dropped,
                "failed": stats.failed,
                "queued": stats.queued,
            },
            "feedback_events": self.feedback.count(),
        }

    def close(self) -> None:
        """Write queued spans and close the database (feedback is already on disk)."""
        for close in self.closers:
            close()
        self.store.close()
        self.feedback.close()
