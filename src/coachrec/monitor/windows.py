"""A monitoring window: one row per served request in a time range of the trace store.

`read_window(store, since, until)` reads root `recommend` spans, the scored stages (retrievers,
ranker) and, when present, feedback (the file beside the store, `serve.feedback.feedback_path_for`)
and stored judgments, and returns a `Window` whose frame
has one row per request with these columns (grouped as the monitors report them):

- inputs: `history_len`, `has_context`, `uses_constraints`, `new_user` (no history), and with
  item statistics `popularity` (mean log(1 + interactions) of the shown items), `new_items`
  (share of shown items without interactions) and `item_year` (mean release year);
- scores: `score.<stage>` the mean of a stage's top-10 output scores (`retrieve.itemknn`, `rank`, ...);
- outcomes: `engaged`, `skipped` and `engaged@1..3` (engagement at the first three positions),
  for requests that got feedback;
- judged quality: `fail.<criterion>` (1 fail, 0 pass, missing when not judged or unknown).

JSON is unpacked by DuckDB over the Arrow tables the store returns, so a window of a million
spans reads in seconds.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa

from coachrec.data import Dataset
from coachrec.serve.feedback import FeedbackLog, Relevance, feedback_path_for
from coachrec.tracing import TraceStore
from coachrec.tracing.store import TimeLike, to_ns

Group = Literal["inputs", "scores", "outcomes", "quality"]
INPUT_COLUMNS = ("history_len", "has_context", "uses_constraints", "new_user", "popularity", "new_items", "item_year")
OUTCOME_COLUMNS = ("engaged", "skipped", "engaged@1", "engaged@2", "engaged@3")
CATEGORICAL = frozenset({"has_context", "uses_constraints", "new_user", *OUTCOME_COLUMNS})
TOP = 10


def column_group(column: str) -> Group:
    if column.startswith("score."):
        return "scores"
    if column.startswith("fail."):
        return "quality"
    if column in OUTCOME_COLUMNS:
        return "outcomes"
    return "inputs"


def column_kind(column: str) -> Literal["num", "cat"]:
    return "cat" if column in CATEGORICAL or column.startswith("fail.") else "num"


@dataclass(frozen=True)
class ItemStats:
    """What the input monitors know about items: interaction counts and release years by raw id."""

    popularity: Mapping[str, float] = field(default_factory=dict)
    year: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def from_dataset(cls, data: Dataset) -> ItemStats:
        """From a dataset's interaction counts and catalog years."""
        counts = np.asarray(data.item_popularity(), dtype=np.float64)
        popularity = {str(i): float(c) for i, c in zip(data.items.ids, counts, strict=True)}
        year: dict[str, float] = {}
        catalog = data.catalog
        if catalog is not None and "year" in catalog.frame.columns:
            for item, y in catalog.frame.select("item", "year").iter_rows():
                if y is not None:
                    year[str(item)] = float(y)
        return cls(popularity, year)


@dataclass
class Window:
    """Requests of one time range; `frame` has a `trace_id`, `user_id`, `start_ns` and the
    monitored columns."""

    frame: pl.DataFrame
    since_ns: int | None = None
    until_ns: int | None = None

    @property
    def n(self) -> int:
        return self.frame.height

    def columns(self, group: Group | None = None) -> list[str]:
        skip = {"trace_id", "request_id", "user_id", "start_ns"}
        return [c for c in self.frame.columns if c not in skip and (group is None or column_group(c) == group)]

    def take(self, rows: np.ndarray) -> Window:
        return Window(self.frame[rows], self.since_ns, self.until_ns)


_ROOTS = """
SELECT trace_id, request_id, user_id, start_ns,
       coalesce(json_extract_string(input, '$.context') IS NOT NULL, false) AS has_context,
       input -> '$.constraints' AS constraints,
       json_array_length(input -> '$.history') AS anon_history,
       CAST(json_extract(output, '$.items') AS VARCHAR[]) AS items
FROM roots WHERE parent_span_id IS NULL AND name = 'recommend'
"""
_STAGES = f"""
SELECT trace_id, name,
       list_avg((CAST(json_extract(output, '$.scores') AS DOUBLE[]))[1:{TOP}]) AS score,
       json_array_length(input -> '$.history') AS history_len
FROM stages WHERE output IS NOT NULL
"""


