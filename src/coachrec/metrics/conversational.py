"""The `conv-full` protocol for conversational recommendation, and paired comparisons with
published per-target results.

conv-full (the strictest setting of He et al., CIKM 2023, which their published figures use):
for each recommender turn, rank the data set's whole candidate set; remove the movies
mentioned earlier in the dialogue; score each target of the turn on its own; a target that was
mentioned earlier is a miss. Ties are pessimistic (a target ranks below every candidate with an
equal score; `coachrec.metrics.ranking.target_ranks`). Metrics per target: Recall@K (hit),
NDCG@K (1 / log2(rank + 2) if hit), MRR@K (1 / (rank + 1) if hit) for K in 1, 5, 10, 20.

Candidates are matched by *name* by default (`match="name"`), as in the published evaluation,
whose models output titles: candidates sharing a name ("Psycho" 1960 and 1998) form one unit
scored by its best member, a hit is the target's name ranked within K, and everything sharing a
name with an earlier mention is removed. `match="id"` ranks entity ids instead (788 of ReDial's
6,281 candidates share a name with another; 28 targets count as new by id but not by name).

Per-target rows (`PerTarget`: a polars frame with `turn`, `dialog_id`, `position`, `target`,
`condition`, `rank` and the metric columns, named as in the reference files) let any two
systems be compared target by target: `compare_paired` resamples dialogs (a cluster
bootstrap of the difference) and flips signs by dialog (a paired permutation test).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl

from coachrec.data.conversations import Conversations
from coachrec.data.errors import DataError
from coachrec.metrics.protocol import Protocol
from coachrec.metrics.ranking import metrics_from_ranks, target_ranks
from coachrec.metrics.stats import PairedComparison, clustered_compare
from coachrec.progress import SILENT, Progress

__all__ = [
    "CONV_FULL", "DESCRIPTION", "KS", "METRICS", "REFERENCE_FILES", "CandidateUnits", "Match", "Reference",
    "aggregate", "candidate_units", "compare_paired", "conv_full", "load_reference", "reference_path", "summary",
]  # fmt: skip

Match = Literal["name", "id"]
KS: tuple[int, ...] = (1, 5, 10, 20)
#: metric columns of a per-target table (the reference files' names)
METRICS: tuple[str, ...] = tuple(f"{m}@{k}" for k in KS for m in ("recall", "ndcg", "mrr"))
#: the protocol record of conv-full (name "conv-full")
CONV_FULL = Protocol(split="conv", candidates="full", exclude_seen=True)
DESCRIPTION = {
    "name": "conv-full: every candidate ranked per turn, earlier-mentioned movies removed (by name), each "
    "target scored on its own (an earlier-mentioned target is a miss), candidates matched by name, ties pessimistic",
    "id": "conv-full (by id): as conv-full, but entity ids ranked and removed by id",
}
#: per-target files of the reference models, by model name
REFERENCE_FILES = {
    "gpt-4": "gpt-4_per_target.csv",
    "gpt-3.5-turbo": "gpt-3.5-turbo_per_target.csv",
    "vicuna-13b": "vicuna-13b_per_target.csv",
    "baize-v2-13b": "baize-v2-13b_per_target.csv",
}


# ---------------------------------------------------------------------- ranking units
@dataclass(frozen=True)
class CandidateUnits:
    """What is ranked: `unit[j]` is the unit of candidate column j. With `match="name"` a unit
    is a distinct name; with `match="id"` every column is its own unit."""

    match: Match
    unit: np.ndarray
    n_units: int
    order: np.ndarray  # columns sorted by unit
    starts: np.ndarray  # first position of each unit in `order`
    unit_of_name: dict[str, int]

    def unit_scores(self, scores: np.ndarray) -> np.ndarray:
        """(b, n_candidates) -> (b, n_units): each unit scored by its best column."""
        if self.match == "id":
            return scores
        return np.maximum.reduceat(scores[:, self.order], self.starts, axis=1)


def candidate_units(conv: Conversations, match: Match = "name") -> CandidateUnits:
    """The ranking units of `conv`'s candidate set under `match`."""
    if match not in ("name", "id"):
        raise ValueError(f"match must be 'name' or 'id', got {match!r}")
    names = dict(zip(conv.entities["id"].to_list(), conv.entities["match_name"].to_list(), strict=True))
    cand_names = [names[int(e)] for e in conv.candidates]
    if match == "id":
        n = conv.n_candidates
        return CandidateUnits("id", np.arange(n), n, np.arange(n), np.arange(n), {})
    unit_of_name: dict[str, int] = {}
    unit = np.array([unit_of_name.setdefault(nm, len(unit_of_name)) for nm in cand_names], dtype=np.int64)
    order = np.argsort(unit, kind="stable")
    starts = np.searchsorted(unit[order], np.arange(len(unit_of_name)))
    return CandidateUnits("name", unit, len(unit_of_name), order, starts, unit_of_name)


