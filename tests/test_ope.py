"""Off-policy estimators against hand-computed values, propensities per slot, refusals."""

import math

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

from coachrec.policy import EpsilonGreedy, Greedy, PlackettLuce
from coachrec.policy.ope import (
    OPEError,
    RewardModel,
    SlateLog,
    estimate,
    evaluate,
    exact_marginal_matrix,
    exact_marginals,
    gate,
    marginals,
    target_probabilities,
)

# two requests, two slots: logged and target P(item at slot | slots above), clicks
P0 = np.array([[0.5, 0.5], [0.25, 1.0]])
PE = np.array([[1.0, 0.5], [0.5, 0.5]])
R = np.array([[1.0, 0.0], [0.0, 1.0]])
Q_LOGGED = np.array([[0.5, 0.2], [0.4, 0.3]])
Q_TARGET = np.array([[0.6, 0.25], [0.5, 0.35]])


def test_estimators_match_hand_computed_values() -> None:
    # slot weights W_j: [[2, 2], [2, 1]]; slate weights [2, 1]
    got = estimate(P0, PE, R, q_logged=Q_LOGGED, q_target=Q_TARGET, dm_terms=np.array([0.9, 0.7]),
                   marginal=(np.array([[0.5, 0.25], [0.5, 0.5]]), np.array([[1.0, 0.5], [0.25, 0.5]])),
                   estimators=("ips", "snips", "rips", "snrips", "iips", "dm", "dr", "sndr"), n_boot=0)  # fmt: skip
    expected = {
        "ips": (2 * 1 + 1 * 1) / 2,
        "snips": (2 * 1 + 1 * 1) / (2 + 1),
        "rips": ((2 * 1 + 2 * 0) + (2 * 0 + 1 * 1)) / 2,
        "snrips": (2 * 1) / (2 + 2) + (1 * 1) / (2 + 1),
        "iips": ((1 / 0.5) * 1 + (0.5 / 0.5) * 1) / 2,
        "dm": 0.8,
        # slot j: W_j (r - q_logged) + W_{j-1} q_target
        "dr": ((2 * 0.5 + 0.6) + (2 * -0.2 + 2 * 0.25) + (2 * -0.4 + 0.5) + (1 * 0.7 + 2 * 0.35)) / 2,
        "sndr": (2 * 0.5 + 2 * -0.4) / 4 + (2 * -0.2 + 1 * 0.7) / 3 + (0.6 + 0.5) / 2 + (2 * 0.25 + 2 * 0.35) / 4,
    }
    for name, value in expected.items():
        assert math.isclose(got[name].value, value, rel_tol=1e-9), name
    assert math.isclose(got["ips"].ess, 9 / 5) and got["ips"].max_weight == 2.0
    # each family's own weights: per slot W_j (cascade), me / m0 (marginal), averaged over slots
    assert math.isclose(got["rips"].ess, (4**2 / 8 + 3**2 / 5) / 2) and got["dr"].ess == got["rips"].ess
    assert math.isclose(got["iips"].ess, (2.5**2 / 4.25 + 3**2 / 5) / 2)


def test_bootstrap_interval_is_clustered_by_user_and_brackets_the_value() -> None:
    rng = np.random.default_rng(0)
    p0 = np.full((400, 3), 0.5)
    r = (rng.random((400, 3)) < 0.3).astype(float)
    users = np.repeat(np.arange(40), 10)
    e = estimate(p0, p0, r, clusters=users, estimators=("ips",), n_boot=300)["ips"]
    assert e.ci_low < e.value < e.ci_high
    assert math.isclose(e.value, r.sum(axis=1).mean())  # the logging policy itself: weights 1
    clustered_width = e.ci_high - e.ci_low
    r_user = np.repeat((rng.random((40, 3)) < 0.3).astype(float), 10, axis=0)  # users repeat themselves
    wide = estimate(p0, p0, r_user, clusters=users, estimators=("ips",), n_boot=300)["ips"]
    naive = estimate(p0, p0, r_user, estimators=("ips",), n_boot=300)["ips"]
    assert wide.ci_high - wide.ci_low > 2 * (naive.ci_high - naive.ci_low) > 0 < clustered_width