def _uses_constraints(raw: str | None) -> bool:
    if not raw:
        return False
    c = json.loads(raw)
    return bool(c.get("require_genres") or c.get("exclude_genres") or c.get("ranges") or c.get("exclude_items"))


def _item_columns(items: list[list[str] | None], stats: ItemStats) -> dict[str, list[float | None]]:
    popularity: list[float | None] = []
    new: list[float | None] = []
    year: list[float | None] = []
    for shown in items:
        shown = shown or []
        counts = [stats.popularity.get(i, 0.0) for i in shown]
        popularity.append(float(np.mean([math.log1p(c) for c in counts])) if counts else None)
        new.append(float(np.mean([c == 0 for c in counts])) if counts else None)
        years = [stats.year[i] for i in shown if i in stats.year]
        year.append(float(np.mean(years)) if years else None)
    out: dict[str, list[float | None]] = {}
    if stats.popularity:
        out["popularity"] = popularity
        out["new_items"] = new
    if stats.year:
        out["item_year"] = year
    return out


def read_window(
    store: TraceStore,
    since: TimeLike | None = None,
    until: TimeLike | None = None,
    *,
    items: ItemStats | None = None,
    feedback: bool | FeedbackReader = True,
    judge_version: str | None = None,
    relevance: Relevance = Relevance(),
) -> Window:
    """The requests whose root span started in [since, until). `feedback`: outcomes from the
    feedback file beside the store (True), from an open feedback log, or none (False)."""
    store.flush()
    roots = store.spans(
        since=since,
        until=until,
        kind="CHAIN",
        name="recommend",
        columns=["trace_id", "parent_span_id", "name", "start_ns", "input", "output", "user_id", "request_id"],
    )
    stages = store.spans(
        since=since, until=until, kind=["RETRIEVER", "RANKER"], columns=["trace_id", "name", "input", "output"]
    )
    con = duckdb.connect()
    try:
        con.register("roots", roots)
        con.register("stages", stages)
        base = con.sql(_ROOTS).pl()
        per_stage = con.sql(_STAGES).pl()
    finally:
        con.close()
    base = base.sort("start_ns")
    history = (
        per_stage.filter(pl.col("name").str.starts_with("retrieve."))
        .group_by("trace_id")
        .agg(pl.col("history_len").max().alias("history_len"))
    )
    frame = base.join(history, on="trace_id", how="left").with_columns(
        pl.max_horizontal(pl.col("history_len").fill_null(0), pl.col("anon_history").fill_null(0))
        .cast(pl.Float64)
        .alias("history_len"),
        pl.col("has_context").cast(pl.Int8),
        pl.Series("uses_constraints", [_uses_constraints(c) for c in base["constraints"].to_list()], dtype=pl.Int8),
    )
    frame = frame.with_columns((pl.col("history_len") == 0).cast(pl.Int8).alias("new_user"))
    if items is not None:
        extra = _item_columns(frame["items"].to_list(), items)
        frame = frame.with_columns([pl.Series(name, values, dtype=pl.Float64) for name, values in extra.items()])
    scores = per_stage.filter(pl.col("score").is_not_null())
    if scores.height:
        wide = scores.with_columns(("score." + pl.col("name")).alias("stage")).pivot(
            on="stage", index="trace_id", values="score", aggregate_function="first"
        )
        frame = frame.join(wide, on="trace_id", how="left")
    if feedback is not False:
        frame = _join_outcomes(store, frame, relevance, feedback)
    frame = _join_judgments(store, frame, judge_version)
    frame = frame.drop("constraints", "anon_history", "items")
    return Window(
        frame,
        None if since is None else to_ns(since),
        None if until is None else to_ns(until),
    )


class FeedbackReader(Protocol):
    def events(self) -> pa.Table: ...


