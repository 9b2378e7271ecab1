"""Exploration: occasionally show a candidate the ranker would not have put in the top k.

An `Explorer` reorders a ranked candidate pool so that its first k slots are what is shown, and
returns, for every slot, the probability that the policy put that item there given the slots
before it. Logging that propensity with each impression is what off-policy estimators
(`coachrec.policy.ope`: IPS, SNIPS, RIPS, DM, DR) need to evaluate another policy on this
traffic later.

Every explorer here is also a `SlatePolicy`: `slot_distribution` gives, for many logged
requests at once, the probability of each pool row at the next slot given which rows are still
available, so an estimator can compute any of them as a target (or logging) policy on logs.

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

    def explore(self, n_candidates: int, k: int, key: str, scores: np.ndarray | None = None) -> Exploration:
        """`n_candidates` are ranked best first (`scores`: the ranker's, same order); `key`
        (the request id) seeds the randomness."""
        ...


class SlatePolicy(Protocol):
    """A slot-by-slot policy over a pool, vectorised over many requests (for off-policy estimation)."""

    @property
    def name(self) -> str: ...

    def slot_distribution(self, scores: np.ndarray, available: np.ndarray) -> np.ndarray:
        """Probability of each pool row at the next slot, shape (n, P): `scores` (n, P) rank the
        pools (higher is better, ties to the lower row), `available` (n, P) marks the rows
        neither shown yet nor padding. Rows with nothing available are all zero."""
        ...


def _best_available(scores: np.ndarray, available: np.ndarray) -> np.ndarray:
    """One-hot (n, P) of the highest-scored available row (ties to the lower row)."""
    masked = np.where(available, scores, -np.inf)
    best = np.argmax(masked, axis=1)  # argmax takes the first maximum: ties to the lower row
    out = np.zeros(scores.shape, dtype=np.float64)
    rows = np.flatnonzero(available.any(axis=1))
    out[rows, best[rows]] = 1.0
    return out


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

    def explore(self, n_candidates: int, k: int, key: str, scores: np.ndarray | None = None) -> Exploration:
        """`scores` are not read: the pool's order is the ranking."""
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

    def slot_distribution(self, scores: np.ndarray, available: np.ndarray) -> np.ndarray:
        """`epsilon` spread uniformly over the available rows, the rest on the best of them."""
        count = available.sum(axis=1, keepdims=True)
        uniform = np.where(available, self.epsilon / np.maximum(count, 1), 0.0)
        out: np.ndarray = uniform + (1.0 - self.epsilon) * _best_available(scores, available)
        return out


@dataclass(frozen=True)
class Greedy:
    """The deterministic top-k by score: what a candidate ranker serves without exploration."""

    name: str = "greedy"

    def slot_distribution(self, scores: np.ndarray, available: np.ndarray) -> np.ndarray:
        return _best_available(scores, available)


@dataclass(frozen=True)
class PlackettLuce:
    """Samples the whole slate from softmax(score / temperature) without replacement
    (Plackett-Luce): every candidate can reach every slot, so logs from it support any target
    policy on the same pools. Propensities are exact: the softmax over the remaining items.

    Scores are the ranker's as handed to the stage; `temperature` is in their units (the blend's
    scores lie in [0, number of retrievers])."""

    temperature: float = 0.1
    seed: int = 0
    name: str = "plackett-luce"

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")

    def explore(self, n_candidates: int, k: int, key: str, scores: np.ndarray | None = None) -> Exploration:
        if scores is None or len(scores) != n_candidates:
            raise ValueError("Plackett-Luce exploration needs the ranker's score of every candidate")
        k = min(k, n_candidates)
        rng = request_rng(self.seed, key)
        logits = np.asarray(scores, dtype=np.float64) / self.temperature
        gumbel = logits - np.log(-np.log(rng.random(n_candidates)))  # Gumbel-top-k = sampling without replacement
        picked = np.argsort(-gumbel, kind="stable")[:k]
        order = np.concatenate([picked, np.setdiff1d(np.arange(n_candidates), picked)])  # the rest in rank order
        propensity = np.full(n_candidates, np.nan)
        available = np.ones((1, n_candidates), dtype=bool)
        for slot, row in enumerate(picked):
            propensity[slot] = self.slot_distribution(logits[None, :] * self.temperature, available)[0, row]
            available[0, row] = False
        explored = np.zeros(n_candidates, dtype=bool)
        explored[:k] = picked != np.arange(k)
        return Exploration(order, explored, propensity)

    def slot_distribution(self, scores: np.ndarray, available: np.ndarray) -> np.ndarray:
        logits = np.where(available, scores / self.temperature, -np.inf)
        top = logits.max(axis=1, keepdims=True)
        weights = np.where(available, np.exp(logits - np.where(np.isfinite(top), top, 0.0)), 0.0)
        total = weights.sum(axis=1, keepdims=True)
        out: np.ndarray = weights / np.where(total > 0, total, 1.0)
        return out
