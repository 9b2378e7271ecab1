"""Explorers that learn from feedback: Thompson sampling (Beta-Bernoulli) and LinUCB.

They look at the candidates themselves (`CandidateExplorer.explore_candidates`: catalog item
indices, the ranker's scores, a feature row per candidate) and learn from the clicks on the
slates they served (`learn`). Both log the exact propensity of the policy they execute:

- `BetaThompson` keeps a Beta posterior per item (prior centred on the ranker's scaled score)
  and fills each slot from the argmax frequencies of `draws` posterior samples restricted to the
  remaining items; the pick is drawn from those frequencies, so the logged propensity is exactly
  the probability the executed policy gave it (items no draw put first are never picked);
  `greedy=True` ranks by the posterior mean (the exploit-only learner, propensity 1).
- `LinUCB` (Li et al. 2010) fits one ridge regression of clicks on the features and shows the
  top k by `theta . x + alpha * sqrt(x' A^-1 x)`: deterministic, so every propensity is 1 and
  logs from it support no other policy; `alpha=0` is the exploit-only learner.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from coachrec.policy.exploration import Exploration, request_rng

MEMORY = 100_000
"""Served slates remembered per explorer until their feedback arrives (oldest forgotten first)."""


@runtime_checkable
class CandidateExplorer(Protocol):
    @property
    def name(self) -> str: ...

    def explore_candidates(self, items: np.ndarray, scores: np.ndarray, features: np.ndarray, k: int,
                           key: str) -> Exploration: ...  # fmt: skip

    def learn(self, keys: list[str], rewards: np.ndarray) -> int:
        """Update from the rewards (n, K) of slates served under `keys`; returns slates used."""
        ...


def _scaled(scores: np.ndarray) -> np.ndarray:
    lo, hi = float(scores.min(initial=0.0)), float(scores.max(initial=0.0))
    out: np.ndarray = (scores - lo) / (hi - lo) if hi > lo else np.full(len(scores), 0.5)
    return out


def _full_order(picked: list[int], n: int) -> np.ndarray:
    rest = np.setdiff1d(np.arange(n), np.asarray(picked, dtype=np.int64))
    return np.concatenate([np.asarray(picked, dtype=np.int64), rest])


@dataclass
class BetaThompson:
    n_items: int
    prior_strength: float = 2.0
    draws: int = 256
    greedy: bool = False
    seed: int = 0
    name: str = "thompson-beta"
    clicks: np.ndarray = field(init=False)
    shows: np.ndarray = field(init=False)
    _served: OrderedDict[str, np.ndarray] = field(init=False, default_factory=OrderedDict)

    def __post_init__(self) -> None:
        self.clicks = np.zeros(self.n_items)
        self.shows = np.zeros(self.n_items)
        if self.greedy:
            self.name = "beta-posterior-mean"

    def _posterior(self, items: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        prior = _scaled(scores)
        alpha = 1.0 + self.prior_strength * prior + self.clicks[items]
        beta = 1.0 + self.prior_strength * (1.0 - prior) + self.shows[items] - self.clicks[items]
        return alpha, beta

    def explore_candidates(self, items: np.ndarray, scores: np.ndarray, features: np.ndarray, k: int,
                           key: str) -> Exploration:  # fmt: skip
        n = len(items)
        k = min(k, n)
        alpha, beta = self._posterior(items, scores)
        propensity = np.full(n, np.nan)
        picked: list[int] = []
        if self.greedy:
            picked = np.lexsort((np.arange(n), -(alpha / (alpha + beta))))[:k].tolist()
            propensity[:k] = 1.0
        elif k:
            rng = request_rng(self.seed, key)
            theta = rng.beta(alpha[None, :], beta[None, :], size=(self.draws, n))
            left = np.ones(n, dtype=bool)
            for slot in range(k):
                winners = np.argmax(np.where(left[None, :], theta, -1.0), axis=1)
                freq = np.bincount(winners, minlength=n) / self.draws
                pick = int(rng.choice(n, p=freq))
                picked.append(pick)
                propensity[slot] = freq[pick]
                left[pick] = False
        self._remember(key, items[np.asarray(picked, dtype=np.int64)])
        explored = np.zeros(n, dtype=bool)
        explored[:k] = np.asarray(picked) != np.arange(k)
        return Exploration(_full_order(picked, n), explored, propensity)

    def _remember(self, key: str, value: np.ndarray) -> None:
        self._served[key] = value
        while len(self._served) > MEMORY:
            self._served.popitem(last=False)

    def learn(self, keys: list[str], rewards: np.ndarray) -> int:
        used = 0
        for key, r in zip(keys, rewards, strict=True):
            shown = self._served.pop(key, None)
            if shown is None:
                continue
            used += 1
            self.shows[shown] += 1.0
            self.clicks[shown] += np.minimum(r[: len(shown)], 1.0)
        return used


@dataclass
class LinUCB:
    n_features: int
    alpha: float = 1.0
    l2: float = 1.0
    name: str = "linucb"
    a: np.ndarray = field(init=False)
    b: np.ndarray = field(init=False)
    _served: OrderedDict[str, np.ndarray] = field(init=False, default_factory=OrderedDict)

    def __post_init__(self) -> None:
        self.a = self.l2 * np.eye(self.n_features)
        self.b = np.zeros(self.n_features)
        if self.alpha == 0:
            self.name = "linear-greedy"

    def explore_candidates(self, items: np.ndarray, scores: np.ndarray, features: np.ndarray, k: int,
                           key: str) -> Exploration:  # fmt: skip
        n = len(items)
        k = min(k, n)
        if features.shape != (n, self.n_features):
            raise ValueError(f"LinUCB expects {self.n_features} features a candidate, got {features.shape}")
        inv = np.linalg.inv(self.a)
        theta = inv @ self.b
        width = np.sqrt(np.einsum("ij,jk,ik->i", features, inv, features))
        ucb = features @ theta + self.alpha * width + 1e-9 * _scaled(scores)  # ties follow the ranker
        picked = np.lexsort((np.arange(n), -ucb))[:k].tolist()
        self._served[key] = features[picked]
        while len(self._served) > MEMORY:
            self._served.popitem(last=False)
        propensity = np.full(n, np.nan)
        propensity[:k] = 1.0
        explored = np.zeros(n, dtype=bool)
        explored[:k] = np.asarray(picked) != np.arange(k)
        return Exploration(_full_order(picked, n), explored, propensity)

    def learn(self, keys: list[str], rewards: np.ndarray) -> int:
        used = 0
        for key, r in zip(keys, rewards, strict=True):
            x = self._served.pop(key, None)
            if x is None:
                continue
            used += 1
            self.a += x.T @ x
            self.b += x.T @ np.minimum(r[: len(x)], 1.0)
        return used
