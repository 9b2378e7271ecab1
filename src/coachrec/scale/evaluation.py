"""Full-ranking evaluation as a Ray Data pipeline: users in shards, each shard ranked by an
actor holding the fitted model (put in Ray's object store once), per-user metrics gathered in
user order. The means equal `metrics.evaluate` on the same task to the last digit; the
beyond-accuracy metrics (coverage, novelty, ...) need every list at once and are not computed
here.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pyarrow as pa

from coachrec.data.splits import EvalTask, Split
from coachrec.metrics import EvalResult, Protocol, evaluate
from coachrec.scale.runtime import ray_runtime


class EvalWorker:
    """One actor: the model and the task, fetched from the object store once."""

    def __init__(self, model_ref: Any, task_ref: Any, protocol: Protocol, ks: tuple[int, ...]) -> None:
        import ray

        self.model = ray.get(model_ref)
        self.task: EvalTask = ray.get(task_ref)
        self.protocol = protocol
        self.ks = ks

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = batch["row"].astype(np.int64)
        shard = EvalTask(
            self.task.users[rows], [self.task.histories[i] for i in rows], [self.task.targets[i] for i in rows]
        )
        result = evaluate(self.model, shard, self.protocol, self.ks)
        return {"row": rows, **result.per_user}


def evaluate_with_ray(
    model: Any,
    data: Split | EvalTask,
    protocol: Protocol,
    ks: tuple[int, ...] = (10, 20),
    *,
    workers: int = 2,
    shard_size: int = 256,
    num_cpus: int | None = None,
) -> EvalResult:
    """`metrics.evaluate` (accuracy metrics) with users spread over `workers` actors. Full
    ranking only: sampled negatives are drawn in one stream over all users, so sharding would
    change them."""
    if protocol.candidates != "full":
        raise ValueError("evaluate_with_ray ranks all items (a full protocol); sampled negatives depend on user order")
    ray = ray_runtime(num_cpus=num_cpus)
    t0 = time.perf_counter()
    task = data.task("test") if isinstance(data, Split) else data
    model_ref, task_ref = ray.put(model), ray.put(task)
    n = len(task.users)
    rows = ray.data.from_arrow(
        [pa.table({"row": chunk}) for chunk in np.array_split(np.arange(n), max(workers, -(-n // shard_size)))]
    )
    out = rows.map_batches(
        EvalWorker,
        fn_constructor_args=(model_ref, task_ref, protocol, ks),
        compute=ray.data.ActorPoolStrategy(size=workers),
        batch_size=shard_size,
        batch_format="numpy",
        num_cpus=1,
    ).take_all()
    out.sort(key=lambda r: int(r["row"]))
    names = [k for k in out[0] if k != "row"] if out else []
    per_user = {k: np.asarray([r[k] for r in out], dtype=np.float64) for k in names}
    return EvalResult(
        model=str(getattr(model, "name", type(model).__name__)),
        dataset=data.train.name if isinstance(data, Split) else "?",
        protocol=protocol,
        metrics={k: float(v.mean()) for k, v in per_user.items()},
        per_user=per_user,
        users=task.users,
        seconds=time.perf_counter() - t0,
        extra={"workers": workers, "engine": "ray"},
    )
