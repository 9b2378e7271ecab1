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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from coachrec.data import Catalog
from coachrec.llm import LLMBackend
from coachrec.scale.runtime import ray_runtime
from coachrec.scale.serialize import case_from_json, case_to_json, judgment_from_json, judgment_to_json
from coachrec.teacher import CatalogView, Judge, JudgeCase, JudgeConfig, Judgment, RelevanceCommittee
from coachrec.teacher.judge import Executor
from coachrec.teacher.request_match import RequestMatchCommittee
from coachrec.teacher.rubric import RubricSpec

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


@dataclass(frozen=True)
class JudgeRecipe:
    """What an actor needs to build a twin of a judge (picklable): the rubric, catalog and
    committees travel, the LLM member is loaded inside the actor by `llm`, once per actor."""

    rubric: RubricSpec
    catalog: Catalog
    criteria: tuple[str, ...]
    config: JudgeConfig
    relevance: RelevanceCommittee | None = None
    request_match: RequestMatchCommittee | None = None
    llm: Callable[[], LLMBackend] | None = None

    @classmethod
    def of(cls, judge: Judge, llm: Callable[[], LLMBackend] | None = None) -> JudgeRecipe:
        return cls(
            judge.rubric,
            judge.catalog.catalog,
            tuple(c.name for c in judge.criteria),
            judge.config,
            judge.relevance,
            judge.request_match,
            llm,
        )

    def __call__(self) -> Judge:
        return Judge(
            self.rubric,
            CatalogView(self.catalog),
            llm=self.llm() if self.llm is not None else None,
            relevance=self.relevance,
            request_match=self.request_match,
            criteria=list(self.criteria),
            config=self.config,
        )


def ray_executor(workers: int = 2, *, batch_size: int = 16, llm: Callable[[], LLMBackend] | None = None) -> Executor:
    """A `teacher.judge.judging_with` executor judging on a pool of `workers` Ray actors. A judge
    with an LLM member needs `llm` (how an actor loads it; e.g. `lambda: load_backend("small")`),
    else it judges in this process (an LLM backend does not travel)."""

    def run(judge: Judge, cases: list[JudgeCase]) -> list[list[Judgment]]:
        if judge.llm is not None and llm is None:
            return judge.judge_here(cases)
        return judge_each_with_ray(JudgeRecipe.of(judge, llm), cases, workers=workers, batch_size=batch_size)

    return run


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
    return [
        j
        for judged in judge_each_with_ray(
            factory, cases, workers=workers, batch_size=batch_size, num_cpus=num_cpus, folder=folder
        )
        for j in judged
    ]


def judge_each_with_ray(
    factory: JudgeFactory,
    cases: Sequence[JudgeCase],
    *,
    workers: int = 2,
    batch_size: int = 16,
    num_cpus: int | None = None,
    folder: Path | None = None,
) -> list[list[Judgment]]:
    """`judge_with_ray`, the judgments grouped per case as `Judge.judge_each` gives them."""
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
    out: list[list[Judgment]] = [[] for _ in cases]
    order = sorted(range(len(rows)), key=lambda i: int(rows[i]["position"]))  # stable: criteria keep their order
    for i in order:
        out[int(rows[i]["position"])].append(judgment_from_json(str(rows[i]["judgment"])))
    return out
