"""Pairwise judging: which of two slates for the same request is better on an LLM criterion.

Used to compare a candidate stack with the champion on the same requests. The model is asked
"A or B?" and read from next-token logits; the two slates are judged in both orders and the
verdict is the mean, so position bias cancels, and a verdict that flips with the order is
reported as inconsistent (a case for human review rather than a vote).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from coachrec.llm import LLMBackend
from coachrec.teacher.cases import JudgeCase
from coachrec.teacher.catalog_view import CatalogView
from coachrec.teacher.llm_scoring import logsumexp
from coachrec.teacher.prompts import judge_prompt, numbered
from coachrec.teacher.rubric import CriterionSpec

A_WORDS = ("A", " A")
B_WORDS = ("B", " B")
ANSWER = "Answer with one letter: A or B."


@dataclass(frozen=True)
class PairwiseVerdict:
    criterion: str
    p_first_better: float
    """P(the first slate is better), the mean over both presentation orders."""
    order_scores: tuple[float, float]

    @property
    def consistent(self) -> bool:
        return (self.order_scores[0] >= 0.5) == (self.order_scores[1] >= 0.5)

    @property
    def winner(self) -> str:
        return "first" if self.p_first_better > 0.5 else "second" if self.p_first_better < 0.5 else "tie"


class PairwiseJudge:
    def __init__(self, backend: LLMBackend, catalog: CatalogView, history_items: int = 10) -> None:
        self.backend = backend
        self.catalog = catalog
        self.history_items = history_items

    def prompt(self, criterion: CriterionSpec, shown_as_a: JudgeCase, shown_as_b: JudgeCase) -> str:
        if criterion.question is None:
            raise ValueError(f"criterion {criterion.name!r} is not an LLM criterion (no question)")
        if shown_as_a.context != shown_as_b.context or shown_as_a.user_id != shown_as_b.user_id:
            raise ValueError("pairwise judging compares two slates for the same request (same user and context)")
        blocks: list[tuple[str, str]] = []
        if shown_as_a.context:
            blocks.append(("user_request", shown_as_a.context))
        if shown_as_a.history:
            blocks.append(
                (
                    "user_history",
                    numbered([self.catalog.describe(h) for h in shown_as_a.history[-self.history_items :]]),
                )
            )
        blocks.append(("list_A", numbered([self.catalog.describe(i) for i in shown_as_a.items])))
        blocks.append(("list_B", numbered([self.catalog.describe(i) for i in shown_as_b.items])))
        question = (
            f"Consider this question about a list of recommendations: {criterion.question} Which list fits it better?"
        )
        return judge_prompt(blocks, question, ANSWER)

    def _p_a(self, prompt: str) -> float:
        scores = self.backend.next_token_logprobs(prompt, A_WORDS + B_WORDS)
        a = logsumexp([scores[w] for w in A_WORDS])
        b = logsumexp([scores[w] for w in B_WORDS])
        return 1.0 / (1.0 + math.exp(b - a))

    def compare(self, criterion: CriterionSpec, first: JudgeCase, second: JudgeCase) -> PairwiseVerdict:
        p_first_as_a = self._p_a(self.prompt(criterion, first, second))
        p_first_as_b = 1.0 - self._p_a(self.prompt(criterion, second, first))
        return PairwiseVerdict(criterion.name, (p_first_as_a + p_first_as_b) / 2, (p_first_as_a, p_first_as_b))
