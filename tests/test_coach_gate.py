"""The gate: promotes a better candidate, refuses a worse one (naming each broken rule), and
refuses whenever the judge of the targeted criterion is below the kappa floor."""

import numpy as np
import pytest

from coachrec.coach.distill import DistillError, distill, distillable
from coachrec.coach.gate import GateConfig, decide, failure_rows, ground_truth_rows
from coachrec.coach.trust import Trust, criterion_trust
from coachrec.data import leave_one_out
from coachrec.models import create
from coachrec.teacher import load_rubric, measure

CONFIG = GateConfig(n_boot=300, tolerance=0.01)
TRUSTED = {"relevance": Trust("relevance", "recommender", True, "kappa 0.6 >= floor 0.4 on 500 cases")}


@pytest.fixture(scope="module")
def split(ml_small):
    return leave_one_out(ml_small)


@pytest.fixture(scope="module")
def truth(split):
    """Ground-truth rows of item-kNN over popularity (better) and the reverse (worse)."""
    pop, knn = create("pop").fit(split.train), create("itemknn").fit(split.train)
    return {"better": ground_truth_rows(pop, knn, split, CONFIG), "worse": ground_truth_rows(knn, pop, split, CONFIG)}


def _modes(rate: float, n: int = 300, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"irrelevant_items": (rng.random(n) < rate).astype(float), "constraint_leak": np.zeros(n)}


def test_better_candidate_is_promoted(truth):
    rows = failure_rows("held-out traffic", _modes(0.4), _modes(0.1, seed=1), "irrelevant_items", CONFIG)
    rows += truth["better"]  # item-kNN beats popularity on later interactions
    promote, reasons = decide(rows, TRUSTED, "irrelevant_items", "relevance", CONFIG)
    assert promote, reasons
    target = next(r for r in rows if r.role == "target")
    assert target.delta < 0 and target.ci_high < 0 and target.passed
    assert all(r.passed for r in rows if r.role == "guard")
    assert any("irrelevant_items rate" in r for r in reasons)


def test_worse_candidate_is_refused_with_every_reason(truth):
    rows = failure_rows("held-out traffic", _modes(0.2), _modes(0.3, seed=1), "irrelevant_items", CONFIG)
    rows += truth["worse"]  # the candidate ranks later interactions worse
    promote, reasons = decide(rows, TRUSTED, "irrelevant_items", "relevance", CONFIG)
    assert not promote
    text = " | ".join(reasons)
    assert "irrelevant_items rate not lower with confidence" in text
    assert "ground truth ndcg@10 may be worse" in text and "ground truth recall@10 may be worse" in text
    report_rows = [r for r in rows if r.role == "report"]
    assert [r.metric for r in report_rows] == ["constraint_leak rate"] and report_rows[0].passed is None


def test_judge_below_kappa_floor_cannot_gate_nor_distil(split, truth):
    rubric = load_rubric()
    rng = np.random.default_rng(3)
    human = rng.random(200) < 0.6
    noisy = np.where(rng.random(200) < 0.45, ~human, human)  # a judge barely better than chance
    quality = measure("relevance", "weak-committee", noisy, human, kappa_floor=rubric.kappa_floor)
    assert quality.kappa < rubric.kappa_floor
    trust = criterion_trust(rubric, relevance=quality)
    assert not trust["relevance"].may_gate and "below floor" in trust["relevance"].reason
    assert trust["constraint_adherence"].may_gate and not trust["request_match"].may_gate

    rows = failure_rows("held-out traffic", _modes(0.4), _modes(0.05, seed=1), "irrelevant_items", CONFIG) + truth["better"]
    promote, reasons = decide(rows, trust, "irrelevant_items", "relevance", CONFIG)
    assert not promote  # every measured rule passes, the judge alone refuses
    assert reasons == [f"the judge of 'relevance' may not gate (weak-committee: {quality.reason()})"]

    ok, why = distillable(rubric, trust, "irrelevant_items")
    assert not ok and "may not be distilled" in why
    with pytest.raises(DistillError, match="kappa .* below floor"):
        distill(None, None, [], split, rubric, trust, "irrelevant_items")  # refused before any work


def test_unmeasured_llm_criterion_is_not_distillable():
    rubric = load_rubric()
    ok, why = distillable(rubric, criterion_trust(rubric), "ignores_request")
    assert not ok and "golden set" in why
