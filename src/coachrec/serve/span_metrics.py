"""Ranking metrics for a request's retrieval and ranking spans, once feedback says what the user
engaged with. Stored with the trace store's span-metrics facility, protocol attached.

Each span's recorded output list (first `TRACE_LIMIT` candidates, best first) is scored against
the engaged items; an engaged item missing from the list ranks below it. Feedback can arrive in
several posts, so metrics are recomputed from all of it each time and appended: the newest row
per (span, metric) is current.
"""

from __future__ import annotations

import numpy as np

from coachrec.metrics import metrics_from_ranks
from coachrec.serve.candidates import TRACE_LIMIT
from coachrec.serve.feedback import FeedbackLog, Relevance
from coachrec.tracing import SpanKind, TraceStore

SCORED_KINDS = (SpanKind.RETRIEVER.value, SpanKind.RANKER.value)


def list_metrics(ranked: list[str], relevant: list[str], k: int) -> dict[str, float]:
    """Precision, recall, MRR and NDCG at k of one ranked list against a set of relevant items."""
    position = {item: i for i, item in enumerate(ranked)}
    ranks = np.array([position.get(item, len(ranked)) for item in relevant], dtype=np.int64)
    per_row = metrics_from_ranks(ranks, np.zeros(len(ranks), np.int64), 1, np.array([len(relevant)]), (k,))
    return {name: float(per_row[f"{name}@{k}"][0]) for name in ("precision", "recall", "mrr", "ndcg")}


def update_span_metrics(
    store: TraceStore, feedback: FeedbackLog, request_id: str, *, k: int = 10, relevance: Relevance = Relevance()
) -> dict[str, dict[str, float]]:
    """Compute and store metrics for every retrieval and ranking span of a request.

    Returns `{span_id: {"precision@10": ..., ...}}`; empty when the request has no stored trace
    (sampled out, or lost) or the user engaged with nothing yet.
    """
    relevant = feedback.engaged_items(request_id, relevance)
    if not relevant:
        return {}
    store.flush()
    trace_id = store.trace_id_for_request(request_id)
    if trace_id is None:
        return {}
    protocol = (
        f"request feedback; relevant = {relevance.describe()} ({len(relevant)} items); "
        f"ranked = the span's output list (first {TRACE_LIMIT} recorded); K={k}"
    )
    out: dict[str, dict[str, float]] = {}
    for span in store.trace(trace_id):
        if span.kind not in SCORED_KINDS:
            continue
        output = span.output_value()
        if not isinstance(output, dict) or "items" not in output:
            continue
        metrics = {f"{name}@{k}": v for name, v in list_metrics(output["items"], relevant, k).items()}
        store.add_span_metrics(span.span_id, metrics, protocol=protocol)
        out[span.span_id] = metrics
    return out
