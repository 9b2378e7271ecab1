"""Golden sets in the coach: their requests are replayed by the gate, and their human labels
decide whether an LLM criterion may gate."""

from coachrec.coach.loop import requests_from_golden
from coachrec.coach.trust import criterion_trust
from coachrec.review import GoldenCase, golden_quality
from coachrec.teacher import load_rubric


def _case(trace: str, criterion: str, label: str, judge_label: str, user: str | None = "1") -> GoldenCase:
    case = {"user_id": user, "k": 5, "context": "a scary horror movie", "constraints": {"exclude_genres": ["Comedy"]}}
    return GoldenCase(
        "default",
        1,
        f"{trace}-{criterion}",
        trace,
        "span",
        criterion,
        label,
        judge_label,
        0.9 if judge_label == "pass" else 0.1,
        None,
        {"case": case, "judge_version": "j1"},
    )


def test_golden_requests_once_per_known_trace():
    cases = [
        _case("t1", "request_match", "pass", "pass"),
        _case("t1", "slate_variety", "fail", "fail"),
        _case("t2", "request_match", "fail", "fail", user="999"),
        _case("t3", "request_match", "pass", "pass", user=None),
    ]
    requests = requests_from_golden(cases, {"1", "2"})
    assert [r.request_id for r in requests] == ["golden-t1"]
    r = requests[0]
    assert r.user_id == "1" and r.k == 5 and r.context == "a scary horror movie"
    assert r.constraints.exclude_genres == ("Comedy",)


def test_golden_labels_decide_whether_an_llm_criterion_may_gate():
    rubric = load_rubric()
    agree = [_case(f"a{i}", "request_match", lab, lab) for i, lab in enumerate(["pass", "fail"] * 15)]
    coin = [
        _case(f"b{i}", "slate_variety", "pass" if i % 2 else "fail", "pass" if i % 3 else "fail") for i in range(30)
    ]
    trust = criterion_trust(rubric, golden=golden_quality(agree + coin, rubric))
    assert trust["request_match"].may_gate and trust["request_match"].quality.kappa == 1.0
    assert not trust["slate_variety"].may_gate and "below floor" in trust["slate_variety"].reason
    assert not trust["explanation_faithfulness"].may_gate and "not measured" in trust["explanation_faithfulness"].reason
