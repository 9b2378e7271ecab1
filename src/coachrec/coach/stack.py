"""A coachable production stack: fitted retrievers plus an optional distilled student ranker.

    stack = CoachStack.fit(["itemknn", "pop"], train)            # the champion before coaching
    pipeline = stack.pipeline(catalog, tracer=tracer)             # serve.Pipeline, traced
    scorer = stack.scorer()                                       # full-catalog scores for metrics.evaluate
    stack.save(folder); CoachStack.load(folder)

The student replaces the pipeline's blend ranker (the `rank` span) with `blend + strength *
P_student`. `scorer()` ranks exactly what the pipeline's ranker ranks (same retrievers, same
candidates, same blend) so ground-truth metrics measure the stage that changed; items no
retriever proposes rank below every candidate.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from coachrec.coach.features import ItemStats, candidate_features, feature_names
from coachrec.coach.student import Student
from coachrec.data import Catalog, Dataset
from coachrec.models import BaseRecommender, create, load, top_k
from coachrec.models.defaults import defaults
from coachrec.models.itemknn import ItemKNN
from coachrec.serve.candidates import Candidates, RequestContext
from coachrec.serve.pipeline import Pipeline, PipelineConfig
from coachrec.serve.stages import AnySpan, BlendRanker
from coachrec.tracing import SpanKind, Tracer

NON_CANDIDATE = -1e6
"""Score floor for items no retriever proposed (below every candidate, order kept by model 0)."""


@dataclass(frozen=True)
class StackConfig:
    models: tuple[str, ...] = ("itemknn", "pop")
    candidates: int = 200
    diversity: float = 0.8


class LearnedRanker:
    """The `rank` stage of a coached stack: the champion's blend plus the student's P(pass)."""

    kind = SpanKind.RANKER

    def __init__(self, student: Student, stats: ItemStats, name: str = "rank") -> None:
        self.student = student
        self.stats = stats
        self.name = name

    def __call__(self, ctx: RequestContext, candidates: Candidates, span: AnySpan) -> Candidates:
        blend = candidates.normalized_sources().sum(axis=1)
        if len(candidates):
            x = candidate_features(self.stats, ctx.history, candidates.idx, candidates.sources, blend)
            candidates.score = blend + self.student.strength * self.student.probability(x)
        span.set_attributes({"ranker": "distilled-student", "strength": self.student.strength})
        return candidates.take(np.lexsort((candidates.idx, -candidates.score)))


@dataclass
class CoachStack:
    models: list[BaseRecommender]
    stats: ItemStats
    config: StackConfig = field(default_factory=StackConfig)
    student: Student | None = None

    @classmethod
    def fit(cls, data: Dataset, config: StackConfig = StackConfig(), catalog: Catalog | None = None) -> CoachStack:
        """Fit every retriever on `data` with the tuned defaults of `models/defaults.py`."""
        models = [create(name, **defaults(name, data.name)).fit(data) for name in config.models]
        return cls(models, ItemStats.from_data(data, catalog if catalog is not None else data.catalog), config)

    @property
    def retriever_names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.models)

    @property
    def feature_names(self) -> tuple[str, ...]:
        return feature_names(self.retriever_names)

    def with_student(self, student: Student) -> CoachStack:
        return CoachStack(self.models, self.stats, self.config, student)

    def describe(self) -> str:
        base = "+".join(self.retriever_names)
        return f"{base} blend" if self.student is None else f"{base} + distilled student (strength {self.student.strength:g})"

    # -- serving --------------------------------------------------------------------------------

    def pipeline(self, catalog: Catalog, *, tracer: Tracer | None = None, epsilon: float = 0.0, seed: int = 0) -> Pipeline:
        cfg = PipelineConfig(candidates=self.config.candidates, diversity=self.config.diversity, epsilon=epsilon, seed=seed)
        pipeline = Pipeline.from_models(self.models, catalog, tracer=tracer, config=cfg)
        if self.student is not None:
            at = next(i for i, s in enumerate(pipeline.stages) if isinstance(s, BlendRanker))
            pipeline.stages[at] = LearnedRanker(self.student, self.stats)
        return pipeline

    # -- offline scoring ------------------------------------------------------------------------

    def candidates(self, histories: Sequence[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Per history: candidate indices, per-retriever raw scores (NaN = not proposed) and the
        champion blend, as the pipeline's retrieve stage builds them with no constraints but
        `exclude_seen`."""
        raw = [np.asarray(m.score(list(histories)), dtype=np.float64) for m in self.models]
        out = []
        for row, h in enumerate(histories):
            lists = []
            for m, scores in zip(self.models, raw):
                s = scores[row].copy()
                s[np.asarray(h, dtype=np.int64)] = -np.inf
                if isinstance(m, ItemKNN):
                    s[s <= 0] = -np.inf
                idx = top_k(s[None, :], self.config.candidates)[0]
                idx = idx[np.isfinite(s[idx])]
                lists.append((idx, s[idx]))
            items, inverse = np.unique(np.concatenate([i for i, _ in lists]), return_inverse=True)
            sources = np.full((len(items), len(lists)), np.nan)
            cols = np.repeat(np.arange(len(lists)), [len(i) for i, _ in lists])
            np.fmax.at(sources, (inverse, cols), np.concatenate([s for _, s in lists]))
            blend = Candidates(items, np.zeros(len(items)), sources.astype(np.float32), self.retriever_names).normalized_sources().sum(axis=1)
            out.append((items, sources, blend))
        return out

    def rank_scores(self, history: np.ndarray, items: np.ndarray, sources: np.ndarray, blend: np.ndarray) -> np.ndarray:
        if self.student is None or not len(items):
            return blend
        x = candidate_features(self.stats, np.asarray(history, dtype=np.int64), items, sources.astype(np.float32), blend)
        return blend + self.student.strength * self.student.probability(x)

    def scorer(self) -> StackScorer:
        return StackScorer(self)

    # -- persistence ----------------------------------------------------------------------------

    def save(self, folder: str | Path) -> Path:
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        for m in self.models:
            m.save(out / "models" / m.name)
        np.savez_compressed(out / "item_stats.npz", **self.stats.to_state())
        meta: dict[str, Any] = {"config": asdict(self.config), "student": self.student.to_dict() if self.student else None}
        (out / "stack.json").write_text(json.dumps(meta, indent=2) + "\n")
        return out

    @classmethod
    def load(cls, folder: str | Path) -> CoachStack:
        root = Path(folder)
        meta_path = root / "stack.json"
        if not meta_path.exists():
            raise FileNotFoundError(f"{root}: not a saved coach stack (no stack.json)")
        meta = json.loads(meta_path.read_text())
        config = StackConfig(**{**meta["config"], "models": tuple(meta["config"]["models"])})
        models = [load(root / "models" / name) for name in config.models]
        with np.load(root / "item_stats.npz") as z:
            stats = ItemStats.from_state({k: z[k] for k in z.files})
        student = Student.from_dict(meta["student"]) if meta.get("student") else None
        return cls(models, stats, config, student)


class StackScorer:
    """`score(histories)` over the full catalog for `metrics.evaluate`: candidates get their
    ranker score, every other item a score below all candidates."""

    def __init__(self, stack: CoachStack) -> None:
        self.stack = stack
        self.name = stack.describe()
        self.n_items = stack.models[0].n_items

    def score(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        fallback = np.asarray(self.stack.models[0].score(list(histories)), dtype=np.float64)
        lo, hi = fallback.min(axis=1, keepdims=True), fallback.max(axis=1, keepdims=True)
        out = NON_CANDIDATE + (fallback - lo) / np.where(hi > lo, hi - lo, 1.0)
        for row, (h, (items, sources, blend)) in enumerate(zip(histories, self.stack.candidates(histories))):
            out[row, items] = self.stack.rank_scores(h, items, sources, blend)
        return out.astype(np.float32)