def _feedback_events(store: TraceStore, feedback: bool | FeedbackReader) -> pa.Table | None:
    """Feedback events: from an open log (a serving process's), else the file beside the store."""
    if feedback is False:
        return None
    if feedback is not True:
        return feedback.events()
    path = feedback_path_for(store.path)
    if path == ":memory:" or not Path(path).exists():
        return None  # no feedback file beside the trace store: no outcome columns
    log = FeedbackLog(path)
    try:
        return log.events()
    finally:
        log.close()


def _join_outcomes(
    store: TraceStore, frame: pl.DataFrame, relevance: Relevance, feedback: bool | FeedbackReader
) -> pl.DataFrame:
    events = _feedback_events(store, feedback)
    if events is None:
        return frame
    ev = pl.from_arrow(events)
    assert isinstance(ev, pl.DataFrame)
    if ev.height == 0:
        return frame
    ev = ev.filter(pl.col("request_id").is_in(frame["request_id"].drop_nulls().implode()))
    if ev.height == 0:
        return frame
    engaged = (
        pl.col("kind").is_in(["click", "thumbs_up"])
        | ((pl.col("kind") == "watch") & (pl.col("value") >= relevance.min_watch))
        | ((pl.col("kind") == "rating") & (pl.col("value") >= relevance.min_rating))
    )
    per_request = ev.group_by("request_id").agg(
        engaged.any().cast(pl.Int8).alias("engaged"),
        ((pl.col("kind") == "impression").any() & ~engaged.any()).cast(pl.Int8).alias("skipped"),
        *[(engaged & (pl.col("position") == p)).any().cast(pl.Int8).alias(f"engaged@{p + 1}") for p in range(3)],
    )
    return frame.join(per_request, on="request_id", how="left")


def _join_judgments(store: TraceStore, frame: pl.DataFrame, judge_version: str | None) -> pl.DataFrame:
    ev = pl.from_arrow(store.evaluations())
    assert isinstance(ev, pl.DataFrame)
    if ev.height == 0:
        return frame
    ev = ev.filter(pl.col("trace_id").is_in(frame["trace_id"].implode()) & pl.col("label").is_in(["pass", "fail"]))
    if judge_version is not None:
        versions = [json.loads(a).get("judge_version") if a else None for a in ev["attributes"].to_list()]
        ev = ev.filter(pl.Series(versions, dtype=pl.Utf8) == judge_version)
    if ev.height == 0:
        return frame
    wide = ev.with_columns(
        ("fail." + pl.col("name")).alias("criterion"), (pl.col("label") == "fail").cast(pl.Int8).alias("f")
    ).pivot(on="criterion", index="trace_id", values="f", aggregate_function="last")
    return frame.join(wide, on="trace_id", how="left")


def concat(windows: Sequence[Window]) -> Window:
    """Windows side by side in time, as one (columns missing in some are null there)."""
    return Window(pl.concat([w.frame for w in windows], how="diagonal_relaxed"))


_AGO = re.compile(r"^(\d+(?:\.\d+)?)([smhd])?\.\.(\d+(?:\.\d+)?)([smhd])?$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_ago(value: str, now_ns: int | None = None) -> tuple[int, int]:
    """`14d..7d` (from 14 days ago until 7 days ago; `..0` is now) as [since, until) in ns.

    A window is the span between two ages, so `7d..14d` reads as `14d..7d`; equal ends give an empty
    window. Refusing the reversed order would reject input the schema's pattern accepts; neither
    would an age before the epoch be refused: it is clamped to the epoch."""
    match = _AGO.match(value.strip())
    if not match:
        raise ValueError(f"a window is FROM..TO ago with a unit (s, m, h, d), e.g. 14d..7d; got {value!r}")
    now = time.time_ns() if now_ns is None else now_ns
    first = float(match.group(1)) * _SECONDS[match.group(2) or match.group(4) or "s"]
    second = float(match.group(3)) * _SECONDS[match.group(4) or match.group(2) or "s"]
    start, end = (min(age * 1e9, now) for age in (max(first, second), min(first, second)))
    return now - int(start), now - int(end)
