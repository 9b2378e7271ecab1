"""Coach: distil the teacher's verdicts into the production stack, gate every candidate against
the champion, keep every version in a registry.

    from coachrec.coach import LoopConfig, Registry, run_loop
    result = run_loop(LoopConfig(), Registry(), out=Path("runs/coach"))
    result.gate.verdict()          # PROMOTE ... / REFUSE ...: every rule broken, named
    Registry().champion            # what `coachrec serve` serves

Everything the coach produces is a `coachrec.serve.Stack`. Pieces: `distill` (teacher soft
labels -> a student ranker), `criterion_trust` (which criteria may gate), the gate (`decide`,
`failure_rows`, `ground_truth_rows`), `Registry` (versions, champion, rollback).
"""

from coachrec.coach import position_remedy as position_remedy  # registers the pal-ranker remedy (position_bias)
from coachrec.coach.distill import DistillConfig, Distilled, DistillError, distill
from coachrec.coach.gate import GateConfig, GateReport, GateRow
from coachrec.coach.loop import LoopConfig, LoopResult, run_iterations, run_loop
from coachrec.coach.registry import Registry, RegistryError, Version

__all__ = [
    "DistillConfig",
    "DistillError",
    "Distilled",
    "GateConfig",
    "GateReport",
    "GateRow",
    "LoopConfig",
    "LoopResult",
    "Registry",
    "RegistryError",
    "Version",
    "distill",
    "run_iterations",
    "run_loop",
]
