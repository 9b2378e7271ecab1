"""The student: a logistic model fitted to the teacher's soft labels, used as a ranker.

Soft targets (the teacher's P(pass) per item) with per-pair weights: cross-entropy against a
soft target has the same Newton step as the hard-label case, so a few exact Newton iterations
fit it (no learning rate to tune, deterministic). At serving the ranker scores each candidate
as `blend + strength * P_student`: strength 0 is the champion's ranking, and the distiller
picks the strength on validation data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


def sigmoid(z: np.ndarray) -> np.ndarray:
    out: np.ndarray = 1.0 / (1.0 + np.exp(-np.clip(z, -35, 35)))
    return out


@dataclass
class Student:
    features: tuple[str, ...]
    weights: np.ndarray = field(default_factory=lambda: np.zeros(0))
    mu: np.ndarray = field(default_factory=lambda: np.zeros(0))
    sd: np.ndarray = field(default_factory=lambda: np.zeros(0))
    strength: float = 1.0
    fit_info: dict[str, Any] = field(default_factory=dict)

    def fit(
        self, x: np.ndarray, soft: np.ndarray, weight: np.ndarray, *, l2: float = 1.0, iterations: int = 25
    ) -> Student:
        if x.shape[1] != len(self.features):
            raise ValueError(
                f"student expects {len(self.features)} features ({self.features}), got {x.shape[1]} columns"
            )
        if not len(x):
            raise ValueError("no teacher-labelled pairs to distil from")
        y = np.clip(np.asarray(soft, dtype=np.float64), 0.0, 1.0)
        w_pair = np.asarray(weight, dtype=np.float64)
        self.mu = x.mean(axis=0)
        sd = x.std(axis=0)
        self.sd = np.where(sd > 1e-12, sd, 1.0)
        z = np.column_stack([np.ones(len(x)), (x - self.mu) / self.sd])
        w = np.zeros(z.shape[1])
        reg = np.full(z.shape[1], l2)
        reg[0] = 0.0
        for _ in range(iterations):
            p = sigmoid(z @ w)
            grad = z.T @ (w_pair * (p - y)) + reg * w
            hess = (z * (w_pair * p * (1 - p))[:, None]).T @ z + np.diag(reg) + 1e-9 * np.eye(len(w))
            step = np.linalg.solve(hess, grad)
            w -= step
            if np.abs(step).max() < 1e-8:
                break
        self.weights = w
        p = sigmoid(z @ w)
        self.fit_info = {
            "pairs": len(x),
            "weighted_soft_log_loss": float(
                -(w_pair * (y * np.log(p + 1e-12) + (1 - y) * np.log(1 - p + 1e-12))).sum() / w_pair.sum()
            ),
            "mean_abs_error_vs_teacher": float(np.abs(p - y).mean()),
        }
        return self

    def probability(self, x: np.ndarray) -> np.ndarray:
        if not len(self.weights):
            raise RuntimeError("the student is not fitted")
        return sigmoid(self.weights[0] + ((x - self.mu) / self.sd) @ self.weights[1:])

    def to_dict(self) -> dict[str, Any]:
        return {
            "features": list(self.features),
            "weights": self.weights.tolist(),
            "mu": self.mu.tolist(),
            "sd": self.sd.tolist(),
            "strength": self.strength,
            "fit_info": self.fit_info,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Student:
        return cls(
            tuple(d["features"]),
            np.asarray(d["weights"]),
            np.asarray(d["mu"]),
            np.asarray(d["sd"]),
            float(d["strength"]),
            dict(d.get("fit_info", {})),
        )

    def coefficients(self) -> dict[str, float]:
        """Standardised coefficients by feature name (what the student learned to value)."""
        return {
            "bias": float(self.weights[0]),
            **{f: float(v) for f, v in zip(self.features, self.weights[1:], strict=False)},
        }
