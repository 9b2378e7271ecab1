"""Logged impressions straight from the trace store and the feedback log, for learning and OPE.

Each traced request's `policy.explore` span records the pool the explorer saw (its input: items
and scores in rank order) and the reordered list with, per shown slot, `explored` and the logged
`propensity`; the root span's output is what was finally shown, the `rank` span's output each
candidate's retriever scores. Feedback events carry the slot position. `read_slates` joins them
into one `coachrec.policy.ope.SlateLog`, so no conversion code is needed:

    log = read_slates(service.store, service.feedback)
    evaluate(log, EpsilonGreedy(0.05))

A slot the guardrail replaced after exploration has no valid propensity (NaN), so estimators
refuse rather than guess; a request whose trace was sampled out is not in the log.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from coachrec.policy.ope import SlateLog
from coachrec.serve.feedback import FeedbackLog
from coachrec.tracing import TraceStore

_SQL = """
SELECT e.request_id, e.user_id, e.input AS pool, e.output AS explored, root.output AS shown, r.output AS ranked
FROM spans e
JOIN spans root ON root.trace_id = e.trace_id AND root.parent_span_id IS NULL
LEFT JOIN spans r ON r.trace_id = e.trace_id AND r.name = ?
WHERE e.name = ? {where}
ORDER BY e.start_ns
"""

_POOL = pl.Struct({"n": pl.Int64, "items": pl.List(pl.Utf8), "scores": pl.List(pl.Float64)})
_EXPLORED = pl.Struct({"items": pl.List(pl.Utf8), "propensity": pl.List(pl.Float64)})
_SHOWN = pl.Struct({"items": pl.List(pl.Utf8)})


def read_slates(
    store: TraceStore,
    feedback: FeedbackLog | None = None,
    *,
    reward: str = "click",
    since_ns: int | None = None,
    explore_span: str = "policy.explore",
    rank_span: str = "rank",
    sources: bool = True,
) -> SlateLog:
    """Every traced request with an exploration span, oldest first; rewards are the count of
    `reward` events per (request, position) in the feedback log (0 without feedback).
    `sources=False` skips the retrievers' scores (what a learned ranker's features need, not
    the estimators): most of the reading time is parsing them."""
    store.flush()
    where, params = "", [rank_span, explore_span]
    params_all: list[object] = list(params)
    if since_ns is not None:
        where, params_all = "AND e.start_ns >= ?", [*params, since_ns]
    rel = store._cursor().sql(_SQL.format(where=where), params=params_all)
    assert rel is not None
    df = pl.from_arrow(rel.to_arrow_table())
    assert isinstance(df, pl.DataFrame)
    if df.height == 0:
        raise ValueError(f"the trace store {store.path} holds no request with a {explore_span!r} span")
    pool = df["pool"].str.json_decode(_POOL)
    explored = df["explored"].str.json_decode(_EXPLORED)
    shown = df["shown"].str.json_decode(_SHOWN)
    n = df.height
    pool_items = _pad(pool.struct.field("items"), "", object)
    cut = (pool.struct.field("n").to_numpy() > (pool_items != "").sum(axis=1)).sum()
    if cut:
        raise ValueError(
            f"{cut} of {n} requests explored a pool larger than its span recorded ({pool_items.shape[1]} rows): "
            "their propensities cannot be recomputed for another policy; serve with fewer candidates "
            "(PipelineConfig.candidates) for traffic meant for off-policy evaluation"
        )
    pool_scores = _pad(pool.struct.field("scores"), np.nan, np.float64)
    shown_items = _pad(shown.struct.field("items"), "", object)
    k = shown_items.shape[1]
    after = _pad(explored.struct.field("items"), "", object, width=k)
    propensity = _pad(explored.struct.field("propensity").list.eval(pl.element().fill_null(np.nan)), np.nan,
                      np.float64, width=k)  # fmt: skip
    has_slot = shown_items != ""
    rows = _rows_of(pool_items, shown_items)
    valid = has_slot & (after == shown_items) & (rows >= 0)
    # a slot the guardrail changed (and every slot after it) has no valid logged propensity
    valid = np.cumprod(valid | ~has_slot, axis=1).astype(bool) & has_slot
    propensity = np.where(valid, propensity, np.nan)
    pool_sources, names = _sources(df["ranked"], pool_items) if sources else (None, ())
    request_id = df["request_id"].to_numpy().astype(object)
    log = SlateLog(
        request_id=request_id,
        user_id=df["user_id"].fill_null("").to_numpy().astype(object),
        shown=np.where(has_slot, rows, -1),
        propensity=propensity,
        reward=np.zeros((n, k)),
        pool_items=pool_items,
        pool_scores=pool_scores,
        pool_sources=pool_sources,
        source_names=names,
        shown_items=shown_items,
    )
    if feedback is not None:
        _add_rewards(log, feedback, reward)
    return log


def _pad(column: pl.Series, fill: object, dtype: object, width: int | None = None) -> np.ndarray:
    """A list column as an (n, width) array, short rows padded with `fill`, long ones cut."""
    lists = column.to_list()
    width = max((len(v) for v in lists if v is not None), default=0) if width is None else width
    out = np.full((len(lists), width), fill, dtype=dtype)  # type: ignore[call-overload]
    for i, v in enumerate(lists):
        if v:
            v = v[:width]
            out[i, : len(v)] = [fill if x is None else x for x in v]
    padded: np.ndarray = out
    return padded


def _rows_of(pool: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Pool row of each item per request (-1: not in the recorded pool)."""
    out = np.full(items.shape, -1, dtype=np.int64)
    for i in range(len(pool)):
        where = {item: r for r, item in enumerate(pool[i]) if item != ""}
        out[i] = [where.get(item, -1) for item in items[i]]
    return out


def _sources(ranked: pl.Series, pool_items: np.ndarray) -> tuple[np.ndarray | None, tuple[str, ...]]:
    """Each pool row's raw retriever scores from the rank span's output (NaN: not proposed)."""
    import json

    first = next((v for v in ranked.to_list() if v), None)
    if first is None or "sources" not in json.loads(first):
        return None, ()
    names = tuple(json.loads(first)["sources"])
    n, width = pool_items.shape
    out = np.full((n, width, len(names)), np.nan)
    for i, text in enumerate(ranked.to_list()):
        if not text:
            continue
        got = json.loads(text)
        position = {item: r for r, item in enumerate(got.get("items", []))}
        cols = [got.get("sources", {}).get(name, []) for name in names]
        for row, item in enumerate(pool_items[i]):
            at = position.get(item)
            if at is not None:
                out[i, row] = [np.nan if c[at] is None else c[at] for c in cols]
    return out, names


def _add_rewards(log: SlateLog, feedback: FeedbackLog, kind: str) -> None:
    events = pl.from_arrow(feedback.events())
    assert isinstance(events, pl.DataFrame)
    events = events.filter((pl.col("kind") == kind) & pl.col("position").is_not_null())
    if events.height == 0:
        return
    index = {r: i for i, r in enumerate(log.request_id.tolist())}
    rows = np.array([index.get(r, -1) for r in events["request_id"].to_list()], dtype=np.int64)
    pos = events["position"].to_numpy().astype(np.int64)
    keep = (rows >= 0) & (pos < log.reward.shape[1])
    np.add.at(log.reward, (rows[keep], pos[keep]), 1.0)
