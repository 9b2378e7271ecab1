"""Coach: distil the teacher's verdicts into the production stack, gate every candidate against
the champion, keep every version in a registry.

    from coachrec.coach import LoopConfig, Registry, run_loop
    result = run_loop(LoopConfig(), Registry(), out=Path("runs/coach"))
    result.gate.verdict()          # PROMOTE ... / REFUSE ...: every rule broken, named
    Registry().champion            # what `coachrec serve` serves

Pieces: `CoachStack` (retrievers + optional distilled student ranker), `distill` (teacher soft
labels -> student), `criterion_trust` (which criteria may gate), the gate (`decide`,
`failure_rows`, `ground_truth_rows`), `Registry` (versions, champion, rollback).
"""

from coachrec.coach.distill import DistillConfig, Distilled, DistillError, distill, distillable
from coachrec.coach.gate import GateConfig, GateReport, GateRow, decide, failure_rows, ground_truth_rows
from coachrec.coach.loop import Context, LoopConfig, LoopResult, catalog_for, gate_candidate, observe, prepare, run_loop
from coachrec.coach.registry import Registry, RegistryError, Version, default_registry_path
from coachrec.coach.stack import CoachStack, LearnedRanker, StackConfig, StackScorer
from coachrec.coach.student import Student
from coachrec.coach.trust import Trust, criterion_trust, kappa_table, measured_committee

__all__ = [
    "CoachStack", "Context", "DistillConfig", "DistillError", "Distilled", "GateConfig", "GateReport", "GateRow", "LearnedRanker",
    "LoopConfig", "LoopResult", "Registry", "RegistryError", "StackConfig", "StackScorer", "Student", "Trust", "Version",
    "catalog_for", "criterion_trust", "decide", "default_registry_path", "distill", "distillable", "failure_rows", "gate_candidate",
    "ground_truth_rows", "kappa_table", "measured_committee", "observe", "prepare", "run_loop",
]
