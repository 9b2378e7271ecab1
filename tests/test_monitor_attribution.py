"""The judge side of attribution on a pinned anchor set: flips, score shift and spread against the
pinned judge's replay noise, and alpha spending over scheduled checks."""

import numpy as np
import pytest
from scipy import stats

from coachrec.monitor import AnchorRun, judge_drift, signed_rank, spending_levels
from coachrec.review import GoldenCase

N = 150


def golden(n: int = N) -> list[GoldenCase]:
    return [
        GoldenCase(
            "anchor", 1, f"i{k}", f"t{k}", f"s{k}", "relevance", "pass" if k % 3 else "fail", "pass", 0.5, None, {}
        )
        for k in range(n)
    ]


def run(scores: np.ndarray, threshold: float = 0.5) -> AnchorRun:
    keys = [(f"t{k}", "relevance") for k in range(len(scores))]
    return AnchorRun(
        {k: "pass" if s >= threshold else "fail" for k, s in zip(keys, scores, strict=True)},
        dict(zip(keys, scores.tolist(), strict=True)),
    )


def test_signed_rank_is_scipys_wilcoxon_without_the_zeros():
    d = np.array([0.0, 0.3, -0.1, 0.0, 0.25, 0.4, -0.05, 0.2, 0.15, 0.0])
    expected = stats.wilcoxon(d[d != 0]).pvalue
    assert signed_rank(d) == pytest.approx(expected)
    assert signed_rank(d, "greater") == pytest.approx(stats.wilcoxon(d[d != 0], alternative="greater").pvalue)
    assert signed_rank(np.zeros(20)) == 1.0
    assert signed_rank(np.full(8, 0.1), "greater") == pytest.approx(0.5**8)


def test_a_judge_that_shifts_scores_without_flipping_verdicts_is_caught():
    rng = np.random.default_rng(0)
    base = np.round(rng.uniform(0.0, 0.4, N), 3)  # every anchor fails at 0.5, before and after
    more = base.copy()
    more[:30] += 0.05  # a more lenient judge: scores rise, no verdict flips
    drift = judge_drift(golden(), run(base), run(more), replicate=run(base))
    (c,) = drift.criteria
    assert c.to_fail == c.to_pass == 0 and c.p_value == 1.0  # McNemar alone sees nothing
    assert c.moved == 30 and c.mean_shift == pytest.approx(0.01)
    assert c.shift_p_value < 1e-5 and drift.drifted
    assert not judge_drift(golden(), run(base), run(base), replicate=run(base)).drifted


def test_a_judge_that_moves_scores_both_ways_is_caught_by_the_spread_test_only_beyond_replay_noise():
    rng = np.random.default_rng(1)
    base = rng.uniform(0.0, 1.0, N)
    moved = base + np.where(np.arange(N) % 2, 0.08, -0.08) * (np.arange(N) < 40)  # retrained: both ways
    quiet = judge_drift(golden(), run(base), run(moved), replicate=run(base))
    (c,) = quiet.criteria
    assert c.shift_p_value > 0.5  # no net shift
    assert c.spread_p_value is not None and c.spread_p_value < 1e-6 and quiet.drifted
    # a stochastic judge whose replays move as much: the same change is within its noise
    noisy_replicate = base + rng.choice([-0.08, 0.08], N) * (rng.random(N) < 0.3)
    noisy = judge_drift(golden(), run(base), run(moved), replicate=run(noisy_replicate))
    assert noisy.criteria[0].spread_p_value > 0.01
    # without a replicate the spread test is not run (and verdicts alone decide with the shift)
    assert judge_drift(golden(), run(base), run(moved)).criteria[0].spread_p_value is None
    labels_only = dict(run(moved).items())
    assert judge_drift(golden(), run(base), labels_only).criteria[0].scored == 0


def test_a_stochastic_judge_unchanged_false_alarms_at_most_alpha():
    rng = np.random.default_rng(2)
    truth = rng.uniform(0.0, 1.0, N)

    def replay() -> AnchorRun:
        return run(np.clip(truth + rng.normal(0, 0.1, N), 0, 1))

    alarms = 0
    for _ in range(200):
        alarms += judge_drift(golden(), replay(), replay(), replicate=replay(), alpha=0.05).drifted
    assert alarms / 200 <= 0.05 + 0.03  # Bonferroni over the three tests: usually well below alpha
    changed = run(np.clip(truth + 0.04 + rng.normal(0, 0.1, N), 0, 1))
    assert judge_drift(golden(), replay(), changed, replicate=replay()).drifted  # a small real shift


def test_spending_levels_spend_alpha_over_the_checks():
    pocock = spending_levels(0.05, 7)
    late = spending_levels(0.05, 7, "obrien-fleming")
    assert sum(pocock) == pytest.approx(0.05) and sum(late) == pytest.approx(0.05)
    assert len(pocock) == 7 and pocock[0] > pocock[-1] > 0  # front-loaded a little
    assert late[0] < 1e-4 and late == sorted(late)  # most of alpha kept for the last checks
    assert spending_levels(0.05, 1) == [pytest.approx(0.05)]
    with pytest.raises(ValueError, match="looks"):
        spending_levels(0.05, 0)
    with pytest.raises(ValueError, match="rule"):
        spending_levels(0.05, 3, "cusum")


