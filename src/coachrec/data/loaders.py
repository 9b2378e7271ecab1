"""Loaders: MovieLens (100K, 1M, latest), P5/SASRec sequence files, CSV, Parquet, frames.

`load(path)` picks the loader by what the folder (or file) holds. Every loader sorts each
user's events by time; events at the same time are ordered by a seeded hash of (user, item)
(`tie_seed`, default 0), not by their order in the file (see `Dataset`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from coachrec.data.dataset import Dataset, Duplicates
from coachrec.data.errors import DataError

ML_COLUMNS = {"user": "userId", "item": "movieId", "time": "timestamp", "value": "rating"}


def _need(folder: Path, *names: str) -> list[Path]:
    paths = [folder / n for n in names]
    missing = [p.name for p in paths if not p.exists()]
    if missing:
        raise DataError(f"{folder}: missing file(s) {missing}")
    return paths


def _read_csv(path: Path, **kw: Any) -> pl.DataFrame:
    try:
        return pl.read_csv(path, **kw)
    except (pl.exceptions.ComputeError, pl.exceptions.NoDataError, pl.exceptions.ShapeError) as exc:
        raise DataError(f"{path}: cannot parse as CSV: {str(exc).splitlines()[0]}") from exc


def _year_from_title(titles: pl.Expr) -> pl.Expr:
    return titles.str.extract(r"\((\d{4})\)\s*$", 1).cast(pl.Int32, strict=False)


def load_movielens(
    path: str | Path, *, duplicates: Duplicates = "keep", name: str | None = None, tie_seed: int = 0
) -> Dataset:
    """MovieLens latest (`ratings.csv`, `movies.csv`, `tags.csv`), 1M (`ratings.dat`,
    `movies.dat`, `::`-separated) or 100K (`u.data`, `u.item`). Value = rating.

    MovieLens timestamps are seconds and the files list each user's ratings by movie id, so
    many events tie; a user's events at the same second are ordered by a seeded hash of
    (user, item) (`tie_seed`; see `Dataset`), never by movie id. The tags of `tags.csv` keep
    their user and timestamp (`Catalog.tag_events`): splits cut them so that no tag at or
    after a held-out event enters the item text (`coachrec.data.splits`)."""
    folder = Path(path)
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder")
    tag_events: pl.DataFrame | None = None
    if (folder / "ratings.csv").exists():
        ratings_p, movies_p = _need(folder, "ratings.csv", "movies.csv")
        ratings = _read_csv(ratings_p)
        movies = _read_csv(movies_p, schema_overrides={"movieId": pl.Utf8})
        for col in ("movieId", "title", "genres"):
            if col not in movies.columns:
                raise DataError(f"{movies_p}: missing column {col!r}; columns are {movies.columns}")
        catalog = movies.select(
            pl.col("movieId").alias("item"),
            pl.col("title"),
            pl.col("genres")
            .str.split("|")
            .list.eval(pl.element().filter(pl.element() != "(no genres listed)"))
            .alias("genres"),
            _year_from_title(pl.col("title")).alias("year"),
        )
        if (folder / "tags.csv").exists():
            tags_p = folder / "tags.csv"
            tags = _read_csv(tags_p, schema_overrides={"userId": pl.Utf8, "movieId": pl.Utf8, "tag": pl.Utf8})
            missing = [c for c in ("userId", "movieId", "tag", "timestamp") if c not in tags.columns]
            if missing:
                raise DataError(f"{tags_p}: missing column(s) {missing}; columns are {tags.columns}")
            tag_events = tags.select(
                pl.col("userId").alias("user"),
                pl.col("movieId").alias("item"),
                pl.col("tag").str.to_lowercase().str.strip_chars(),
                pl.col("timestamp").cast(pl.Int64, strict=False).alias("time"),
            )
        fmt = "ml-latest"
    elif (folder / "ratings.dat").exists():
        ratings_p, movies_p = _need(folder, "ratings.dat", "movies.dat")
        ratings = _read_sep(ratings_p, ["userId", "movieId", "rating", "timestamp"], "::")
        movies = _read_sep(movies_p, ["movieId", "title", "genres"], "::", encoding="latin-1")
        catalog = movies.select(
            pl.col("movieId").alias("item"),
            pl.col("title"),
            pl.col("genres").str.split("|").alias("genres"),
            _year_from_title(pl.col("title")).alias("year"),
        )
        ratings = ratings.with_columns(pl.col(c).cast(pl.Int64, strict=False) for c in ("userId", "timestamp"))
        fmt = "ml-1m"
    elif (folder / "u.data").exists():
        data_p, item_p = _need(folder, "u.data", "u.item")
        ratings = _read_sep(data_p, ["userId", "movieId", "rating", "timestamp"], "\t")
        ratings = ratings.with_columns(pl.col(c).cast(pl.Int64, strict=False) for c in ("userId", "timestamp"))
        genre_names = [
            "unknown", "Action", "Adventure", "Animation", "Children", "Comedy", "Crime", "Documentary", "Drama",
            "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
        ]  # fmt: skip
        items = _read_sep(
            item_p, ["movieId", "title", "release", "video", "url", *genre_names], "|", encoding="latin-1"
        )
        catalog = items.select(
            pl.col("movieId").alias("item"),
            pl.col("title"),
            pl.concat_list([pl.when(pl.col(g) == "1").then(pl.lit(g)).otherwise(pl.lit(None)) for g in genre_names[1:]])
            .list.drop_nulls()
            .alias("genres"),
            _year_from_title(pl.col("title")).alias("year"),
        )
        fmt = "ml-100k"
    else:
        raise DataError(f"{folder}: not a MovieLens folder (expected ratings.csv, ratings.dat or u.data)")
    ds = Dataset.from_frame(
        ratings,
        columns=ML_COLUMNS,
        name=name or folder.name,
        catalog=catalog,
        duplicates=duplicates,
        source=str(ratings_p if fmt != "ml-100k" else data_p),
        tie_seed=tie_seed,
    )
    if tag_events is not None and ds.catalog is not None:
        ds.catalog = ds.catalog.with_tag_events(tag_events)
    ds.info["format"] = fmt
    return ds


def _read_sep(path: Path, names: list[str], sep: str, encoding: str = "utf8") -> pl.DataFrame:
    """Read a file with a (possibly multi-character) separator; every line must have all fields."""
    text = path.read_bytes().decode(encoding)
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise DataError(f"{path}: empty file")
    rows = [ln.split(sep) for ln in lines]
    for n, r in enumerate(rows, 1):
        if len(r) != len(names):
            raise DataError(f"{path}: line {n} has {len(r)} fields, expected {len(names)} separated by {sep!r}")
    return pl.DataFrame(rows, schema=names, orient="row")


def load_sequences(
    path: str | Path, *, name: str | None = None, duplicates: Duplicates = "keep", tie_seed: int = 0
) -> Dataset:
    """P5/SASRec-style file: one line per user, `user item1 item2 ...` in time order.

    There are no timestamps: `time` is the position in the sequence (`timestamps=False`), so
    nothing ties (`tie_seed` is accepted for a uniform `load(...)` and has no effect)."""
    p = Path(path)
    if p.is_dir():
        cands = [p / n for n in ("user_sequence.txt", "sequences.txt") if (p / n).exists()]
        if not cands:
            raise DataError(f"{p}: no user_sequence.txt in folder")
        p = cands[0]
    users: list[str] = []
    items: list[str] = []
    times: list[int] = []
    with p.open() as fh:
        for n, line in enumerate(fh, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) < 2:
                raise DataError(f"{p}: line {n} has a user id but no items")
            u = parts[0]
            users.extend([u] * (len(parts) - 1))
            items.extend(parts[1:])
            times.extend(range(len(parts) - 1))
    if not users:
        raise DataError(f"{p}: no sequences")
    df = pl.DataFrame({"user": users, "item": items, "time": times})
    ds = Dataset.from_frame(df, name=name or p.parent.name, duplicates=duplicates, source=str(p), tie_seed=tie_seed)
    ds.timestamps = False
    ds.info["format"] = "sequences"
    return ds


def load_csv(
    path: str | Path,
    *,
    columns: dict[str, str] | None = None,
    separator: str = ",",
    name: str | None = None,
    duplicates: Duplicates = "keep",
    time_format: str | None = None,
    tie_seed: int = 0,
) -> Dataset:
    """Any CSV with a column mapping, e.g. `columns={"user": "uid", "item": "sku", "time": "ts"}`.
    A user's events at the same time are ordered by a seeded hash (`tie_seed`; see `Dataset`)."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such file")
    df = _read_csv(p, separator=separator, infer_schema_length=10000)
    return Dataset.from_frame(
        df,
        columns=columns,
        name=name or p.stem,
        duplicates=duplicates,
        time_format=time_format,
        source=str(p),
        tie_seed=tie_seed,
    )


