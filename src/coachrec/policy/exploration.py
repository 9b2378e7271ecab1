"""Exploration: occasionally show a candidate the ranker would not have put in the top k.

An `Explorer` reorders a ranked candidate pool so that its first k slots are what is shown, and
returns, for every slot, the probability that the policy put that item there given the slots
before it. Logging that propensity with each impression is what off-policy estimators (IPS,
SNIPS, doubly robust) need to evaluate another policy on this traffic later; Thompson sampling
or LinUCB are further `Explorer`s with the same signature (they would take the candidates'
features from `scores`' producers rather than a fixed ranking).

Each request gets its own generator seeded from `(seed, request key)`, so a request is
reproducible from its id while different requests explore differently.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class Exploration:
    """A reordered pool: `order` indexes the input candidates; the first k are shown.

    `explored[j]` says slot j holds an exploratory pick; `propensity[j]` is the probability of
    that item at slot j under the policy, given slots 0..j-1 (only the first k slots are set).
    """

    order: np.ndarray
    explored: np.ndarray
    propensity: np.ndarray


class Explorer(Protocol):
    """Chooses the k shown items from a ranked pool and reports each choice's propensity."""

    @property
    def name(self) -> str: ...

    def explore(self, n_candidates: int, k: int, key: str) -> Exploration:
        """`n_candidates` are ranked best first; `key` (the request id) seeds the randomness."""
        ...


def request_rng(seed: int, key: str) -> np.random.Generator:
    """A generator determined by the seed and the request key (stable across processes)."""
    digest = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little")
    return np.random.default_rng([seed, digest])


@dataclass(frozen=True)
class EpsilonGreedy:
    """Slot by slot: with probability `1 - epsilon` take the best remaining candidate, else a
    uniformly random remaining one (which may be the best remaining, as the propensity counts).

    Random picks come from the whole pool, so with a large pool most explorations reach beyond
    the top k; the pool is already constraint-filtered, so exploring never breaks a constraint.
    """

    epsilon: float = 0.05
    seed: int = 0
    name: str = "epsilon-greedy"

    def __post_init__(self) -> None:
        if not 0.0 <= self.epsilon <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], got {self.epsilon}")

    def explore(self, n_candidates: int, k: int, key: str) -> Exploration:
        k = min(k, n_candidates)
        order = np.arange(n_candidates)
        explored = np.zeros(n_candidates, dtype=bool)
        propensity = np.full(n_candidates, np.nan)
        if k == 0:
            return Exploration(order, explored, propensity)
        rng = request_rng(self.seed, key)
        coins = rng.random(k) < self.epsilon
        for slot in range(k):
            remaining = n_candidates - slot  # order[slot:] holds the remaining pool, best first
            if coins[slot]:
                pick = slot + int(rng.integers(remaining))
                # move the pick into the slot; the items it jumps keep their ranking order
                order[slot : pick + 1] = np.roll(order[slot : pick + 1], 1)
                explored[slot] = pick != slot
                propensity[slot] = self.epsilon / remaining + (1.0 - self.epsilon) * (pick == slot)
            else:
                propensity[slot] = 1.0 - self.epsilon + self.epsilon / remaining
        return Exploration(order, explored, propensity)
