"""Who drifted, the system or the judge? A pinned anchor set tells them apart.

The anchor set is a published golden set: cases with human labels, frozen. It is re-judged on a
schedule by whatever judge is running now, and its verdicts are compared, case by case, with the
verdicts of the pinned reference run (McNemar's exact test on the cases whose verdict flipped):
the inputs are fixed, so a significant change of verdicts is the judge's doing, however it is
versioned (a silent change of model or prompt included). Agreement with the human labels
(Cohen's kappa) is reported for both runs.

The system side is tested apart from the judge: the judge-independent monitors (inputs, stage
scores, outcomes), plus the traffic's judged quality only when the judge is clean, in one
Bonferroni family (`drift.system_drift`). Verdict: none, system, judge or both.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from scipy import stats

from coachrec.metrics import cohen_kappa
from coachrec.monitor.drift import SystemDrift, system_drift
from coachrec.monitor.windows import Group, Window
from coachrec.review import GoldenCase
from coachrec.teacher import Judge, Judgment, cases_from_store
from coachrec.teacher.judgment import FAIL, PASS
from coachrec.tracing import TraceStore

Verdict = Literal["none", "system", "judge", "both"]
AnchorLabels = Mapping[tuple[str, str], str]
"""(trace id, criterion) -> the judge's label, `pass` or `fail`."""


def anchor_labels(judgments: Iterable[Judgment]) -> dict[tuple[str, str], str]:
    """The pass/fail verdicts of a judge run (unknowns left out: they are neither)."""
    return {(j.trace_id, j.criterion): j.label for j in judgments if j.label in (PASS, FAIL)}


def rejudge_anchor(judge: Judge, store: TraceStore, golden: Sequence[GoldenCase]) -> dict[tuple[str, str], str]:
    """Judge the anchor set's traces (read from `store`) with `judge`."""
    traces = list(dict.fromkeys(c.trace_id for c in golden))
    return anchor_labels(judge.judge(cases_from_store(store, traces, skip_foreign=False)))


@dataclass(frozen=True)
class CriterionJudgeDrift:
    criterion: str
    n: int
    to_fail: int
    """Anchor cases the reference run passed and the current run fails."""
    to_pass: int
    p_value: float
    kappa_reference: float
    kappa_current: float
    pass_rate_reference: float
    pass_rate_current: float


@dataclass(frozen=True)
class JudgeDrift:
    drifted: bool
    alpha: float
    criteria: tuple[CriterionJudgeDrift, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"drifted": self.drifted, "alpha": self.alpha, "criteria": [asdict(c) for c in self.criteria]}


def mcnemar_exact(to_fail: int, to_pass: int) -> float:
    """Two-sided exact McNemar p-value from the two discordant counts (1 when none flipped)."""
    n = to_fail + to_pass
    if n == 0:
        return 1.0
    return float(stats.binomtest(min(to_fail, to_pass), n, 0.5).pvalue)


def judge_drift(
    golden: Sequence[GoldenCase], reference: AnchorLabels, current: AnchorLabels, *, alpha: float = 0.05
) -> JudgeDrift:
    """Per criterion, McNemar on the anchor cases both runs judged; Bonferroni over criteria."""
    by_criterion: dict[str, list[GoldenCase]] = {}
    for c in golden:
        if (c.trace_id, c.criterion) in reference and (c.trace_id, c.criterion) in current:
            by_criterion.setdefault(c.criterion, []).append(c)
    out = []
    for criterion, cases in sorted(by_criterion.items()):
        ref = np.array([reference[(c.trace_id, criterion)] == PASS for c in cases])
        cur = np.array([current[(c.trace_id, criterion)] == PASS for c in cases])
        human = np.array([c.label == PASS for c in cases])
        to_fail, to_pass = int(np.sum(ref & ~cur)), int(np.sum(~ref & cur))
        out.append(
            CriterionJudgeDrift(
                criterion,
                len(cases),
                to_fail,
                to_pass,
                mcnemar_exact(to_fail, to_pass),
                cohen_kappa(ref, human),
                cohen_kappa(cur, human),
                float(ref.mean()),
                float(cur.mean()),
            )
        )
    m = max(len(out), 1)
    return JudgeDrift(any(c.p_value < alpha / m for c in out), alpha, tuple(out))


@dataclass(frozen=True)
class Attribution:
    verdict: Verdict
    judge: JudgeDrift
    system: SystemDrift

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "judge": self.judge.to_dict(),
            "system": {
                "drifted": self.system.drifted,
                "alpha": self.system.alpha,
                "drifted_columns": self.system.drifted_columns,
                "tests": [t.to_dict() for t in self.system.tests],
            },
        }


def attribute(reference: Window, current: Window, judge: JudgeDrift, *, alpha: float = 0.05) -> Attribution:
    """The verdict for one check: the judge side from the anchor set, the system side from the
    traffic (its judged quality counted only while the judge is clean)."""
    groups: tuple[Group, ...] = ("inputs", "scores", "outcomes") + (() if judge.drifted else ("quality",))
    system = system_drift(reference, current, alpha=alpha, groups=groups)
    verdict: Verdict = (
        "both"
        if judge.drifted and system.drifted
        else "judge"
        if judge.drifted
        else "system"
        if system.drifted
        else "none"
    )
    return Attribution(verdict, judge, system)
