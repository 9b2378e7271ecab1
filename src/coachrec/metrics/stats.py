"""Significance for paired comparisons (two models on the same users) and agreement."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PairedComparison:
    """Mean of b - a over the same users, a bootstrap confidence interval, a p-value."""

    mean_a: float
    mean_b: float
    delta: float
    ci_low: float
    ci_high: float
    confidence: float
    p_value: float
    n: int

    @property
    def significant(self) -> bool:
        return self.ci_low > 0 or self.ci_high < 0


def _paired(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired samples need equal 1-d shapes, got {a.shape} and {b.shape}")
    if len(a) == 0:
        raise ValueError("paired samples are empty")
    return a, b


def paired_bootstrap(
    a: np.ndarray, b: np.ndarray, n_boot: int = 2000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap CI of mean(b - a), resampling users (pairs stay together)."""
    a, b = _paired(a, b)
    d = b - a
    rng = np.random.default_rng(seed)
    n = len(d)
    means = np.empty(n_boot)
    chunk = max(1, 2_000_000 // n)
    for lo in range(0, n_boot, chunk):
        hi = min(lo + chunk, n_boot)
        means[lo:hi] = d[rng.integers(0, n, size=(hi - lo, n))].mean(axis=1)
    alpha = (1 - confidence) / 2
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


def permutation_test(a: np.ndarray, b: np.ndarray, n_perm: int = 10000, seed: int = 0) -> float:
    """Two-sided paired permutation (sign-flip) test of mean(b - a) = 0; returns the p-value."""
    a, b = _paired(a, b)
    d = b - a
    observed = abs(d.mean())
    rng = np.random.default_rng(seed)
    n = len(d)
    count = 0
    chunk = max(1, 2_000_000 // n)
    for lo in range(0, n_perm, chunk):
        hi = min(lo + chunk, n_perm)
        signs = rng.integers(0, 2, size=(hi - lo, n)) * 2 - 1
        count += int((np.abs((signs * d).mean(axis=1)) >= observed - 1e-12).sum())
    return (count + 1) / (n_perm + 1)


def compare(
    a: np.ndarray, b: np.ndarray, n_boot: int = 2000, confidence: float = 0.95, seed: int = 0
) -> PairedComparison:
    """Bootstrap CI and permutation p-value for b versus a on the same users."""
    a, b = _paired(a, b)
    lo, hi = paired_bootstrap(a, b, n_boot, confidence, seed)
    return PairedComparison(
        float(a.mean()),
        float(b.mean()),
        float((b - a).mean()),
        lo,
        hi,
        confidence,
        permutation_test(a, b, seed=seed),
        len(a),
    )


def cohen_kappa(y1: np.ndarray, y2: np.ndarray) -> float:
    """Cohen's kappa between two raters' labels (any hashable labels)."""
    y1 = np.asarray(y1)
    y2 = np.asarray(y2)
    if y1.shape != y2.shape or len(y1) == 0:
        raise ValueError(f"kappa needs two non-empty label arrays of equal length, got {y1.shape} and {y2.shape}")
    labels, inv = np.unique(np.concatenate([y1, y2]), return_inverse=True)
    a, b = inv[: len(y1)], inv[len(y1) :]
    n_lab = len(labels)
    conf = np.bincount(a * n_lab + b, minlength=n_lab * n_lab).reshape(n_lab, n_lab) / len(y1)
    po = np.trace(conf)
    pe = float(conf.sum(axis=1) @ conf.sum(axis=0))
    if pe == 1.0:
        return 1.0 if po == 1.0 else 0.0
    return float((po - pe) / (1 - pe))


def clustered_compare(
    a: np.ndarray,
    b: np.ndarray,
    clusters: np.ndarray,
    *,
    n_boot: int = 2000,
    n_perm: int = 10000,
    confidence: float = 0.95,
    seed: int = 0,
) -> PairedComparison:
    """b versus a on the same units grouped in `clusters` (users, dialogs): the mean of b - a
    over units, a percentile bootstrap CI that resamples whole clusters (ratio of sums), and a
    two-sided permutation p that flips the sign of each cluster's summed difference together
    (units of one cluster are not independent). Identical a and b give delta 0, CI [0, 0], p 1.
    `n` is the number of units."""
    a, b = _paired(a, b)
    if len(clusters) != len(a):
        raise ValueError(f"need a cluster per value: {len(clusters)} clusters for {len(a)} values")
    _, g = np.unique(np.asarray(clusters, dtype=object).astype(str), return_inverse=True)
    n_g = int(g.max()) + 1
    d_sum = np.bincount(g, weights=b - a, minlength=n_g)
    n_sum = np.bincount(g, minlength=n_g).astype(np.float64)
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    chunk = max(1, 2_000_000 // n_g)
    for lo in range(0, n_boot, chunk):
        hi = min(lo + chunk, n_boot)
        idx = rng.integers(0, n_g, size=(hi - lo, n_g))
        means[lo:hi] = d_sum[idx].sum(axis=1) / n_sum[idx].sum(axis=1)
    observed = abs(d_sum.sum())
    count = 0
    for lo in range(0, n_perm, chunk):
        hi = min(lo + chunk, n_perm)
        signs = rng.integers(0, 2, size=(hi - lo, n_g)) * 2 - 1
        count += int((np.abs(signs @ d_sum) >= observed - 1e-9).sum())
    alpha = (1 - confidence) / 2
    lo_ci, hi_ci = float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))
    return PairedComparison(
        float(a.mean()),
        float(b.mean()),
        float(d_sum.sum() / n_sum.sum()),
        lo_ci,
        hi_ci,
        confidence,
        (count + 1) / (n_perm + 1),
        len(a),
    )
