"""The teacher: a committee that judges served requests against a rubric.

    judge = Judge(load_rubric(), CatalogView(catalog), llm=load_backend("teacher"), relevance=committee)
    judge = Judge(..., request_match=request_committee)   # `request_match` by a measured committee
    judgments = judge.judge(cases_from_store(store, trace_ids), progress=print_progress)
    record(store, judgments)            # evaluations on the blamed spans (OTLP: gen_ai.evaluation.result)

Program criteria are exact checks, the relevance criterion asks the heavier recommender, and
LLM criteria read P(yes) from next-token logits with the slate shown in both orders. A member
that is not configured (no LLM, no relevance committee) leaves its criteria unjudged rather
than guessed. With `request_match=` (a `teacher.request_match.RequestMatchCommittee`, measured
on ReDial by `measured_request_match`) the `request_match` criterion is judged per shown item by
that committee instead of the listwise LLM question: score = share of shown items matching,
`details` = each item's P(match); a request without seeker text is unknown, not a pass.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import numpy as np

import coachrec
from coachrec.llm import LLMBackend
from coachrec.teacher.cases import JudgeCase
from coachrec.teacher.catalog_view import CatalogView
from coachrec.teacher.judgment import FAIL, PASS, UNKNOWN, Judgment
from coachrec.teacher.llm_scoring import LogitScorer
from coachrec.teacher.program_checks import CHECKS
from coachrec.teacher.prompts import judge_prompt, numbered
from coachrec.teacher.relevance import RelevanceCommittee
from coachrec.teacher.relevance_batch import BatchRelevance
from coachrec.teacher.request_match import REQUEST_MATCH, RequestMatchCommittee
from coachrec.teacher.rubric import CriterionSpec, RubricSpec
from coachrec.tracing import TraceStore

Progress = Callable[[int, int], None]
Executor = Callable[["Judge", list[JudgeCase]], list[list[Judgment]]]
"""Judges a judge's cases elsewhere (same judgments per case, in order): `coachrec.scale.ray_executor`."""
_EXECUTOR: ContextVar[Executor | None] = ContextVar("coachrec_judge_executor", default=None)


@contextmanager
def judging_with(executor: Executor) -> Iterator[None]:
    """Within the block every `Judge.judge` call hands its cases to `executor`, so code that
    judges (the coach loop, the CLI) runs on a Ray actor pool without knowing it."""
    token = _EXECUTOR.set(executor)
    try:
        yield
    finally:
        _EXECUTOR.reset(token)


@dataclass(frozen=True)
class JudgeConfig:
    history_items: int = 10
    """Recent history items shown to LLM members (titles, most recent last)."""
    swap: bool = True
    """Judge LLM criteria in both slate orders (doubles their cost; measures position bias)."""


