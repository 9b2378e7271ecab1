"""Failure modes: what is wrong, where (the blamed span) and why, counted from stored judgments.

report = failure_report(store)            # every judgment in the store
for mode in report.modes: mode.name, mode.count, mode.rate, mode.span, mode.examples, mode.why
report.over_time["constraint_leak"]      # [(bucket start ns, failures, judged)]
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field

import polars as pl

from coachrec.teacher.sampling import Candidates
from coachrec.tracing import TraceStore


@dataclass(frozen=True)
class FailureMode:
    name: str
    criterion: str
    count: int
    judged: int
    """Traces judged on the criterion that emits this mode."""
    span: str
    """The blamed span, `kind:name` (the most common one if several)."""
    examples: tuple[str, ...]
    why: str
    """One rationale of the teacher, from the lowest-scoring example."""

    @property
    def rate(self) -> float:
        return self.count / self.judged if self.judged else 0.0


@dataclass
class FailureReport:
    modes: list[FailureMode]
    judged_traces: int
    judge_versions: list[str]
    over_time: dict[str, list[tuple[int, int, int]]] = field(default_factory=dict)


def failure_report(
    store: TraceStore, *, judge_version: str | None = None, examples: int = 3, bucket_ns: int = 3600 * 10**9
) -> FailureReport:
    """Failure modes, most frequent first. `judge_version` restricts to one judge's verdicts
    (a later judge re-judging a trace replaces nothing: each version is counted on its own)."""
    store.flush()
    ev = pl.from_arrow(store.evaluations())
    assert isinstance(ev, pl.DataFrame)
    if ev.height == 0:
        return FailureReport([], 0, [])
    attrs = [json.loads(a) if a else {} for a in ev["attributes"].to_list()]
    ev = ev.with_columns(
        pl.Series("judge_version", [a.get("judge_version") for a in attrs], dtype=pl.Utf8),
        pl.Series("modes", [a.get("failure_modes") or [] for a in attrs], dtype=pl.List(pl.Utf8)),
        pl.Series("span", [f"{a.get('span_kind', '?')}:{a.get('span_name', '?')}" for a in attrs], dtype=pl.Utf8),
    ).filter(pl.col("judge_version").is_not_null())
    if judge_version is not None:
        ev = ev.filter(pl.col("judge_version") == judge_version)
    starts = Candidates.from_store(store).frame.select("trace_id", "start_ns")
    ev = ev.join(starts, on="trace_id", how="left").with_columns(
        (pl.col("start_ns") // bucket_ns * bucket_ns).alias("bucket")
    )
    judged = dict(ev.group_by("name").agg(pl.col("trace_id").n_unique()).iter_rows())
    fails = ev.filter(pl.col("label") == "fail").explode("modes").filter(pl.col("modes").is_not_null())
    modes: list[FailureMode] = []
    over_time: dict[str, list[tuple[int, int, int]]] = {}
    for (mode, criterion), group in fails.group_by(["modes", "name"], maintain_order=True):
        group = group.sort(["score", "trace_id"])
        traces = group["trace_id"].unique(maintain_order=True).to_list()
        span = Counter(group["span"].to_list()).most_common(1)[0][0]
        modes.append(
            FailureMode(
                str(mode),
                str(criterion),
                len(traces),
                int(judged.get(criterion, 0)),
                span,
                tuple(traces[:examples]),
                str(group["explanation"][0] or ""),
            )
        )
        per_bucket = (
            ev.filter(pl.col("name") == criterion)
            .group_by("bucket")
            .agg(
                pl.col("trace_id").filter(pl.col("label") == "fail").n_unique().alias("fail"),
                pl.col("trace_id").n_unique().alias("judged"),
            )
            .sort("bucket")
        )
        over_time[str(mode)] = [(int(b or 0), int(f), int(j)) for b, f, j in per_bucket.iter_rows()]
    modes.sort(key=lambda m: (-m.count, m.name))
    return FailureReport(modes, int(ev["trace_id"].n_unique()), sorted(set(ev["judge_version"].to_list())), over_time)
