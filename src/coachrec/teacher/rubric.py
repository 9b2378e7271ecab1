"""Rubrics: declarative criteria the teacher judges a served request against.

A rubric is YAML validated by pydantic. Each criterion names the committee member that scores
it (`program`: an exact check; `recommender`: the heavier relevance model; `llm`: a yes/no
question answered from next-token logits), the span it blames when it fails, and the
failure-mode tags it then emits. Every score is in [0, 1], higher is better, and a criterion
passes when its score reaches `pass_threshold`.

    rubric = load_rubric()              # the default rubric for item recommendation
    rubric = load_rubric("my.yaml")     # or your own
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from coachrec.tracing import SpanKind

Member = Literal["program", "recommender", "llm"]
AppliesTo = Literal["all", "with_context", "with_reasons"]

PROGRAM_CHECKS = (
    "constraint_adherence",
    "no_duplicates",
    "not_consumed",
    "slate_complete",
    "upstream_constraint_leak",
    "explanation_grounding",
)
LLM_MODES = ("listwise",)


class CriterionSpec(BaseModel):
    """One criterion. `check` names the program check (program members only); `question` is
    what the LLM is asked (llm members only; the slate and request are given as fenced data)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, pattern=r"^[a-z][a-z0-9_]*$")
    description: str
    member: Member
    check: str | None = None
    question: str | None = None
    blames: SpanKind
    blames_span: str | None = None
    """A span name to blame (e.g. `policy.diversity`); the first span of kind `blames` otherwise."""
    failure_modes: tuple[str, ...] = Field(min_length=1)
    pass_threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    item_threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    """Recommender members: an item with P(relevant) below this counts as irrelevant."""
    applies_to: AppliesTo = "all"

    @model_validator(mode="after")
    def _member_fields(self) -> CriterionSpec:
        if self.member == "program":
            if self.check not in PROGRAM_CHECKS:
                raise ValueError(f"criterion {self.name!r}: check must be one of {PROGRAM_CHECKS}, got {self.check!r}")
        elif self.check is not None:
            raise ValueError(f"criterion {self.name!r}: only program criteria take a `check`")
        if self.member == "llm" and not self.question:
            raise ValueError(f"criterion {self.name!r}: an llm criterion needs a `question`")
        return self


class RubricSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    version: int = Field(ge=1)
    kappa_floor: float = Field(default=0.4, ge=-1.0, le=1.0)
    """A criterion whose judge has Cohen's kappa below this against human labels may report but
    may not gate or be distilled."""
    review_below: float = Field(default=0.5, ge=0.0, le=1.0)
    """Judgments scoring below this enter the review queue (as do swap disagreements)."""
    criteria: tuple[CriterionSpec, ...] = Field(min_length=1)

    @field_validator("criteria")
    @classmethod
    def _unique(cls, criteria: tuple[CriterionSpec, ...]) -> tuple[CriterionSpec, ...]:
        names = [c.name for c in criteria]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"criterion names must be unique; repeated: {dupes}")
        return criteria

    def criterion(self, name: str) -> CriterionSpec:
        for c in self.criteria:
            if c.name == name:
                return c
        raise KeyError(f"rubric {self.name!r} has no criterion {name!r}; it has {[c.name for c in self.criteria]}")

    def fingerprint(self) -> str:
        """A short hash of the rubric's content: part of the judge version."""
        blob = self.model_dump_json().encode()
        return hashlib.sha256(blob).hexdigest()[:10]


DEFAULT_RUBRIC_YAML = """
name: item-recommendation
version: 1
kappa_floor: 0.4
review_below: 0.5
criteria:
  - name: constraint_adherence
    description: Every shown item satisfies the request's hard constraints (genres, ranges, exclusions).
    member: program
    check: constraint_adherence
    blames: GUARDRAIL
    failure_modes: [constraint_leak]
    pass_threshold: 1.0
  - name: no_duplicates
    description: No item is shown twice in one slate.
    member: program
    check: no_duplicates
    blames: GUARDRAIL
    failure_modes: [duplicate_item]
    pass_threshold: 1.0
  - name: not_consumed
    description: No shown item is one the user already consumed (unless the request allows it).
    member: program
    check: not_consumed
    blames: POLICY
    blames_span: policy.constraints
    failure_modes: [already_consumed]
    pass_threshold: 1.0
  - name: slate_complete
    description: The slate holds the k items asked for.
    member: program
    check: slate_complete
    blames: RETRIEVER
    failure_modes: [short_slate]
    pass_threshold: 1.0
  - name: upstream_constraint_leak
    description: Retrievers propose only allowed items, so neither the policy filter nor the guardrail has to drop any.
    member: program
    check: upstream_constraint_leak
    blames: RETRIEVER
    failure_modes: [retriever_proposed_forbidden]
    pass_threshold: 1.0
  - name: explanation_grounding
    description: An explanation citing a history item ("similar to X") cites an item the user really has in their
      history.
    member: program
    check: explanation_grounding
    blames: TOOL
    blames_span: explain
    failure_modes: [ungrounded_explanation]
    pass_threshold: 1.0
    applies_to: with_reasons
  - name: relevance
    description: The shown items are ones this user would like (P(rating >= 4) from the relevance committee).
    member: recommender
    blames: RANKER
    failure_modes: [irrelevant_items]
    pass_threshold: 0.5
    item_threshold: 0.5
  - name: request_match
    description: The slate matches the user's free-text request.
    member: llm
    question: Do these recommended movies match what the user asked for in their request?
    blames: RANKER
    failure_modes: [ignores_request]
    applies_to: with_context
  - name: explanation_faithfulness
    description: Each stated reason is true of its item (an item said to be similar to X really resembles X).
    member: llm
    question: Is every stated reason accurate, that is, does each recommended movie really resemble the movie its
      reason names (or really fit the reason given)?
    blames: TOOL
    blames_span: explain
    failure_modes: [unfaithful_explanation]
    applies_to: with_reasons
  - name: slate_variety
    description: The slate is varied rather than many near-identical items.
    member: llm
    question: Is this list of recommended movies varied, rather than mostly the same kind of movie?
    blames: POLICY
    blames_span: policy.diversity
    failure_modes: [monotonous_slate]
"""


def parse_rubric(text: str, source: str = "<string>") -> RubricSpec:
    """A rubric from YAML text; errors name the source and the offending field."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"{source}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ValueError(f"{source}: a rubric is a YAML mapping with name, version and criteria")
    try:
        return RubricSpec.model_validate(raw)
    except Exception as exc:
        raise ValueError(f"{source}: invalid rubric: {exc}") from exc


def load_rubric(path: str | Path | None = None) -> RubricSpec:
    """The rubric at `path`, or the default rubric for item recommendation."""
    if path is None:
        return parse_rubric(DEFAULT_RUBRIC_YAML, "default rubric")
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no rubric file at {p}")
    return parse_rubric(p.read_text(), str(p))
