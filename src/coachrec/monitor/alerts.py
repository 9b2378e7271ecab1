"""Drift alerts into the loop: examples from the drifted window become review-queue cases.

For each drifted column, the current window's requests that sit furthest from the reference
(numeric: furthest from the reference median; categorical: holding the value whose share rose
most) are picked, their stored judgments read back from the trace store and queued for review
(`ReviewStore.enqueue` with every judgment drawn, `queued_because` = audit), so a human looks at
what changed. A request with no stored judgment cannot be queued (the queue holds judgments) and
is counted as such. `coach_on_drift` runs a coach iteration on a system drift (`coachrec monitor
--coach`), never on a judge drift.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from coachrec.coach import LoopConfig, Registry, run_loop
from coachrec.monitor.attribution import Attribution
from coachrec.monitor.drift import DriftReport, SystemDrift
from coachrec.monitor.windows import Window, column_kind
from coachrec.progress import SILENT, Progress
from coachrec.review import ReviewStore
from coachrec.teacher import Judgment, cases_from_store
from coachrec.tracing import TraceStore


@dataclass(frozen=True)
class Alert:
    columns: tuple[str, ...]
    traces: tuple[str, ...]
    queued: int
    unjudged: int
    """Picked requests without a stored judgment (not queued)."""


def examples(reference: Window, current: Window, column: str, n: int) -> list[str]:
    """The trace ids of the `n` current requests most typical of the drift in `column`."""
    ref = reference.frame[column].drop_nulls().to_numpy()
    cur = current.frame.filter(pl.col(column).is_not_null())
    if cur.height == 0 or len(ref) == 0:
        return []
    values = cur[column].to_numpy().astype(np.float64)
    if column_kind(column) == "num" and len(np.unique(values)) > 5:
        distance = np.abs(values - float(np.median(ref)))
    else:
        keys = np.unique(np.concatenate([ref.astype(np.float64), values]))
        rise = {k: float(np.mean(values == k) - np.mean(ref == k)) for k in keys}
        distance = np.array([rise[v] for v in values])
    order = np.argsort(-distance, kind="stable")[:n]
    return [str(t) for t in cur["trace_id"].to_numpy()[order]]


def stored_judgments(store: TraceStore, trace_ids: list[str]) -> list[Judgment]:
    """The judgments stored as evaluations of these traces (pass/fail/unknown labels)."""
    out = []
    for trace_id in trace_ids:
        ev = pl.from_arrow(store.evaluations(trace_id=trace_id))
        assert isinstance(ev, pl.DataFrame)
        for r in ev.iter_rows(named=True):
            attrs = json.loads(r["attributes"]) if r["attributes"] else {}
            if "judge_version" not in attrs:
                continue  # not a teacher judgment (e.g. a guardrail check)
            out.append(
                Judgment(
                    criterion=r["name"],
                    trace_id=trace_id,
                    span_id=r["span_id"],
                    span_name=str(attrs.get("span_name", "")),
                    span_kind=str(attrs.get("span_kind", "")),
                    score=float("nan") if r["score"] is None else float(r["score"]),
                    label=str(r["label"]),
                    failure_modes=tuple(attrs.get("failure_modes") or ()),
                    rationale=str(r["explanation"] or ""),
                    evaluator=str(r["evaluator"] or ""),
                    judge_version=str(attrs["judge_version"]),
                )
            )
    return out


def file_alert(
    review: ReviewStore,
    store: TraceStore,
    reference: Window,
    current: Window,
    report: DriftReport,
    *,
    per_column: int = 3,
) -> Alert:
    """Queue example requests of every drifted column for review; returns what was filed."""
    columns = tuple(c.column for c in report.drifted())
    picked = list(dict.fromkeys(t for c in columns for t in examples(reference, current, c, per_column)))
    judgments = stored_judgments(store, picked)
    judged = {j.trace_id for j in judgments}
    cases = cases_from_store(store, sorted(judged))
    queued = review.enqueue(judgments, cases, review_below=0.0, audit_rate=1.0) if judgments else 0
    return Alert(columns, tuple(picked), queued, len([t for t in picked if t not in judged]))


@dataclass(frozen=True)
class CoachTrigger:
    triggered: bool
    reason: str
    decision: str | None = None
    """The coach iteration's decision when one ran."""


def coach_on_drift(drift: SystemDrift | Attribution, run: Callable[[], str]) -> CoachTrigger:
    """Run a coach iteration (`run`, returning its decision) when the system drifted. Not when
    the judge drifted on the anchor set: the loop is steered by the judge's verdicts, which must
    be re-measured first."""
    if isinstance(drift, Attribution):
        if drift.judge.drifted:
            return CoachTrigger(
                False, "the judge drifted on the anchor set: re-measure it before its verdicts steer a coach iteration"
            )
        drift = drift.system
    if not drift.drifted:
        return CoachTrigger(False, "no system drift")
    return CoachTrigger(True, f"system drift in {', '.join(drift.drifted_columns)}", run())


def coach_iteration(config: LoopConfig, registry: Registry, out: Path, ui: Progress = SILENT) -> Callable[[], str]:
    """One `coach.run_loop` iteration as a `coach_on_drift` runner."""

    def run() -> str:
        return run_loop(config, registry, out, ui).decision

    return run
