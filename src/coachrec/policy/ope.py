"""Off-policy evaluation of slate policies on logged traffic: what would another policy have earned?

A log holds, per request, the candidate pool the exploration stage saw (rank order), the shown
slate (pool rows per slot), each slot's logged propensity — P(item at slot | earlier slots) under
the logging policy, as `Explorer`s record it — and the reward (clicks) per slot. Read one from the
trace store with `coachrec.serve.impressions.read_slates`, or from a pandas / polars / Arrow frame
with `SlateLog.from_frame` (one row per shown slot).

Estimators of the expected reward per slate (sum of slot rewards) of a target policy, with
per-slot weights `W_j = prod_{l <= j} pi_e(a_l | a_<l) / pi_0(a_l | a_<l)`:

- `ips`: standard slate IPS, the whole-slate weight `W_K` times the slate's reward (unbiased with
  full support; high variance);
- `snips`: self-normalised IPS;
- `rips`: reward-interaction IPS (McInerney et al. 2020), `sum_j W_j r_j` (unbiased when a slot's
  reward depends only on the slots above it: position-based and cascade clicks);
- `snrips`: RIPS normalised slot by slot;
- `iips`: independent IPS (Li et al. 2018), per slot the ratio of marginal probabilities of the
  item at that slot (unbiased under position-based clicks); the marginals are exact for
  epsilon-greedy and greedy policies (`exact_marginals`) and estimated by Monte Carlo rollouts
  for any other (Plackett-Luce);
- `dm`: the direct method, a reward model's value of the target's slates (Monte Carlo rollouts);
- `dr`: the cascade doubly robust estimator (Kiyohara et al. 2022) with a per-slot reward model,
  `sum_j W_j (r_j - q(a_j, j)) + W_{j-1} E_{a ~ pi_e(. | a_<j)} q(a, j)`;
- `sndr`: the same with slot-wise self-normalised weights;
- `switch-dr` and `dros`: Open Bandit Pipeline's Switch-DR (Wang et al. 2017) and DR with
  optimistic shrinkage (Su et al. 2020) on the slot marginals, as OBP computes them on a log of
  (context, position) rounds: per slot `E_{a ~ me(., j)} q(a, j) + w~ (r_j - q(a_j, j))` with
  `w = me / m0` of the logged item, `w~ = w 1{w <= switch_tau}` (Switch-DR) or
  `w~ = lambda w / (w^2 + lambda)` (DRos, `dros_lambda`), summed over slots.

Every estimate carries its diagnostics (effective sample size, largest weight, share of zero
weights, and — with the logging policy known — target mass the logging policy never gives
support to) and a confidence interval by bootstrap over users. A log with a missing or invalid
propensity is refused with `OPEError` naming how many slots and which request: never a silent 1.0.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from coachrec.policy.exploration import EpsilonGreedy, Greedy, PlackettLuce, SlatePolicy

ESTIMATORS = ("ips", "snips", "rips", "snrips", "iips", "dm", "dr", "sndr", "switch-dr", "dros")
NEEDS_MODEL = ("dm", "dr", "sndr", "switch-dr", "dros")
NEEDS_MARGINALS = ("iips", "switch-dr", "dros")
CASCADE_FAMILY = ("rips", "snrips", "dr", "sndr")


class OPEError(ValueError):
    """The log cannot support the estimate asked for (missing propensities, no support, too few)."""


@dataclass(frozen=True)
class SlateLog:
    """`n` logged requests: pools of up to P candidates and slates of up to K slots.

    `shown[i, j]` is the pool row shown at slot j (-1: no slot); `propensity[i, j]` its logged
    probability given slots 0..j-1 (NaN: not logged); `reward[i, j]` its reward (a click: 1).
    `pool_items`/`pool_scores` (n, P) are the pool in the order the exploration stage saw it
    (padding: "" and NaN); `pool_sources` (n, P, R) the retrievers' raw scores of each pool row
    (NaN: not proposed), named by `source_names`. Frame logs have no pool (None)."""

    request_id: np.ndarray
    user_id: np.ndarray
    shown: np.ndarray
    propensity: np.ndarray
    reward: np.ndarray
    pool_items: np.ndarray | None = None
    pool_scores: np.ndarray | None = None
    pool_sources: np.ndarray | None = None
    source_names: tuple[str, ...] = ()
    shown_items: np.ndarray | None = None
    """Item ids per slot (n, K), "" for no slot (always set for frame logs)."""

    def __len__(self) -> int:
        return len(self.request_id)

    @property
    def slots(self) -> np.ndarray:
        """(n, K) True where a slot was shown."""
        out: np.ndarray = self.shown >= 0
        return out

    @property
    def impressions(self) -> int:
        return int(self.slots.sum())

    @functools.cached_property
    def pool(self) -> np.ndarray:
        """(n, P) True where the pool has a candidate (computed once: do not modify it)."""
        if self.pool_items is None:
            raise OPEError("this log has no candidate pools (a frame log): give target propensities instead")
        out: np.ndarray = self.pool_items != ""
        return out

    def check_propensities(self) -> None:
        """Raise `OPEError` unless every shown slot has a logged propensity in (0, 1]."""
        p = self.propensity[self.slots]
        missing = np.isnan(p)
        if missing.any():
            rows = np.flatnonzero((np.isnan(self.propensity) & self.slots).any(axis=1))
            raise OPEError(
                f"{int(missing.sum())} of {p.size} logged slots have no propensity (first: request "
                f"{self.request_id[rows[0]]!r}); off-policy estimates need the logging policy's propensity "
                "of every shown slot — serve with an explorer that logs it (epsilon-greedy, Plackett-Luce) "
                "or drop those requests; a missing propensity is never taken as 1"
            )
        bad = (p <= 0) | (p > 1)
        if bad.any():
            raise OPEError(f"{int(bad.sum())} logged propensities lie outside (0, 1]: the log is corrupt")

    def select(self, rows: np.ndarray) -> SlateLog:
        """The requests at `rows` (indices or a mask)."""

        def take(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[rows]

        return SlateLog(
            self.request_id[rows],
            self.user_id[rows],
            self.shown[rows],
            self.propensity[rows],
            self.reward[rows],
            take(self.pool_items),
            take(self.pool_scores),
            take(self.pool_sources),
            self.source_names,
            take(self.shown_items),
        )

    @classmethod
    def from_frame(
        cls,
        frame: Any,
        *,
        request: str = "request_id",
        position: str = "position",
        item: str = "item",
        propensity: str = "propensity",
        reward: str = "reward",
        user: str | None = "user_id",
    ) -> tuple[SlateLog, dict[str, np.ndarray]]:
        """A log from a pandas, polars or Arrow frame with one row per shown slot (0-based
        `position`). Returns the log and every other numeric column as an (n, K) array (NaN
        where absent), e.g. a `target_propensity` or reward-model column for `estimate`."""
        import polars as pl

        df = (
            frame
            if isinstance(frame, pl.DataFrame)
            else pl.from_pandas(frame)
            if _is_pandas(frame)
            else pl.from_arrow(frame)
        )
        if not isinstance(df, pl.DataFrame):
            raise OPEError("from_frame needs a table (pandas, polars or Arrow), got a series")
        needed = [request, position, item, propensity, reward]
        missing = [c for c in needed if c not in df.columns]
        if missing:
            raise OPEError(f"the log frame lacks columns {missing}; it has {df.columns}")
        if df[position].null_count() or (df[position] < 0).any():
            raise OPEError(f"column {position!r}: every row needs a position >= 0")
        requests, row = np.unique(df[request].cast(pl.Utf8).to_numpy().astype(str), return_inverse=True)
        pos = df[position].cast(pl.Int64).to_numpy()
        if len(np.unique(row * (pos.max() + 1) + pos)) != len(pos):
            raise OPEError(f"the log frame has two rows for one ({request}, {position})")
        n, k = len(requests), int(pos.max()) + 1

        def grid(values: np.ndarray, fill: Any, dtype: Any) -> np.ndarray:
            out = np.full((n, k), fill, dtype=dtype)
            out[row, pos] = values
            return out

        prop = df[propensity].cast(pl.Float64).fill_null(np.nan).to_numpy()
        shown = grid(pos, -1, np.int64)
        users = np.full(n, "", dtype=object)
        if user is not None and user in df.columns:
            users[row] = df[user].cast(pl.Utf8).fill_null("").to_numpy()
        else:
            users = requests.astype(object)
        extra = {
            c: grid(df[c].cast(pl.Float64).fill_null(np.nan).to_numpy(), np.nan, np.float64)
            for c in df.columns
            if c not in (*needed, user) and df[c].dtype.is_numeric()
        }
        log = cls(
            requests.astype(object),
            users,
            shown,
            grid(prop, np.nan, np.float64),
            grid(df[reward].cast(pl.Float64).to_numpy(), 0.0, np.float64),
            shown_items=grid(df[item].cast(pl.Utf8).to_numpy(), "", object),
        )
        return log, extra


def _is_pandas(frame: Any) -> bool:
    return type(frame).__module__.startswith("pandas")


@dataclass(frozen=True)
class Estimate:
    """One estimator's value (expected reward per slate) with a bootstrap CI over users."""

    estimator: str
    value: float
    ci_low: float
    ci_high: float
    n: int
    ess: float
    """Effective sample size (sum w)^2 / sum w^2 of the weights the estimator uses: the slate
    weights for ips/snips (and dm), the mean over slots of each slot's for the cascade family
    (rips, snrips, dr, sndr: W_j) and the marginal family (iips, switch-dr, dros: me / m0)."""
    max_weight: float
    zero_weight_share: float
    unsupported_mass: float | None
    """Mean target probability, per slot, on pool rows the logging policy never shows (None:
    logging policy not given). Above 0 the weighting estimators are biased."""
    delta: float = float("nan")
    """The value minus the logged reward per slate (`estimate(against=...)`), with a CI from
    the same bootstrap resamples (paired by user)."""
    delta_low: float = float("nan")
    delta_high: float = float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class RewardModel:
    """q(i, j) = item[i, row] * position[j]: a click model's relevance of each pool row and its
    examination of each slot (PAL's pCTR x ProbSeen; position all ones for a position-free model)."""

    item: np.ndarray
    position: np.ndarray


