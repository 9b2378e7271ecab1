"""The teacher: a committee that judges served requests against a rubric, says what is wrong,
where (the span it blames) and why, and measures how far each of its criteria can be trusted.

    from coachrec.teacher import Judge, CatalogView, cases_from_store, load_rubric, record
    judge = Judge(load_rubric(), CatalogView(catalog), llm=load_backend("teacher"), relevance=committee)
    judgments = judge.judge(cases_from_store(store, trace_ids))
    record(store, judgments)                  # gen_ai.evaluation.result events on the blamed spans
    failure_report(store).modes               # what, where, why, example traces

Members: program checks (exact), a relevance committee (a heavier recommender calibrated to
real later ratings) and LLM criteria scored from next-token logits, never parsed free text.
`request_match` can be judged per shown item by a `RequestMatchCommittee` measured on human
conversations (ReDial): `committee, quality = measured_request_match(conv, links, catalog, popularity)`.
"""

from coachrec.teacher.cases import JudgeCase, cases_from_store
from coachrec.teacher.catalog_view import CatalogView
from coachrec.teacher.failures import FailureMode, FailureReport, failure_report
from coachrec.teacher.judge import Judge, JudgeConfig, record
from coachrec.teacher.judgment import Judgment
from coachrec.teacher.pairwise import PairwiseJudge
from coachrec.teacher.quality import JudgeQuality, measure
from coachrec.teacher.relevance import RelevanceCommittee, RelevanceConfig, calibrated_committee
from coachrec.teacher.request_labels import RequestLabels, request_labels
from coachrec.teacher.request_match import (
    EmbeddingMember,
    LLMMember,
    MentionMember,
    RequestMatchCommittee,
    measured_request_match,
)
from coachrec.teacher.rubric import CriterionSpec, RubricSpec, load_rubric, parse_rubric
from coachrec.teacher.sampling import (
    ByFailureMode,
    LatencyOutliers,
    NegativeFeedback,
    NewItems,
    Rate,
    SamplingPolicy,
    judged_traces,
    sample_traces,
)

__all__ = [
    "ByFailureMode",
    "CatalogView",
    "CriterionSpec",
    "EmbeddingMember",
    "FailureMode",
    "FailureReport",
    "Judge",
    "JudgeCase",
    "JudgeConfig",
    "JudgeQuality",
    "Judgment",
    "LLMMember",
    "LatencyOutliers",
    "MentionMember",
    "NegativeFeedback",
    "NewItems",
    "PairwiseJudge",
    "Rate",
    "RelevanceCommittee",
    "RelevanceConfig",
    "RequestLabels",
    "RequestMatchCommittee",
    "RubricSpec",
    "SamplingPolicy",
    "calibrated_committee",
    "cases_from_store",
    "failure_report",
    "judged_traces",
    "load_rubric",
    "measure",
    "measured_request_match",
    "parse_rubric",
    "record",
    "request_labels",
    "sample_traces",
]
