"""Learned rankers: what orders a request's candidates once the retrievers have proposed them.

Pure numpy over the candidate set (no serving or tracing types): `ItemStats` and
`candidate_features` describe each (request, candidate) pair, `Student` is a logistic ranker
fitted to soft labels (the teacher's verdicts, distilled by `coachrec.coach`). The serving
stage that applies them is `coachrec.serve.LearnedRanker`. `coachrec.ranking.pal` (torch) learns
pCTR from logged clicks with a position tower (PAL); import it from there.
"""

from coachrec.ranking.features import ItemStats, candidate_features, feature_names
from coachrec.ranking.student import Student

__all__ = ["ItemStats", "Student", "candidate_features", "feature_names"]
