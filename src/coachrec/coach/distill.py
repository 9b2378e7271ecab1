"""Distillation: the teacher's graded verdicts on (request, candidate item) pairs train a
student ranker, which becomes a candidate stack for the gate.

The recipe (after DLLM2Rec, for a ranker rather than a sequential model):

1. Pairs come from judged production traces: for each traced request, the champion's own
   candidate set for that user's history (the items its ranker had to order), the top
   `label_depth` by the champion's blend.
2. Each pair's label is the teacher's soft verdict: for the relevance criterion, the relevance
   committee's P(user would rate the item >= 4).
3. Each pair is weighted by the teacher's confidence (|2p - 1|: near-0.5 verdicts carry
   little) and by teacher-champion agreement (1 - the gap between the item's rank percentile
   under the teacher and under the champion), so the student leans on the teacher where its
   verdict is clear and plausible to the production model, not on its noise.
4. The student ranks `blend + strength * P_student`; `strength` is the largest effect on the
   teacher's pass rate that keeps validation NDCG@10 (the split's *valid* items, never the test
   items the gate uses) within `valid_tolerance` of the champion's.

Only criteria whose judge may gate are distilled (`Trust.may_gate`); today the distiller
handles the recommender-member criterion (relevance), whose verdicts exist per item.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from coachrec.coach.trust import Trust
from coachrec.data import IdMap, Split
from coachrec.models import top_k
from coachrec.ranking import ItemStats, Student, candidate_features
from coachrec.serve import Stack
from coachrec.teacher import JudgeCase, RelevanceCommittee, RubricSpec

Progress = Callable[[str], None]


class DistillError(ValueError):
    """Nothing may be distilled (the message says why)."""


@dataclass(frozen=True)
class DistillConfig:
    label_depth: int = 100
    """Candidates per request labelled by the teacher (top of the champion's blend)."""
    strengths: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0)
    valid_users: int = 1000
    """Most selection users (of the split's valid task) used to choose the strength."""
    valid_tolerance: float = 0.002
    """Largest validation NDCG@10 loss accepted when choosing the strength."""
    l2: float = 1.0
    seed: int = 0


@dataclass
class Distilled:
    stack: Stack
    criterion: str
    target_mode: str
    pairs: int
    requests: int
    strength_search: list[dict[str, float]] = field(default_factory=list)
    note: str = ""

    def summary(self) -> dict[str, Any]:
        assert self.stack.ranker is not None
        student = self.stack.ranker.student
        return {
            "criterion": self.criterion,
            "target_mode": self.target_mode,
            "pairs": self.pairs,
            "requests": self.requests,
            "strength": student.strength,
            "strength_search": self.strength_search,
            "student_fit": student.fit_info,
            "coefficients": student.coefficients(),
            "note": self.note,
        }


def distillable(rubric: RubricSpec, trust: dict[str, Trust], mode: str) -> tuple[bool, str]:
    """Whether a failure mode can be distilled, and why not."""
    spec = next((c for c in rubric.criteria if mode in c.failure_modes), None)
    if spec is None:
        return False, f"no criterion of rubric {rubric.name!r} emits {mode!r}"
    t = trust.get(spec.name)
    if t is None or not t.may_gate:
        return False, f"criterion {spec.name!r} may not be distilled: {t.reason if t else 'judge quality unknown'}"
    if spec.member != "recommender":
        return False, (
            f"criterion {spec.name!r} is judged per slate by a {spec.member} member; the distiller needs "
            "per-item verdicts (the relevance committee's)"
        )
    return True, f"{spec.name}: {t.reason}"


def _items(stack: Stack) -> IdMap:
    items = stack.models[0].items
    if items is None:
        raise DistillError(f"{stack.models[0].name} is not fitted")
    return items


def _history(stack: Stack, case: JudgeCase) -> np.ndarray:
    model = stack.models[0]
    if case.user_id is not None and model.users is not None and case.user_id in model.users:
        return model.user_history(model.users.index(case.user_id))
    enc = _items(stack).encode(list(case.history), unknown="mask")
    return enc[enc >= 0].astype(np.int64)


