"""The teacher: a committee that judges served requests against a rubric, says what is wrong,
where (the span it blames) and why, and measures how far each of its criteria can be trusted.

    from coachrec.teacher import Judge, CatalogView, cases_from_store, load_rubric, record
    judge = Judge(load_rubric(), CatalogView(catalog), llm=load_backend("teacher"), relevance=committee)
    judgments = judge.judge(cases_from_store(store, trace_ids))
    record(store, judgments)                  # gen_ai.evaluation.result events on the blamed spans
    failure_report(store).modes               # what, where, why, example traces

Members: program checks (exact), a relevance committee (a heavier recommender calibrated to
real later ratings) and LLM criteria scored from next-token logits, never parsed free text.
"""

from coachrec.teacher.cases import JudgeCase, SpanRef, TraceLayoutError, case_from_spans, cases_from_store
from coachrec.teacher.catalog_view import CatalogView, constraints_from_dict
from coachrec.teacher.failures import FailureMode, FailureReport, failure_report
from coachrec.teacher.judge import Judge, JudgeConfig, record
from coachrec.teacher.judgment import FAIL, PASS, Judgment
from coachrec.teacher.llm_scoring import JsonScorer, LogitScorer, parse_json_verdict
from coachrec.teacher.movielens import HeldOutLabels, RatedPairs, heldout_labels
from coachrec.teacher.pairwise import PairwiseJudge, PairwiseVerdict
from coachrec.teacher.quality import JudgeQuality, best_threshold, measure
from coachrec.teacher.relevance import RelevanceCommittee, RelevanceConfig, calibrated_committee, relevance_quality
from coachrec.teacher.rubric import CriterionSpec, RubricSpec, load_rubric, parse_rubric
from coachrec.teacher.sampling import (
    ByFailureMode,
    LatencyOutliers,
    NegativeFeedback,
    NewItems,
    Rate,
    Sample,
    SamplingPolicy,
    judged_traces,
    sample_traces,
)

__all__ = [
    "FAIL", "PASS", "ByFailureMode", "CatalogView", "CriterionSpec", "FailureMode", "FailureReport", "HeldOutLabels",
    "JsonScorer", "Judge", "JudgeCase", "JudgeConfig", "JudgeQuality", "Judgment", "LatencyOutliers", "LogitScorer",
    "NegativeFeedback", "NewItems", "PairwiseJudge", "PairwiseVerdict", "Rate", "RatedPairs", "RelevanceCommittee", "RelevanceConfig", "RubricSpec",
    "Sample", "SamplingPolicy", "SpanRef", "TraceLayoutError", "best_threshold", "calibrated_committee", "case_from_spans", "cases_from_store",
    "constraints_from_dict", "failure_report", "heldout_labels", "judged_traces", "load_rubric", "measure",
    "parse_json_verdict", "record", "relevance_quality", "sample_traces",
]
