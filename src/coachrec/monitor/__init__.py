"""Drift monitors over the trace store: inputs, stage scores, outcomes, judged quality, and the
judge itself (a pinned anchor set re-judged on a schedule).

    from coachrec.monitor import ItemStats, compare, read_window
    ref = read_window(store, since=t0, until=t1, items=ItemStats.from_dataset(data))
    cur = read_window(store, since=t1, until=t2, items=ItemStats.from_dataset(data))
    report = compare(ref, cur)               # Evidently's default test per column, or test="psi"
    report.dataset_drift(), report.drifted() # >= 50% of columns drifted; which ones, statistic, p

    pinned = rejudge_anchor(pinned_judge, store, golden)        # labels and scores, kept
    replicate = rejudge_anchor(pinned_judge, store, golden)     # the pinned judge's replay noise
    judge = judge_drift(golden, pinned, rejudge_anchor(current_judge, store, golden), replicate=replicate)
    attribute(ref, cur, judge).verdict       # none | system | judge | both
    spending_levels(0.05, looks=7)           # per-check levels of daily checks, 5% over the week
"""

from coachrec.monitor.attribution import (
    AnchorRun,
    Attribution,
    JudgeDrift,
    anchor_labels,
    attribute,
    judge_drift,
    mcnemar_exact,
    rejudge_anchor,
    signed_rank,
    spending_levels,
)
from coachrec.monitor.drift import DriftReport, SystemDrift, compare, system_drift
from coachrec.monitor.stattests import ColumnDrift, default_test, drift_test
from coachrec.monitor.windows import ItemStats, Window, read_window

__all__ = [
    "AnchorRun",
    "Attribution",
    "ColumnDrift",
    "DriftReport",
    "ItemStats",
    "JudgeDrift",
    "SystemDrift",
    "Window",
    "anchor_labels",
    "attribute",
    "compare",
    "default_test",
    "drift_test",
    "judge_drift",
    "mcnemar_exact",
    "read_window",
    "rejudge_anchor",
    "signed_rank",
    "spending_levels",
    "system_drift",
]