def _excluded(conv: Conversations, units: CandidateUnits, prev: list[list[int]]) -> list[np.ndarray]:
    """Units removed from each turn's ranking: those of the earlier-mentioned entities."""
    if units.match == "id":
        return [c[c >= 0] for c in (conv.column(p) for p in prev)]
    names = dict(zip(conv.entities["id"].to_list(), conv.entities["match_name"].to_list(), strict=True))
    out = []
    for p in prev:
        u = {units.unit_of_name[names[e]] for e in p if names[e] in units.unit_of_name}
        out.append(np.fromiter(u, dtype=np.int64, count=len(u)))
    return out


# ---------------------------------------------------------------------- the protocol
_NEVER = np.int64(2**40)  # the rank of a target that cannot be hit: beyond every K

ScoreFn = Callable[[np.ndarray], np.ndarray]
"""`score(turns)`: scores of every candidate column for the given turn indices, (len, n_candidates)."""


def conv_full(
    score: ScoreFn | np.ndarray,
    conv: Conversations,
    *,
    match: Match = "name",
    batch_size: int = 256,
    progress: Progress = SILENT,
) -> pl.DataFrame:
    """Per-target rows of conv-full for every target of `conv`. `score` is a function of turn
    indices (the `turn` column) returning (len, n_candidates) scores, or a score matrix with one
    row per turn of `conv.turns`, in its order. Columns: `turn`, `dialog_id`, `position`,
    `target`, `condition` ("dis" = mentioned earlier, under `match`), `rank` (0-based,
    pessimistic, among the units still in the ranking; `n_units` for a miss by rule) and the
    `METRICS` columns."""
    units = candidate_units(conv, match)
    turn_ids = conv.turns["turn"].to_numpy()
    if isinstance(score, np.ndarray):
        if score.shape != (conv.n_turns, conv.n_candidates):
            raise ValueError(f"scores have shape {score.shape}; expected ({conv.n_turns}, {conv.n_candidates})")
        matrix = score
        row_of = {int(t): i for i, t in enumerate(turn_ids)}

        def from_matrix(turns: np.ndarray) -> np.ndarray:
            return matrix[[row_of[int(t)] for t in turns]]

        score_fn: ScoreFn = from_matrix
    else:
        score_fn = score
    prev = conv.turns["prev_entity"].to_list()
    excluded = _excluded(conv, units, prev)
    tg = conv.targets
    t_turn = tg["turn"].to_numpy()
    t_cols = conv.column(tg["target"].to_numpy())
    t_units = np.where(t_cols >= 0, units.unit[np.maximum(t_cols, 0)], -1)
    pos_of_turn = {int(t): i for i, t in enumerate(turn_ids)}
    t_row = np.array([pos_of_turn[int(t)] for t in t_turn], dtype=np.int64)
    ranks = np.full(len(tg), units.n_units, dtype=np.int64)
    dis = np.zeros(len(tg), dtype=bool)
    n = len(turn_ids)
    with progress.bar("conv-full", n) as advance:
        for lo in range(0, n, batch_size):
            hi = min(lo + batch_size, n)
            s = np.asarray(score_fn(turn_ids[lo:hi]), dtype=np.float32)
            if s.shape != (hi - lo, conv.n_candidates):
                raise ValueError(
                    f"score() returned shape {s.shape} for {hi - lo} turns; expected ({hi - lo}, {conv.n_candidates})"
                )
            u = units.unit_scores(s).copy()
            rows = np.repeat(np.arange(hi - lo), [len(excluded[i]) for i in range(lo, hi)])
            if len(rows):
                u[rows, np.concatenate(excluded[lo:hi])] = -np.inf
            sel = np.nonzero((t_row >= lo) & (t_row < hi))[0]
            ex_sets = [set(excluded[t_row[j]].tolist()) for j in sel]
            dis[sel] = [t_units[j] in ex for j, ex in zip(sel, ex_sets, strict=True)]
            ok = sel[(~dis[sel]) & (t_units[sel] >= 0)]
            if len(ok):
                ranks[ok] = target_ranks(u[t_row[ok] - lo], t_units[ok])
            advance(hi, n)
    miss = dis | (t_units < 0)
    m = metrics_from_ranks(
        np.where(miss, _NEVER, ranks), np.arange(len(tg)), len(tg), np.ones(len(tg), dtype=np.int64), KS
    )
    cols = {k: m[k] for k in METRICS}
    return tg.select("turn", "dialog_id", "position", "target").with_columns(
        pl.Series("condition", np.where(dis, "dis", "rec"), dtype=pl.Utf8),
        pl.Series("rank", ranks).set(pl.Series(miss), None),
        *(pl.Series(k, v) for k, v in cols.items()),
    )


