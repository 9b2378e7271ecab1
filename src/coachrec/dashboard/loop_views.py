"""Loop-side views: failure modes over time (per mode and per blamed span), the judge's trust
per criterion, the registry's versions with their gate reports, and latency and cost per tier
over time, read from the stores (`cost_report`, `Registry`, `ReviewStore` golden sets; failure
modes in SQL, counted as `teacher.failure_report` counts them) with the bucketing the charts need."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from coachrec.coach.registry import Registry, RegistryError
from coachrec.dashboard.traces import rows
from coachrec.llm.cost import ROUTER_ATTRIBUTE, cost_report
from coachrec.review import ReviewError, ReviewStore
from coachrec.teacher import load_rubric, measure
from coachrec.teacher.judgment import PASS
from coachrec.teacher.quality import MIN_CASES
from coachrec.tracing import TraceStore

NICE_BUCKETS_S = (60, 300, 900, 3600, 3 * 3600, 6 * 3600, 86400, 7 * 86400, 30 * 86400)


def bucket_width(store: TraceStore, buckets: int = 40) -> int:
    """A bucket width in nanoseconds that splits the stored time range into about `buckets` parts."""
    row = rows(store, "SELECT min(start_ns), max(start_ns) FROM spans WHERE parent_span_id IS NULL")[0]
    if row[0] is None:
        return NICE_BUCKETS_S[3] * 10**9
    span_s = max(1.0, (int(row[1]) - int(row[0])) / 1e9)
    width = next((w for w in NICE_BUCKETS_S if span_s / w <= buckets), NICE_BUCKETS_S[-1])
    return width * 10**9


JUDGED = "contains(attributes, '\"judge_version\"')"
"""Verdicts of the teacher (its evaluations carry a judge version; guardrail checks do not)."""


def failure_trends(store: TraceStore, *, examples: int = 5) -> dict[str, Any]:
    """Failure modes (most frequent first): traces failing each, traces judged on its criterion,
    the most blamed span, the lowest-scoring rationale, examples, and per time bucket the rate
    and the failing traces per blamed span.

    The same counts as `teacher.failure_report`, in SQL: that one decodes every verdict in
    Python (about a minute on 100k traces here), this one only the failing ones (seconds)."""
    width = bucket_width(store)
    judged = dict(rows(store, f"SELECT name, count(DISTINCT trace_id) FROM evaluations WHERE {JUDGED} GROUP BY name"))
    versions = rows(
        store,
        f"SELECT DISTINCT json_extract_string(attributes, '$.judge_version') AS v FROM evaluations WHERE {JUDGED} "
        "ORDER BY v",
    )
    total = rows(store, f"SELECT count(DISTINCT trace_id) FROM evaluations WHERE {JUDGED}")[0][0]
    fails = f"""
        WITH f AS (
            SELECT e.trace_id, e.name AS criterion, e.score, e.explanation,
                   unnest(CAST(json_extract(e.attributes, '$.failure_modes') AS VARCHAR[])) AS mode,
                   coalesce(json_extract_string(e.attributes, '$.span_kind'), '?') || ':' ||
                   coalesce(json_extract_string(e.attributes, '$.span_name'), '?') AS span
            FROM evaluations e WHERE e.label = 'fail' AND {JUDGED.replace("attributes", "e.attributes")}
        ), b AS (
            SELECT f.*, (r.start_ns // ?) * ? AS bucket
            FROM f JOIN spans r ON r.trace_id = f.trace_id AND r.parent_span_id IS NULL
        )"""
    modes = rows(
        store,
        fails
        + """
        SELECT mode, criterion, count(DISTINCT trace_id), mode(span), arg_min(explanation, score),
               (list(trace_id ORDER BY score, trace_id))[1:?]
        FROM f GROUP BY ALL ORDER BY 3 DESC, 1""",
        [width, width, examples],
    )
    per_bucket = rows(
        store, fails + " SELECT mode, bucket, count(DISTINCT trace_id) FROM b GROUP BY ALL", [width, width]
    )
    per_span = rows(
        store, fails + " SELECT mode, span, bucket, count(DISTINCT trace_id) FROM b GROUP BY ALL", [width, width]
    )
    judged_per_bucket = rows(
        store,
        f"""SELECT e.name, (r.start_ns // ?) * ? AS bucket, count(DISTINCT e.trace_id)
            FROM evaluations e JOIN spans r ON r.trace_id = e.trace_id AND r.parent_span_id IS NULL
            WHERE {JUDGED.replace("attributes", "e.attributes")} GROUP BY ALL""",
        [width, width],
    )
    judged_at = {(str(c), int(b)): int(n) for c, b, n in judged_per_bucket}
    failed_at: dict[str, dict[int, int]] = {}
    for mode, bucket, n in per_bucket:
        failed_at.setdefault(str(mode), {})[int(bucket)] = int(n)
    spans: dict[str, dict[str, list[tuple[int, int]]]] = {}
    for mode, span, bucket, n in sorted(per_span):
        spans.setdefault(str(mode), {}).setdefault(str(span), []).append((int(bucket), int(n)))
    out = []
    for mode, criterion, count, span, why, example_ids in modes:
        buckets = sorted(b for c, b in judged_at if c == criterion)
        over_time = []
        for b in buckets:
            f, j = failed_at.get(str(mode), {}).get(b, 0), judged_at[(str(criterion), b)]
            over_time.append({"bucket_ns": b, "failed": f, "judged": j, "rate": f / j if j else None})
        n_judged = int(judged.get(criterion, 0))
        out.append(
            {
                "name": str(mode),
                "criterion": str(criterion),
                "count": int(count),
                "judged": n_judged,
                "rate": int(count) / n_judged if n_judged else 0.0,
                "span": str(span),
                "why": str(why or ""),
                "examples": [str(t) for t in example_ids],
                "over_time": over_time,
                "by_span": [
                    {"span": name, "points": [{"bucket_ns": b, "failed": n} for b, n in points]}
                    for name, points in sorted(spans.get(str(mode), {}).items())
                ],
            }
        )
    return {
        "bucket_s": width // 10**9,
        "judged_traces": int(total or 0),
        "judge_versions": [str(v) for (v,) in versions if v],
        "modes": out,
    }


def judge_trust(review: ReviewStore | None, registry: Registry | None) -> list[dict[str, Any]]:
    """The judge's trust per criterion: kappa with a bootstrap CI by user on the newest version of
    each golden set, and what the latest gate report recorded (its member and reason)."""
    rows: list[dict[str, Any]] = []
    rubric = load_rubric()
    if review is not None:
        for info in _latest_sets(review):
            cases = review.golden_cases(info.set_name, info.version)
            by_criterion: dict[str, list[Any]] = {}
            for c in cases:
                by_criterion.setdefault(c.criterion, []).append(c)
            for criterion, group in sorted(by_criterion.items()):
                users = [str((c.provenance.get("case") or {}).get("user_id") or c.trace_id) for c in group]
                q = measure(
                    criterion,
                    str(group[0].provenance.get("judge_version")),
                    [c.judge_label == PASS for c in group],
                    [c.label == PASS for c in group],
                    kappa_floor=rubric.kappa_floor,
                    groups=users,
                    unit="slate",
                    protocol=f"golden set {info.set_name} v{info.version}, bootstrap CI by user",
                )
                rows.append(
                    {
                        "criterion": criterion,
                        "source": f"golden {info.set_name} v{info.version}",
                        "n": q.n,
                        # fewer cases than MIN_CASES: a kappa and CI that would mean nothing are not shown
                        "kappa": None if q.n < MIN_CASES or math.isnan(q.kappa) else q.kappa,
                        "ci": q.kappa_ci
                        if q.n >= MIN_CASES and q.kappa_ci and all(map(math.isfinite, q.kappa_ci))
                        else None,
                        "may_gate": q.may_gate,
                        "why": q.reason() if q.n >= MIN_CASES else f"only {q.n} human-labelled slates (< {MIN_CASES})",
                    }
                )
    gate = latest_gate(registry)
    if gate is not None:
        for t in gate.get("trust") or []:
            rows.append(
                {
                    "criterion": t.get("criterion"),
                    "source": f"gate of {gate.get('candidate')} ({t.get('member')})",
                    "n": t.get("n"),
                    "kappa": t.get("kappa"),
                    "ci": None,
                    "may_gate": t.get("may_gate"),
                    "why": t.get("why"),
                }
            )
    return rows


def _latest_sets(review: ReviewStore) -> list[Any]:
    latest: dict[str, Any] = {}
    for info in review.golden_sets():
        latest[info.set_name] = info
    return list(latest.values())


def latest_gate(registry: Registry | None) -> dict[str, Any] | None:
    if registry is None:
        return None
    try:
        versions = registry.versions()
    except RegistryError:
        return None
    gated = [v for v in versions if v.gate]
    return gated[-1].gate if gated else None


@dataclass
class VersionRow:
    id: str
    created: str
    description: str
    dataset: str
    parent: str | None
    champion: bool
    gate: dict[str, Any] | None
    metrics: dict[str, Any]
    models: list[str]


def registry_view(registry: Registry) -> dict[str, Any]:
    """Versions (newest first) with their gate reports, the champion and the event history."""
    champion = registry.champion
    versions = [
        VersionRow(
            v.id,
            v.created,
            v.description,
            v.dataset,
            v.parent,
            v.id == champion,
            v.gate,
            v.metrics,
            list(v.config.get("models") or []),
        )
        for v in reversed(registry.versions())
    ]
    return {
        "root": str(registry.root),
        "champion": champion,
        "versions": [v.__dict__ for v in versions],
        "events": list(reversed(registry.events())),
    }


def tier_trends(store: TraceStore) -> dict[str, Any]:
    """Per time bucket and router tier: requests, latency p50/p95 and cost; plus the totals per
    LLM tier from `cost_report`."""
    width = bucket_width(store)
    found = rows(
        store,
        f"""
            WITH t AS (
                SELECT trace_id, min(start_ns) AS start_ns, max(end_ns) - min(start_ns) AS duration_ns,
                       coalesce(sum(cost), 0) AS cost,
                       coalesce(sum(input_tokens), 0) + coalesce(sum(output_tokens), 0) AS tokens,
                       any_value(json_extract_string(attributes, '$."{ROUTER_ATTRIBUTE}"'))
                           FILTER (WHERE kind = 'RERANKER') AS tier
                FROM spans GROUP BY trace_id
            )
            SELECT (start_ns // ?) * ? AS bucket, coalesce(tier, 'no LLM') AS tier, count(*),
                   quantile_cont(duration_ns, 0.5) / 1e6, quantile_cont(duration_ns, 0.95) / 1e6,
                   sum(cost), sum(tokens)
            FROM t GROUP BY ALL ORDER BY bucket, tier
        """,
        [width, width],
    )
    series: dict[str, list[dict[str, Any]]] = {}
    for bucket, tier, n, p50, p95, cost, tokens in found:
        series.setdefault(str(tier), []).append(
            {
                "bucket_ns": int(bucket),
                "requests": int(n),
                "p50_ms": float(p50),
                "p95_ms": float(p95),
                "cost": float(cost),
                "tokens": int(tokens),
            }
        )
    return {
        "bucket_s": width // 10**9,
        "series": series,
        "llm_tiers": [r.as_dict() for r in cost_report(store)],
    }


def golden_sets(review: ReviewStore) -> list[dict[str, Any]]:
    """Golden set versions, newest first."""
    try:
        return [s.__dict__ for s in reversed(review.golden_sets())]
    except ReviewError:
        return []
