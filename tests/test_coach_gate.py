"""The gate: promotes a better candidate, refuses a worse one (naming each broken rule), refuses
an identical or sparsely different candidate and one that escapes the judge, clusters repeated
requests of a user, and refuses whenever the judge of the targeted criterion is below the kappa
floor."""

import numpy as np
import pytest

from coachrec.coach.distill import DistillError, distill, distillable
from coachrec.coach.gate import GateConfig, decide, failure_rows, ground_truth_rows
from coachrec.coach.trust import Trust, criterion_trust
from coachrec.data import leave_one_out
from coachrec.models import create
from coachrec.teacher import load_rubric, measure

CONFIG = GateConfig(n_boot=300, n_perm=2000)
TRUSTED = {"relevance": Trust("relevance", "recommender", True, "kappa 0.6 >= floor 0.4 on 500 cases")}


@pytest.fixture(scope="module")
def split(ml_small):
    return leave_one_out(ml_small)


@pytest.fixture(scope="module")
def truth(split):
    """Ground-truth rows of item-kNN over popularity (better) and the reverse (worse)."""
    pop, knn = create("pop").fit(split.train), create("itemknn").fit(split.train)
    users = [str(u) for u in split.train.users.ids]
    return {
        "better": ground_truth_rows(pop, knn, split, users, CONFIG),
        "worse": ground_truth_rows(knn, pop, split, users, CONFIG),
    }


USERS = [f"u{i}" for i in range(300)]


def _modes(rate: float, n: int = 300, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"irrelevant_items": (rng.random(n) < rate).astype(float), "constraint_leak": np.zeros(n)}


def _rows(a, b, users=USERS, **kw):
    return failure_rows("held-out traffic", a, b, users, "irrelevant_items", CONFIG, **kw)


def test_better_candidate_is_promoted(truth):
    rows = _rows(_modes(0.4), _modes(0.1, seed=1)) + truth["better"]  # item-kNN beats popularity on later interactions
    promote, reasons = decide(rows, TRUSTED, "irrelevant_items", "relevance", CONFIG)
    assert promote, reasons
    target = next(r for r in rows if r.role == "target")
    assert target.delta < 0 and target.ci_high < 0 and target.passed
    assert all(r.passed for r in rows if r.role == "guard")
    assert any("irrelevant_items rate" in r for r in reasons)


def test_worse_candidate_is_refused_with_every_reason(truth):
    rows = _rows(_modes(0.2), _modes(0.3, seed=1)) + truth["worse"]  # the candidate ranks later interactions worse
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

    rows = _rows(_modes(0.4), _modes(0.05, seed=1)) + truth["better"]
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


def test_identical_candidate_is_refused(truth, split):
    same = _modes(0.3)
    knn = create("itemknn").fit(split.train)
    users = [str(u) for u in split.train.users.ids]
    rows = _rows(same, same) + ground_truth_rows(knn, knn, split, users, CONFIG)
    promote, reasons = decide(rows, TRUSTED, "irrelevant_items", "relevance", CONFIG)
    assert not promote and any("champion's result on every request" in r for r in reasons)


def test_a_handful_of_discordant_users_is_not_evidence(truth):
    """5 of 300 users improve, all in the same direction: a percentile bootstrap alone would
    call it significant; the permutation p and the discordance floor refuse it."""
    a = _modes(0.0)
    b = {k: v.copy() for k, v in a.items()}
    a["irrelevant_items"][:5] = 1.0
    rows = _rows(a, b) + truth["better"]
    target = next(r for r in rows if r.role == "target")
    assert target.discordant == 5 and target.ci_high < 0  # the bootstrap alone would promote
    promote, reasons = decide(rows, TRUSTED, "irrelevant_items", "relevance", CONFIG)
    assert not promote and any("only 5 of 300 users" in r or "p 0.0" in r for r in reasons)


def test_repeated_requests_of_a_user_count_once_and_cluster_by_user():
    """One user repeating a failing plain request 50 times is one user's evidence, not 50."""
    a, b = {"irrelevant_items": np.ones(60)}, {"irrelevant_items": np.zeros(60)}
    users = ["heavy"] * 50 + [f"u{i}" for i in range(10)]
    keys = ["heavy|plain"] * 50 + [f"u{i}|plain" for i in range(10)]
    row = _rows(a, b, users, keys=keys)[0]
    assert row.n == 11 and row.discordant == 11
    clustered = _rows(a, b, users)[0]
    assert clustered.n == 11  # without keys: 60 requests, still 11 clusters


