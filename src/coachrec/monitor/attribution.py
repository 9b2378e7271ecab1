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
- runs: with several runs on each side (`reference_runs`: more runs of the pinned judge;
  `current_runs`: earlier re-judgings by the current judge), whether the per-anchor mean scores
  of the two sides differ by more than the runs vary within a side: the sum over anchors of the
  squared difference of side means, against the null that reshuffles each anchor's run scores
  between the sides (runs of an unchanged judge are exchangeable replays; its exact moments, a
  gamma tail). A stochastic judge's change smaller than its replay noise shows up here as evidence
  accumulates over checks, where one re-judging against one pinned run cannot see it.

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
    runs_p_value: float | None = None
    """Permutation test of the side means over several runs per side; None when not run."""
    runs: tuple[int, int] = (0, 0)
    """Runs on the reference and the current side that the runs test pooled."""
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
        if self.runs_p_value is not None:
            out.append(self.runs_p_value)
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


def _split_matrix(m: int, k: int, limit: int, rng: np.random.Generator) -> np.ndarray:
    """Every way (or `limit` random ways, when there are more) to pick which `k` of `m` runs are
    the current side, as a 0/1 matrix (splits x m)."""
    from itertools import combinations
    from math import comb

    if comb(m, k) <= limit:
        out = np.zeros((comb(m, k), m))
        for row, chosen in enumerate(combinations(range(m), k)):
            out[row, list(chosen)] = 1.0
        return out
    keys = rng.random((limit, m))
    return (np.argsort(np.argsort(keys, axis=1), axis=1) < k).astype(np.float64)


def runs_permutation_test(values: np.ndarray, current: np.ndarray, limit: int = 5000, seed: int = 0) -> float:
    """p-value that the two sides' per-anchor means differ beyond within-anchor run noise.

    `values` (anchors x runs) holds each run's score of each anchor (NaN: that run did not judge
    it); `current` (runs,) marks the current judge's runs. Statistic: T, the sum over anchors of
    the squared difference between the mean of its current and of its reference runs. Null: each
    anchor's scores reassigned to its runs at random, independently per anchor (runs of an
    unchanged judge are exchangeable replays). Each anchor's term is enumerated over every split
    of its runs (at most `limit`, else a random sample of splits), which gives T's exact null mean
    and variance; the p-value is a gamma with those moments (Satterthwaite), so a level of 1e-4
    costs no more than one of 0.05. Anchors without a run on both sides are left out."""
    values = np.asarray(values, dtype=np.float64)
    cur = np.asarray(current, dtype=bool)
    have = ~np.isnan(values)
    both = (have & cur).any(axis=1) & (have & ~cur).any(axis=1)
    values, have = values[both], have[both]
    if not len(values) or np.all(np.nanmax(values, axis=1) == np.nanmin(values, axis=1)):
        return 1.0  # no anchor on both sides, or no score moved between any runs
    rng = np.random.default_rng(seed)
    observed = mean = var = 0.0
    patterns, which = np.unique(have, axis=0, return_inverse=True)
    for n, pattern in enumerate(patterns):  # anchors judged by the same runs share their splits
        v = values[np.asarray(which).ravel() == n][:, pattern]
        k = int(cur[pattern].sum())
        m = v.shape[1]
        splits = _split_matrix(m, k, limit, rng)
        d = v @ (splits / k).T - v @ ((1.0 - splits) / (m - k)).T  # anchors x splits
        mine = v[:, cur[pattern]].mean(axis=1) - v[:, ~cur[pattern]].mean(axis=1)
        observed += float(np.sum(mine**2))
        mean += float(np.sum((d**2).mean(axis=1)))
        var += float(np.sum((d**2).var(axis=1)))
    if var <= 0.0:
        return 1.0 if observed <= mean + 1e-12 else 0.0
    return float(stats.gamma.sf(observed, a=mean * mean / var, scale=var / mean))


def _run_matrix(runs: Sequence[AnchorLabels], keys: Sequence[Key]) -> np.ndarray | None:
    """(anchors x runs) scores of `keys`, NaN where a run did not judge one; None when a run has
    no scores at all."""
    out = np.full((len(keys), len(runs)), np.nan)
    for j, run in enumerate(runs):
        scores = getattr(run, "scores", None)
        if not scores:
            return None
        out[:, j] = [scores.get(k, np.nan) for k in keys]
    return out


def judge_drift(
    golden: Sequence[GoldenCase],
    reference: AnchorLabels,
    current: AnchorLabels,
    *,
    alpha: float = 0.05,
    replicate: AnchorLabels | None = None,
    reference_runs: Sequence[AnchorLabels] = (),
    current_runs: Sequence[AnchorLabels] = (),
) -> JudgeDrift:
    """Per criterion, the flip, shift and spread tests on the anchor cases both runs judged
    (shift when both runs carry scores, spread also needs `replicate`: the pinned judge's second
    run), and the runs test when there is more than one run on a side (`reference`, `replicate`
    and `reference_runs` against `current_runs` and `current`; each may judge a different subset
    of the anchors); drifted when any is below alpha / (number of tests)."""
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
        ref_side = [reference, *([replicate] if replicate is not None else []), *reference_runs]
        cur_side = [*current_runs, current]
        if len(ref_side) + len(cur_side) > 2 and (len(ref_side) > 1 or len(cur_side) > 1):
            crit_keys = [(c.trace_id, criterion) for c in golden if c.criterion == criterion]
            matrix = _run_matrix([*ref_side, *cur_side], list(dict.fromkeys(crit_keys)))
            if matrix is not None:
                side = np.r_[np.zeros(len(ref_side), bool), np.ones(len(cur_side), bool)]
                extra["runs_p_value"] = runs_permutation_test(matrix, side)
                extra["runs"] = (len(ref_side), len(cur_side))
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