# ---------------------------------------------------------------------- aggregation
def aggregate(
    per_target: pl.DataFrame, condition: str | None = None, metrics: Sequence[str] | None = None
) -> dict[str, float]:
    """Mean of each metric column over a per-target table (yours or a reference's), over all
    targets or one `condition` ("rec" / "dis"); also `n` and, per metric, `…_se` (standard
    error of the mean, ddof 1)."""
    df = per_target if condition is None else per_target.filter(pl.col("condition") == condition)
    cols = list(metrics) if metrics is not None else [c for c in METRICS if c in df.columns]
    out: dict[str, float] = {"n": float(df.height)}
    for c in cols:
        v = df[c].cast(pl.Float64).to_numpy()
        out[c] = float(v.mean()) if len(v) else float("nan")
        out[f"{c}_se"] = float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else float("nan")
    return out


def summary(per_target: pl.DataFrame) -> dict[str, dict[str, float]]:
    """`aggregate` over all targets ("all") and per condition ("rec", "dis")."""
    return {"all": aggregate(per_target), "rec": aggregate(per_target, "rec"), "dis": aggregate(per_target, "dis")}


# ---------------------------------------------------------------------- references
@dataclass
class Reference:
    """A published system's per-target rows, aligned with a `Conversations`' targets.

    `reordered_turns`: turns whose rows come in a different order of conditions than the
    targets' `rec` order (rows are matched to targets by turn and condition, in order, so
    this is reported, not an error). `outside_rows`: rows of turns the `Conversations` does not
    hold (a sample or a subset), left out."""

    name: str
    per_target: pl.DataFrame
    reordered_turns: int = 0
    outside_rows: int = 0


def reference_path(folder: str | Path, model: str) -> Path:
    """`folder/<model>_per_target.csv` (or `.csv.gz`) of a reference model."""
    if model not in REFERENCE_FILES:
        raise KeyError(f"unknown reference model {model!r}; choose from {sorted(REFERENCE_FILES)}")
    base = Path(folder) / REFERENCE_FILES[model]
    gz = base.with_name(base.name + ".gz")
    return base if base.exists() or not gz.exists() else gz


