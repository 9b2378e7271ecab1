"""How far to trust a judge: agreement with human labels, per criterion.

The positive class is `pass` (for relevance: *relevant*). TPR is the share of human-pass cases
the judge passes; TNR the share of human-fail cases it fails. Swap consistency is the share of
cases whose label survives reversing the order the judge was shown (LLM members). A criterion
whose judge has kappa below the floor may report but may not gate or be distilled; when the
kappa's confidence interval is known (`kappa_ci`, bootstrap by user), its *lower bound* must
reach the floor. `unit` says what one case is: an `item` or a `slate` (the unit the gate judges).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from coachrec.metrics import cohen_kappa

MIN_CASES = 20
"""Fewer human-labelled cases than this never licence gating, whatever the kappa."""


@dataclass(frozen=True)
class JudgeQuality:
    criterion: str
    judge: str
    n: int
    kappa: float
    tpr: float
    tnr: float
    swap_consistency: float | None
    kappa_floor: float
    auc: float | None = None
    protocol: str = ""
    kappa_ci: tuple[float, float] | None = None
    unit: str = "item"

    @property
    def kappa_bound(self) -> float:
        """What is held against the floor: the CI's lower bound when known, else the kappa."""
        return self.kappa_ci[0] if self.kappa_ci is not None else self.kappa

    @property
    def may_gate(self) -> bool:
        """True when this judge may gate a promotion or feed distillation."""
        return self.n >= MIN_CASES and self.kappa_bound >= self.kappa_floor - 1e-12  # kappa is a ratio of floats

    def reason(self) -> str:
        ci = f" (95% CI [{self.kappa_ci[0]:.3f}, {self.kappa_ci[1]:.3f}])" if self.kappa_ci is not None else ""
        what = f"kappa{' CI lower bound' if self.kappa_ci is not None else ''}"
        cases = f"{self.n} {self.unit}s"
        if self.may_gate:
            return f"kappa {self.kappa:.3f}{ci}: {what} >= floor {self.kappa_floor} on {cases}"
        if self.n < MIN_CASES:
            return f"only {self.n} human-labelled {self.unit}s (< {MIN_CASES})"
        return f"kappa {self.kappa:.3f}{ci}: {what} below floor {self.kappa_floor} on {cases}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "may_gate": self.may_gate}


def auc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """Area under the ROC curve (ties count half); None when one class is missing."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    n1, n0 = int(y.sum()), int((~y).sum())
    if n1 == 0 or n0 == 0:
        return None
    order = np.argsort(s, kind="stable")
    ranks = np.empty(len(s))
    sorted_s = s[order]
    i = 0
    while i < len(s):  # average ranks over ties
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def measure(
    criterion: str,
    judge: str,
    judge_pass: Sequence[bool] | np.ndarray,
    human_pass: Sequence[bool] | np.ndarray,
    *,
    kappa_floor: float,
    swap_consistent: Sequence[bool] | np.ndarray | None = None,
    scores: Sequence[float] | np.ndarray | None = None,
    protocol: str = "",
    groups: Sequence[Any] | np.ndarray | None = None,
    unit: str = "item",
    seed: int = 0,
) -> JudgeQuality:
    """Agreement of a judge with human labels; with `groups` (the user of each case) the kappa
    also gets a bootstrap CI over groups, and its lower bound decides `may_gate`."""
    j = np.asarray(judge_pass, dtype=bool)
    h = np.asarray(human_pass, dtype=bool)
    if j.shape != h.shape or j.ndim != 1 or len(j) == 0:
        raise ValueError(
            f"judge and human labels must be equal-length non-empty 1-d arrays, got {j.shape} and {h.shape}"
        )
    tpr = float(j[h].mean()) if h.any() else float("nan")
    tnr = float((~j[~h]).mean()) if (~h).any() else float("nan")
    swap = None
    if swap_consistent is not None:
        s = np.asarray(swap_consistent, dtype=bool)
        if s.shape != j.shape:
            raise ValueError(f"swap consistency has shape {s.shape}, judge labels {j.shape}")
        swap = float(s.mean())
    ci = kappa_interval(j, h, np.asarray(groups), seed=seed) if groups is not None else None
    return JudgeQuality(
        criterion,
        judge,
        len(j),
        cohen_kappa(j, h),
        tpr,
        tnr,
        swap,
        kappa_floor,
        auc(np.asarray(scores), h) if scores is not None else None,
        protocol,
        ci,
        unit,
    )


def best_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """The score threshold with the highest kappa on calibration data (never on evaluation data)."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    candidates = np.unique(np.quantile(s, np.linspace(0.02, 0.98, 49)))
    best, best_kappa = 0.5, -np.inf
    for t in candidates:
        k = cohen_kappa(s >= t, y)
        if k > best_kappa:
            best, best_kappa = float(t), k
    return best


def kappa_interval(
    judge_pass: np.ndarray,
    human_pass: np.ndarray,
    groups: np.ndarray,
    *,
    n_boot: int = 500,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of Cohen's kappa, resampling whole groups (users), since
    pairs of one user are not independent."""
    j, h, g = np.asarray(judge_pass, bool), np.asarray(human_pass, bool), np.asarray(groups)
    ids, inverse = np.unique(g, return_inverse=True)
    members = [np.flatnonzero(inverse == k) for k in range(len(ids))]
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_boot):
        rows = np.concatenate([members[k] for k in rng.integers(0, len(ids), len(ids))])
        values.append(cohen_kappa(j[rows], h[rows]))
    alpha = (1 - confidence) / 2
    return float(np.quantile(values, alpha)), float(np.quantile(values, 1 - alpha))
