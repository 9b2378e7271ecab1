"""Drift of a current window against a reference window, column by column and per group.

`compare(reference, current)` runs on every monitored column the test Evidently would pick
(`stattests.default_test`) or the one asked for (`test="psi"`), and says per group (inputs,
scores, outcomes, judged quality) and overall whether the dataset drifted the way Evidently
says it: at least half of the columns drifted.

`system_drift` is the decision the attribution uses: hypothesis tests only (KS for numeric,
chi-squared or Z for categorical, whatever the window size), Bonferroni-corrected over the
judge-independent columns, so a drift-free stream alarms with probability at most `alpha`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from coachrec.monitor.stattests import ColumnDrift, drift_test
from coachrec.monitor.windows import Group, Window, column_group, column_kind

DATASET_SHARE = 0.5
"""Evidently's dataset-drift rule: the dataset drifts when this share of columns drifts."""
GROUPS: tuple[Group, ...] = ("inputs", "scores", "outcomes", "quality")


@dataclass
class DriftReport:
    reference_n: int
    current_n: int
    columns: list[ColumnDrift]
    skipped: dict[str, str] = field(default_factory=dict)
    """Columns not tested, with why (e.g. no values in one window)."""

    def group(self, name: Group) -> list[ColumnDrift]:
        return [c for c in self.columns if column_group(c.column) == name]

    def share(self, name: Group | None = None) -> float:
        cols = self.columns if name is None else self.group(name)
        return float(np.mean([c.drifted for c in cols])) if cols else 0.0

    def dataset_drift(self, name: Group | None = None) -> bool:
        cols = self.columns if name is None else self.group(name)
        return bool(cols) and self.share(name) >= DATASET_SHARE

    def drifted(self) -> list[ColumnDrift]:
        return [c for c in self.columns if c.drifted]

    def to_dict(self) -> dict[str, Any]:
        return {
            "reference_n": self.reference_n,
            "current_n": self.current_n,
            "dataset_drift": self.dataset_drift(),
            "share_drifted": self.share(),
            "groups": {
                g: {
                    "dataset_drift": self.dataset_drift(g),
                    "share_drifted": self.share(g),
                    "columns": len(self.group(g)),
                }
                for g in GROUPS
            },
            "columns": [c.to_dict() for c in self.columns],
            "skipped": self.skipped,
        }


def _values(window: Window, column: str) -> np.ndarray:
    if column not in window.frame.columns:
        return np.zeros(0)
    return window.frame[column].drop_nulls().to_numpy()


def compare(
    reference: Window,
    current: Window,
    *,
    columns: Iterable[str] | None = None,
    test: str | None = None,
    tests: dict[str, str] | None = None,
    threshold: float | None = None,
) -> DriftReport:
    """Test every column present in both windows (or `columns`). `test` forces one test for all
    columns (e.g. `"psi"`), `tests` per column; otherwise Evidently's default by type and size."""
    names = list(columns) if columns is not None else [c for c in reference.columns() if c in current.columns()]
    results, skipped = [], {}
    for name in names:
        ref, cur = _values(reference, name), _values(current, name)
        if len(ref) == 0 or len(cur) == 0:
            skipped[name] = f"no values (reference {len(ref)}, current {len(cur)})"
            continue
        chosen = (tests or {}).get(name, test)
        results.append(drift_test(name, ref, cur, column_kind(name), test=chosen, threshold=threshold))
    return DriftReport(reference.n, current.n, results, skipped)


def hypothesis_tests(reference: Window, current: Window, columns: Sequence[str]) -> list[ColumnDrift]:
    """KS for numeric columns, chi-squared or Z for categorical ones (as Evidently does below
    1,000 reference rows), whatever the window size: each with its p-value."""
    out = []
    for name in columns:
        ref, cur = _values(reference, name), _values(current, name)
        if len(ref) == 0 or len(cur) == 0:
            continue
        kind = column_kind(name)
        n_values = len(set(ref.tolist()) | set(cur.tolist()))
        if n_values <= 1:
            continue  # a constant column cannot drift
        if kind == "num" and n_values > 5:
            chosen = "ks"
        else:
            chosen = "chisquare" if n_values > 2 else "z"
        out.append(drift_test(name, ref, cur, "cat" if chosen != "ks" else "num", test=chosen))
    return out


@dataclass(frozen=True)
class SystemDrift:
    drifted: bool
    alpha: float
    tests: tuple[ColumnDrift, ...]
    """Each column's test, p-values uncorrected; drifted ones are those below alpha / m."""

    @property
    def drifted_columns(self) -> list[str]:
        m = max(len(self.tests), 1)
        return [t.column for t in self.tests if t.p_value is not None and t.p_value < self.alpha / m]


def system_drift(
    reference: Window,
    current: Window,
    *,
    alpha: float = 0.05,
    groups: Sequence[Group] = ("inputs", "scores", "outcomes"),
) -> SystemDrift:
    """Did the served system or its traffic change? Bonferroni over the columns of `groups`
    (judge-independent by default: what the judge thinks never enters)."""
    columns = [c for c in reference.columns() if column_group(c) in groups and c in current.columns()]
    tests = hypothesis_tests(reference, current, columns)
    m = max(len(tests), 1)
    drifted = any(t.p_value is not None and t.p_value < alpha / m for t in tests)
    return SystemDrift(drifted, alpha, tuple(tests))
