"""Teacher labelling for distillation as a Ray Data pipeline: the distinct requests are sharded
over actors that each hold the champion stack and the relevance committee (from the object
store, once) and run `coach.distill.teacher_pairs` on their shard; the pairs come back in shard
order, so features, soft labels and weights equal the single-process call's row for row.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from coachrec.coach.distill import DistillError, teacher_pairs
from coachrec.ranking.features import ItemStats
from coachrec.scale.runtime import ray_runtime
from coachrec.scale.serialize import case_from_json, case_to_json
from coachrec.serve import Stack
from coachrec.teacher import JudgeCase, RelevanceCommittee


class LabelWorker:
    """One actor: stack, item statistics and committee fetched once, shards labelled per call."""

    def __init__(self, refs: Any, depth: int) -> None:
        import ray

        self.stack, self.stats, self.committee = ray.get(refs)
        self.depth = depth

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One output row per shard holding its pairs as raw bytes with their dtypes (exact, any width)."""
        cases = [case_from_json(str(t)) for t in batch["case"]]
        try:
            x, y, w, _ = teacher_pairs(self.stack, self.stats, self.committee, cases, self.depth)
        except DistillError:  # no pair in this shard: the driver decides if none at all
            x, y, w = np.zeros((0, 0)), np.zeros(0), np.zeros(0)
        packed = [np.ascontiguousarray(a).tobytes() for a in (x, y, w)]
        return {
            "shard": np.asarray([int(batch["shard"][0])], dtype=np.int64),
            "width": np.asarray([x.shape[1] if x.ndim == 2 else 0], dtype=np.int64),
            "dtypes": np.asarray([",".join(str(a.dtype) for a in (x, y, w))], dtype=object),
            **{name: np.asarray([b], dtype=object) for name, b in zip(("x", "y", "w"), packed, strict=True)},
        }


def _distinct(cases: Sequence[JudgeCase]) -> list[JudgeCase]:
    """One case per (user, anonymous history), first seen first: what `teacher_pairs` keeps."""
    seen: dict[tuple[str | None, tuple[str, ...]], JudgeCase] = {}
    for case in cases:
        seen.setdefault((case.user_id, tuple(case.history) if case.user_id is None else ()), case)
    return list(seen.values())


def teacher_pairs_with_ray(
    stack: Stack,
    stats: ItemStats,
    committee: RelevanceCommittee,
    cases: Sequence[JudgeCase],
    depth: int,
    *,
    workers: int = 2,
    shard_size: int = 64,
    num_cpus: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """`teacher_pairs` with the distinct requests spread over `workers` actors."""
    ray = ray_runtime(num_cpus=num_cpus)
    distinct = _distinct(cases)
    if not distinct:
        raise DistillError("no traced request to label")
    refs = ray.put((stack, stats, committee))
    n_shards = max(workers, -(-len(distinct) // shard_size))
    bounds = np.array_split(np.arange(len(distinct)), n_shards)
    blocks = [
        pa.table({"shard": [s] * len(rows), "case": [case_to_json(distinct[i]) for i in rows]})
        for s, rows in enumerate(bounds)
        if len(rows)
    ]
    rows = (
        ray.data.from_arrow(blocks)
        .map_batches(
            LabelWorker,
            fn_constructor_args=(refs, depth),
            compute=ray.data.ActorPoolStrategy(size=workers),
            batch_size=None,
            batch_format="numpy",
            num_cpus=1,
        )
        .take_all()
    )
    rows = sorted((r for r in rows if int(r["width"]) > 0), key=lambda r: int(r["shard"]))
    if not rows:
        raise DistillError("the teacher labelled no candidate pairs (no judged request had items the committee knows)")
    dt = [str(r["dtypes"]).split(",") for r in rows]
    x = np.vstack(
        [np.frombuffer(r["x"], dtype=d[0]).reshape(-1, int(r["width"])) for r, d in zip(rows, dt, strict=True)]
    )
    y = np.concatenate([np.frombuffer(r["y"], dtype=d[1]) for r, d in zip(rows, dt, strict=True)])
    w = np.concatenate([np.frombuffer(r["w"], dtype=d[2]) for r, d in zip(rows, dt, strict=True)])
    return x, y, w, len(distinct)