def test_missing_propensities_are_refused_never_taken_as_one() -> None:
    p0 = P0.copy()
    p0[1, 1] = np.nan
    with pytest.raises(OPEError, match="never taken as 1"):
        estimate(p0, PE, R)
    frame = pd.DataFrame({"request_id": ["a", "a", "b"], "position": [0, 1, 0], "item": ["x", "y", "x"],
                          "propensity": [0.5, None, 0.5], "reward": [1, 0, 0]})  # fmt: skip
    log, _ = SlateLog.from_frame(frame)
    with pytest.raises(OPEError, match="1 of 3 logged slots have no propensity.*request 'a'"):
        log.check_propensities()
    with pytest.raises(OPEError, match="outside"):
        estimate(np.array([[1.5]]), np.array([[1.0]]), np.array([[1.0]]))


def test_frames_from_pandas_polars_and_arrow_read_alike() -> None:
    data = {"request_id": ["r1", "r1", "r2", "r2"], "user_id": ["u", "u", "v", "v"], "position": [0, 1, 1, 0],
            "item": ["a", "b", "c", "d"], "propensity": [0.5, 0.5, 1.0, 0.25], "reward": [1, 0, 1, 0],
            "target_propensity": [1.0, 0.5, 0.5, 0.5]}  # fmt: skip
    logs = [SlateLog.from_frame(f) for f in (pd.DataFrame(data), pl.DataFrame(data), pa.table(data))]
    for log, extra in logs:
        assert log.shown_items.tolist() == [["a", "b"], ["d", "c"]]
        assert np.array_equal(log.propensity, P0) and np.array_equal(log.reward, R)
        assert np.array_equal(extra["target_propensity"], PE)
        value = estimate(log.propensity, extra["target_propensity"], log.reward, slots=log.slots, n_boot=0)
        assert math.isclose(value["ips"].value, 1.5)
    with pytest.raises(OPEError, match="lacks columns \\['propensity'\\]"):
        SlateLog.from_frame(pd.DataFrame(data).drop(columns="propensity"))