def test_a_candidate_that_escapes_the_judge_is_refused(truth):
    """Slates the judge cannot score are NaN for the mode (not a pass) and their rate is a guard."""
    a, b = _modes(0.4), _modes(0.1, seed=1)
    b["irrelevant_items"][:150] = np.nan  # half the candidate's slates unjudgeable
    unknown = (np.zeros(300), np.r_[np.ones(150), np.zeros(150)])
    rows = _rows(a, b, unknown=unknown) + truth["better"]
    promote, reasons = decide(rows, TRUSTED, "irrelevant_items", "relevance", CONFIG)
    assert not promote and any("unjudgeable slate rate higher" in r for r in reasons)


def test_a_candidate_that_games_the_teacher_but_hurts_ground_truth_is_refused(truth):
    rows = _rows(_modes(0.4), _modes(0.05, seed=1)) + truth["worse"]
    promote, reasons = decide(rows, TRUSTED, "irrelevant_items", "relevance", CONFIG)
    target = next(r for r in rows if r.role == "target")
    assert target.passed and not promote
    assert all("ground truth" in r for r in reasons) and len(reasons) == 2


def test_the_target_pools_sections_and_no_section_may_get_worse(truth):
    """Failures fixed in the conversations, the users' traffic left as it was: the pooled rate
    (clustered by user and dialog) is the target and passes; each section's own rate is a guard,
    so a candidate that makes one section worse is refused even when the pool improves."""
    from coachrec.coach.loop import pool_target

    dialogs = [f"dialog:{i}" for i in range(300)]
    traffic_a, traffic_same = _modes(0.3), _modes(0.3)
    conv_a, conv_b = _modes(0.6, seed=2), _modes(0.1, seed=3)
    sections = _rows(traffic_a, traffic_same) + failure_rows(
        "conversations", conv_a, conv_b, dialogs, "irrelevant_items", CONFIG
    )
    assert not next(r for r in sections if r.section == "held-out traffic" and r.role == "target").passed

    def pooled(b_traffic):
        return {
            "champion": [traffic_a["irrelevant_items"], conv_a["irrelevant_items"]],
            "candidate": [b_traffic["irrelevant_items"], conv_b["irrelevant_items"]],
            "users": USERS + dialogs,
            "keys": [f"t{i}" for i in range(300)] + [f"c{i}" for i in range(300)],
        }

    rows = pool_target(sections, pooled(traffic_same), "irrelevant_items", CONFIG) + truth["better"]
    target = next(r for r in rows if r.role == "target")
    assert target.section == "all judged traffic" and target.n == 600 and target.passed
    assert {r.role for r in rows if r.metric == "irrelevant_items rate" and r.section != target.section} == {"guard"}
    promote, reasons = decide(rows, TRUSTED, "irrelevant_items", "relevance", CONFIG)
    assert promote, reasons

    worse = _modes(0.5, seed=4)
    sections = _rows(traffic_a, worse) + failure_rows(
        "conversations", conv_a, conv_b, dialogs, "irrelevant_items", CONFIG
    )
    rows = pool_target(sections, pooled(worse), "irrelevant_items", CONFIG) + truth["better"]
    promote, reasons = decide(rows, TRUSTED, "irrelevant_items", "relevance", CONFIG)
    assert not promote and any("held-out traffic: irrelevant_items rate higher" in r for r in reasons)


def test_unknown_target_mode_is_refused_before_any_work(tmp_path):
    import subprocess
    import sys

    def coach(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-c", "from coachrec.cli import main; main()", "coach", "--out", str(out), *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120)

    out = tmp_path / "run"
    res = coach("--target-mode", "not_a_mode")
    assert res.returncode == 2, res.stderr
    assert "unknown failure mode 'not_a_mode'" in res.stderr and "irrelevant_items" in res.stderr
    assert "Traceback" not in res.stderr
    assert not out.exists()  # nothing was loaded, fitted or written
    res = coach("--llm-criterion", "relevance")
    assert res.returncode == 2 and "unknown LLM criterion 'relevance'" in res.stderr