def test_a_system_drift_triggers_a_coach_iteration_and_a_judge_drift_does_not():
    from coachrec.monitor import Attribution, JudgeDrift, SystemDrift
    from coachrec.monitor.alerts import coach_on_drift
    from coachrec.monitor.stattests import ColumnDrift

    ran: list[str] = []

    def run() -> str:
        ran.append("coach")
        return "promoted candidate x"

    drifted = SystemDrift(True, 0.05, (ColumnDrift("has_context", "z", 1e-9, 0.05, 1e-9, True, 400, 400),))
    clean = SystemDrift(False, 0.05, ())
    judge_clean, judge_moved = JudgeDrift(False, 0.05, ()), JudgeDrift(True, 0.05, ())
    assert not coach_on_drift(clean, run).triggered and ran == []
    refused = coach_on_drift(Attribution("both", judge_moved, drifted), run)
    assert not refused.triggered and "judge drifted" in refused.reason and ran == []
    fired = coach_on_drift(Attribution("system", judge_clean, drifted), run)
    assert fired.triggered and fired.decision == "promoted candidate x" and "has_context" in fired.reason
    assert coach_on_drift(drifted, run).triggered and ran == ["coach", "coach"]


def _monte_carlo_p(values: np.ndarray, side: np.ndarray, n: int, rng: np.random.Generator) -> float:
    """The permutation null by brute force: each anchor's runs shuffled independently."""

    def stat(v: np.ndarray) -> np.ndarray:
        return ((v[..., side].mean(-1) - v[..., ~side].mean(-1)) ** 2).sum(-1)

    shuffled = np.take_along_axis(values[None], np.argsort(rng.random((n, *values.shape)), axis=2), axis=2)
    return float((1 + np.sum(stat(shuffled) >= stat(values) - 1e-12)) / (1 + n))


def test_runs_test_matches_the_brute_force_permutation_null_and_holds_its_level():
    from coachrec.monitor.attribution import runs_permutation_test

    rng = np.random.default_rng(3)
    side = np.array([0, 0, 0, 1, 1, 1], bool)
    for shift in (0.0, 0.01, 0.02, 0.03):
        values = rng.normal(0.5, 0.05, (120, 6))
        values[:40, 3:] += rng.choice([-1, 1], (40, 1)) * shift  # some anchors move, both ways
        exact = _monte_carlo_p(values, side, 20_000, rng)
        assert runs_permutation_test(values, side) == pytest.approx(exact, abs=max(0.01, 0.2 * exact))
    assert runs_permutation_test(np.ones((5, 4)), np.array([0, 0, 1, 1], bool)) == 1.0  # nothing moved
    # NaN: a run that did not judge the anchor; an anchor judged on one side only is left out
    ragged = np.array([[0.1, np.nan, 0.9], [0.5, 0.5, np.nan]])
    solo = np.array([[0.1, 0.9]])
    side3, side2 = np.array([0, 0, 1], bool), np.array([0, 1], bool)
    assert runs_permutation_test(ragged, side3) == pytest.approx(runs_permutation_test(solo, side2))
    p_values = np.array([runs_permutation_test(rng.normal(0.5, 0.05, (100, 6)), side, seed=s) for s in range(400)])
    assert np.mean(p_values < 0.05) <= 0.05 + 0.025 and np.mean(p_values < 0.01) <= 0.01 + 0.012


def test_a_change_below_one_runs_noise_is_caught_once_runs_accumulate():
    """A retrained stochastic judge: moves of 0.06 both ways on 30 of 150 anchors, against replay
    noise of sd 0.05 per run. One re-judging against the pinned run and its replicate mostly
    misses it; four pinned runs against six re-judgings find it; an unchanged judge with as many
    runs alarms at about alpha (20 simulated judges each)."""
    one = many = false = 0
    for seed in range(20):
        rng = np.random.default_rng(seed)
        truth = rng.uniform(0.2, 0.8, N)
        moved = truth.copy()
        picked = rng.choice(N, 30, replace=False)
        moved[picked] += rng.choice([-0.06, 0.06], 30)

        def replay(p: np.ndarray, rng: np.random.Generator = rng) -> AnchorRun:
            return run(np.clip(p + rng.normal(0, 0.05, N), 0, 1))

        single = judge_drift(golden(), replay(truth), replay(moved), replicate=replay(truth))
        assert single.criteria[0].runs == (2, 1) and single.criteria[0].runs_p_value is not None
        one += single.drifted
        pinned = [replay(truth) for _ in range(4)]
        for side, p in ((True, moved), (False, truth)):
            rejudged = [replay(p) for _ in range(6)]
            drift = judge_drift(golden(), pinned[0], rejudged[-1], replicate=pinned[1], reference_runs=pinned[2:],
                                current_runs=rejudged[:-1])  # fmt: skip
            assert drift.criteria[0].runs == (4, 6)
            many += side and drift.drifted
            false += (not side) and drift.drifted
    assert one <= 8 and many >= 18 and false <= 3
