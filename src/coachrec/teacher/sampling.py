"""Which stored traces the teacher judges: sampling policies, combined by union.

    picked = sample_traces(store, [Rate(0.05), NegativeFeedback(feedback), LatencyOutliers(0.95)])
    picked.trace_ids, picked.reasons[trace_id]   # why each trace was picked

Every policy sees the same candidate set (served recommendations in the time window) and is
deterministic given its seed, so a judged sample can be drawn again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import polars as pl

from coachrec.serve.feedback import FeedbackLog
from coachrec.teacher.cases import ROOT_SPAN
from coachrec.tracing import TraceStore
from coachrec.tracing.store import TimeLike


@dataclass
class Candidates:
    """Root spans of served recommendations: trace id, request id, start, latency, shown items."""

    frame: pl.DataFrame

    @classmethod
    def from_store(cls, store: TraceStore, since: TimeLike | None = None, until: TimeLike | None = None) -> Candidates:
        store.flush()
        table = store.spans(
            name=ROOT_SPAN, since=since, until=until, columns=["trace_id", "request_id", "start_ns", "end_ns", "output"]
        )
        frame = pl.from_arrow(table)
        assert isinstance(frame, pl.DataFrame)
        items = [list((json.loads(o) or {}).get("items") or []) if o else [] for o in frame["output"].to_list()]
        return cls(
            frame.with_columns(
                (pl.col("end_ns") - pl.col("start_ns")).alias("latency_ns"),
                pl.Series("items", items, dtype=pl.List(pl.Utf8)),
            )
            .drop("output")
            .sort(["start_ns", "trace_id"])
        )


class SamplingPolicy(Protocol):
    @property
    def name(self) -> str: ...

    def select(self, candidates: Candidates, store: TraceStore) -> list[str]: ...


def _unit_hash(text: str) -> float:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2**64


@dataclass(frozen=True)
class Rate:
    """Each trace independently with probability `rate` (a hash of its id: stable across runs)."""

    rate: float
    seed: int = 0
    name: str = "rate"

    def __post_init__(self) -> None:
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"sampling rate must be in [0, 1], got {self.rate}")

    def select(self, candidates: Candidates, store: TraceStore) -> list[str]:
        return [t for t in candidates.frame["trace_id"].to_list() if _unit_hash(f"{self.seed}:{t}") < self.rate]


@dataclass(frozen=True)
class NegativeFeedback:
    """Every trace whose request got a thumbs-down, a rating <= `max_rating` or a watch below
    `min_watch`."""

    feedback: FeedbackLog
    max_rating: float = 2.5
    min_watch: float = 0.2
    name: str = "negative-feedback"

    def select(self, candidates: Candidates, store: TraceStore) -> list[str]:
        events = pl.from_arrow(self.feedback.events())
        assert isinstance(events, pl.DataFrame)
        if events.height == 0:
            return []
        bad = (
            events.filter(
                (pl.col("kind") == "thumbs_down")
                | ((pl.col("kind") == "rating") & (pl.col("value") <= self.max_rating))
                | ((pl.col("kind") == "watch") & (pl.col("value") < self.min_watch))
            )["request_id"]
            .unique()
            .to_list()
        )
        return candidates.frame.filter(pl.col("request_id").is_in(bad))["trace_id"].to_list()


@dataclass(frozen=True)
class LatencyOutliers:
    """Traces at or above the `quantile` of request latency in the window."""

    quantile: float = 0.95
    name: str = "latency"

    def select(self, candidates: Candidates, store: TraceStore) -> list[str]:
        f = candidates.frame
        if f.height == 0:
            return []
        cut = float(np.quantile(f["latency_ns"].to_numpy(), self.quantile))
        return f.filter(pl.col("latency_ns") >= cut)["trace_id"].to_list()


@dataclass(frozen=True)
class NewItems:
    """Traces showing at least one item outside `known_items` (items new since the models' data)."""

    known_items: frozenset[str]
    name: str = "new-items"

    def select(self, candidates: Candidates, store: TraceStore) -> list[str]:
        f = candidates.frame
        return [
            t
            for t, items in zip(f["trace_id"].to_list(), f["items"].to_list(), strict=False)
            if any(i not in self.known_items for i in items)
        ]


@dataclass(frozen=True)
class ByFailureMode:
    """Up to `per_mode` traces per failure mode already found (stratified, seeded), so rare
    modes get judged again as often as common ones."""

    per_mode: int = 5
    seed: int = 0
    name: str = "by-failure-mode"

    def select(self, candidates: Candidates, store: TraceStore) -> list[str]:
        allowed = set(candidates.frame["trace_id"].to_list())
        by_mode: dict[str, list[str]] = {}
        for row in store.evaluations().select(["trace_id", "attributes"]).to_pylist():
            modes = (json.loads(row["attributes"]) if row["attributes"] else {}).get("failure_modes") or []
            for mode in modes:
                if row["trace_id"] in allowed:
                    by_mode.setdefault(mode, []).append(row["trace_id"])
        rng = np.random.default_rng(self.seed)
        out: list[str] = []
        for mode in sorted(by_mode):
            traces = sorted(set(by_mode[mode]))
            take = rng.permutation(len(traces))[: self.per_mode]
            out.extend(traces[i] for i in sorted(take))
        return out


@dataclass
class Sample:
    trace_ids: list[str]
    reasons: dict[str, list[str]] = field(default_factory=dict)
    candidates: int = 0


def sample_traces(
    store: TraceStore,
    policies: Sequence[SamplingPolicy],
    *,
    since: TimeLike | None = None,
    until: TimeLike | None = None,
    limit: int | None = None,
    skip: Iterable[str] = (),
) -> Sample:
    """The union of what each policy picks, oldest first, minus `skip` (e.g. traces already
    judged by this judge version), at most `limit` traces."""
    if not policies:
        raise ValueError("sample_traces needs at least one sampling policy")
    candidates = Candidates.from_store(store, since, until)
    skipped = set(skip)
    reasons: dict[str, list[str]] = {}
    for policy in policies:
        for trace_id in policy.select(candidates, store):
            if trace_id not in skipped:
                reasons.setdefault(trace_id, []).append(policy.name)
    order = {t: i for i, t in enumerate(candidates.frame["trace_id"].to_list())}
    ids = sorted(reasons, key=lambda t: order.get(t, len(order)))
    if limit is not None:
        ids = ids[:limit]
    return Sample(ids, {t: reasons[t] for t in ids}, candidates.frame.height)


def judged_traces(store: TraceStore, judge_version: str) -> set[str]:
    """Traces that already have an evaluation from this judge version."""
    out = set()
    for row in store.evaluations().select(["trace_id", "attributes"]).to_pylist():
        if row["attributes"] and json.loads(row["attributes"]).get("judge_version") == judge_version:
            out.add(row["trace_id"])
    return out
