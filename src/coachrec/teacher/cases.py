"""Judge cases: what the teacher needs to know about one served request, read from its trace.

`cases_from_store(store, trace_ids)` turns stored traces of `serve.Pipeline` requests into
`JudgeCase`s. The adapter reads the span layout as the pipeline writes it today:

- the root CHAIN span (`recommend`): input = the request (user, anonymous history, k,
  constraints, free-text context), output = the shown items and scores;
- `retrieve.<name>` RETRIEVER spans: input.history = the user's last 50 items (oldest first);
- `policy.constraints` (POLICY): attributes `dropped.forbidden` / `dropped.duplicate`;
- `guardrail` (GUARDRAIL): attributes `dropped` and `violations`;
- `explain` (TOOL): output.reasons, one per shown item.

Every span is kept by name and kind so a criterion can point its blame at the span it accuses.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from coachrec.tracing import SpanRecord, TraceStore

ROOT_SPAN = "recommend"


@dataclass(frozen=True)
class SpanRef:
    span_id: str
    name: str
    kind: str


@dataclass
class JudgeCase:
    """One served request as the teacher sees it. Item lists hold raw item ids."""

    trace_id: str
    request_id: str | None
    user_id: str | None
    start_ns: int
    latency_ns: int
    k: int
    items: list[str]
    scores: list[float]
    reasons: list[str]
    explored: list[bool]
    history: list[str]
    """The user's recent history as the retrievers saw it (oldest first)."""
    constraints: dict[str, Any]
    context: str | None
    """The request's free text; a conversation reads as its turns, one `speaker: text` a line."""
    retrievers: list[str]
    spans: list[SpanRef]
    policy_drops: dict[str, int] = field(default_factory=dict)
    guardrail_violations: list[dict[str, Any]] = field(default_factory=list)
    note: str | None = None

    def span_for(self, kind: str, name: str | None = None) -> SpanRef:
        """The span a criterion blames: by exact name if present, else the first of its kind,
        else the root span (a trace from another pipeline may lack the stage)."""
        if name is not None:
            for s in self.spans:
                if s.name == name:
                    return s
        for s in self.spans:
            if s.kind == kind:
                return s
        return self.root

    @property
    def root(self) -> SpanRef:
        for s in self.spans:
            if s.name == ROOT_SPAN or s.kind == "CHAIN":
                return s
        return self.spans[0]

    def summary(self) -> dict[str, Any]:
        """A JSON-ready snapshot (for the review queue and golden-set provenance)."""
        return {
            "trace_id": self.trace_id,
            "request_id": self.request_id,
            "user_id": self.user_id,
            "k": self.k,
            "items": self.items,
            "reasons": self.reasons,
            "history_tail": self.history[-10:],
            "constraints": self.constraints,
            "context": self.context,
            "retrievers": self.retrievers,
        }


class TraceLayoutError(ValueError):
    """A trace does not have the span layout of a served recommendation."""


def _json(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def case_from_spans(spans: Sequence[SpanRecord]) -> JudgeCase:
    """One case from the spans of one trace (any order)."""
    if not spans:
        raise TraceLayoutError("empty trace")
    trace_id = spans[0].trace_id
    roots = [s for s in spans if s.parent_span_id is None]
    if not roots or roots[0].name != ROOT_SPAN:
        raise TraceLayoutError(f"trace {trace_id}: no root span named {ROOT_SPAN!r}; not a served recommendation")
    root = roots[0]
    request = _json(root.input) or {}
    output = _json(root.output) or {}
    by_name = {s.name: s for s in spans}
    history: list[str] = list(request.get("history") or [])
    retrievers: list[str] = []
    for s in sorted(spans, key=lambda s: s.start_ns):
        if s.kind == "RETRIEVER" and s.name.startswith("retrieve."):
            retrievers.append(s.name.split(".", 1)[1])
            seen = (_json(s.input) or {}).get("history")
            if seen is not None and len(seen) > len(history):
                history = list(seen)
    explain = _json(by_name["explain"].output) if "explain" in by_name else None
    items = list(output.get("items") or [])
    reasons = list((explain or {}).get("reasons") or [])
    explored = list((explain or {}).get("explored") or [False] * len(items))
    policy = by_name.get("policy.constraints")
    drops = {
        k.split(".", 1)[1]: int(v)
        for k, v in (policy.attribute_dict() if policy else {}).items()
        if k.startswith("dropped.")
    }
    guard = by_name.get("guardrail")
    violations = list((guard.attribute_dict() if guard else {}).get("violations") or [])
    ordered = sorted(spans, key=lambda s: (s.start_ns, s.span_id))
    return JudgeCase(
        trace_id=trace_id,
        request_id=root.request_id,
        user_id=root.user_id,
        start_ns=root.start_ns,
        latency_ns=root.end_ns - root.start_ns,
        k=int(request.get("k") or len(items)),
        items=[str(i) for i in items],
        scores=[float(x) for x in output.get("scores") or []],
        reasons=[str(r) for r in reasons] if len(reasons) == len(items) else [""] * len(items),
        explored=[bool(e) for e in explored] if len(explored) == len(items) else [False] * len(items),
        history=[str(h) for h in history],
        constraints=dict(request.get("constraints") or {}),
        context=context_text(request.get("context")),
        retrievers=retrievers,
        spans=[SpanRef(s.span_id, s.name, s.kind) for s in ordered],
        policy_drops=drops,
        guardrail_violations=violations,
        note=output.get("note"),
    )


def cases_from_store(store: TraceStore, trace_ids: Iterable[str], *, skip_foreign: bool = True) -> list[JudgeCase]:
    """Cases for the given traces, in the given order. Traces that are not served
    recommendations are skipped (or raise with `skip_foreign=False`)."""
    cases = []
    for trace_id in trace_ids:
        spans = store.trace(trace_id)
        if not spans:
            raise KeyError(f"no trace {trace_id!r} in {store.path}")
        try:
            cases.append(case_from_spans(spans))
        except TraceLayoutError:
            if not skip_foreign:
                raise
    return cases


def context_text(context: Any) -> str | None:
    """A traced request context as the teacher reads it: free text as is, a conversation (a
    list of `{"speaker", "text"}` turns) as one `speaker: text` line per turn."""
    if context is None or isinstance(context, str):
        return context
    lines = [f"{t.get('speaker', 'user')}: {t.get('text', '')}" for t in context if isinstance(t, dict)]
    return "\n".join(lines) or None