def target_probabilities(
    log: SlateLog, policy: SlatePolicy, scores: np.ndarray, model: RewardModel | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """The target's conditional probability of each logged slot given the logged slots above it
    (n, K) and, with a reward model, its expected q at each slot given that prefix (n, K).

    Epsilon-greedy and greedy targets take a fast path (one pass over the pools a slot: the
    best remaining row, the count and q-sum of what is left); any other policy goes through its
    `slot_distribution`."""
    if isinstance(policy, (EpsilonGreedy, Greedy)):
        return _greedy_probabilities(log, policy, scores, model)
    available = log.pool.copy()
    n, k = log.shown.shape
    p = np.zeros((n, k))
    q = None if model is None else np.zeros((n, k))
    rows = np.arange(n)
    for j in range(k):
        dist = policy.slot_distribution(scores, available)
        at = np.maximum(log.shown[:, j], 0)
        here = log.shown[:, j] >= 0
        p[:, j] = np.where(here, dist[rows, at], 0.0)
        if q is not None and model is not None:
            q[:, j] = np.where(here, (dist * model.item).sum(axis=1) * model.position[j], 0.0)
        available[rows[here], at[here]] = False
    return p, q


def _greedy_probabilities(log: SlateLog, policy: EpsilonGreedy | Greedy, scores: np.ndarray,
                          model: RewardModel | None) -> tuple[np.ndarray, np.ndarray | None]:  # fmt: skip
    epsilon = policy.epsilon if isinstance(policy, EpsilonGreedy) else 0.0
    available = log.pool
    masked = np.where(available, scores, -np.inf)
    count = available.sum(axis=1).astype(np.float64)
    item = None if model is None else np.where(available, model.item, 0.0)
    q_left = None if item is None else item.sum(axis=1)
    n, k = log.shown.shape
    rows = np.arange(n)
    p = np.zeros((n, k))
    q = None if model is None else np.zeros((n, k))
    for j in range(k):
        here = (log.shown[:, j] >= 0) & (count > 0)
        at = np.maximum(log.shown[:, j], 0)
        best = np.argmax(masked, axis=1)  # the first maximum: ties to the lower row, as slot_distribution
        uniform = epsilon / np.maximum(count, 1.0)
        p[:, j] = np.where(here, uniform + (1.0 - epsilon) * (at == best), 0.0)
        if q is not None and item is not None and q_left is not None and model is not None:
            q[:, j] = np.where(here, (uniform * q_left + (1.0 - epsilon) * item[rows, best]) * model.position[j], 0.0)
            q_left = q_left - np.where(here, item[rows, at], 0.0)
        masked[rows[here], at[here]] = -np.inf
        count = count - here
    return p, q


def rollout(policy: SlatePolicy, scores: np.ndarray, available: np.ndarray, k: int,
            rng: np.random.Generator) -> np.ndarray:  # fmt: skip
    """One sampled slate per pool (n, k) of pool rows (-1 once the pool runs out)."""
    available = available.copy()
    n = len(scores)
    out = np.full((n, k), -1, dtype=np.int64)
    for j in range(k):
        dist = policy.slot_distribution(scores, available)
        cdf = np.cumsum(dist, axis=1)
        total = cdf[:, -1]
        pick = (cdf < (rng.random(n) * total)[:, None]).sum(axis=1)
        ok = total > 0
        pick = np.minimum(pick, scores.shape[1] - 1)
        out[ok, j] = pick[ok]
        available[np.flatnonzero(ok), pick[ok]] = False
    return out


def marginals(policy: SlatePolicy, scores: np.ndarray, available: np.ndarray, k: int, samples: int,
              seed: int = 0) -> np.ndarray:  # fmt: skip
    """Monte Carlo estimate (n, P, k) of P(pool row at slot j) under the policy, Rao-Blackwellised:
    the exact slot distribution given each sampled prefix, averaged (positive wherever the
    policy can put a row at a slot after some sampled prefix, and of lower variance than counts)."""
    rng = np.random.default_rng(seed)
    n, width = scores.shape
    out = np.zeros((n, width, k), dtype=np.float64)
    rows = np.arange(n)
    for _ in range(samples):
        left = available.copy()
        for j in range(k):
            dist = policy.slot_distribution(scores, left)
            out[:, :, j] += dist
            cdf = np.cumsum(dist, axis=1)
            total = cdf[:, -1]
            pick = np.minimum((cdf < (rng.random(n) * total)[:, None]).sum(axis=1), width - 1)
            ok = total > 0
            left[rows[ok], pick[ok]] = False
    out /= samples
    return out


@functools.lru_cache(maxsize=512)
def _epsilon_greedy_table(epsilon: float, size: int, k: int) -> np.ndarray:
    """Exact P(the rank-r candidate at slot j) (size, k) of epsilon-greedy over `size` ranked
    candidates. The state before slot j is the frontier f (the best remaining rank): ranks
    below f are all taken and the other j - f taken ranks are a uniform subset of those above
    f (a uniform pick keeps the subset uniform; taking f moves the frontier past the run of
    taken ranks that follows it), so the chain over f is exact and tiny."""
    out = np.zeros((size, k))
    state = {0: 1.0}
    for j in range(min(k, size)):
        left = size - j
        nxt: dict[int, float] = {}
        for f, p in state.items():
            c = j - f
            above = size - 1 - f
            take_front = (1.0 - epsilon) + epsilon / left
            out[f, j] += p * take_front
            if above > 0:
                out[f + 1 :, j] += p * epsilon / left * (1.0 - c / above)
            # P(the c taken ranks above f start with a run of length >= l)
            run = [math.comb(above - n, c - n) / math.comb(above, c) for n in range(c + 1)] + [0.0]
            for n in range(c + 1):
                nxt[f + 1 + n] = nxt.get(f + 1 + n, 0.0) + p * take_front * (run[n] - run[n + 1])
            if left > 1:
                nxt[f] = nxt.get(f, 0.0) + p * (1.0 - take_front)
        state = nxt
    return out


def _epsilon_of(policy: SlatePolicy) -> float | None:
    if isinstance(policy, EpsilonGreedy):
        return policy.epsilon
    return 0.0 if isinstance(policy, Greedy) else None


def _ranking(scores: np.ndarray, available: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each pool's rows best first (ties to the lower row; unavailable last) and pool sizes."""
    if np.isnan(np.where(available, scores, 0.0)).any():
        raise OPEError("a policy's scores are NaN for an available pool row: cannot rank the pool")
    order = np.argsort(-np.where(available, scores, -np.inf), axis=1, kind="stable")
    return order, available.sum(axis=1)


def _tables(epsilon: float, sizes: np.ndarray, width: int, k: int) -> Iterator[tuple[np.ndarray, int, np.ndarray]]:
    """(requests, pool size, marginal table by rank padded to `width` rows) per pool size."""
    for size in np.unique(sizes):
        if size > 0:
            table = np.zeros((width, k))
            table[:size] = _epsilon_greedy_table(float(epsilon), int(size), k)
            yield np.flatnonzero(sizes == size), int(size), table


def exact_marginals(policy: SlatePolicy, scores: np.ndarray, available: np.ndarray, k: int, shown: np.ndarray,
                    item_q: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None] | None:  # fmt: skip
    """Exact marginals of an epsilon-greedy or greedy policy (None for any other): P(the
    logged row of each slot at that slot) (n, k) and, with per-row values `item_q` (n, P),
    their expectation under the slot's marginal, `sum_a P(a at j) item_q[a]` (n, k)."""
    epsilon = _epsilon_of(policy)
    if epsilon is None:
        return None
    n, width = scores.shape
    order, sizes = _ranking(scores, available)
    rank = np.empty_like(order)
    rank[np.arange(n)[:, None], order] = np.arange(width)[None, :]
    at = np.zeros(shown.shape)
    expected = None if item_q is None else np.zeros(shown.shape)
    for g, size, table in _tables(epsilon, sizes, width, k):
        r = rank[g[:, None], np.maximum(shown[g], 0)]
        at[g] = np.where(shown[g] >= 0, table[r, np.arange(k)[None, :]], 0.0)
        if expected is not None and item_q is not None:
            by_rank = np.take_along_axis(item_q[g], order[g], axis=1)  # the rows' values in rank order
            expected[g] = by_rank[:, :size] @ table[:size]
    return at, expected


def exact_marginal_matrix(policy: SlatePolicy, scores: np.ndarray, available: np.ndarray,
                          k: int) -> np.ndarray | None:  # fmt: skip
    """The full exact marginals (n, P, k) of an epsilon-greedy or greedy policy (None otherwise)."""
    epsilon = _epsilon_of(policy)
    if epsilon is None:
        return None
    n, width = scores.shape
    order, sizes = _ranking(scores, available)
    out = np.zeros((n, width, k))
    for g, size, table in _tables(epsilon, sizes, width, k):
        out[g[:, None], order[g][:, :size]] = table[None, :size]
    return out


def evaluate(
    log: SlateLog,
    target: SlatePolicy,
    target_scores: np.ndarray | None = None,
    *,
    model: RewardModel | None = None,
    logging: SlatePolicy | None = None,
    logging_scores: np.ndarray | None = None,
    estimators: Sequence[str] = ("ips", "snips", "rips", "snrips", "dm", "dr", "sndr"),
    dm_samples: int = 16,
    marginal_samples: int = 256,
    switch_tau: float = 50.0,
    dros_lambda: float = 50.0,
    n_boot: int = 500,
    seed: int = 0,
) -> dict[str, Estimate]:
    """Estimates of `target`'s value on the log. `target_scores` (n, P) rank each pool for the
    target (default: the logged pool order, best first); `model` is needed by dm, the DR family,
    `logging` (with `logging_scores`, default the pool order) by the marginal estimators (iips,
    switch-dr, dros) and the support check. `marginal_samples` rollouts estimate the marginals
    of policies without exact ones (Plackett-Luce). `switch_tau` and `dros_lambda` are the
    Switch-DR threshold and the DRos shrinkage (OBP's defaults, inf and 0, make them DR and DM;
    choose them per log)."""
    log.check_propensities()
    unknown = set(estimators) - set(ESTIMATORS)
    if unknown:
        raise OPEError(f"unknown estimators {sorted(unknown)}; known: {list(ESTIMATORS)}")
    need_model = [e for e in estimators if e in NEEDS_MODEL]
    if need_model and model is None:
        raise OPEError(f"{need_model} need a reward model (RewardModel of the pools' rows and slots)")
    need_marginals = [e for e in estimators if e in NEEDS_MARGINALS]
    if need_marginals and logging is None:
        raise OPEError(f"{need_marginals} need the logging policy (marginal propensities are not logged)")
    available = log.pool
    rank_order = np.where(available, -np.arange(available.shape[1], dtype=np.float64)[None, :], np.nan)
    t_scores = rank_order if target_scores is None else np.asarray(target_scores, dtype=np.float64)
    l_scores = rank_order if logging_scores is None else np.asarray(logging_scores, dtype=np.float64)
    pe, q_target = target_probabilities(log, target, t_scores, model)
    q_logged = None
    dm_terms = None
    if model is not None:
        rows = np.arange(len(log))[:, None]
        q_logged = np.where(log.slots, model.item[rows, np.maximum(log.shown, 0)] * model.position[None, :], 0.0)
        if "dm" in estimators:
            rng = np.random.default_rng(seed)
            k = log.shown.shape[1]
            dm_terms = np.zeros(len(log))
            for _ in range(dm_samples):
                slate = rollout(target, t_scores, available, k, rng)
                q = np.where(slate >= 0, model.item[rows, np.maximum(slate, 0)] * model.position[None, :k], 0.0)
                dm_terms += q.sum(axis=1) / dm_samples
    unsupported = None
    if logging is not None:
        unsupported = _unsupported_mass(log, target, t_scores, logging, l_scores)
    marg = None
    marginal_q = None
    if need_marginals and logging is not None:
        k = log.shown.shape[1]
        item_q = None if model is None else np.where(available, model.item, 0.0)
        m0, _ = _marginals_at(logging, l_scores, available, log.shown, None, marginal_samples, seed)
        me, expected = _marginals_at(target, t_scores, available, log.shown, item_q, marginal_samples, seed + 1)
        marg = (m0, me)
        if expected is not None and model is not None:
            marginal_q = expected * model.position[None, :k]
    return estimate(log.propensity, pe, log.reward, slots=log.slots, clusters=log.user_id, q_logged=q_logged,
                    q_target=q_target, dm_terms=dm_terms, marginal=marg, marginal_q=marginal_q,
                    estimators=estimators, switch_tau=switch_tau, dros_lambda=dros_lambda,
                    against=log.reward.sum(axis=1), unsupported_mass=unsupported, n_boot=n_boot, seed=seed)  # fmt: skip


def _marginals_at(policy: SlatePolicy, scores: np.ndarray, available: np.ndarray, shown: np.ndarray,
                  item_q: np.ndarray | None, samples: int,
                  seed: int) -> tuple[np.ndarray, np.ndarray | None]:  # fmt: skip
    """The policy's marginal of each logged (row, slot) and its expected `item_q` per slot:
    exact where `exact_marginals` knows the policy, else by `samples` rollouts."""
    k = shown.shape[1]
    exact = exact_marginals(policy, scores, available, k, shown, item_q)
    if exact is not None:
        return exact
    full = marginals(policy, scores, available, k, samples, seed)
    rows = np.arange(len(shown))[:, None]
    at = np.where(shown >= 0, full[rows, np.maximum(shown, 0), np.arange(k)[None, :]], 0.0)
    expected = None if item_q is None else np.einsum("npk,np->nk", full, item_q)
    return at, expected


def _unsupported_mass(log: SlateLog, target: SlatePolicy, t_scores: np.ndarray, logging: SlatePolicy,
                      l_scores: np.ndarray) -> float:  # fmt: skip
    if (isinstance(logging, EpsilonGreedy) and logging.epsilon > 0) or isinstance(logging, PlackettLuce):
        return 0.0  # every remaining candidate has positive probability at every slot
    available = log.pool.copy()
    rows = np.arange(len(log))
    mass = np.zeros(len(log))
    slots = 0
    for j in range(log.shown.shape[1]):
        here = log.shown[:, j] >= 0
        if not here.any():
            break
        te = target.slot_distribution(t_scores, available)
        lo = logging.slot_distribution(l_scores, available)
        mass += np.where(here, (te * (lo <= 0)).sum(axis=1), 0.0)
        slots += 1
        at = np.maximum(log.shown[:, j], 0)
        available[rows[here], at[here]] = False
    return float(mass.mean() / max(slots, 1))


def estimate(
    propensity: np.ndarray,
    target: np.ndarray,
    reward: np.ndarray,
    *,
    slots: np.ndarray | None = None,
    clusters: np.ndarray | None = None,
    q_logged: np.ndarray | None = None,
    q_target: np.ndarray | None = None,
    dm_terms: np.ndarray | None = None,
    marginal: tuple[np.ndarray, np.ndarray] | None = None,
    marginal_q: np.ndarray | None = None,
    estimators: Sequence[str] = ("ips", "snips", "rips", "snrips"),
    switch_tau: float = 50.0,
    dros_lambda: float = 50.0,
    against: np.ndarray | None = None,
    unsupported_mass: float | None = None,
    n_boot: int = 500,
    seed: int = 0,
) -> dict[str, Estimate]:
    """The estimators on (n, K) arrays: logged and target conditional propensities per slot,
    rewards (`slots`: which slots were shown, default all), and optionally the reward model at
    the logged items (`q_logged`), its expectation under the target given the logged prefix
    (`q_target`), DM's per-request values (`dm_terms`) and (logging, target) marginal
    propensities of the logged (row, slot)s for the marginal estimators, with `marginal_q` (n, K)
    the reward model's expectation under the target's marginal at each slot for switch-dr and
    dros. `clusters` (users) group the requests for the bootstrap CI (default: each request
    its own). `against` (n,): the logged policy's reward per request, for each estimate's
    paired difference from it."""
    p0 = np.asarray(propensity, dtype=np.float64)
    here = np.ones(p0.shape, dtype=bool) if slots is None else np.asarray(slots, dtype=bool)
    missing = here & np.isnan(p0)
    if missing.any():
        raise OPEError(f"{int(missing.sum())} shown slots have no logged propensity; a missing one is never taken as 1")
    if ((p0[here] <= 0) | (p0[here] > 1)).any():
        raise OPEError("logged propensities lie outside (0, 1]: the log is corrupt")
    ratio = np.where(here, np.asarray(target, dtype=np.float64) / np.where(here, p0, 1.0), 1.0)
    cum = np.cumprod(ratio, axis=1)  # W_j
    prev = np.c_[np.ones(len(cum)), cum[:, :-1]]  # W_{j-1}
    r = np.where(here, np.asarray(reward, dtype=np.float64), 0.0)
    w = cum[:, -1]
    n = len(w)
    out: dict[str, Estimate] = {}
    groups: np.ndarray = np.arange(n)
    if clusters is not None and n_boot > 0:
        groups = np.unique(np.asarray(clusters).astype(str), return_inverse=True)[1]
    ess = float(w.sum() ** 2 / max((w**2).sum(), 1e-300))
    diag = {"n": n, "ess": ess, "max_weight": float(w.max(initial=0.0)), "zero_weight_share": float((w == 0).mean()),
            "unsupported_mass": unsupported_mass}  # fmt: skip
    ones: np.ndarray = np.ones((n, 1))
    num: np.ndarray
    den: np.ndarray
    for name in estimators:
        if name == "ips":
            num, den = (w * r.sum(axis=1))[:, None], ones
        elif name == "snips":
            num, den = (w * r.sum(axis=1))[:, None], w[:, None]
        elif name == "rips":
            num, den = (cum * r).sum(axis=1)[:, None], ones
        elif name == "snrips":
            num, den = cum * r, np.where(here, cum, 0.0)
        elif name == "iips":
            if marginal is None:
                raise OPEError("iips needs marginal propensities of the logging and target policies")
            num, den = (_marginal_weights(marginal, here, name) * r).sum(axis=1)[:, None], ones
        elif name in ("switch-dr", "dros"):
            if marginal is None or marginal_q is None or q_logged is None:
                raise OPEError(f"{name} needs marginal propensities, the reward model at the logged slots and its "
                               "expectation under the target's marginals")  # fmt: skip
            w = _marginal_weights(marginal, here, name)
            if name == "switch-dr":
                shrunk = np.where(w <= switch_tau, w, 0.0)
            else:
                shrunk = w if np.isinf(dros_lambda) else dros_lambda * w / (w**2 + dros_lambda)
            terms = np.where(here, marginal_q + shrunk * (r - q_logged), 0.0)
            num, den = terms.sum(axis=1)[:, None], ones
        elif name == "dm":
            if dm_terms is None:
                raise OPEError("dm needs the reward model's value of the target's slates")
            num, den = np.asarray(dm_terms, dtype=np.float64)[:, None], ones
        elif name in ("dr", "sndr"):
            if q_logged is None or q_target is None:
                raise OPEError(f"{name} needs the reward model at the logged slots and under the target")
            ql = np.where(here, q_logged, 0.0)
            qt = np.where(here, q_target, 0.0)
            if name == "dr":
                num, den = ((cum * (r - ql)) + prev * qt).sum(axis=1)[:, None], ones
            else:  # per slot: sum_i W_ij (r - q) / sum_i W_ij + sum_i W_i,j-1 q_t / sum_i W_i,j-1
                num = np.concatenate([cum * (r - ql), prev * qt], axis=1)
                den = np.concatenate([np.where(here, cum, 0.0), np.where(here, prev, 0.0)], axis=1)
        else:
            raise OPEError(f"unknown estimator {name!r}; known: {list(ESTIMATORS)}")
        if name in ("snips", "snrips", "sndr"):
            shown_cols = np.tile(here.any(axis=0), den.shape[1] // here.shape[1]) if den.shape[1] > 1 else here.any()
            if (np.atleast_1d(shown_cols) & (den.sum(axis=0) == 0)).any():
                raise OPEError(
                    f"{name}: no logged slate has a positive weight under the target at some slot, so the "
                    "self-normalised estimate is 0/0; the logs cannot estimate this target (see ips and its ESS)"
                )
        value, lo, hi = _ratio_with_ci(num, den, groups, n_boot, seed)
        if name in CASCADE_FAMILY:
            diag["ess"] = _slot_ess(cum, here)
        elif name in NEEDS_MARGINALS and marginal is not None:
            diag["ess"] = _slot_ess(_marginal_weights(marginal, here, name), here)
        else:
            diag["ess"] = ess
        paired = {}
        if against is not None:  # one more column: minus the logged mean, resampled with the estimate's
            base = -np.asarray(against, dtype=np.float64)[:, None]
            d, d_lo, d_hi = _ratio_with_ci(np.c_[num, base], np.c_[den, ones], groups, n_boot, seed)
            paired = {"delta": d, "delta_low": d_lo, "delta_high": d_hi}
        out[name] = Estimate(name, value, lo, hi, **diag, **paired)  # type: ignore[arg-type]
    return out


def _slot_ess(weights: np.ndarray, here: np.ndarray) -> float:
    """Mean over the slots shown anywhere of each slot's (sum w)^2 / sum w^2."""
    w = np.where(here, weights, 0.0)
    cols = here.any(axis=0)
    per_slot = w.sum(axis=0) ** 2 / np.maximum((w**2).sum(axis=0), 1e-300)
    return float(per_slot[cols].mean()) if cols.any() else 0.0


def _marginal_weights(marginal: tuple[np.ndarray, np.ndarray], here: np.ndarray, name: str) -> np.ndarray:
    """me / m0 of each shown slot (0 elsewhere); a shown slot the logging policy gives no
    marginal probability is refused."""
    m0, me = marginal
    if (here & (m0 <= 0)).any():
        raise OPEError(
            f"{name}: a shown slot has a logging marginal of 0 (a Monte Carlo marginal: raise marginal_samples; "
            "an exact one: the log was not served by the logging policy given)"
        )
    out: np.ndarray = np.where(here, me / np.where(here & (m0 > 0), m0, 1.0), 0.0)
    return out


def _ratio_with_ci(num: np.ndarray, den: np.ndarray, groups: np.ndarray, n_boot: int, seed: int,
                   confidence: float = 0.95) -> tuple[float, float, float]:  # fmt: skip
    """sum over columns of sum(num)/sum(den), and its percentile bootstrap CI resampling groups."""

    def value(n_sum: np.ndarray, d_sum: np.ndarray) -> np.ndarray:
        ok = d_sum != 0
        out: np.ndarray = np.where(ok, n_sum / np.where(ok, d_sum, 1.0), 0.0).sum(axis=-1)
        return out

    point = float(value(num.sum(axis=0), den.sum(axis=0)))
    n_groups = int(groups.max()) + 1 if len(groups) else 0
    if n_boot <= 0 or n_groups < 2:
        return point, float("nan"), float("nan")
    num_g = np.zeros((n_groups, num.shape[1]))
    den_g = np.zeros((n_groups, den.shape[1]))
    np.add.at(num_g, groups, num)
    np.add.at(den_g, groups, den)
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n_groups, np.full(n_groups, 1.0 / n_groups), size=n_boot).astype(np.float64)
    boots = value(counts @ num_g, counts @ den_g)
    alpha = (1.0 - confidence) / 2.0
    return point, float(np.quantile(boots, alpha)), float(np.quantile(boots, 1.0 - alpha))


@dataclass(frozen=True)
class GateDecision:
    """Whether logs can decide between the candidate and the logged policy, and which way."""

    decision: str  # "accept" | "reject" | "refuse"
    reason: str
    estimate: Estimate
    logged_value: float


def gate(estimates: Mapping[str, Estimate], logged_value: float, *, estimator: str = "snips",
         min_ess: float = 200.0, max_unsupported: float = 0.0) -> GateDecision:  # fmt: skip
    """A gate section: accept the candidate when the lower end of its estimate's CI beats the
    logged policy's observed reward per slate, reject when the upper end is below it, and refuse
    (undecided) when the effective sample size is under `min_ess` or the target leaves support."""
    if estimator not in estimates:
        raise OPEError(f"no {estimator!r} estimate; have {sorted(estimates)}")
    e = estimates[estimator]
    if e.ess < min_ess:
        return GateDecision("refuse", f"effective sample size {e.ess:.0f} < {min_ess:.0f}: the logs cannot decide",
                            e, logged_value)  # fmt: skip
    if e.unsupported_mass is not None and e.unsupported_mass > max_unsupported:
        return GateDecision("refuse", f"the candidate puts {e.unsupported_mass:.3f} of its mass where the logging "
                            "policy never shows anything", e, logged_value)  # fmt: skip
    if e.ci_low > logged_value:
        return GateDecision("accept", f"{estimator} CI [{e.ci_low:.4f}, {e.ci_high:.4f}] above the logged "
                            f"{logged_value:.4f}", e, logged_value)  # fmt: skip
    if e.ci_high < logged_value:
        return GateDecision("reject", f"{estimator} CI [{e.ci_low:.4f}, {e.ci_high:.4f}] below the logged "
                            f"{logged_value:.4f}", e, logged_value)  # fmt: skip
    return GateDecision("refuse", f"{estimator} CI [{e.ci_low:.4f}, {e.ci_high:.4f}] contains the logged "
                        f"{logged_value:.4f}: no evidence either way", e, logged_value)  # fmt: skip
