"""A judgment: one criterion's verdict on one served request, attributed to a span."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

PASS = "pass"
FAIL = "fail"
UNKNOWN = "unknown"
"""The member could not judge the case (e.g. no shown item known to the relevance committee):
neither a pass nor a fail; its score is NaN."""


@dataclass(frozen=True)
class Judgment:
    """`score` in [0, 1], higher is better; `label` is `pass`, `fail` or `unknown` (score NaN).

    LLM members judge the slate in both orders and `score` is the mean of `order_scores`
    (original, reversed), which cancels position bias; the judgment is swap-consistent when both
    orders alone would give the same label. `failure_modes` is empty on a pass.
    """

    criterion: str
    trace_id: str
    span_id: str
    span_name: str
    span_kind: str
    score: float
    label: str
    failure_modes: tuple[str, ...]
    rationale: str
    evaluator: str
    judge_version: str
    threshold: float = 0.5
    order_scores: tuple[float, float] | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def swap_consistent(self) -> bool | None:
        if self.order_scores is None:
            return None
        first, second = self.order_scores
        return (first >= self.threshold) == (second >= self.threshold)

    @property
    def failed(self) -> bool:
        return self.label == FAIL

    @property
    def unknown(self) -> bool:
        return self.label == UNKNOWN

    def attributes(self) -> dict[str, Any]:
        """What travels with the stored evaluation (and its OTLP event) besides score and label."""
        out: dict[str, Any] = {
            "failure_modes": list(self.failure_modes),
            "judge_version": self.judge_version,
            "span_name": self.span_name,
            "span_kind": self.span_kind,
        }
        if self.order_scores is not None:
            out["order_scores"] = [round(v, 6) for v in self.order_scores]
            out["swap_consistent"] = self.swap_consistent
        if self.details:
            out["details"] = self.details
        return out
