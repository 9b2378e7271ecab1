import numpy as np
import pytest

from coachrec.teacher import load_rubric, measure, parse_rubric
from coachrec.teacher.quality import MIN_CASES, auc, best_threshold


def test_kappa_tpr_tnr_against_hand_computed_values():
    # 2x2 table (judge rows, human columns): pass/pass 20, pass/fail 5, fail/pass 10, fail/fail 15 (n=50)
    judge = [True] * 25 + [False] * 25
    human = [True] * 20 + [False] * 5 + [True] * 10 + [False] * 15
    q = measure("relevance", "j", judge, human, kappa_floor=0.4)
    po = 35 / 50
    pe = (25 / 50) * (30 / 50) + (25 / 50) * (20 / 50)
    assert q.kappa == pytest.approx((po - pe) / (1 - pe))  # 0.4
    assert q.kappa == pytest.approx(0.4)
    assert q.tpr == pytest.approx(20 / 30)
    assert q.tnr == pytest.approx(15 / 20)
    assert q.may_gate  # kappa == floor counts as passing


def test_may_gate_needs_floor_and_enough_cases():
    judge = [True, False] * 20
    assert not measure("c", "j", judge, [not j for j in judge], kappa_floor=0.4).may_gate
    few = [True, False] * (MIN_CASES // 2 - 1)
    q = measure("c", "j", few, few, kappa_floor=0.4)
    assert q.kappa == 1.0 and not q.may_gate and "only" in q.reason()


def test_swap_consistency_and_auc():
    q = measure(
        "c",
        "j",
        [True, True, False, False],
        [True, False, False, True],
        kappa_floor=0.4,
        swap_consistent=[True, False, True, True],
        scores=[0.9, 0.8, 0.1, 0.2],
    )
    assert q.swap_consistency == 0.75
    assert auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([False, False, True, True])) == 0.75
    assert auc(np.array([0.5, 0.5]), np.array([True, False])) == 0.5
    assert auc(np.array([0.5, 0.6]), np.array([True, True])) is None


def test_best_threshold_separates_calibration_data():
    scores = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    labels = scores > 0.5
    t = best_threshold(scores, labels)
    assert 0.3 < t <= 0.7


def test_default_rubric_and_rubric_errors():
    rubric = load_rubric()
    assert {c.member for c in rubric.criteria} == {"program", "recommender", "llm"}
    assert rubric.criterion("constraint_adherence").blames.value == "GUARDRAIL"
    with pytest.raises(ValueError, match="needs a `question`"):
        parse_rubric(
            "name: r\nversion: 1\ncriteria:\n- "
            "{name: x, description: d, member: llm, blames: RANKER, failure_modes: [m]}"
        )
    with pytest.raises(ValueError, match="check must be one of"):
        parse_rubric(
            "name: r\nversion: 1\ncriteria:\n- "
            "{name: x, description: d, member: program, check: nope, blames: RANKER, failure_modes: [m]}"
        )
    with pytest.raises(ValueError, match="repeated"):
        parse_rubric(
            "name: r\nversion: 1\ncriteria:\n"
            + "- {name: x, description: d, member: program, check: no_duplicates, blames: GUARDRAIL, "
            "failure_modes: [m]}\n" * 2
        )
    with pytest.raises(KeyError, match="no criterion"):
        rubric.criterion("nope")
