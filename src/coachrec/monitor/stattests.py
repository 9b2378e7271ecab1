"""Drift tests between a reference and a current sample, chosen as Evidently chooses them.

Evidently's default (`_get_default_stattest`): a numeric column with at most 5 distinct values
(over both samples) is treated as categorical; with at most 1,000 reference rows a numeric
column gets Kolmogorov-Smirnov, a categorical one chi-squared (Z-test of proportions when it is
binary), each drifting at p < 0.05; above 1,000 reference rows a numeric column gets the
Wasserstein distance normed by the reference's standard deviation and a categorical one the
Jensen-Shannon distance over 30 bins (or the categories), each drifting at >= 0.1. PSI is
available (drifting at >= 0.1) but never the default. Every test returns its statistic, the
threshold it was held against and, for the hypothesis tests, the p-value.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from scipy import stats
from scipy.spatial import distance

ColumnType = Literal["num", "cat"]
SMALL_REFERENCE = 1000
"""At most this many reference rows: hypothesis tests; above: distances (Evidently's cut)."""
FEW_VALUES = 5
"""A numeric column with at most this many distinct values is tested as categorical."""
BINS = 30
EMPTY_BIN = 0.0001
"""Evidently's stand-in for an empty bin's share, so logs and ratios stay finite."""


@dataclass(frozen=True)
class ColumnDrift:
    """One column's verdict. `kind` says how `statistic` is held against `threshold`: a p-value
    drifts below it, a distance at or above it."""

    column: str
    test: str
    statistic: float
    threshold: float
    p_value: float | None
    drifted: bool
    n_reference: int
    n_current: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _clean(values: Sequence[Any] | np.ndarray) -> np.ndarray:
    a: np.ndarray = np.asarray(values)
    if a.dtype.kind == "f":
        kept: np.ndarray = a[~np.isnan(a)]
        return kept
    if a.dtype.kind == "O":
        return np.asarray([v for v in a if v is not None and v == v], dtype=object)
    return a


def _categories(reference: np.ndarray, current: np.ndarray) -> list[Any]:
    return sorted(set(reference.tolist()) | set(current.tolist()), key=str)


def _shares(values: np.ndarray, keys: Sequence[Any]) -> np.ndarray:
    counts = dict(zip(*np.unique(values, return_counts=True), strict=True)) if len(values) else {}
    shares = np.array([counts.get(k, 0) for k in keys], dtype=np.float64) / max(len(values), 1)
    return np.where(shares == 0, EMPTY_BIN, shares)


def binned_shares(
    reference: np.ndarray, current: np.ndarray, kind: ColumnType, bins: int = BINS
) -> tuple[np.ndarray, np.ndarray]:
    """The two samples' shares per bin (numeric: `bins` equal-width bins over both samples;
    categorical: per category), empty bins at `EMPTY_BIN`, as Evidently bins for JS and PSI."""
    if kind == "num":
        edges = np.histogram_bin_edges(np.concatenate([reference, current]).astype(np.float64), bins=bins)
        ref = np.histogram(reference, edges)[0] / len(reference)
        cur = np.histogram(current, edges)[0] / len(current)
        return np.where(ref == 0, EMPTY_BIN, ref), np.where(cur == 0, EMPTY_BIN, cur)
    keys = _categories(reference, current)
    return _shares(reference, keys), _shares(current, keys)


def ks(reference: np.ndarray, current: np.ndarray, threshold: float = 0.05) -> tuple[float, float | None, bool]:
    """Two-sample Kolmogorov-Smirnov: (D, p-value, drifted)."""
    result = stats.ks_2samp(reference, current)
    return float(result.statistic), float(result.pvalue), bool(result.pvalue < threshold)


def chi_squared(
    reference: np.ndarray, current: np.ndarray, threshold: float = 0.05
) -> tuple[float, float | None, bool]:
    """Chi-squared goodness of fit of the current counts to the reference shares."""
    keys = _categories(reference, current)
    ref_counts = np.array([np.sum(reference == k) for k in keys], dtype=np.float64)
    cur_counts = np.array([np.sum(current == k) for k in keys], dtype=np.float64)
    expected = ref_counts * len(current) / len(reference)
    if np.any(expected == 0):  # a category the reference never saw: certain drift, the test is undefined
        return float("inf"), 0.0, True
    statistic, p = stats.chisquare(cur_counts, expected)
    return float(statistic), float(p), bool(p < threshold)


def z_proportions(
    reference: np.ndarray, current: np.ndarray, threshold: float = 0.05
) -> tuple[float, float | None, bool]:
    """Two-proportion Z-test (pooled) on the share of the first category (sorted)."""
    keys = _categories(reference, current)
    if len(keys) <= 1:
        return 0.0, 1.0, False
    first = keys[0]
    p1, p2 = float(np.mean(reference == first)), float(np.mean(current == first))
    n1, n2 = len(reference), len(current)
    pooled = (p1 * n1 + p2 * n2) / (n1 + n2)
    z = (p1 - p2) / np.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    p = float(2 * (1 - stats.norm.cdf(abs(z))))
    return float(z), p, bool(p < threshold)


def wasserstein_normed(
    reference: np.ndarray, current: np.ndarray, threshold: float = 0.1
) -> tuple[float, float | None, bool]:
    """Wasserstein distance divided by the reference's standard deviation (at least 0.001)."""
    norm = max(float(np.std(reference)), 0.001)
    d = float(stats.wasserstein_distance(reference, current)) / norm
    return d, None, bool(d >= threshold)


def jensen_shannon(
    reference: np.ndarray, current: np.ndarray, threshold: float = 0.1, kind: ColumnType = "cat"
) -> tuple[float, float | None, bool]:
    """Jensen-Shannon distance (natural log) between the binned shares."""
    ref, cur = binned_shares(reference, current, kind)
    d = float(distance.jensenshannon(ref, cur))
    return d, None, bool(d >= threshold)


def psi(
    reference: np.ndarray, current: np.ndarray, threshold: float = 0.1, kind: ColumnType = "num"
) -> tuple[float, float | None, bool]:
    """Population stability index over the binned shares: sum (ref - cur) * ln(ref / cur)."""
    ref, cur = binned_shares(reference, current, kind)
    value = float(np.sum((ref - cur) * np.log(ref / cur)))
    return value, None, bool(value >= threshold)


TESTS: dict[
    str, tuple[float, Callable[[np.ndarray, np.ndarray, float, ColumnType], tuple[float, float | None, bool]]]
] = {
    "ks": (0.05, lambda r, c, t, k: ks(r, c, t)),
    "chisquare": (0.05, lambda r, c, t, k: chi_squared(r, c, t)),
    "z": (0.05, lambda r, c, t, k: z_proportions(r, c, t)),
    "wasserstein": (0.1, lambda r, c, t, k: wasserstein_normed(r, c, t)),
    "jensenshannon": (0.1, lambda r, c, t, k: jensen_shannon(r, c, t, k)),
    "psi": (0.1, lambda r, c, t, k: psi(r, c, t, k)),
}
"""Test name -> (default threshold, function of reference, current, threshold, column type)."""


def default_test(reference: np.ndarray, current: np.ndarray, kind: ColumnType) -> tuple[str, ColumnType]:
    """The test Evidently picks by default, and the column type it is run as."""
    n_values = len(set(reference.tolist()) | set(current.tolist()))
    if kind == "num" and n_values <= FEW_VALUES:
        kind = "cat"
    if len(reference) <= SMALL_REFERENCE:
        if kind == "num":
            return "ks", kind
        return ("chisquare" if n_values > 2 else "z"), kind
    return ("wasserstein" if kind == "num" else "jensenshannon"), kind


def drift_test(
    column: str,
    reference: Sequence[Any] | np.ndarray,
    current: Sequence[Any] | np.ndarray,
    kind: ColumnType,
    *,
    test: str | None = None,
    threshold: float | None = None,
) -> ColumnDrift:
    """Test one column; `test=None` picks Evidently's default, `test="psi"` forces PSI. Missing
    values are dropped first; an empty sample raises (there is nothing to compare)."""
    ref, cur = _clean(reference), _clean(current)
    if len(ref) == 0 or len(cur) == 0:
        raise ValueError(f"column {column!r}: reference has {len(ref)} values, current {len(cur)}; both need some")
    if test is None:
        test, kind = default_test(ref, cur, kind)
    if test not in TESTS:
        raise ValueError(f"unknown drift test {test!r}; use one of {sorted(TESTS)}")
    if kind == "num" or test in ("ks", "wasserstein"):
        ref, cur = ref.astype(np.float64), cur.astype(np.float64)
    default_threshold, fn = TESTS[test]
    t = default_threshold if threshold is None else threshold
    statistic, p, drifted = fn(ref, cur, t, kind)
    return ColumnDrift(column, test, statistic, t, p, drifted, len(ref), len(cur))
