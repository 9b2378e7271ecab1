"""Batch judging as a Ray Data pipeline: cases exported to Parquet (read back in blocks on the
driver), judged by a pool of stateful actors (`map_batches` with a callable class: each actor
builds its judge, and loads its models, once), judgments collected in input order and recorded
back into the trace store.

    judgments = judge_with_ray(make_judge, cases, workers=2)   # make_judge: () -> Judge, picklable
    record(store, judgments)

`make_judge` runs inside every actor, so an LLM member is loaded once per actor; the results
equal `make_judge().judge(cases)` judgment for judgment (a test checks it).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from coachrec.scale.runtime import ray_runtime
from coachrec.scale.serialize import case_from_json, case_to_json, judgment_from_json, judgment_to_json
from coachrec.teacher import Judge, JudgeCase, Judgment

JudgeFactory = Callable[[], Judge]


class JudgeWorker:
    """One actor of the pool: a judge built once, applied to batches of cases."""

    def __init__(self, factory: JudgeFactory | Any) -> None:
        if not callable(factory):  # a reference into Ray's object store: numpy buffers map zero-copy
            import ray

            factory = ray.get(factory)
        self.judge = factory()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        positions: list[int] = []
        out: list[str] = []
        cases = [case_from_json(str(text)) for text in batch["case"]]
        for position, judged in zip(batch["position"], self.judge.judge_each(cases), strict=True):
            for j in judged:
                positions.append(int(position))
                out.append(judgment_to_json(j))
        return {"position": np.asarray(positions, dtype=np.int64), "judgment": np.asarray(out, dtype=object)}


def export_cases(cases: Sequence[JudgeCase], path: Path) -> Path:
    """Cases as a Parquet file (`position`, `trace_id`, `case` JSON): the pipeline's input."""
    table = pa.table(
        {
            "position": pa.array(range(len(cases)), pa.int64()),
            "trace_id": pa.array([c.trace_id for c in cases], pa.string()),
            "case": pa.array([case_to_json(c) for c in cases], pa.string()),
        }
    )
    pq.write_table(table, path)
    return path


def judge_with_ray(
    factory: JudgeFactory,
    cases: Sequence[JudgeCase],
    *,
    workers: int = 2,
    batch_size: int = 16,
    num_cpus: int | None = None,
    folder: Path | None = None,
) -> list[Judgment]:
    """Judge `cases` with a pool of `workers` actors; judgments in the order a single judge
    would give them (case by case, criterion by criterion)."""
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if not cases:
        return []
    ray = ray_runtime(num_cpus=num_cpus)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        path = export_cases(cases, Path(tmp) / "cases.parquet")
        table = pq.read_table(path)
        size = -(-len(cases) // max(workers, -(-len(cases) // batch_size)))
        # blocks made on the driver: a read task would wait for a CPU the actor pool holds
        # when the pool takes every CPU (Ray Data schedules reads and actors from one budget)
        blocks = [table.slice(lo, size) for lo in range(0, len(cases), size)]
        dataset = ray.data.from_arrow(blocks).map_batches(
            JudgeWorker,
            fn_constructor_kwargs={"factory": ray.put(factory)},  # serialized once, not once per actor
            compute=ray.data.ActorPoolStrategy(size=workers),
            batch_size=batch_size,
            batch_format="numpy",
            num_cpus=1,
        )
        rows = dataset.take_all()
    order = sorted(range(len(rows)), key=lambda i: int(rows[i]["position"]))  # stable: criteria keep their order
    return [judgment_from_json(str(rows[i]["judgment"])) for i in order]
