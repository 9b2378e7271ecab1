"""Trace queries the dashboard needs beyond `TraceStore`: a filtered trace list with keyset
paging, one request laid out for reading (span tree, slate, feedback, verdicts), and the other
traces of the same request.

The list reads root spans only (one per trace, `parent_span_id IS NULL`), newest first, and
pages by the last row's `(start_ns, trace_id)` rather than an offset, so page 500 costs what
page 1 costs. Filters on other spans (kind, status, error text, a retriever) and on verdicts
(failure mode) are `Probe`s: checked on a chunk of the newest roots first, then semi-joined.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from coachrec.serve.feedback import FeedbackLog
from coachrec.tracing import SpanKind, SpanRecord, SpanStatus, TraceStore
from coachrec.tracing.store import to_ns

PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
SLATE_SPAN = "rank"
"""The span whose output holds each retriever's score per candidate (what the ranker blended)."""


def rows(store: TraceStore, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Every row of a read query on the store's per-thread cursor (fetched whole: a half-read
    result would block that cursor's next query)."""
    return store._cursor().execute(sql, list(params)).fetchall()


class QueryError(ValueError):
    """A dashboard query with a bad parameter (the message names it)."""


@dataclass(frozen=True)
class Probe:
    """A condition on a trace's other rows: `window` selects the ids of traces meeting it among those
    started in a time window (its first two parameters), `semi` is the same as a semi-join on roots `r`."""

    window: str
    semi: str
    params: list[Any]

    @classmethod
    def on_spans(cls, clause: str, params: list[Any]) -> Probe:
        return cls(
            f"SELECT DISTINCT trace_id FROM spans WHERE start_ns BETWEEN ? AND ? AND {clause}",
            f"r.trace_id IN (SELECT trace_id FROM spans WHERE {clause})",
            params,
        )

    @classmethod
    def on_verdicts(cls, mode: str) -> Probe:
        """A failing verdict naming `mode`: the mode as a JSON string in the verdict's attributes
        (a substring scan, not a JSON parse per row)."""
        return cls(
            "SELECT DISTINCT e.trace_id FROM evaluations e JOIN spans r ON r.trace_id = e.trace_id "
            "AND r.parent_span_id IS NULL AND r.start_ns BETWEEN ? AND ? "
            "WHERE e.label = 'fail' AND contains(e.attributes, ?)",
            "r.trace_id IN (SELECT trace_id FROM evaluations WHERE label = 'fail' AND contains(attributes, ?))",
            [json.dumps(mode)],
        )


@dataclass(frozen=True)
class TraceFilter:
    """What the trace list shows: every set field must hold (AND)."""

    user_id: str | None = None
    since_ns: int | None = None
    until_ns: int | None = None
    kind: str | None = None
    status: str | None = None
    error: str | None = None
    """Text the error of some span of the trace contains (case-insensitive)."""
    min_ms: float | None = None
    max_ms: float | None = None
    failure_mode: str | None = None
    model: str | None = None
    """A retriever the request ran (a `retrieve.<model>` span), e.g. `itemknn`."""

    def __post_init__(self) -> None:
        if self.kind is not None and self.kind not in {k.value for k in SpanKind}:
            raise QueryError(f"kind: unknown span kind {self.kind!r}; use one of {[k.value for k in SpanKind]}")
        if self.status is not None and self.status not in {s.value for s in SpanStatus}:
            raise QueryError(f"status: unknown status {self.status!r}; use one of {[s.value for s in SpanStatus]}")
        for name in ("min_ms", "max_ms"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise QueryError(f"{name}: must be >= 0, got {value}")

    def root_sql(self) -> tuple[list[str], list[Any]]:
        """WHERE clauses over root spans `r` (and their verdicts) and their parameters."""
        where = ["r.parent_span_id IS NULL"]
        params: list[Any] = []
        if self.user_id:
            where.append("r.user_id = ?")
            params.append(self.user_id)
        if self.since_ns is not None:
            where.append("r.start_ns >= ?")
            params.append(self.since_ns)
        if self.until_ns is not None:
            where.append("r.start_ns < ?")
            params.append(self.until_ns)
        if self.min_ms is not None:
            where.append("r.end_ns - r.start_ns >= ?")
            params.append(int(self.min_ms * 1e6))
        if self.max_ms is not None:
            where.append("r.end_ns - r.start_ns <= ?")
            params.append(int(self.max_ms * 1e6))
        return where, params

    def probes(self) -> list[Probe]:
        """Conditions on other spans of the trace, or on its verdicts, that must all hold."""
        terms, params = [], []
        if self.kind:
            terms.append("kind = ?")
            params.append(self.kind)
        if self.status:
            terms.append("status = ?")
            params.append(self.status)
        if self.error:
            terms.append("contains(lower(error), ?)")
            params.append(self.error.lower())
        out = [Probe.on_spans(" AND ".join(terms), params)] if terms else []
        if self.model:
            out.append(Probe.on_spans("name = ?", [f"retrieve.{self.model}"]))
        if self.failure_mode:
            out.append(Probe.on_verdicts(self.failure_mode))
        return out

    def query_string(self) -> dict[str, str]:
        """The filter as URL query parameters (for links to the next page)."""
        out = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if value is not None and value != "":
                out[name] = str(value)
        return out


def encode_cursor(start_ns: int, trace_id: str) -> str:
    return base64.urlsafe_b64encode(f"{start_ns}:{trace_id}".encode()).decode()


def decode_cursor(cursor: str) -> tuple[int, str]:
    try:
        start, trace_id = base64.urlsafe_b64decode(cursor.encode()).decode().split(":", 1)
        return int(start), trace_id
    except (ValueError, UnicodeDecodeError) as exc:
        raise QueryError(f"cursor: not a cursor this dashboard wrote ({cursor!r})") from exc


@dataclass
class TracePage:
    rows: list[dict[str, Any]]
    next_cursor: str | None


PROBE_CHUNK = 1000
PROBES = 1
"""Span and verdict conditions are first checked on the newest root rows, `PROBE_CHUNK` at a time
within their time window (fast when many traces match, e.g. a span kind every request has); after
`PROBES` chunks the rest of the page comes from semi-joins over all rows (fast when few match)."""

_ROOT_COLUMNS = "r.trace_id, r.request_id, r.user_id, r.name, r.start_ns, r.end_ns - r.start_ns, r.status, r.end_ns"


def trace_page(
    store: TraceStore, filters: TraceFilter, *, cursor: str | None = None, limit: int = PAGE_SIZE
) -> TracePage:
    """One page of traces matching `filters`, newest first, after `cursor` (None: the first)."""
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise QueryError(f"limit: must be between 1 and {MAX_PAGE_SIZE}, got {limit}")
    where, params = filters.root_sql()
    after = decode_cursor(cursor) if cursor else None
    probes = filters.probes()
    if probes:
        found = _probed(store, where, params, probes, after, limit + 1)
    else:
        found = _roots(store, where, params, after, limit + 1)
    more = len(found) > limit
    out = [
        {
            "trace_id": r[0],
            "request_id": r[1],
            "user_id": r[2],
            "root": r[3],
            "start_ns": int(r[4]),
            "duration_ms": int(r[5]) / 1e6,
            "status": r[6],
        }
        for r in found[:limit]
    ]
    _add_summaries(store, out)
    last = out[-1] if out and more else None
    return TracePage(out, encode_cursor(last["start_ns"], last["trace_id"]) if last else None)


def _roots(
    store: TraceStore, where: list[str], params: list[Any], after: tuple[int, str] | None, n: int
) -> list[tuple[Any, ...]]:
    """Root rows matching `where`, newest first, after the `(start_ns, trace_id)` position."""
    where, params = list(where), list(params)
    if after is not None:
        # the first term alone lets DuckDB skip row groups by their start_ns min/max
        where.append("r.start_ns <= ? AND (r.start_ns < ? OR r.trace_id < ?)")
        params += [after[0], after[0], after[1]]
    sql = f"SELECT {_ROOT_COLUMNS} FROM spans r WHERE {' AND '.join(where)} "
    return rows(store, sql + "ORDER BY r.start_ns DESC, r.trace_id DESC LIMIT ?", [*params, n])


def _probed(
    store: TraceStore,
    where: list[str],
    params: list[Any],
    probes: list[Probe],
    after: tuple[int, str] | None,
    n: int,
) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    for _ in range(PROBES):
        chunk = _roots(store, where, params, after, PROBE_CHUNK)
        if not chunk:
            return out
        window = [min(int(r[4]) for r in chunk), max(int(r[7]) for r in chunk)]
        keep = {str(r[0]) for r in chunk}
        for probe in probes:  # DuckDB skips row groups outside the window by their start_ns min/max
            keep &= {str(t) for (t,) in rows(store, probe.window, [*window, *probe.params])}
        out += [r for r in chunk if r[0] in keep]
        if len(out) >= n or len(chunk) < PROBE_CHUNK:
            return out[:n]
        after = (int(chunk[-1][4]), str(chunk[-1][0]))
    semi = [p.semi for p in probes]
    rest = _roots(store, where + semi, params + [v for p in probes for v in p.params], after, n - len(out))
    return out + rest


def _add_summaries(store: TraceStore, listed: list[dict[str, Any]]) -> None:
    """Errors, spans, cost, tokens and failure modes of the listed traces (one query each)."""
    if not listed:
        return
    ids = [r["trace_id"] for r in listed]
    marks = ", ".join("?" * len(ids))
    agg = {
        t: (int(n), int(e), c, int(i or 0) + int(o or 0))
        for t, n, e, c, i, o in rows(
            store,
            "SELECT trace_id, count(*), count(*) FILTER (WHERE status = 'ERROR'), sum(cost), sum(input_tokens), "
            f"sum(output_tokens) FROM spans WHERE trace_id IN ({marks}) GROUP BY trace_id",
            ids,
        )
    }
    modes: dict[str, set[str]] = {}
    for t, attributes in rows(
        store, f"SELECT trace_id, attributes FROM evaluations WHERE label = 'fail' AND trace_id IN ({marks})", ids
    ):
        modes.setdefault(t, set()).update((json.loads(attributes) if attributes else {}).get("failure_modes") or [])
    for r in listed:
        n, errors, cost, tokens = agg.get(r["trace_id"], (0, 0, None, 0))
        r.update(spans=n, errors=errors, cost=cost, tokens=tokens, failure_modes=sorted(modes.get(r["trace_id"], ())))


def time_bound(value: str | None, name: str) -> int | None:
    """A time filter from the query string: ISO date/time (UTC if no zone) or minutes ago (`90m`, `2h`, `3d`)."""
    if not value:
        return None
    units = {"m": 60, "h": 3600, "d": 86400}
    if value[-1] in units and value[:-1].replace(".", "", 1).isdigit():
        return to_ns(dt.timedelta(seconds=float(value[:-1]) * units[value[-1]]))
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError as exc:
        raise QueryError(f"{name}: give an ISO time (2026-01-31T12:00) or an age (30m, 2h, 7d), got {value!r}") from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return to_ns(when)


# -- one request ----------------------------------------------------------------------------


@dataclass
class SpanNode:
    span: SpanRecord
    depth: int
    offset_ms: float
    verdicts: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        s = self.span
        return {
            "span_id": s.span_id,
            "parent_span_id": s.parent_span_id,
            "name": s.name,
            "kind": s.kind,
            "depth": self.depth,
            "offset_ms": self.offset_ms,
            "duration_ms": s.duration_ns / 1e6,
            "status": s.status,
            "error": s.error,
            "input": s.input_value(),
            "output": s.output_value(),
            "attributes": s.attribute_dict(),
            "input_tokens": s.input_tokens,
            "output_tokens": s.output_tokens,
            "cost": s.cost,
            "verdicts": self.verdicts,
            "metrics": self.metrics,
        }


@dataclass
class TraceView:
    trace_id: str
    request_id: str | None
    user_id: str | None
    start_ns: int
    duration_ms: float
    request: dict[str, Any]
    nodes: list[SpanNode]
    slate: list[dict[str, Any]]
    retrievers: list[str]
    feedback: list[dict[str, Any]]
    verdicts: list[dict[str, Any]]
    note: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "trace_id": self.trace_id,
            "request_id": self.request_id,
            "user_id": self.user_id,
            "start_ns": self.start_ns,
            "duration_ms": self.duration_ms,
            "request": self.request,
            "spans": [n.to_dict() for n in self.nodes],
            "slate": self.slate,
            "retrievers": self.retrievers,
            "feedback": self.feedback,
            "verdicts": self.verdicts,
            "note": self.note,
        }


def resolve_trace_id(store: TraceStore, trace_or_request_id: str) -> str | None:
    """The trace id for a trace id or a request id (None if neither is stored)."""
    for column in ("trace_id", "request_id"):
        found = rows(store, f"SELECT trace_id FROM spans WHERE {column} = ? LIMIT 1", [trace_or_request_id])
        if found:
            return str(found[0][0])
    return None


def trace_view(store: TraceStore, feedback: FeedbackLog | None, trace_id: str) -> TraceView | None:
    """One request as the dashboard shows it; None if the store has no such trace or request."""
    resolved = resolve_trace_id(store, trace_id)
    if resolved is None:
        return None
    spans = store.trace(resolved)
    span_ids = [s.span_id for s in spans]
    marks = ", ".join("?" * len(span_ids))  # by span id: the indexed column
    columns = ("evaluation_id", "span_id", "trace_id", "name", "score", "label", "explanation", "evaluator",
               "attributes", "created_ns")  # fmt: skip
    verdicts = [
        _verdict(dict(zip(columns, r, strict=True)))
        for r in rows(store, f"SELECT * FROM evaluations WHERE span_id IN ({marks}) ORDER BY created_ns", span_ids)
    ]
    metrics = [
        {"span_id": r[0], "name": r[1], "value": r[2]}
        for r in rows(
            store,
            f"SELECT span_id, name, value FROM span_metrics WHERE span_id IN ({marks}) ORDER BY created_ns",
            span_ids,
        )
    ]
    nodes = _tree(spans)
    by_span = {n.span.span_id: n for n in nodes}
    for v in verdicts:
        if v["span_id"] in by_span:
            by_span[v["span_id"]].verdicts.append(v)
            v["span_name"] = by_span[v["span_id"]].span.name
    for m in metrics:
        if m["span_id"] in by_span:
            by_span[m["span_id"]].metrics[m["name"]] = m["value"]
    root = nodes[0].span
    events = feedback.events(root.request_id).to_pylist() if feedback is not None and root.request_id else []
    slate, retrievers = _slate(spans, events)
    output = root.output_value() or {}
    return TraceView(
        trace_id=resolved,
        request_id=root.request_id,
        user_id=root.user_id,
        start_ns=root.start_ns,
        duration_ms=root.duration_ns / 1e6,
        request=root.input_value() or {},
        nodes=nodes,
        slate=slate,
        retrievers=retrievers,
        feedback=events,
        verdicts=verdicts,
        note=output.get("note") if isinstance(output, dict) else None,
    )


def _verdict(e: dict[str, Any]) -> dict[str, Any]:
    attributes = json.loads(e["attributes"]) if e.get("attributes") else {}
    return {
        "span_id": e["span_id"],
        "criterion": e["name"],
        "score": e["score"],
        "label": e["label"],
        "explanation": e["explanation"],
        "evaluator": e["evaluator"],
        "failure_modes": attributes.get("failure_modes") or [],
        "judge_version": attributes.get("judge_version"),
        "span_name": attributes.get("span_name"),
    }


def _tree(spans: Sequence[SpanRecord]) -> list[SpanNode]:
    """Spans in depth-first order under their parents (start order among siblings)."""
    children: dict[str | None, list[SpanRecord]] = {}
    ids = {s.span_id for s in spans}
    for s in sorted(spans, key=lambda s: (s.start_ns, s.span_id)):
        parent = s.parent_span_id if s.parent_span_id in ids else None
        children.setdefault(parent, []).append(s)
    t0 = min(s.start_ns for s in spans)
    out: list[SpanNode] = []

    def walk(parent: str | None, depth: int) -> None:
        for s in children.get(parent, []):
            out.append(SpanNode(s, depth, (s.start_ns - t0) / 1e6))
            walk(s.span_id, depth + 1)

    walk(None, 0)
    return out


def _slate(spans: Sequence[SpanRecord], events: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """The slate as shown: position, item, final score, each retriever's score (from the rank
    span), propensity and explored (from the exploration stage), the reason, and feedback."""
    by_name = {s.name: s for s in spans}
    root = next((s for s in spans if s.parent_span_id is None), spans[0])
    shown = root.output_value() or {}
    items = [str(i) for i in (shown.get("items") or [])] if isinstance(shown, dict) else []
    scores = list(shown.get("scores") or []) if isinstance(shown, dict) else []
    explain = _output(by_name.get("explain"))
    explore = _output(by_name.get("policy.explore"))
    ranked = _output(by_name.get(SLATE_SPAN))
    per_source: dict[str, dict[str, float | None]] = {}
    for name, values in (ranked.get("sources") or {}).items():
        per_source[name] = dict(zip((str(i) for i in ranked.get("items") or []), values, strict=False))
    explored = _by_item(explore, "explored") or _by_item(explain, "explored")
    propensity = _by_item(explore, "propensity") or _by_item(explain, "propensity")
    reasons = _by_item(explain, "reasons")
    got: dict[str, list[str]] = {}
    for e in events:
        got.setdefault(str(e["item"]), []).append(
            e["kind"] if e.get("value") is None else f"{e['kind']} {e['value']:g}"
        )
    rows = []
    for position, item in enumerate(items):
        rows.append(
            {
                "position": position,
                "item": item,
                "score": scores[position] if position < len(scores) else None,
                "sources": {name: values.get(item) for name, values in per_source.items()},
                "propensity": propensity.get(item),
                "explored": bool(explored.get(item, False)),
                "reason": reasons.get(item) or "",
                "feedback": got.get(item, []),
            }
        )
    return rows, sorted(per_source)


def _output(span: SpanRecord | None) -> dict[str, Any]:
    value = span.output_value() if span is not None else None
    return value if isinstance(value, dict) else {}


def _by_item(output: dict[str, Any], key: str) -> dict[str, Any]:
    values = output.get(key)
    if not isinstance(values, list):
        return {}
    return dict(zip((str(i) for i in output.get("items") or []), values, strict=False))


def same_request(store: TraceStore, trace_id: str, *, limit: int = 20) -> list[dict[str, Any]]:
    """Other traces whose request (root input: user, history, k, constraints, text) is the same,
    e.g. the same request served by the champion and by a candidate; newest first. A scan of
    every root span's input (about half a second on 100k traces): the page asks for it on demand."""
    root = rows(store, "SELECT input FROM spans WHERE trace_id = ? AND parent_span_id IS NULL", [trace_id])
    if not root or root[0][0] is None:
        return []
    found = rows(
        store,
        "SELECT trace_id, start_ns, end_ns - start_ns FROM spans WHERE parent_span_id IS NULL AND input = ? "
        "AND trace_id <> ? ORDER BY start_ns DESC LIMIT ?",
        [root[0][0], trace_id, limit],
    )
    return [{"trace_id": t, "start_ns": int(s), "duration_ms": int(d) / 1e6} for t, s, d in found]


def known_values(store: TraceStore) -> dict[str, list[str]]:
    """Choices for the filter form: failure modes seen in verdicts, retrievers seen in spans."""
    modes = rows(
        store,
        "SELECT DISTINCT unnest(CAST(json_extract(attributes, '$.failure_modes') AS VARCHAR[])) AS m "
        "FROM evaluations WHERE label = 'fail' ORDER BY m",
    )
    models = rows(
        store, "SELECT DISTINCT name FROM spans WHERE kind = 'RETRIEVER' AND name LIKE 'retrieve.%' ORDER BY name"
    )
    return {
        "failure_modes": [str(m[0]) for m in modes if m[0]],
        "models": [str(m[0]).split(".", 1)[1] for m in models],
        "kinds": [k.value for k in SpanKind],
        "statuses": [s.value for s in SpanStatus],
    }
