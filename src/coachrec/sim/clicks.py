"""Click models: who examines which slot, and what an examined item's preference makes them do.

Examination curves by 0-based slot: ULTRA's measured curve
`[0.68, 0.61, 0.48, 0.34, 0.28, 0.20, 0.11, 0.10, 0.08, 0.06] ** eta` and the `(1 / (slot + 1)) ** eta`
of Open Bandit Pipeline and pytorchltr. `eta` = 0 is no position bias.

Every model gives the expected click probability of each slot of many slates at once (what the
true value of a policy is computed from) and samples clicks from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

ULTRA_CURVE = np.array([0.68, 0.61, 0.48, 0.34, 0.28, 0.20, 0.11, 0.10, 0.08, 0.06])
Curve = Literal["ultra", "inverse"]


def examination(curve: Curve, eta: float, k: int) -> np.ndarray:
    """P(examined) of slots 0..k-1; the ULTRA curve holds its last value beyond 10 slots."""
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    if curve == "ultra":
        base = ULTRA_CURVE[np.minimum(np.arange(k), len(ULTRA_CURVE) - 1)]
    elif curve == "inverse":
        base = 1.0 / (np.arange(k) + 1.0)
    else:
        raise ValueError(f"curve must be 'ultra' or 'inverse', got {curve!r}")
    out: np.ndarray = base**eta
    return out


class ClickModel(Protocol):
    @property
    def name(self) -> str: ...

    def click_probability(self, preference: np.ndarray) -> np.ndarray:
        """Expected clicks per slot (n, K) of slates whose items have these preferences."""
        ...

    def sample(self, preference: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Clicks (n, K) of 0/1."""
        ...


@dataclass(frozen=True)
class PositionBased:
    """click = examined(slot) and attracted(preference), independently (PBM)."""

    exam: np.ndarray
    name: str = "position-based"

    def click_probability(self, preference: np.ndarray) -> np.ndarray:
        out: np.ndarray = preference * self.exam[None, : preference.shape[1]]
        return out

    def sample(self, preference: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return (rng.random(preference.shape) < self.click_probability(preference)).astype(np.int8)


@dataclass(frozen=True)
class Cascade:
    """The user reads top-down, clicks an item with its preference and stops after a click with
    probability `stop` (1: the classic cascade model; below 1: the dependent click model)."""

    stop: float = 1.0
    name: str = "cascade"

    def click_probability(self, preference: np.ndarray) -> np.ndarray:
        go_on = 1.0 - self.stop * preference
        reach = np.cumprod(np.c_[np.ones(len(preference)), go_on[:, :-1]], axis=1)
        out: np.ndarray = reach * preference
        return out

    def sample(self, preference: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        attracted = rng.random(preference.shape) < preference
        stops = attracted & (rng.random(preference.shape) < self.stop)
        stopped_before = np.cumsum(np.c_[np.zeros(len(preference), bool), stops[:, :-1]], axis=1) > 0
        return (attracted & ~stopped_before).astype(np.int8)


@dataclass(frozen=True)
class TrustBias:
    """Agarwal et al. (WSDM 2019): an examined item is clicked with `preference` if relevant-looking
    and, trusting the ranking, also `false_click(slot) = 0.65 / (slot + 1)` times the rest:
    click = exam(slot) * (preference + false_click(slot) * (1 - preference))."""

    exam: np.ndarray
    trust: float = 0.65
    name: str = "trust-bias"

    def click_probability(self, preference: np.ndarray) -> np.ndarray:
        k = preference.shape[1]
        false_click = self.trust / (np.arange(k) + 1.0)
        out: np.ndarray = self.exam[None, :k] * (preference + false_click[None, :] * (1.0 - preference))
        return out

    def sample(self, preference: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return (rng.random(preference.shape) < self.click_probability(preference)).astype(np.int8)