def pools(n: int, width: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    scores = np.sort(rng.random((n, width)), axis=1)[:, ::-1].copy()
    return scores, np.ones((n, width), dtype=bool)


@pytest.mark.parametrize("policy", [EpsilonGreedy(0.3), PlackettLuce(0.2), Greedy()])
def test_slot_distributions_sum_to_one_over_what_is_left(policy) -> None:
    scores, available = pools(50, 8)
    available[:, 3] = False
    for _ in range(4):
        dist = policy.slot_distribution(scores, available)
        assert np.allclose(dist.sum(axis=1), 1.0) and (dist[~available] == 0).all()
        available[np.arange(50), dist.argmax(axis=1)] = False


def test_plackett_luce_logs_exact_propensities() -> None:
    scores = np.array([0.9, 0.5, 0.4, 0.1])
    pl_policy = PlackettLuce(0.25, seed=1)
    first = [pl_policy.explore(4, 2, f"r{i}", scores=scores) for i in range(4000)]
    softmax = np.exp(scores / 0.25) / np.exp(scores / 0.25).sum()
    freq = np.bincount([e.order[0] for e in first], minlength=4) / len(first)
    assert np.abs(freq - softmax).max() < 0.03  # sampled as logged
    for e in first[:20]:
        assert math.isclose(e.propensity[0], softmax[e.order[0]])
        rest = softmax.copy()
        rest[e.order[0]] = 0
        assert math.isclose(e.propensity[1], rest[e.order[1]] / rest.sum())
        assert np.isnan(e.propensity[2:]).all()
    with pytest.raises(ValueError, match="needs the ranker's score"):
        pl_policy.explore(4, 2, "r")


def synthetic_log(n: int, seed: int = 0) -> tuple[SlateLog, np.ndarray, np.ndarray]:
    """Slates of 3 from pools of 6 logged by Plackett-Luce; click = relevance x 1/(slot+1)."""
    rng = np.random.default_rng(seed)
    scores, available = pools(n, 6, seed)
    logging = PlackettLuce(1.0)
    shown = np.zeros((n, 3), np.int64)
    prop = np.zeros((n, 3))
    avail = available.copy()
    for j in range(3):
        dist = logging.slot_distribution(scores, avail)
        pick = (dist.cumsum(axis=1) < rng.random(n)[:, None]).sum(axis=1)
        shown[:, j], prop[:, j] = pick, dist[np.arange(n), pick]
        avail[np.arange(n), pick] = False
    rel = scores[:, ::-1].copy()  # the truth prefers what the logging ranker scores lowest
    exam = 1.0 / np.arange(1, 4)
    reward = (rng.random((n, 3)) < rel[np.arange(n)[:, None], shown] * exam).astype(float)
    items = np.array([[f"i{c}" for c in range(6)]] * n, dtype=object)
    log = SlateLog(np.arange(n).astype(str).astype(object), np.arange(n).astype(str).astype(object), shown, prop,
                   reward, pool_items=items, pool_scores=scores)  # fmt: skip
    return log, rel, exam


def test_estimators_recover_a_known_target_value() -> None:
    log, rel, exam = synthetic_log(8000)
    target_scores = log.pool_scores[:, ::-1].copy()  # greedy on the reversed scores: picks pool rows 5, 4, 3
    truth = float((rel[:, [5, 4, 3]] * exam).sum(axis=1).mean())
    biased = RewardModel(0.8 * rel, exam)  # a reward model 20% too low: DM inherits it, DR corrects it
    got = evaluate(log, Greedy(), target_scores, model=biased, logging=PlackettLuce(1.0),
                   logging_scores=log.pool_scores, estimators=("ips", "snips", "rips", "snrips", "iips", "dm", "dr",
                   "sndr"), marginal_samples=16, n_boot=0)  # fmt: skip
    error = {name: abs(e.value - truth) / truth for name, e in got.items()}
    assert error["dm"] == pytest.approx(0.2)
    assert max(error["ips"], error["snips"]) < 0.2, error  # whole-slate weights: the noisiest
    assert max(error[e] for e in ("rips", "snrips", "iips", "dr", "sndr")) < 0.1, error
    assert got["ips"].unsupported_mass == 0.0 and 1 < got["ips"].ess < len(log) / 20
    p, q = target_probabilities(log, Greedy(), target_scores, biased)
    assert set(np.unique(p)) <= {0.0, 1.0} and q is not None


def test_gate_refuses_when_the_logs_cannot_decide() -> None:
    log, _, _ = synthetic_log(300)
    logged = float(log.reward.sum(axis=1).mean())
    target_scores = log.pool_scores[:, ::-1].copy()  # greedy on the reversed scores: almost never logged
    got = evaluate(log, EpsilonGreedy(0.5), target_scores, estimators=("ips", "snips"), logging=PlackettLuce(1.0),
                   logging_scores=log.pool_scores, n_boot=200)  # fmt: skip
    decision = gate(got, logged_value=logged, min_ess=200)
    assert decision.decision == "refuse" and "effective sample size" in decision.reason
    with pytest.raises(OPEError, match="0/0; the logs cannot estimate this target"):
        evaluate(log, Greedy(), target_scores, estimators=("snips",), n_boot=0)  # no logged slate matches it
    same = evaluate(log, PlackettLuce(1.0), log.pool_scores, estimators=("snips",), n_boot=200)
    assert same["snips"].ess == pytest.approx(300)
    assert gate(same, logged_value=logged, min_ess=100).decision == "refuse"  # its own value: no evidence either way
    better = gate(same, logged_value=logged / 2, min_ess=100)
    assert better.decision == "accept" and "above the logged" in better.reason
    # a target the logging policy never supports is refused even with a large ESS
    narrow = evaluate(log, EpsilonGreedy(0.5), estimators=("ips",), logging=Greedy(), n_boot=0)
    assert narrow["ips"].unsupported_mass > 0
    assert gate(narrow, logged_value=logged, estimator="ips", min_ess=0).decision == "refuse"


class _Generic:
    """Wraps a policy so target_probabilities takes the generic slot_distribution path."""

    def __init__(self, policy) -> None:
        self.policy = policy
        self.name = "generic"

    def slot_distribution(self, scores, available):
        return self.policy.slot_distribution(scores, available)


@pytest.mark.parametrize("policy", [EpsilonGreedy(0.3), Greedy()])
def test_the_greedy_fast_path_equals_the_slot_distributions(policy) -> None:
    log, rel, exam = synthetic_log(500, seed=3)
    scores = np.where(log.pool, np.random.default_rng(1).random(log.pool.shape), np.nan)
    fast_p, fast_q = target_probabilities(log, policy, scores, RewardModel(rel, exam))
    slow_p, slow_q = target_probabilities(log, _Generic(policy), scores, RewardModel(rel, exam))
    assert np.allclose(fast_p, slow_p) and np.allclose(fast_q, slow_q)


def _enumerated_marginals(policy, scores: np.ndarray, available: np.ndarray, k: int) -> np.ndarray:
    """P(row at slot j) of one pool by enumerating every slate prefix with its probability."""
    out = np.zeros((len(scores), k))

    def walk(left: np.ndarray, j: int, p: float) -> None:
        if j == k or not left.any():
            return
        dist = policy.slot_distribution(scores[None, :], left[None, :])[0]
        for row in np.flatnonzero(dist > 0):
            out[row, j] += p * dist[row]
            nxt = left.copy()
            nxt[row] = False
            walk(nxt, j + 1, p * dist[row])

    walk(available.copy(), 0, 1.0)
    return out


@pytest.mark.parametrize("policy", [EpsilonGreedy(0.3), EpsilonGreedy(1.0), Greedy()])
def test_exact_marginals_equal_enumeration_over_every_slate(policy) -> None:
    rng = np.random.default_rng(4)
    scores = rng.random((3, 7))
    scores[0, 2] = scores[0, 5]  # a tie: the lower row ranks first
    available = np.ones((3, 7), dtype=bool)
    available[1, [0, 4]] = False  # padding / already filtered
    available[2, 3:] = False  # a pool smaller than the slate
    k = 5
    want = np.stack([_enumerated_marginals(policy, scores[i], available[i], k) for i in range(3)])
    every = np.tile(np.arange(7), (3, 1))
    item_q = rng.random((3, 7))
    for j in range(k):  # ask for each row at slot j in turn
        shown = np.full((3, k), -1)
        for row in range(7):
            shown[:, j] = np.where(available[:, row], every[:, row], -1)
            at, expected = exact_marginals(policy, scores, available, k, shown, item_q)
            assert np.allclose(at[:, j], np.where(available[:, row], want[:, row, j], 0.0))
        assert np.allclose(expected[:, j], (want[:, :, j] * np.where(available, item_q, 0.0)).sum(axis=1))
    assert np.allclose(want.sum(axis=1)[:, :3], 1.0) and np.allclose(want[2].sum(axis=0)[3:], 0.0)
    assert exact_marginals(PlackettLuce(1.0), scores, available, k, shown) is None
    mc = marginals(policy, scores, available, k, samples=400, seed=0)
    assert np.abs(mc - want).max() < 0.05  # the Rao-Blackwellised rollouts agree


def test_switch_dr_and_dros_match_hand_computed_values() -> None:
    m0, me = np.array([[0.5, 0.25], [0.5, 0.5]]), np.array([[1.0, 0.5], [0.25, 0.5]])  # w = [[2, 2], [0.5, 1]]
    mq = np.array([[0.7, 0.3], [0.45, 0.2]])  # E_{a ~ me(., j)} q(a, j)
    common = {"q_logged": Q_LOGGED, "marginal": (m0, me), "marginal_q": mq, "n_boot": 0}
    got = estimate(P0, PE, R, estimators=("switch-dr", "dros"), switch_tau=1.5, dros_lambda=1.0, **common)
    switch = ((0.7 + 0.3) + (0.45 + 0.5 * (0 - 0.4) + 0.2 + 1.0 * (1 - 0.3))) / 2  # w = 2 switched off
    s = lambda w: w / (w**2 + 1.0)  # noqa: E731
    dros = ((0.7 + s(2) * (1 - 0.5) + 0.3 + s(2) * (0 - 0.2)) + (0.45 + s(0.5) * -0.4 + 0.2 + s(1) * 0.7)) / 2
    assert math.isclose(got["switch-dr"].value, switch) and math.isclose(got["dros"].value, dros)
    # the limits: an infinite threshold / shrinkage is the marginal DR, zero is the direct method
    dr = ((0.7 + 2 * 0.5 + 0.3 + 2 * -0.2) + (0.45 + 0.5 * -0.4 + 0.2 + 1 * 0.7)) / 2
    wide = estimate(P0, PE, R, estimators=("switch-dr", "dros"), switch_tau=math.inf, dros_lambda=math.inf, **common)
    assert math.isclose(wide["switch-dr"].value, dr) and math.isclose(wide["dros"].value, dr)
    zero = estimate(P0, PE, R, estimators=("dros",), dros_lambda=0.0, **common)
    assert math.isclose(zero["dros"].value, mq.sum(axis=1).mean())
    with pytest.raises(OPEError, match="switch-dr needs marginal propensities"):
        estimate(P0, PE, R, estimators=("switch-dr",), q_logged=Q_LOGGED, n_boot=0)


def test_marginal_estimators_on_an_epsilon_greedy_log_are_never_refused() -> None:
    """Exact marginals: the top row shown low in a slate keeps its small but positive logging
    marginal (32 rollouts put 0 there and iips was refused on every benchmark chunk)."""
    rng = np.random.default_rng(5)
    n, width, k = 20000, 12, 4
    scores = np.tile(-np.arange(width, dtype=np.float64), (n, 1))
    policy = EpsilonGreedy(0.3)
    avail = np.ones((n, width), dtype=bool)
    shown, prop = np.zeros((n, k), np.int64), np.zeros((n, k))
    for j in range(k):
        dist = policy.slot_distribution(scores, avail)
        pick = (dist.cumsum(axis=1) < rng.random(n)[:, None]).sum(axis=1)
        shown[:, j], prop[:, j] = pick, dist[np.arange(n), pick]
        avail[np.arange(n), pick] = False
    rel = np.linspace(0.1, 0.6, width)[None, :].repeat(n, axis=0)  # the truth prefers the low-ranked rows
    exam = 1.0 / np.arange(1, k + 1)
    reward = (rng.random((n, k)) < rel[np.arange(n)[:, None], shown] * exam).astype(float)
    ids = np.arange(n).astype(str).astype(object)
    items = np.array([[f"i{c}" for c in range(width)]] * n, dtype=object)
    log = SlateLog(ids, ids, shown, prop, reward, pool_items=items, pool_scores=scores)
    target, t_scores = EpsilonGreedy(0.1), np.tile(-np.abs(np.arange(width) - 4.2), (n, 1))  # rows 4, 5, 3, 6 first
    _, per_slot = exact_marginals(target, t_scores, log.pool, k, shown, rel)
    truth = float((per_slot * exam).sum(axis=1).mean())
    got = evaluate(log, target, t_scores, model=RewardModel(0.8 * rel, exam), logging=policy, logging_scores=scores,
                   estimators=("iips", "switch-dr", "dros", "dm"), switch_tau=math.inf, dros_lambda=math.inf,
                   n_boot=0)  # fmt: skip
    error = {name: abs(e.value - truth) / truth for name, e in got.items()}
    assert error["dm"] > 0.15 and max(error[e] for e in ("iips", "switch-dr", "dros")) < 0.1, error


def test_the_exact_marginal_matrix_agrees_with_the_logged_row_marginals() -> None:
    rng = np.random.default_rng(2)
    scores, available = rng.random((20, 9)), rng.random((20, 9)) < 0.8
    full = exact_marginal_matrix(EpsilonGreedy(0.4), scores, available, 4)
    shown = np.argsort(-rng.random((20, 9)) * available, axis=1)[:, :4]
    at, _ = exact_marginals(EpsilonGreedy(0.4), scores, available, 4, shown)
    assert np.allclose(full[np.arange(20)[:, None], shown, np.arange(4)[None, :]], at)
    assert np.allclose(full.sum(axis=1)[available.sum(axis=1) >= 4], 1.0) and (full[~available] == 0).all()
