"""Serve replayed requests through a stack's traced pipeline and judge them.

Every request of a run goes through the real `serve.Pipeline` into a trace store, and the
teacher reads the cases back from the traces (as it would in production), so what the gate
compares is what users would have been shown, policy and guardrail included.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from coachrec.serve import RecommendRequest, Stack
from coachrec.teacher import Judge, JudgeCase, Judgment, cases_from_store
from coachrec.tracing import Tracer, TraceStore

Progress = Callable[[int, int], None]


@dataclass
class Served:
    trace_ids: list[str]
    cases: list[JudgeCase]
    latency_ms: np.ndarray
    """Wall-clock latency of each request, pipeline only (traced)."""


def serve(
    stack: Stack, requests: Sequence[RecommendRequest], store: TraceStore, progress: Progress | None = None
) -> Served:
    """Serve `requests` (in order) through `stack`'s pipeline with full tracing into `store`;
    cases align with `requests`."""
    pipeline = stack.pipeline(Tracer(store))
    trace_ids, latency = [], []
    try:
        for n, request in enumerate(requests, 1):
            t0 = time.perf_counter()
            result = pipeline.recommend(request)
            latency.append((time.perf_counter() - t0) * 1000)
            if result.trace_id is None:
                raise RuntimeError("a replayed request was sampled out of tracing; the coach needs every trace")
            trace_ids.append(result.trace_id)
            if progress is not None:
                progress(n, len(requests))
    finally:
        pipeline.close()
    store.flush()
    return Served(trace_ids, cases_from_store(store, trace_ids, skip_foreign=False), np.asarray(latency))


def request_key(request: RecommendRequest) -> str:
    """What makes two requests the same request: user, history, k, constraints, context."""
    return json.dumps({**request.to_trace(), "user_id": request.user_id}, sort_keys=True, default=str)


def failures_by_mode(
    judge: Judge,
    cases: Sequence[JudgeCase],
    judgments: Sequence[Judgment],
    *,
    per_item: set[str] | frozenset[str] = frozenset(),
) -> dict[str, np.ndarray]:
    """Per failure mode, a float array over `cases`: 1 = the mode fired, 0 = judged and clear,
    NaN = the emitting criterion did not apply to the case (e.g. no free-text request) or could
    not judge it (`unknown`: counted by `unknown_by_criterion`, never as a pass)."""
    position = {c.trace_id: i for i, c in enumerate(cases)}
    out: dict[str, np.ndarray] = {}
    for criterion in judge.criteria:
        for mode in criterion.failure_modes:
            out[mode] = np.full(len(cases), np.nan)
    for j in judgments:
        spec = next(c for c in judge.criteria if c.name == j.criterion)
        if j.unknown:
            continue
        for mode in spec.failure_modes:
            # a criterion judged per shown item (its trust is measured per pair) counts the share
            # of shown items that fail; the others count the slate
            value = 1.0 - j.score if j.criterion in per_item else float(mode in j.failure_modes)
            out[mode][position[j.trace_id]] = value
    return out


def unknown_by_criterion(cases: Sequence[JudgeCase], judgments: Sequence[Judgment]) -> dict[str, np.ndarray]:
    """Per criterion, a float array over `cases`: 1 where its member could not judge the slate,
    0 where it judged, NaN where it did not apply."""
    position = {c.trace_id: i for i, c in enumerate(cases)}
    out: dict[str, np.ndarray] = {}
    for j in judgments:
        row = out.setdefault(j.criterion, np.full(len(cases), np.nan))
        row[position[j.trace_id]] = float(j.unknown)
    return out


def mode_criterion(judge: Judge) -> dict[str, str]:
    return {mode: c.name for c in judge.criteria for mode in c.failure_modes}
