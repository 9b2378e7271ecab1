"""Item text and attributes, aligned with a dataset's item index."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl
import scipy.sparse as sp

from coachrec.data.idmap import IdMap

#: Columns every catalog frame has; anything else is an attribute (year, price, ...).
TEXT_COLUMNS = ("item", "title", "genres", "tags", "text")


class Catalog:
    """Item metadata in columnar form: one row per item index of `items`.

    `frame` has columns `item` (raw id), `title` (str), `genres` (list[str]), `tags`
    (list[str]), `text` (free text) and any attribute columns. Items without metadata get
    empty text, so every item index has a row.
    """

    def __init__(self, frame: pl.DataFrame, items: IdMap):
        missing = [c for c in ("item", "title", "genres", "tags", "text") if c not in frame.columns]
        if missing:
            raise ValueError(f"Catalog frame lacks column(s) {missing}")
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
