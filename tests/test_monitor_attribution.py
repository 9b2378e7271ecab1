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
