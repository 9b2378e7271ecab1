"""Simulated clicks in the coach loop (opt-in `LoopConfig.clicks`): the `position_bias` signal
is observed on the selection users' logged clicks, targeted when asked, the pal-ranker remedy
learns from those clicks and is gated by an off-policy row on the gate users' own logged
traffic; without the option the loop observes exactly what it did before."""

from dataclasses import replace

import numpy as np
import pytest

pytest.importorskip("torch")

from coachrec.coach import DistillConfig, GateConfig, LoopConfig, Registry, run_loop
from coachrec.coach.loop import OFF_POLICY, check_config, choose_target, observe, prepare
from coachrec.coach.report import summary, write_report
from coachrec.teacher import load_rubric

SMALL = LoopConfig(
    champions=(("itemknn",),),
    llm="none",
    request_match=False,
    conversations=0,
    distill_requests=60,
    gate_requests=60,
    clicks="ultra:1.5",
    click_requests=250,
    target_mode="position_bias",
    distill=DistillConfig(valid_users=100),
    gate=GateConfig(n_boot=300, n_perm=1000),
)


def test_position_bias_needs_the_clicks_option_and_a_valid_click_model() -> None:
    rubric = load_rubric()
    with pytest.raises(ValueError, match="measured on logged clicks"):
        check_config(replace(SMALL, clicks=None), rubric)
    with pytest.raises(ValueError, match="CURVE:ETA"):
        check_config(replace(SMALL, clicks="zipf:1"), rubric)
    check_config(SMALL, rubric)
    check_config(replace(SMALL, clicks=None, target_mode=None), rubric)  # the default loop: nothing to check


@pytest.mark.slow
def test_the_loop_observes_targets_and_gates_position_bias_off_policy(tmp_path) -> None:
    registry = Registry(tmp_path / "registry")
    ctx = prepare(SMALL, registry)
    trust_before = dict(ctx.trust)

    # without the option: no click log, no signal, no trust entry, the judged report as it was
    off = replace(ctx, config=replace(SMALL, clicks=None, target_mode=None))
    (tmp_path / "off").mkdir()
    plain = observe(off, tmp_path / "off")
    assert plain.logged is None and plain.position is None and plain.clicks == {}
    assert off.trust == trust_before and "position_bias" not in off.trust
    assert "position_bias" not in [m.name for m in plain.report.modes]
    assert choose_target(off, plain)[0] != "position_bias"

    result = run_loop(SMALL, registry, tmp_path / "on", previous=ctx)
    obs = result.observation
    # observed: the selection users' logged clicks, the signal against the committee's relevance
    assert obs.logged is not None and len(obs.logged) == SMALL.click_requests
    assert set(obs.logged.user_id.astype(str)) <= set(ctx.distill_users)
    assert obs.position is not None and obs.position.flagged, obs.clicks
    assert obs.position.relative_examination[-1] < 0.5
    assert obs.clicks["epsilon"] == SMALL.click_epsilon and np.isfinite(obs.logged.propensity[obs.logged.slots]).all()
    modes = {m.name: m for m in obs.report.modes}
    assert "position_bias" in modes and "position, not preference" in modes["position_bias"].why
    # the judged part of the observation is the one the loop makes without the option
    assert [(m.name, m.count) for m in plain.report.modes] == [
        (m.name, m.count) for m in obs.report.modes if m.name != "position_bias"
    ]
    assert result.context.trust["position_bias"].may_gate

    # targeted when asked; pal-ranker built from the selection log and gated off-policy on the gate's
    assert result.target_mode == "position_bias"
    tried = {t.remedy: t for t in result.tried}
    pal = tried["pal-ranker"]
    assert pal.gate is not None and pal.details["pal_fit"]["impressions"] == obs.logged.impressions
    row = next(r for r in pal.gate.rows if r.section == OFF_POLICY and r.role == "independent")
    reference = next(r for r in pal.gate.rows if r.section == OFF_POLICY and r.role == "report")
    assert "without exploration" in reference.metric and reference.passed is None
    assert row.role == "independent" and row.n > 0 and "clicks per slate" in row.metric
    assert any(r.section == "ground truth" and r.role == "guard" for r in pal.gate.rows)
    gate_champion, gate_log = result.context.gate_logged
    assert gate_champion == result.context.champion_id
    gate_users = set(gate_log.user_id.astype(str))
    assert gate_users <= set(ctx.gate_users) and not gate_users & set(obs.logged.user_id.astype(str))
    assert pal.promoted == pal.gate.promote
    if pal.promoted:  # the off-policy row stands in for the target: it must have passed
        assert row.passed
    else:
        assert result.decision.startswith("REFUSE")
    assert "off_policy" in pal.gate.protocol and "gate users" in pal.gate.protocol["off_policy"]

    report = write_report(result, tmp_path / "on").read_text()
    assert "Position bias on logged clicks (simulated)" in report and OFF_POLICY in report
    assert summary(result)["clicks"]["signal"]["flagged"] is True


def test_the_cli_refuses_position_bias_without_clicks_before_any_work() -> None:
    from typer.testing import CliRunner

    from coachrec.cli import app

    result = CliRunner().invoke(app, ["coach", "--target-mode", "position_bias"])
    assert result.exit_code == 2 and "--simulate-clicks" in result.output
    result = CliRunner().invoke(app, ["coach", "--simulate-clicks", "zipf:1"])
    assert result.exit_code == 2 and "CURVE:ETA" in result.output
