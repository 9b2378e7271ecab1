"""`Event` and `Dataset`: interaction logs in columnar form."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd  # type: ignore[import-untyped]  # pandas ships no stubs and pandas-stubs is not installed
import polars as pl
import pyarrow as pa
import scipy.sparse as sp

from coachrec.data.catalog import Catalog
from coachrec.data.errors import DataError
from coachrec.data.idmap import IdMap

Duplicates = Literal["keep", "drop_exact", "first", "last", "error"]

#: Internal event columns. `user`/`item` hold indices into the dataset's IdMaps.
EVENT_SCHEMA: dict[str, pl.DataType] = {
    "user": pl.Int32(),
    "item": pl.Int32(),
    "time": pl.Int64(),
    "kind": pl.Utf8(),
    "value": pl.Float32(),
    "position": pl.Int32(),
    "request_id": pl.Utf8(),
}


@dataclass(frozen=True)
class Event:
    """One interaction: `user` did `kind` on `item` at `time` (epoch seconds).

    `value` carries a rating, watch fraction or 1.0; `position` is the slot the item was
    shown at (for position-debiased learning); `request_id` links it to a served request.
    """

    user: str
    item: str
    time: int
    kind: str = "interaction"
    value: float = 1.0
    position: int | None = None
    request_id: str | None = None


@dataclass
class Dataset:
    """Events sorted by (user, time, tie key), plus the id maps and an optional catalog.

    `events` is a polars frame with EVENT_SCHEMA columns. `timestamps` is False when the
    source had only an order (sequence files): `time` is then the position in the sequence.

    Events of one user at the same `time` (MovieLens stores seconds, and its files list a
    user's ratings by movie id, so a tie would otherwise always run in increasing id order)
    are ordered by `tie_key(user, item, tie_seed)`: a seeded hash of the user and item
    indices. The order is deterministic (the same on every load and after every split or
    concat, which re-sort with the same key), carries no information about the items, and
    `tie_seed` gives another one; arrival order breaks the rest (repeats of one item).
    """

    events: pl.DataFrame
    users: IdMap
    items: IdMap
    catalog: Catalog | None = None
    name: str = "dataset"
    timestamps: bool = True
    info: dict[str, Any] = field(default_factory=dict)
    tie_seed: int = 0

    # ---------------------------------------------------------------- construction
    @classmethod
    def from_frame(
        cls,
        df: pl.DataFrame | pd.DataFrame | pa.Table,
        *,
        columns: dict[str, str] | None = None,
        name: str = "dataset",
        catalog: pl.DataFrame | None = None,
        duplicates: Duplicates = "keep",
        time_format: str | None = None,
        source: str = "frame",
        tie_seed: int = 0,
    ) -> Dataset:
        """Build from a frame with raw ids. `columns` maps our names to yours, e.g.
        `{"user": "userId", "item": "movieId", "time": "timestamp", "value": "rating"}`.
        `user` and `item` are required; `time` is optional (arrival order is used).
        `tie_seed` picks the order of a user's events at the same time (see `Dataset`)."""
        if isinstance(df, pd.DataFrame):
            df = pl.from_pandas(df)
        elif isinstance(df, pa.Table):
            df = pl.from_arrow(df)
        if not isinstance(df, pl.DataFrame):
            raise DataError(f"{source}: expected a pandas/polars DataFrame or Arrow table, got {type(df).__name__}")
        columns = dict(columns or {})
        for ours in columns:
            if ours not in EVENT_SCHEMA:
                raise DataError(f"{source}: unknown target column {ours!r}; choose from {list(EVENT_SCHEMA)}")
        mapping = {ours: columns.get(ours, ours) for ours in EVENT_SCHEMA}
        for ours in ("user", "item"):
            if mapping[ours] not in df.columns:
                raise DataError(
                    f"{source}: required column {mapping[ours]!r} (for {ours!r}) not found; "
                    f"columns are {df.columns}. Pass columns={{'{ours}': '<your column>'}}."
                )
        for ours, theirs in columns.items():
            if theirs not in df.columns:
                raise DataError(f"{source}: column {theirs!r} (mapped to {ours!r}) not found; columns are {df.columns}")
        if df.height == 0:
            raise DataError(f"{source}: no events")
        df = df.with_row_index("_order")
        has_time = mapping["time"] in df.columns
        sel = [
            pl.col(mapping["user"]).cast(pl.Utf8).alias("user"),
            pl.col(mapping["item"]).cast(pl.Utf8).alias("item"),
            (
                _parse_time(df, mapping["time"], time_format, source) if has_time else pl.col("_order").cast(pl.Int64)
            ).alias("time"),
        ]
        for ours in ("kind", "value", "position", "request_id"):
            theirs = mapping[ours]
            if theirs in df.columns:
                sel.append(_cast(df, theirs, EVENT_SCHEMA[ours], source).alias(ours))
            else:
                default = {"kind": "interaction", "value": 1.0}.get(ours)
                sel.append(pl.lit(default, dtype=EVENT_SCHEMA[ours]).alias(ours))
        raw = df.select(*sel, "_order")
        for c in ("user", "item"):
            nulls = raw[c].is_null()
            if nulls.any():
                row = int(raw["_order"].filter(nulls)[0])
                raise DataError(f"{source}: empty {mapping[c]!r} at row {row + 1}")
        raw, removed = _apply_duplicates(raw, duplicates, source)
        items = IdMap.build(
            raw["item"].unique().to_list() + (catalog["item"].cast(pl.Utf8).to_list() if catalog is not None else [])
        )
        users = IdMap.build(raw["user"].unique().to_list())
        ds = cls._from_raw(raw, users, items, name=name, timestamps=has_time, tie_seed=tie_seed)
        ds.info["duplicates"] = {"policy": duplicates, "removed": removed}
        ds.info["source"] = source
        if catalog is not None:
            ds.catalog = Catalog.from_frame(catalog, items)
        return ds

    @classmethod
    def from_events(cls, events: Iterable[Event], *, name: str = "dataset", duplicates: Duplicates = "keep") -> Dataset:
        rows = list(events)
        if not rows:
            raise DataError("from_events: no events")
        df = pl.DataFrame(
            {
                "user": [e.user for e in rows],
                "item": [e.item for e in rows],
                "time": [e.time for e in rows],
                "kind": [e.kind for e in rows],
                "value": [e.value for e in rows],
                "position": [e.position for e in rows],
                "request_id": [e.request_id for e in rows],
            },
            schema_overrides={"position": pl.Int32, "request_id": pl.Utf8},
        )
        return cls.from_frame(df, name=name, duplicates=duplicates, source="events")

    @classmethod
    def _from_raw(cls, raw: pl.DataFrame, users: IdMap, items: IdMap, **kw: Any) -> Dataset:
        """Encode raw string ids with the given maps (ids must be known)."""
        u = pl.Series(users.encode(raw["user"].to_list()), dtype=pl.Int32)
        i = pl.Series(items.encode(raw["item"].to_list()), dtype=pl.Int32)
        ev = raw.with_columns(user=u, item=i)
        return cls(events=_sorted(ev, kw.get("tie_seed", 0)), users=users, items=items, **kw)

    def with_events(self, events: pl.DataFrame, **kw: Any) -> Dataset:
        """Same id maps and catalog, other events (already encoded)."""
        args: dict[str, Any] = {
            "users": self.users,
            "items": self.items,
            "catalog": self.catalog,
            "name": self.name,
            "timestamps": self.timestamps,
            "info": dict(self.info),
            "tie_seed": self.tie_seed,
        }
        args.update(kw)
        cols = list(EVENT_SCHEMA) + [c for c in events.columns if c not in EVENT_SCHEMA and c != "_order"]
        return Dataset(events=_sorted(events.select(cols), args["tie_seed"]), **args)

    # ---------------------------------------------------------------- views
    def __len__(self) -> int:
        return self.events.height

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.items)

    def __repr__(self) -> str:
        active = self.events["user"].n_unique() if len(self) else 0
        return (
            f"Dataset({self.name!r}: {len(self):,} events, {active:,} users, "
            f"{self.events['item'].n_unique() if len(self) else 0:,}/{self.n_items:,} items used"
            f"{', catalog' if self.catalog is not None else ''}{'' if self.timestamps else ', order only'})"
        )

    def sequences(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-user time-ordered item indices as CSR arrays (indptr over all users, items)."""
        users = self.events["user"].to_numpy()
        counts = np.bincount(users, minlength=self.n_users)
        indptr = np.zeros(self.n_users + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        return indptr, self.events["item"].to_numpy().astype(np.int64)

    def histories(self, users: Sequence[int] | np.ndarray | None = None) -> list[np.ndarray]:
        """Time-ordered item index arrays, one per user index (all users when None)."""
        indptr, items = self.sequences()
        idx = range(self.n_users) if users is None else np.asarray(users, dtype=np.int64)
        return [items[indptr[u] : indptr[u + 1]] for u in idx]

    def user_item_matrix(self, binary: bool = True) -> sp.csr_matrix:
        u = self.events["user"].to_numpy()
        i = self.events["item"].to_numpy()
        v = np.ones(len(u), dtype=np.float32) if binary else self.events["value"].to_numpy().astype(np.float32)
        m = sp.csr_matrix((v, (u, i)), shape=(self.n_users, self.n_items), dtype=np.float32)
        if binary:
            m.data[:] = 1.0
        return m

    def item_popularity(self) -> np.ndarray:
        """Number of events per item index."""
        return np.bincount(self.events["item"].to_numpy(), minlength=self.n_items).astype(np.int64)

    def concat(self, other: Dataset) -> Dataset:
        """Events of both (same id maps required). Parts of one split stay named:
        train + valid is the part "train+valid"; anything else is no part (see `fit_on`)."""
        if other.users is not self.users or other.items is not self.items:
            raise ValueError("concat: both datasets must share their id maps (split from the same data)")
        out = self.with_events(pl.concat([self.events, other.events], how="diagonal_relaxed"))
        a, b = self.info.get("part"), other.info.get("part")
        if a and b and self.info.get("split") == other.info.get("split"):
            out.info["part"] = a if a == b else f"{a}+{b}"
        else:
            out.info.pop("part", None)
            out.info.pop("split", None)
        return out

    @property
    def fit_on(self) -> str:
        """What a model fitted on this dataset was fitted on: its split part ("train",
        "train+valid", ...), or "all" for a dataset that is no split's part."""
        return str(self.info.get("part", "all"))

    # ---------------------------------------------------------------- export
    def to_polars(self) -> pl.DataFrame:
        """Events with raw user and item ids."""
        return self.events.with_columns(
            user=pl.Series(self.users.decode(self.events["user"].to_numpy()).tolist(), dtype=pl.Utf8),
            item=pl.Series(self.items.decode(self.events["item"].to_numpy()).tolist(), dtype=pl.Utf8),
        )

    def to_pandas(self) -> pd.DataFrame:
        return self.to_polars().to_pandas()

    def to_arrow(self) -> pa.Table:
        return self.to_polars().to_arrow()


# -------------------------------------------------------------------- helpers
_MASK64 = (1 << 64) - 1


def tie_key(user: np.ndarray, item: np.ndarray, seed: int = 0) -> np.ndarray:
    """A seeded hash (splitmix64) of (user index, item index): the order of a user's events
    that share a timestamp. Deterministic across runs, platforms and library versions."""
    mix = np.uint64(((seed + 1) * 0x9E3779B97F4A7C15) & _MASK64)
    z = (user.astype(np.uint64) << np.uint64(32)) ^ item.astype(np.uint32).astype(np.uint64)
    with np.errstate(over="ignore"):
        z = z ^ mix
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _sorted(ev: pl.DataFrame, tie_seed: int = 0) -> pl.DataFrame:
    """Sort by user, time, then the seeded tie key (see `Dataset`), then arrival order."""
    if "_order" not in ev.columns:
        ev = ev.with_row_index("_order")
    key = tie_key(ev["user"].to_numpy(), ev["item"].to_numpy(), tie_seed)
    return (
        ev.with_columns(pl.Series("_tie", key, dtype=pl.UInt64))
        .sort(["user", "time", "_tie", "_order"])
        .drop("_tie", "_order")
    )


def _cast(df: pl.DataFrame, col: str, dtype: pl.DataType, source: str) -> pl.Expr:
    try:
        df.select(pl.col(col).cast(dtype, strict=True))
    except Exception as exc:  # polars raises several error types for bad casts
        bad = df.select(pl.col(col).cast(dtype, strict=False).is_null() & pl.col(col).is_not_null())[col]
        row = int(np.argmax(bad.to_numpy())) if bad.any() else 0
        raise DataError(
            f"{source}: column {col!r} row {row + 1}: value {df[col][row]!r} is not a valid {dtype}"
        ) from exc
    return pl.col(col).cast(dtype)


def _parse_time(df: pl.DataFrame, col: str, fmt: str | None, source: str) -> pl.Expr:
    """Epoch seconds from integer/float epochs, datetimes, or date strings."""
    s = df[col]
    if s.dtype.is_integer():
        return pl.col(col).cast(pl.Int64)
    if s.dtype.is_float():
        return pl.col(col).round(0).cast(pl.Int64)
    if s.dtype in (pl.Datetime, pl.Date) or isinstance(s.dtype, pl.Datetime):
        return pl.col(col).cast(pl.Datetime("us")).dt.epoch("s")
    if s.dtype == pl.Utf8:
        as_int = s.cast(pl.Int64, strict=False)
        if as_int.null_count() == s.null_count():
            return pl.col(col).cast(pl.Int64)
        parsed = s.str.to_datetime(format=fmt, strict=False)
        bad = parsed.is_null() & s.is_not_null()
        if bad.any():
            row = int(np.argmax(bad.to_numpy()))
            raise DataError(
                f"{source}: column {col!r} row {row + 1}: cannot parse timestamp {s[row]!r}"
                + ("" if fmt else " (pass time_format=... if it has an unusual format)")
            )
        return pl.col(col).str.to_datetime(format=fmt, strict=False).dt.epoch("s")
    raise DataError(f"{source}: column {col!r} has type {s.dtype}, which is not a timestamp")


def _apply_duplicates(raw: pl.DataFrame, policy: Duplicates, source: str) -> tuple[pl.DataFrame, int]:
    """Duplicates are kept or removed only by an explicit policy; the count is reported."""
    n = raw.height
    if policy == "keep":
        return raw, 0
    if policy in ("drop_exact", "error"):
        out = raw.unique(["user", "item", "time", "kind"], keep="first", maintain_order=True)
        if policy == "error" and out.height < n:
            dup = raw.filter(raw.select(["user", "item", "time", "kind"]).is_duplicated())
            first = dup.row(0, named=True)
            raise DataError(
                f"{source}: {n - out.height} exact duplicate event(s), e.g. user {first['user']!r} item "
                f"{first['item']!r} at row {first['_order'] + 1}; "
                "pass duplicates='drop_exact', 'first', 'last' or 'keep'"
            )
        return out, n - out.height
    if policy in ("first", "last"):
        out = raw.sort(["time", "_order"]).unique(["user", "item", "kind"], keep=policy, maintain_order=True)
        return out, n - out.height
    raise DataError(f"duplicates must be one of keep, drop_exact, first, last, error; got {policy!r}")