def load_parquet(
    path: str | Path,
    *,
    columns: dict[str, str] | None = None,
    name: str | None = None,
    duplicates: Duplicates = "keep",
    tie_seed: int = 0,
) -> Dataset:
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such file")
    try:
        df = pl.read_parquet(p)
    except Exception as exc:  # polars/arrow raise several error types for corrupt files
        raise DataError(f"{p}: cannot read as Parquet: {str(exc).splitlines()[0]}") from exc
    return Dataset.from_frame(
        df, columns=columns, name=name or p.stem, duplicates=duplicates, source=str(p), tie_seed=tie_seed
    )


def load(path: str | Path, **kw: Any) -> Dataset:
    """Pick the loader by what the folder or file holds."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such file or folder")
    if p.is_dir():
        names = {c.name for c in p.iterdir()}
        if names & {"ratings.csv", "ratings.dat", "u.data"}:
            return load_movielens(p, **kw)
        if names & {"user_sequence.txt", "sequences.txt"}:
            return load_sequences(p, **kw)
        parquet = sorted(c for c in p.iterdir() if c.suffix == ".parquet")
        if len(parquet) == 1:
            return load_parquet(parquet[0], **kw)
        csvs = sorted(c for c in p.iterdir() if c.suffix == ".csv")
        if len(csvs) == 1:
            return load_csv(csvs[0], **kw)
        raise DataError(
            f"{p}: unknown data format; expected MovieLens files (ratings.csv / ratings.dat / u.data), "
            f"user_sequence.txt, or a single .csv or .parquet file; found {sorted(names)[:10]}"
        )
    if p.suffix == ".parquet":
        return load_parquet(p, **kw)
    if p.suffix in (".csv", ".tsv"):
        return load_csv(p, separator="\t" if p.suffix == ".tsv" else ",", **kw)
    if p.suffix == ".txt":
        return load_sequences(p, **kw)
    raise DataError(f"{p}: unknown file type {p.suffix!r}; use .csv, .tsv, .parquet or a .txt sequence file")