class Judge:
    def __init__(
        self,
        rubric: RubricSpec,
        catalog: CatalogView,
        *,
        llm: LLMBackend | None = None,
        relevance: RelevanceCommittee | None = None,
        request_match: RequestMatchCommittee | None = None,
        criteria: Sequence[str] | None = None,
        config: JudgeConfig = JudgeConfig(),
    ) -> None:
        self.rubric = rubric
        self.catalog = catalog
        self.llm = llm
        self.scorer = LogitScorer(llm) if llm is not None else None
        self.relevance = relevance
        self.request_match = request_match
        self.config = config
        selected = [rubric.criterion(n) for n in criteria] if criteria is not None else list(rubric.criteria)
        self.criteria = [c for c in selected if self._member_available(c)]
        self.skipped = [c.name for c in selected if not self._member_available(c)]
        members = [
            f"llm={llm.model_id}" if llm else "llm=none",
            f"relevance={relevance.model_id}" if relevance else "relevance=none",
        ]
        if request_match is not None:
            members.append(f"request_match={request_match.model_id}")
        digest = hashlib.sha256(
            f"{rubric.fingerprint()}|{'|'.join(members)}|{coachrec.__version__}".encode()
        ).hexdigest()[:8]
        self.version = f"{rubric.name}@v{rubric.version}+{digest}"
        self.members = members
        self._batch_relevance: BatchRelevance | None = None
        if relevance is not None and any(c.member == "recommender" for c in self.criteria):
            self._batch_relevance = BatchRelevance(relevance)  # built once, with the judge

    def _member_available(self, c: CriterionSpec) -> bool:
        return (
            c.member == "program"
            or (c.member == "llm" and self.llm is not None)
            or (c.member == "recommender" and self.relevance is not None)
            or (c.name == REQUEST_MATCH and self.request_match is not None)
        )

    batch = 512
    """Cases whose relevance probabilities are computed together (`teacher.relevance_batch`)."""

    def judge(self, cases: Iterable[JudgeCase], progress: Progress | None = None) -> list[Judgment]:
        """Judge every case; the relevance committee scores a batch of cases at once (the same
        judgments as `judge_case` one by one, to the last digit)."""
        return [j for judged in self.judge_each(cases, progress) for j in judged]

    def judge_each(self, cases: Iterable[JudgeCase], progress: Progress | None = None) -> list[list[Judgment]]:
        """`judge`, with the judgments grouped per case (in the order of `cases`); inside
        `judging_with(executor)` the executor judges them (e.g. on a Ray actor pool)."""
        cases = list(cases)
        executor = _EXECUTOR.get()
        if executor is None or not cases:
            return self.judge_here(cases, progress)
        out = executor(self, cases)
        if progress is not None:
            progress(len(cases), len(cases))
        return out

    def judge_here(self, cases: Sequence[JudgeCase], progress: Progress | None = None) -> list[list[Judgment]]:
        """`judge_each` in this process, whatever executor is set."""
        out: list[list[Judgment]] = []
        for lo in range(0, len(cases), self.batch):
            part = cases[lo : lo + self.batch]
            relevance = self._relevance_batch(part)
            for n, case in enumerate(part, lo + 1):
                out.append(self._judge_case(case, relevance.get(n - lo - 1)))
                if progress is not None:
                    progress(n, len(cases))
        return out

    def judge_case(self, case: JudgeCase) -> list[Judgment]:
        return self._judge_case(case, None)

    def _relevance_batch(self, cases: Sequence[JudgeCase]) -> dict[int, np.ndarray]:
        """P(relevant) of each case's non-exploration items, by position in `cases`."""
        if self.relevance is None or not any(c.member == "recommender" for c in self.criteria):
            return {}
        if self._batch_relevance is None or not self._batch_relevance.serves(self.relevance):
            self._batch_relevance = BatchRelevance(self.relevance)
        wanted = [
            (n, [item for i, item in enumerate(case.items) if not case.explored[i]]) for n, case in enumerate(cases)
        ]
        wanted = [(n, shown) for n, shown in wanted if shown]
        p = self._batch_relevance.probabilities([(cases[n].user_id, cases[n].history, shown) for n, shown in wanted])
        return {n: pn for (n, _), pn in zip(wanted, p, strict=True)}

    def _judge_case(self, case: JudgeCase, p_relevant: np.ndarray | None) -> list[Judgment]:
        out = []
        for c in self.criteria:
            if c.applies_to == "with_context" and not (case.context or "").strip():
                continue
            if c.applies_to == "with_reasons" and not any(r.strip() for r in case.reasons):
                continue
            if not case.items and c.check != "slate_complete":
                continue
            out.append(self._judge(c, case, p_relevant))
        return out

    def _judge(self, c: CriterionSpec, case: JudgeCase, p_relevant: np.ndarray | None = None) -> Judgment:
        order_scores = None
        details: dict[str, object] = {}
        if c.member == "program":
            assert c.check is not None
            score, rationale = CHECKS[c.check](case, self.catalog)
            evaluator = f"program:{c.check}"
        elif c.member == "recommender":
            score, rationale, details = self._relevance(c, case, p_relevant)
            evaluator = self.relevance.model_id if self.relevance else ""
        elif c.name == REQUEST_MATCH and self.request_match is not None:
            verdict = self.request_match.judge_slate(case.context, case.items, case.explored)
            score, rationale, details = verdict.score, verdict.rationale, verdict.details
            evaluator = self.request_match.model_id
        else:
            first, second = self._llm_scores(c, case)
            order_scores = (first, second) if second is not None else None
            score = first if second is None else (first + second) / 2
            rationale = f"P(yes) to {c.question!r}: {score:.2f}" + (
                f" (orders: {first:.2f} / {second:.2f})" if second is not None else ""
            )
            evaluator = self.llm.model_id if self.llm else ""
        passed = score >= c.pass_threshold
        label = UNKNOWN if math.isnan(score) else PASS if passed else FAIL
        span = case.span_for(c.blames.value, c.blames_span)
        return Judgment(
            criterion=c.name,
            trace_id=case.trace_id,
            span_id=span.span_id,
            span_name=span.name,
            span_kind=span.kind,
            score=float(score),
            label=label,
            failure_modes=c.failure_modes if label == FAIL else (),
            rationale=rationale,
            evaluator=evaluator,
            judge_version=self.version,
            threshold=c.pass_threshold,
            order_scores=order_scores,
            details=details,
        )

    # -- members -----------------------------------------------------------------------------

    def _relevance(
        self, c: CriterionSpec, case: JudgeCase, p: np.ndarray | None = None
    ) -> tuple[float, str, dict[str, object]]:
        """`p`: the shown items' P(relevant) when the batch path computed them already."""
        assert self.relevance is not None
        shown = [(i, item) for i, item in enumerate(case.items) if not case.explored[i]]
        if not shown:
            return float("nan"), "unknown: every shown item was an exploration slot (not judged for relevance)", {}
        if p is None:
            p = self.relevance.probability(case.user_id, case.history, [item for _, item in shown])
        known = ~np.isnan(p)
        if not known.any():
            return float("nan"), "unknown: no shown item is known to the relevance committee", {}
        relevant = p[known] >= c.item_threshold
        score = float(relevant.mean())
        ranked = sorted((float(pi), item) for pi, (_, item) in zip(p, shown, strict=False) if not np.isnan(pi))
        weakest = "; ".join(f"{self.catalog.title(item)} ({pi:.2f})" for pi, item in ranked[:3])
        rationale = (
            f"{int(relevant.sum())} of {int(known.sum())} judged items {self.relevance.verdict} >= "
            f"{c.item_threshold}); "
            f"least likely: {weakest}"
        )
        return score, rationale, {"p_relevant": {item: round(float(pi), 4) for pi, item in ranked}}

    def llm_prompt(self, c: CriterionSpec, case: JudgeCase, reverse: bool = False) -> str:
        """The listwise prompt of an LLM criterion (slate reversed with `reverse`)."""
        assert c.question is not None
        slate = []
        for item, reason in zip(case.items, case.reasons, strict=False):
            line = self.catalog.describe(item)
            if c.applies_to == "with_reasons":
                line += f" | stated reason: {reason or '(none)'}"
            slate.append(line)
        if reverse:
            slate.reverse()
        blocks: list[tuple[str, str]] = []
        if case.context:
            blocks.append(("user_request", case.context))
        if case.history and c.name != "slate_variety":
            recent = [self.catalog.describe(h) for h in case.history[-self.config.history_items :]]
            blocks.append(("user_history", numbered(recent)))
        blocks.append(("recommended", numbered(slate)))
        return judge_prompt(blocks, c.question)

    def _llm_scores(self, c: CriterionSpec, case: JudgeCase) -> tuple[float, float | None]:
        assert self.scorer is not None
        first = self.scorer.p_yes(self.llm_prompt(c, case))
        second = self.scorer.p_yes(self.llm_prompt(c, case, reverse=True)) if self.config.swap else None
        return first, second


def record(store: TraceStore, judgments: Iterable[Judgment]) -> list[str]:
    """Store each judgment as an evaluation of its blamed span; returns the evaluation ids."""
    return [
        store.add_evaluation(
            j.span_id,
            j.criterion,
            score=j.score,
            label=j.label,
            explanation=j.rationale,
            evaluator=j.evaluator,
            attributes=j.attributes(),
        )
        for j in judgments
    ]