def teacher_pairs(
    stack: Stack, stats: ItemStats, committee: RelevanceCommittee, cases: Sequence[JudgeCase], depth: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Features, teacher soft labels and pair weights over the candidates of each distinct
    (user, history) among `cases`."""
    distinct: dict[tuple[str | None, tuple[str, ...]], JudgeCase] = {}
    for case in cases:
        distinct.setdefault((case.user_id, tuple(case.history) if case.user_id is None else ()), case)
    xs, ys, ws = [], [], []
    ids = _items(stack).ids
    histories = [_history(stack, case) for case in distinct.values()]
    for case, history, found in zip(distinct.values(), histories, stack.candidates(histories), strict=True):
        items, sources, blend = found.idx, found.sources, found.score
        top = np.lexsort((items, -blend))[:depth]
        items, sources, blend = items[top], sources[top], blend[top]
        p = committee.probability(case.user_id, [str(ids[h]) for h in history[-50:]], [str(ids[i]) for i in items])
        known = ~np.isnan(p)
        if known.sum() < 2:
            continue
        items, sources, blend, p = items[known], sources[known], blend[known], p[known]
        x = candidate_features(stats, history, items, sources.astype(np.float32), blend)
        n = len(items)
        teacher_pct = np.argsort(np.argsort(-p, kind="stable"), kind="stable") / max(n - 1, 1)
        champion_pct = np.arange(n) / max(n - 1, 1)  # candidates are in blend order
        agreement = 1.0 - np.abs(teacher_pct - champion_pct)
        xs.append(x)
        ys.append(p)
        ws.append(np.abs(2 * p - 1) * (0.5 + 0.5 * agreement))
    if not xs:
        raise DistillError("the teacher labelled no candidate pairs (no judged request had items the committee knows)")
    return np.vstack(xs), np.concatenate(ys), np.concatenate(ws), len(distinct)


def selection_rows(split: Split, users: Sequence[str] | None, limit: int, seed: int) -> np.ndarray:
    """Rows of the split's valid task for the strength search: only `users` (the selection
    users; None = all), at most `limit`, in a seeded order."""
    task = split.task("valid")
    ids = np.asarray(split.train.users.ids, dtype=object)[np.asarray(task.users, dtype=np.int64)]
    rows = (
        np.arange(len(task.users))
        if users is None
        else np.flatnonzero(np.isin(ids, np.asarray(list(users), dtype=object)))
    )
    return np.random.default_rng(seed).permutation(rows)[:limit]


def _validation(
    stack: Stack,
    stats: ItemStats,
    student: Student,
    committee: RelevanceCommittee,
    split: Split,
    rubric: RubricSpec,
    criterion: str,
    config: DistillConfig,
    users: Sequence[str] | None,
) -> list[dict[str, float]]:
    """NDCG@10 on the selection users' valid items and the teacher's pass rate of the top 10, per
    strength (strength 0 is the champion)."""
    task = split.task("valid")
    rows = selection_rows(split, users, config.valid_users, config.seed)
    if not len(rows):
        raise DistillError("no selection user has a validation interaction to choose the strength on")
    spec = rubric.criterion(criterion)
    ids = _items(stack).ids
    users_map = split.train.users
    strengths = (0.0, *config.strengths)
    ndcg = np.zeros((len(strengths), len(rows)))
    passed = np.full((len(strengths), len(rows)), np.nan)
    histories = [np.asarray(task.histories[r], dtype=np.int64) for r in rows]
    for j, (r, history, found) in enumerate(zip(rows, histories, stack.candidates(histories), strict=False)):
        if not len(found):
            continue
        items, blend = found.idx, found.score
        x = candidate_features(stats, history, items, found.sources, blend)
        p_student = student.probability(x)
        user = str(users_map.ids[int(task.users[r])])
        target = set(np.asarray(task.targets[r]).tolist())
        order_cache: dict[float, np.ndarray] = {}
        for s, strength in enumerate(strengths):
            top = top_k((blend + strength * p_student)[None, :], 10)[0]
            order_cache[strength] = items[top]
            hits = np.flatnonzero(np.isin(items[top], list(target)))
            ndcg[s, j] = 1.0 / np.log2(hits[0] + 2) if len(hits) else 0.0
        shown = np.unique(np.concatenate(list(order_cache.values())))
        p_teacher = dict(
            zip(shown.tolist(), committee.probability(user, [], [str(ids[i]) for i in shown]).tolist(), strict=False)
        )
        for s, strength in enumerate(strengths):
            ps = np.array([p_teacher[i] for i in order_cache[strength].tolist()])
            ps = ps[~np.isnan(ps)]
            passed[s, j] = np.nan if len(ps) == 0 else float((ps >= spec.item_threshold).mean() >= spec.pass_threshold)
    return [
        {
            "strength": s,
            "valid_ndcg@10": float(ndcg[i].mean()),
            "teacher_pass_rate": float(np.nanmean(passed[i])) if (~np.isnan(passed[i])).any() else 0.0,
            "users": len(rows),
        }
        for i, s in enumerate(strengths)
    ]


def distill(
    champion: Stack,
    committee: RelevanceCommittee,
    cases: Sequence[JudgeCase],
    split: Split,
    rubric: RubricSpec,
    trust: dict[str, Trust],
    target_mode: str,
    config: DistillConfig = DistillConfig(),
    progress: Progress | None = None,
    users: Sequence[str] | None = None,
) -> Distilled:
    """A candidate stack whose ranker is distilled from the teacher's verdicts on `cases`; the
    strength is chosen on `users` (the selection users; never the gate's)."""
    ok, why = distillable(rubric, trust, target_mode)
    if not ok:
        raise DistillError(why)
    criterion = next(c.name for c in rubric.criteria if target_mode in c.failure_modes)
    say = progress or (lambda _msg: None)
    say(f"labelling candidates of {len(cases)} traced requests with the teacher")
    stats = ItemStats.from_data(split.train, champion.catalog)
    x, y, w, requests = teacher_pairs(champion, stats, committee, cases, config.label_depth)
    say(f"fitting the student on {len(y):,} teacher-labelled pairs")
    student = Student(champion.feature_names).fit(x, y, w, l2=config.l2)
    say("choosing the distillation strength on validation items")
    search = _validation(champion, stats, student, committee, split, rubric, criterion, config, users)
    base = search[0]
    allowed = [r for r in search[1:] if r["valid_ndcg@10"] >= base["valid_ndcg@10"] - config.valid_tolerance]
    if allowed:
        best = max(allowed, key=lambda r: (r["teacher_pass_rate"], -r["strength"]))
        note = (
            f"strength {best['strength']:g}: teacher pass rate {base['teacher_pass_rate']:.3f} -> "
            f"{best['teacher_pass_rate']:.3f}, "
            f"valid NDCG@10 {base['valid_ndcg@10']:.4f} -> {best['valid_ndcg@10']:.4f} (tolerance "
            f"{config.valid_tolerance})"
        )
    else:
        best = max(search[1:], key=lambda r: (r["valid_ndcg@10"], r["teacher_pass_rate"]))
        note = (
            f"no strength kept validation NDCG@10 within {config.valid_tolerance} of the champion; "
            f"strength {best['strength']:g} loses least"
        )
    student.strength = float(best["strength"])
    return Distilled(champion.with_ranker(student, stats), criterion, target_mode, len(y), requests, search, note)
