"""Review-side views over `ReviewStore`: per-reviewer progress, conflicts between reviewers,
and the diff of a golden-set version against the one before it."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

from coachrec.review import GoldenCase, ReviewItem, ReviewStore

REVIEWED = ("accepted", "corrected", "skipped")


def reviewer_progress(store: ReviewStore) -> list[dict[str, Any]]:
    """Per reviewer: items accepted, corrected, skipped, and how often they overturned the judge."""
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for status in REVIEWED:
        for item in store.items(status=status):
            counts[item.reviewer or "anonymous"][status] += 1
    rows = []
    for reviewer, c in sorted(counts.items()):
        labelled = c["accepted"] + c["corrected"]
        rows.append(
            {
                "reviewer": reviewer,
                "accepted": c["accepted"],
                "corrected": c["corrected"],
                "skipped": c["skipped"],
                "reviewed": sum(c.values()),
                "overturn_rate": c["corrected"] / labelled if labelled else None,
            }
        )
    return rows


def conflicts(store: ReviewStore) -> list[dict[str, Any]]:
    """Cases (trace, criterion) that two or more reviewers labelled differently (queued once per
    judge version, so one case can be reviewed several times)."""
    by_case: dict[tuple[str, str], list[ReviewItem]] = defaultdict(list)
    for status in ("accepted", "corrected"):
        for item in store.items(status=status):
            by_case[(item.trace_id, item.criterion)].append(item)
    out = []
    for (trace_id, criterion), items in sorted(by_case.items()):
        labels = {i.human_label for i in items}
        reviewers = {i.reviewer for i in items}
        if len(labels) > 1 and len(reviewers) > 1:
            out.append(
                {
                    "trace_id": trace_id,
                    "criterion": criterion,
                    "labels": [
                        {"reviewer": i.reviewer, "label": i.human_label, "note": i.note, "item_id": i.item_id}
                        for i in sorted(items, key=lambda i: i.reviewed_ns or 0)
                    ],
                }
            )
    return out


@dataclass
class GoldenDiff:
    set_name: str
    version: int
    previous: int | None
    added: list[GoldenCase]
    removed: list[GoldenCase]
    relabelled: list[tuple[GoldenCase, GoldenCase]]
    """(previous, this version) pairs whose label changed."""
    unchanged: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "set_name": self.set_name,
            "version": self.version,
            "previous": self.previous,
            "added": [c.to_dict() for c in self.added],
            "removed": [c.to_dict() for c in self.removed],
            "relabelled": [{"before": a.to_dict(), "after": b.to_dict()} for a, b in self.relabelled],
            "unchanged": self.unchanged,
        }


def golden_diff(store: ReviewStore, set_name: str, version: int | None = None) -> GoldenDiff:
    """What `version` (default: the latest) of a golden set changed against the version before."""
    cases = store.golden_cases(set_name, version)
    this = cases[0].version
    before = store.golden_cases(set_name, this - 1) if this > 1 else []
    old = {(c.trace_id, c.criterion): c for c in before}
    new = {(c.trace_id, c.criterion): c for c in cases}
    relabelled = [(old[k], new[k]) for k in sorted(new.keys() & old.keys()) if old[k].label != new[k].label]
    return GoldenDiff(
        set_name,
        this,
        this - 1 if this > 1 else None,
        added=[new[k] for k in sorted(new.keys() - old.keys())],
        removed=[old[k] for k in sorted(old.keys() - new.keys())],
        relabelled=relabelled,
        unchanged=len(new.keys() & old.keys()) - len(relabelled),
    )
