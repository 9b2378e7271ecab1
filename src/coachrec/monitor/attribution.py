"""Who drifted, the system or the judge? A pinned anchor set tells them apart.

The anchor set is a published golden set: cases with human labels, frozen. It is re-judged on a
schedule by whatever judge is running now and compared, case by case, with the pinned reference
run. The inputs are fixed, so a significant change is the judge's doing, however it is versioned
(a silent change of model or prompt included). Per criterion, three paired tests on the anchors
both runs judged, Bonferroni over all of them:

- flips: McNemar's exact test on the cases whose pass/fail verdict changed;
- shift: Wilcoxon's signed-rank test on the per-anchor change of the judge's continuous score
  (a stricter or more lenient judge moves scores one way long before verdicts flip);
- spread: whether scores moved more than the pinned judge's own replay noise, a one-sided
  Wilcoxon test on |current - reference| against |replicate - reference| per anchor, where the
  replicate is the pinned judge run on the anchors a second time (a judge that changes in no
  particular direction, e.g. retrained, moves scores both ways). Without a replicate it is not run.

The judge-human gap is tested apart: McNemar on the anchors whose agreement with the human label
changed (reported with Cohen's kappa of both runs; it says whether the change made the judge
worse, not whether it changed, so it does not enter the verdict).

The system side is tested apart from the judge: the judge-independent monitors (inputs, stage
scores, outcomes), plus the traffic's judged quality only when the judge is clean, in one
Bonferroni family (`drift.system_drift`). Verdict: none, system, judge or both.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
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
Key = tuple[str, str]
"""(trace id, criterion)."""


class AnchorRun(Mapping[Key, str]):
    """One judge run over the anchor set: each judged case's label (`pass` or `fail`; the
    mapping) and its continuous score (`scores`)."""

    def __init__(self, labels: Mapping[Key, str], scores: Mapping[Key, float] | None = None) -> None:
        self.labels = dict(labels)
        self.scores = dict(scores or {})

    def __getitem__(self, key: Key) -> str:
        return self.labels[key]

    def __iter__(self) -> Iterator[Key]:
        return iter(self.labels)

    def __len__(self) -> int:
        return len(self.labels)


AnchorLabels = Mapping[Key, str]
"""(trace id, criterion) -> the judge's label; an `AnchorRun` also carries the scores."""


def anchor_labels(judgments: Iterable[Judgment]) -> AnchorRun:
    """The pass/fail verdicts and scores of a judge run (unknowns left out: they are neither)."""
    known = [j for j in judgments if j.label in (PASS, FAIL)]
    return AnchorRun(
        {(j.trace_id, j.criterion): j.label for j in known},
        {(j.trace_id, j.criterion): float(j.score) for j in known},
    )


def rejudge_anchor(judge: Judge, store: TraceStore, golden: Sequence[GoldenCase]) -> AnchorRun:
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
    """McNemar on the flipped verdicts."""
    kappa_reference: float
    kappa_current: float
    pass_rate_reference: float
    pass_rate_current: float
    scored: int = 0
    """Anchors with a score in both runs (0: the score tests were not run)."""
    mean_shift: float = 0.0
    """Mean of current - reference score over the scored anchors."""
    moved: int = 0
    """Scored anchors whose score differs between the runs."""
    shift_p_value: float = 1.0
    """Wilcoxon signed-rank on the score changes."""
    spread_p_value: float | None = None
    """One-sided Wilcoxon: |current - reference| above the replicate's; None without a replicate."""
    human_gap_p_value: float = 1.0
    """McNemar on the anchors whose agreement with the human label changed (reported only)."""
    agreement_reference: float = float("nan")
    agreement_current: float = float("nan")

    def p_values(self) -> list[float]:
        """The tests that decide whether the judge drifted."""
        out = [self.p_value]
        if self.scored:
            out.append(self.shift_p_value)
        if self.spread_p_value is not None:
            out.append(self.spread_p_value)
        return out


@dataclass(frozen=True)
class JudgeDrift:
    drifted: bool
    alpha: float
    criteria: tuple[CriterionJudgeDrift, ...]

    @property
    def tests(self) -> int:
        return sum(len(c.p_values()) for c in self.criteria)

    def to_dict(self) -> dict[str, Any]:
        return {
            "drifted": self.drifted,
            "alpha": self.alpha,
            "tests": self.tests,
            "criteria": [asdict(c) for c in self.criteria],
        }


