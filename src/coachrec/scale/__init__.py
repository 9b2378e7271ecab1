"""Scale-out with Ray (optional extra `coachrec[ray]`): batch judging through Ray Data
`map_batches` with a pool of stateful judge actors, teacher labelling of candidates for
distillation, and full-ranking evaluation over user shards. Each gives the single-process
results; `$RAY_ADDRESS` points them at a cluster.

    from coachrec.scale import judge_with_ray, evaluate_with_ray
    judgments = judge_with_ray(make_judge, cases, workers=2)
    result = evaluate_with_ray(model, split, protocol("loo-full"), workers=2)
    with judging_with(ray_executor(workers=2)):   # teacher.judge: every Judge.judge on the pool
        run_iterations(...)
"""

from coachrec.scale.evaluation import evaluate_with_ray
from coachrec.scale.judging import (
    JudgeRecipe,
    JudgeWorker,
    export_cases,
    judge_each_with_ray,
    judge_with_ray,
    ray_executor,
)
from coachrec.scale.labelling import teacher_pairs_with_ray
from coachrec.scale.runtime import RayMissingError, ray_runtime, require_ray

__all__ = [
    "JudgeRecipe",
    "JudgeWorker",
    "RayMissingError",
    "evaluate_with_ray",
    "export_cases",
    "judge_each_with_ray",
    "judge_with_ray",
    "ray_executor",
    "ray_runtime",
    "require_ray",
    "teacher_pairs_with_ray",
]
