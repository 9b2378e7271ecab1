"""Each drift test against scipy (or the arithmetic by hand) on known samples, and the test
chosen the way Evidently's `_get_default_stattest` chooses it."""

import numpy as np
import pytest
from scipy import stats
from scipy.spatial import distance

from coachrec.monitor import default_test, drift_test
from coachrec.monitor.stattests import binned_shares


def test_ks_is_scipys_two_sample_test():
    rng = np.random.default_rng(0)
    ref, cur = rng.normal(0, 1, 300), rng.normal(0.4, 1, 200)
    r = drift_test("x", ref, cur, "num")
    expected = stats.ks_2samp(ref, cur)
    assert r.test == "ks" and r.threshold == 0.05
    assert r.statistic == pytest.approx(expected.statistic) and r.p_value == pytest.approx(expected.pvalue)
    assert r.drifted == (expected.pvalue < 0.05) and r.drifted  # a 0.4 sd shift in 300 vs 200 rows is found
    same = drift_test("x", ref, rng.normal(0, 1, 200), "num")
    assert not same.drifted and same.p_value > 0.05


def test_chi_squared_fits_current_counts_to_reference_shares():
    ref = np.array(["a"] * 50 + ["b"] * 30 + ["c"] * 20)
    cur = np.array(["a"] * 30 + ["b"] * 30 + ["c"] * 40)
    r = drift_test("genre", ref, cur, "cat")
    # by hand: expected counts 50, 30, 20; (30-50)^2/50 + 0 + (40-20)^2/20 = 8 + 20 = 28 on 2 dof
    assert r.test == "chisquare" and r.statistic == pytest.approx(28.0)
    assert r.p_value == pytest.approx(stats.chi2.sf(28.0, 2)) and r.drifted
    assert r.p_value == pytest.approx(stats.chisquare([30, 30, 40], [50, 30, 20]).pvalue)


def test_z_test_of_two_proportions_on_a_binary_column():
    ref = np.array([0] * 60 + [1] * 40)
    cur = np.array([0] * 40 + [1] * 60)
    r = drift_test("clicked", ref, cur, "cat")
    z = 0.2 / np.sqrt(0.5 * 0.5 * (1 / 100 + 1 / 100))  # pooled share 0.5
    assert r.test == "z" and r.statistic == pytest.approx(z)
    assert r.p_value == pytest.approx(2 * stats.norm.sf(z)) and r.drifted
    assert not drift_test("clicked", ref, ref.copy(), "cat").drifted


def test_wasserstein_is_normed_by_the_reference_sd():
    ref = np.tile(np.arange(8.0), 150)  # 1,200 rows: above Evidently's 1,000-row cut
    cur = ref + 1.0
    r = drift_test("score", ref, cur, "num")
    assert r.test == "wasserstein" and r.threshold == 0.1 and r.p_value is None
    assert r.statistic == pytest.approx(stats.wasserstein_distance(ref, cur) / np.std(ref))
    assert r.statistic == pytest.approx(1 / np.sqrt(63 / 12)) and r.drifted  # W = 1, sd of 0..7 = sqrt(63/12)


def test_jensen_shannon_over_categories_and_over_30_bins():
    ref = np.array(["a"] * 800 + ["b"] * 400)
    cur = np.array(["a"] * 600 + ["b"] * 600)
    r = drift_test("kind", ref, cur, "cat")
    assert r.test == "jensenshannon"
    assert r.statistic == pytest.approx(distance.jensenshannon([2 / 3, 1 / 3], [0.5, 0.5]))
    rng = np.random.default_rng(1)
    x, y = rng.normal(0, 1, 2000), rng.normal(0, 1, 1500)
    a, b = binned_shares(x, y, "num")
    edges = np.histogram_bin_edges(np.concatenate([x, y]), bins=30)
    assert len(a) == 30 and a == pytest.approx(np.maximum(np.histogram(x, edges)[0] / 2000, 0.0001))
    assert drift_test("n", x, y, "num", test="jensenshannon").statistic == pytest.approx(distance.jensenshannon(a, b))


def test_psi_by_hand_and_only_when_asked_for():
    ref = np.array(["x"] * 50 + ["y"] * 50)
    cur = np.array(["x"] * 25 + ["y"] * 75)
    r = drift_test("mix", ref, cur, "cat", test="psi")
    by_hand = (0.5 - 0.25) * np.log(0.5 / 0.25) + (0.5 - 0.75) * np.log(0.5 / 0.75)
    assert r.test == "psi" and r.statistic == pytest.approx(by_hand) and r.drifted  # 0.275 >= 0.1
    assert drift_test("mix", ref, cur, "cat").test == "z"  # never the default


def test_default_test_follows_evidently_by_type_and_size():
    small, large = np.arange(600.0), np.arange(1500.0)
    assert default_test(small, small, "num") == ("ks", "num")
    assert default_test(large, large, "num") == ("wasserstein", "num")
    few = np.array([1.0, 2.0, 3.0, 4.0] * 100)  # numeric with <= 5 values is categorical
    assert default_test(few, few, "num") == ("chisquare", "cat")
    binary = np.array([0, 1] * 100)
    assert default_test(binary, binary, "cat") == ("z", "cat")
    assert default_test(np.array([0, 1] * 600), np.array([0, 1] * 10), "cat") == ("jensenshannon", "cat")


def test_missing_values_are_dropped_and_empty_samples_refused():
    ref = np.array([1.0, np.nan, 2.0, 3.0, 4.0, 5.0, 6.0])
    r = drift_test("x", ref, np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]), "num")
    assert r.n_reference == 6
    with pytest.raises(ValueError, match="both need some"):
        drift_test("x", np.array([np.nan]), np.array([1.0]), "num")
    with pytest.raises(ValueError, match="unknown drift test"):
        drift_test("x", ref, ref, "num", test="t-test")