def mcnemar_exact(to_fail: int, to_pass: int) -> float:
    """Two-sided exact McNemar p-value from the two discordant counts (1 when none flipped)."""
    n = to_fail + to_pass
    if n == 0:
        return 1.0
    return float(stats.binomtest(min(to_fail, to_pass), n, 0.5).pvalue)


def signed_rank(d: np.ndarray, alternative: Literal["two-sided", "greater"] = "two-sided") -> float:
    """Wilcoxon's signed-rank p-value of paired differences `d`, zeros dropped (1 when every
    difference is zero: nothing moved)."""
    d = d[d != 0]
    if len(d) == 0:
        return 1.0
    return float(stats.wilcoxon(d, zero_method="wilcox", alternative=alternative).pvalue)


def _scores(run: AnchorLabels, keys: Sequence[Key]) -> np.ndarray | None:
    scores = getattr(run, "scores", None)
    if not scores or not all(k in scores for k in keys):
        return None
    return np.array([scores[k] for k in keys], dtype=np.float64)


def judge_drift(
    golden: Sequence[GoldenCase],
    reference: AnchorLabels,
    current: AnchorLabels,
    *,
    alpha: float = 0.05,
    replicate: AnchorLabels | None = None,
) -> JudgeDrift:
    """Per criterion, the flip, shift and spread tests on the anchor cases both runs judged
    (shift when both runs carry scores, spread also needs `replicate`: the pinned judge's second
    run); drifted when any is below alpha / (number of tests)."""
    by_criterion: dict[str, list[GoldenCase]] = {}
    for c in golden:
        if (c.trace_id, c.criterion) in reference and (c.trace_id, c.criterion) in current:
            by_criterion.setdefault(c.criterion, []).append(c)
    out = []
    for criterion, cases in sorted(by_criterion.items()):
        keys = [(c.trace_id, criterion) for c in cases]
        ref = np.array([reference[k] == PASS for k in keys])
        cur = np.array([current[k] == PASS for k in keys])
        human = np.array([c.label == PASS for c in cases])
        to_fail, to_pass = int(np.sum(ref & ~cur)), int(np.sum(~ref & cur))
        right_ref, right_cur = ref == human, cur == human
        extra: dict[str, Any] = {
            "human_gap_p_value": mcnemar_exact(
                int(np.sum(right_ref & ~right_cur)), int(np.sum(~right_ref & right_cur))
            ),
            "agreement_reference": float(right_ref.mean()),
            "agreement_current": float(right_cur.mean()),
        }
        s_ref, s_cur = _scores(reference, keys), _scores(current, keys)
        if s_ref is not None and s_cur is not None:
            d = s_cur - s_ref
            extra |= {
                "scored": len(keys),
                "mean_shift": float(d.mean()),
                "moved": int(np.count_nonzero(d)),
                "shift_p_value": signed_rank(d),
            }
            s_rep = _scores(replicate, keys) if replicate is not None else None
            if s_rep is not None:
                extra["spread_p_value"] = signed_rank(np.abs(d) - np.abs(s_rep - s_ref), "greater")
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
                **extra,
            )
        )
    m = max(sum(len(c.p_values()) for c in out), 1)
    return JudgeDrift(any(p < alpha / m for c in out for p in c.p_values()), alpha, tuple(out))


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
    traffic (its judged quality counted only while the judge is clean) at level `alpha`. The
    check's false alarms are bounded by `alpha` plus the judge side's own level."""
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


def spending_levels(alpha: float, looks: int, rule: Literal["pocock", "obrien-fleming"] = "pocock") -> list[float]:
    """Per-check test levels for `looks` scheduled checks whose false alarms, over all of them,
    stay at most `alpha`: the increments of a Lan-DeMets spending function at t = k / looks.
    Used as plain per-check levels (a union bound), so the bound holds however the checks are
    correlated; `pocock` spends evenly, `obrien-fleming` keeps most of alpha for the last checks."""
    if looks < 1 or not 0 < alpha < 1:
        raise ValueError(f"need looks >= 1 and 0 < alpha < 1, got looks={looks}, alpha={alpha}")
    t = np.arange(1, looks + 1) / looks
    if rule == "pocock":
        spent = alpha * np.log1p((np.e - 1) * t)
    elif rule == "obrien-fleming":
        spent = 2 * (1 - stats.norm.cdf(stats.norm.ppf(1 - alpha / 2) / np.sqrt(t)))
    else:
        raise ValueError(f"rule must be 'pocock' or 'obrien-fleming', got {rule!r}")
    return [float(x) for x in np.diff(np.concatenate([[0.0], spent]))]