def load_reference(path: str | Path, conv: Conversations | None = None, *, name: str | None = None) -> Reference:
    """Read a per-target file (`idx`, `condition`, metric columns; `.csv` or `.csv.gz`). With
    `conv`, align it: each row gets its turn's `dialog_id`, the target's `position` and
    `target`, matching rows to targets by `idx` and condition in order; rows of turns `conv`
    does not hold are left out (counted); a turn whose rows and targets disagree in number
    raises `DataError`."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: file not found")
    try:
        df = pl.read_csv(p)
    except (pl.exceptions.ComputeError, pl.exceptions.NoDataError) as exc:
        raise DataError(f"{p}: cannot parse as CSV: {str(exc).splitlines()[0]}") from exc
    missing = [c for c in ("idx", "condition", *METRICS) if c not in df.columns]
    if missing:
        raise DataError(f"{p}: missing column(s) {missing}")
    bad = np.nonzero(~df["condition"].is_in(["rec", "dis"]).to_numpy())[0]
    if len(bad):
        raise DataError(
            f"{p}: line {int(bad[0]) + 2}: condition must be 'rec' or 'dis', got {df['condition'][int(bad[0])]!r}"
        )
    label = name or p.name.split("_per_target")[0]
    df = df.rename({"idx": "turn"}).with_columns(pl.col("turn").cast(pl.Int64))
    if conv is None:
        return Reference(label, df)
    return _align(label, df, conv, p)


def _align(label: str, df: pl.DataFrame, conv: Conversations, path: Path) -> Reference:
    tg = conv.targets
    by_turn: dict[int, list[tuple[int, str, int]]] = {}
    for t, c, pos, e in zip(
        tg["turn"].to_list(), tg["condition"].to_list(), tg["position"].to_list(), tg["target"].to_list(), strict=True
    ):
        by_turn.setdefault(t, []).append((pos, c, e))
    inside = np.isin(df["turn"].to_numpy(), np.fromiter(by_turn, dtype=np.int64))
    if not inside.any():
        raise DataError(f"{path}: no idx is a turn of {conv.source}")
    n_outside = int((~inside).sum())
    df = df.filter(pl.Series(inside))
    ref_rows: dict[int, list[tuple[int, str]]] = {}
    for i, (t, c) in enumerate(zip(df["turn"].to_list(), df["condition"].to_list(), strict=True)):
        ref_rows.setdefault(t, []).append((i, c))
    positions = np.empty(df.height, dtype=np.int64)
    targets = np.empty(df.height, dtype=np.int64)
    reordered = 0
    for t, rows in ref_rows.items():
        tgts = by_turn[t]
        if len(rows) != len(tgts):
            raise DataError(f"{path}: idx {t} has {len(rows)} row(s) but the turn has {len(tgts)} target(s)")
        if [c for _, c in rows] != [c for _, c, _ in tgts]:
            reordered += 1
        for cond in ("rec", "dis"):
            r = [i for i, c in rows if c == cond]
            g = [(pos, e) for pos, c, e in tgts if c == cond]
            if len(r) != len(g):
                raise DataError(
                    f"{path}: idx {t} has {len(r)} {cond!r} row(s) but {len(g)} such target(s) (conditions here: "
                    f"{[c for _, c in rows]}, in the data: {[c for _, c, _ in tgts]})"
                )
            for i, (pos, e) in zip(r, g, strict=True):
                positions[i], targets[i] = pos, e
    dialog = dict(zip(conv.turns["turn"].to_list(), conv.turns["dialog_id"].to_list(), strict=True))
    aligned = df.with_columns(
        pl.Series("position", positions),
        pl.Series("target", targets),
        pl.Series("dialog_id", [dialog[t] for t in df["turn"].to_list()], dtype=pl.Utf8),
    ).select(
        "turn",
        "dialog_id",
        "position",
        "target",
        "condition",
        *[c for c in df.columns if c not in ("turn", "condition")],
    )
    return Reference(label, aligned, reordered, n_outside)


# ---------------------------------------------------------------------- paired comparison
def compare_paired(
    a: pl.DataFrame,
    b: pl.DataFrame,
    metric: str = "recall@10",
    *,
    targets: pl.DataFrame | None = None,
    n_boot: int = 2000,
    n_perm: int = 10000,
    seed: int = 0,
) -> PairedComparison:
    """b versus a (two per-target tables, e.g. yours and `Reference.per_target`) on the
    targets both have (`turn`, `position`), or only on those of `targets` (any frame with
    `turn` and `position`: a fold, a condition, a subset). Clustered by dialog."""
    keys = ["turn", "position"]
    joined = a.select(*keys, "dialog_id", pl.col(metric).cast(pl.Float64).alias("_a")).join(
        b.select(*keys, pl.col(metric).cast(pl.Float64).alias("_b")), on=keys, how="inner"
    )
    if targets is not None:
        joined = joined.join(targets.select(keys).unique(), on=keys, how="inner")
    if joined.height == 0:
        raise ValueError("the two tables share no (turn, position) targets")
    return clustered_compare(
        joined["_a"].to_numpy(),
        joined["_b"].to_numpy(),
        joined["dialog_id"].to_numpy(),
        n_boot=n_boot,
        n_perm=n_perm,
        seed=seed,
    )
