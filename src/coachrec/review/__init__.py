"""Human review: the queue of cases the teacher is unsure or negative about, annotations, and
versioned golden sets whose cases keep their provenance.

    review = ReviewStore()                     # traces.review.duckdb beside the default trace store
    review.enqueue(judgments, cases, review_below=0.5, audit_rate=0.05)
    review.annotate(item_id, "correct", label="pass", note="the cited film is in the history")
    review.publish("default")                  # golden set version n+1, immutable
"""

from coachrec.review.store import (
    GoldenCase,
    GoldenSetInfo,
    ReviewError,
    ReviewItem,
    ReviewStore,
    default_review_path,
    golden_quality,
    review_path_for,
)

__all__ = [
    "GoldenCase",
    "GoldenSetInfo",
    "ReviewError",
    "ReviewItem",
    "ReviewStore",
    "default_review_path",
    "golden_quality",
    "review_path_for",
]
