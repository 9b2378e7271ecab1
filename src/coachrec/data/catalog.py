"""Item text and attributes, aligned with a dataset's item index."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl
import scipy.sparse as sp

from coachrec.data.idmap import IdMap

#: Columns every catalog frame has; anything else is an attribute (year, price, ...).
TEXT_COLUMNS = ("item", "title", "genres", "tags", "text")

#: Timestamped tag assignments (`Catalog.tag_events`): raw user and item ids, the tag, epoch seconds.
TAG_EVENT_SCHEMA: dict[str, pl.DataType] = {"user": pl.Utf8(), "item": pl.Utf8(), "tag": pl.Utf8(), "time": pl.Int64()}


def tags_per_item(tag_events: pl.DataFrame) -> pl.DataFrame:
    """`item` -> `tags`: each item's distinct tags, most used first (ties: first listed first)."""
    counted = (
        tag_events.with_row_index("_row")
        .group_by("item", "tag")
        .agg(pl.len().alias("_n"), pl.col("_row").min().alias("_first"))
        .sort(["item", "_n", "_first"], descending=[False, True, False])
    )
    return counted.group_by("item", maintain_order=True).agg(pl.col("tag").alias("tags"))


class Catalog:
    """Item metadata in columnar form: one row per item index of `items`.

    `frame` has columns `item` (raw id), `title` (str), `genres` (list[str]), `tags`
    (list[str]), `text` (free text) and any attribute columns. Items without metadata get
    empty text, so every item index has a row.

    `tag_events`, when the source has them (MovieLens `tags.csv`), are the timestamped tag
    assignments (`user`, `item` raw ids, `tag`, `time`); the `tags` column is then derived
    from them (most used first), and `visible_tags` keeps only those before a cut, which is
    how splits keep held-out information out of the item text (see `coachrec.data.splits`).
    """

    def __init__(self, frame: pl.DataFrame, items: IdMap, tag_events: pl.DataFrame | None = None):
        if tag_events is not None:
            frame = frame.drop("tags", strict=False).with_columns(pl.col("item").cast(pl.Utf8))
            frame = frame.join(tags_per_item(tag_events), on="item", how="left")
        missing = [c for c in ("item", "title", "genres", "tags", "text") if c not in frame.columns]
        if missing:
            raise ValueError(f"Catalog frame lacks column(s) {missing}")
        self.tag_events = tag_events
        frame = frame.with_columns(pl.col("item").cast(pl.Utf8)).unique("item", keep="first")
        base = pl.DataFrame({"item": pl.Series(items.ids.tolist(), dtype=pl.Utf8)})
        self.frame = base.join(frame, on="item", how="left").with_columns(
            pl.col("title").fill_null(""),
            pl.col("text").fill_null(""),
            pl.col("genres").fill_null([]),
            pl.col("tags").fill_null([]),
        )
        self.items = items

    @classmethod
    def from_frame(cls, df: pl.DataFrame, items: IdMap) -> Catalog:
        """Build from any frame with an `item` column; missing text columns become empty."""
        cols = []
        for c, dtype in (("title", pl.Utf8), ("text", pl.Utf8)):
            if c not in df.columns:
                cols.append(pl.lit("", dtype=dtype).alias(c))
        for c in ("genres", "tags"):
            if c not in df.columns:
                cols.append(pl.lit([], dtype=pl.List(pl.Utf8)).alias(c))
        return cls(df.with_columns(cols) if cols else df, items)

    def with_tag_events(self, tag_events: pl.DataFrame) -> Catalog:
        """This catalog with its `tags` derived from timestamped tag events (`user`, `item`,
        `tag`, `time`; ids raw, tags compared as given)."""
        missing = [c for c in TAG_EVENT_SCHEMA if c not in tag_events.columns]
        if missing:
            raise ValueError(f"tag events lack column(s) {missing}")
        ev = tag_events.select(pl.col(c).cast(t) for c, t in TAG_EVENT_SCHEMA.items())
        ev = ev.filter(pl.col("tag").is_not_null() & (pl.col("tag") != ""))
        return Catalog(self.frame, self.items, tag_events=ev)

    def visible_tags(self, before: int | pl.DataFrame) -> Catalog:
        """Only the tags assigned before a cut: `before` is a time (every tag with `time <
        before` is kept) or a frame of `user` (raw id) and `before` (a time per user; the
        tags of users not in it are all kept). Without tag events there is nothing to cut."""
        if self.tag_events is None:
            return self
        ev = self.tag_events
        if isinstance(before, pl.DataFrame):
            cut = before.select(pl.col("user").cast(pl.Utf8), pl.col("before").cast(pl.Int64))
            ev = (
                ev.join(cut, on="user", how="left")
                .filter(pl.col("before").is_null() | (pl.col("time") < pl.col("before")))
                .drop("before")
            )
        else:
            ev = ev.filter(pl.col("time") < int(before))
        return Catalog(self.frame, self.items, tag_events=ev)

    def __len__(self) -> int:
        return self.frame.height

    @property
    def attributes(self) -> list[str]:
        return [c for c in self.frame.columns if c not in TEXT_COLUMNS]

    def attribute(self, name: str) -> np.ndarray:
        if name not in self.frame.columns:
            raise KeyError(f"catalog has no attribute {name!r}; it has {self.attributes}")
        return self.frame[name].to_numpy()

    def titles(self, idx: Sequence[int] | np.ndarray | None = None) -> list[str]:
        col = self.frame["title"]
        return col.to_list() if idx is None else col.gather(np.asarray(idx, dtype=np.int64)).to_list()

    def texts(self, idx: Sequence[int] | np.ndarray | None = None) -> list[str]:
        """One string per item for embedding or an LLM prompt: title, genres, tags, free text."""
        f = self.frame if idx is None else self.frame[np.asarray(idx, dtype=np.int64)]
        out = f.select(
            pl.concat_str(
                [
                    pl.col("title"),
                    pl.when(pl.col("genres").list.len() > 0)
                    .then(pl.lit(". Genres: ") + pl.col("genres").list.join(", "))
                    .otherwise(pl.lit("")),
                    pl.when(pl.col("tags").list.len() > 0)
                    .then(pl.lit(". Tags: ") + pl.col("tags").list.head(12).list.join(", "))
                    .otherwise(pl.lit("")),
                    pl.when(pl.col("text").str.len_chars() > 0)
                    .then(pl.lit(". ") + pl.col("text"))
                    .otherwise(pl.lit("")),
                ]
            ).alias("t")
        )["t"]
        return out.to_list()

    def genre_matrix(self) -> tuple[sp.csr_matrix, list[str]]:
        """Multi-hot item x genre matrix and the genre names (for diversity metrics, filters)."""
        exploded = self.frame.select(pl.int_range(pl.len()).alias("row"), "genres").explode("genres")
        exploded = exploded.filter(pl.col("genres").is_not_null() & (pl.col("genres") != ""))
        names = sorted(exploded["genres"].unique().to_list())
        col_of = {g: i for i, g in enumerate(names)}
        rows = exploded["row"].to_numpy()
        cols = np.fromiter((col_of[g] for g in exploded["genres"].to_list()), dtype=np.int64, count=len(rows))
        m = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(len(self), len(names)))
        return m, names
