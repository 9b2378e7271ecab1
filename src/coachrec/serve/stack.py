"""The servable unit: fitted models, pipeline settings, the ranker stage and the LLM tiers.

    stack = Stack.fit(train, models=("itemknn", "pop"))      # the default champion
    pipeline = stack.pipeline(tracer)                          # what a user is served, traced
    stack.scorer()                                             # the same stages, untraced, for metrics
    stack.save("stacks/v1"); Stack.load("stacks/v1")
    stack.learn_conversations(datasets.requests("redial-ml"), dialogs=ids)  # + co-mention, blend re-learned
    stack.with_model(model, blend_on=records)                  # any fitted retriever over the catalog

A `Stack` is the only thing the coach produces, the registry stores and the server serves, so
the gate scores exactly the stages users get. `Stack.fit` reads text by default
(`TEXT_CONFIG`: the `understand` stage, intent and semantic retrievers) and learns the blend
for requests with text from simulated requests on a validation split (`learn_blend`); a
request without text is ranked exactly as by the models alone. `scorer()` and `candidates()` run the pipeline's
own retrieve and rank stages (`Pipeline.offline`) with tracing off; items no retriever proposes
rank below every candidate, in the order of the first model's scores.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from coachrec import datasets
from coachrec.data import Catalog, Dataset, leave_one_out
from coachrec.models import BaseRecommender, create, load
from coachrec.models.conversational import (
    CoMentionRecommender,
    CoMentionRecommenderConfig,
    conversation_dialogs,
    tune_co_mention_recommender,
)
from coachrec.ranking import ItemStats, Student, feature_names
from coachrec.serve.candidates import Candidates, RequestContext, RequestText
from coachrec.serve.llm_stages import LLMServeConfig, attach_llm
from coachrec.serve.pipeline import Pipeline, PipelineConfig
from coachrec.serve.stages import LearnedRanker, learn_weights
from coachrec.serve.understanding import simulated_requests
from coachrec.tracing import Tracer

DEFAULT_MODELS = ("itemknn", "pop")
NON_CANDIDATE = -1e6
"""Score floor for items no retriever proposed (below every candidate, order kept by model 0)."""
FORMAT = 2
TEXT_CONFIG = PipelineConfig(understand=True, semantic=True)
"""The default: reads a request's text (understand stage, intent and semantic retrievers)."""


def has_item_text(catalog: Catalog) -> bool:
    """Whether items have text beyond their ids (titles, genres or tags) for the text stages."""
    f = catalog.frame
    return bool(
        (f["title"] != f["item"]).any() or (f["genres"].list.len() > 0).any() or (f["tags"].list.len() > 0).any()
    )


def catalog_for(data: Dataset) -> Catalog:
    """The data's catalog, or a bare one (titles = item ids) for order-only data such as Beauty."""
    if data.catalog is not None:
        return data.catalog
    ids = [str(i) for i in data.items.ids]
    return Catalog.from_frame(pl.DataFrame({"item": ids, "title": ids}), data.items)


@dataclass
class Stack:
    models: list[BaseRecommender]
    catalog: Catalog
    config: PipelineConfig = field(default_factory=PipelineConfig)
    ranker: LearnedRanker | None = None
    """The `rank` stage replacing the weighted blend (a coached stack's distilled student)."""
    llm: LLMServeConfig | None = None
    """LLM reranker and explainer tiers (models load on the first request that needs them)."""
    dataset: str | None = None
    """The named dataset whose catalog the stack serves (so `load` can rebuild it)."""
    source: str = ""
    """Where the stack came from, for /health and traces."""

    def __post_init__(self) -> None:
        if not self.models:
            raise ValueError("a stack needs at least one fitted model")

    @classmethod
    def fit(cls, data: Dataset, models: Sequence[str] = DEFAULT_MODELS, config: PipelineConfig = TEXT_CONFIG, *,
            catalog: Catalog | None = None, dataset: str | None = None, learn_blend: bool | None = None,
            seed: int = 0) -> Stack:  # fmt: skip
        """Fit each named model on `data` with its tuned defaults for this dataset.

        With text stages (`config.reads_text`; dropped for a catalog without item text) and no
        `config.text_weights`, the blend for requests with text is learned (`learn_blend`,
        default on): the models are fitted once more on a leave-one-out split's training part,
        simulated requests are written for its validation targets (`simulated_requests`) and
        the weights fitted on how they rank them."""
        catalog = catalog if catalog is not None else catalog_for(data)
        if config.reads_text and not has_item_text(catalog):
            config = replace(config, understand=False, semantic=False, text_weights=None)
        fitted = [create(name, dataset=data).fit(data) for name in models]
        name = dataset or data.name
        stack = cls(fitted, catalog, config, dataset=name, source=f"{'+'.join(models)} fitted on {name}")
        learn = config.reads_text and config.text_weights is None if learn_blend is None else learn_blend
        if learn:
            split = leave_one_out(data)
            inner = cls([create(m, dataset=data).fit(split.train) for m in models], catalog, config)
            task = split.task("valid")
            histories, texts = simulated_requests(task.histories, task.targets, catalog, seed=seed)
            weights, info = inner.learn_blend(histories, texts, task.targets)
            stack.config = replace(config, text_weights=weights)
            stack.source += f"; text blend learned on {int(info['requests'])} simulated requests"
        return stack

    # -- what it is -----------------------------------------------------------------------------

    @property
    def retriever_names(self) -> tuple[str, ...]:
        """The models' retrievers, then those the text settings add (`intent`, `semantic`)."""
        return tuple(m.name for m in self.models) + self.config.text_retriever_names()

    @property
    def feature_names(self) -> tuple[str, ...]:
        """The features a learned ranker over this stack's retrievers reads."""
        return feature_names(self.retriever_names)

    def describe(self) -> str:
        base = "+".join(m.name for m in self.models)
        if self.config.reads_text:
            base += " + text (" + ", ".join(self.config.text_retriever_names()) + ")"
        if self.ranker is None:
            text = base if len(self.models) == 1 else f"{base} blend"
        else:
            text = f"{base} + distilled student (strength {self.ranker.student.strength:g})"
        return text + (f" + LLM {self.llm.small}" if self.llm is not None else "")

    def with_ranker(self, student: Student, stats: ItemStats) -> Stack:
        return replace(self, ranker=LearnedRanker(student, stats))

    # -- serving and scoring ----------------------------------------------------------------------

    def _ranker(self) -> LearnedRanker | None:
        if self.ranker is None or self.ranker.text_weights == self.config.text_weights:
            return self.ranker
        return LearnedRanker(self.ranker.student, self.ranker.stats, text_weights=self.config.text_weights)

    def pipeline(self, tracer: Tracer | None = None) -> Pipeline:
        """The request path over this stack; close it to release the LLM backends."""
        pipeline = Pipeline.from_models(
            self.models, self.catalog, tracer=tracer, config=self.config, ranker=self._ranker()
        )
        if self.llm is not None:
            pipeline.closers.append(attach_llm(pipeline, self.catalog, self.llm).close)
        return pipeline

    def _offline(self) -> Pipeline:
        """The untraced pipeline for offline scoring, kept while the stack is unchanged (so
        the text stages' tables and embeddings are built once)."""
        key = (self.config, id(self.ranker), id(self.catalog), tuple(id(m) for m in self.models))
        cached = self.__dict__.get("_offline_cache")
        if cached is None or cached[0] != key:
            cached = (key, Pipeline.from_models(self.models, self.catalog, config=self.config, ranker=self._ranker()))
            self.__dict__["_offline_cache"] = cached
        pipeline: Pipeline = cached[1]
        return pipeline

    def candidates(
        self,
        histories: Sequence[np.ndarray],
        *,
        through: str = "retrieve",
        contexts: Sequence[RequestText | None] | None = None,
        scores: Sequence[dict[str, np.ndarray]] | None = None,
        keep: list[RequestContext] | None = None,
    ) -> list[Candidates]:
        """Per history, the candidate set after the stage `through` ("retrieve": merged
        retriever lists, scored by the unweighted blend; "rank": after the ranker), with each
        request's text (`contexts`) and handed-in signals (`scores`) when given; `keep`
        receives each request's context after the stages (`Pipeline.offline`)."""
        return self._offline().offline(histories, through=through, contexts=contexts, scores=scores, keep=keep)

    def learn_blend(
        self,
        histories: Sequence[np.ndarray],
        contexts: Sequence[RequestText | None],
        targets: Sequence[np.ndarray],
        *,
        scores: Sequence[dict[str, np.ndarray]] | None = None,
        seed: int = 0,
    ) -> tuple[dict[str, float], dict[str, float]]:
        """Blend weights for requests with text, fitted (`stages.learn_weights`: pairwise
        logistic regression) on how this stack's retrievers rank each request's `targets`.
        Returns the weights and the fit's statistics; `replace(stack.config, text_weights=...)`
        serves them (they are saved with the stack)."""
        found = self.candidates(histories, through="retrieve", contexts=contexts, scores=scores)
        return learn_weights(found, targets, seed=seed)

    # -- learning from conversations --------------------------------------------------------

    def with_model(
        self,
        model: BaseRecommender,
        *,
        blend_on: Sequence[Mapping[str, Any]] | None = None,
        blend_model: BaseRecommender | None = None,
        seed: int = 0,
    ) -> Stack:
        """A new stack with the fitted `model` (over this catalog's items) as one more retriever.

        Requests without text rank as before (its weight there is 0); with `blend_on`, request
        records (`context`: a message or turns; `targets`: raw item ids; optional `history`),
        the text blend is re-learned on how the new stack ranks their targets (`learn_blend`).
        Learn on dialogs `model` never saw, or pass `blend_model` (the same kind of model fitted
        on other dialogs) to stand in for it while learning. Without `blend_on` the new
        retriever weighs 1 in the existing text blend. A distilled ranker is kept: its student
        reads the retrievers it was distilled over, the new one enters the text blend."""
        if model.name in self.retriever_names:
            raise ValueError(f"with_model: the stack already has a retriever named {model.name!r}")
        weights = dict(self.config.weights or {m.name: 1.0 for m in self.models}) | {model.name: 0.0}
        text_weights = None if self.config.text_weights is None else self.config.text_weights | {model.name: 1.0}
        config = replace(self.config, weights=weights, text_weights=text_weights)
        source = f"{self.source}; + {model.name} ({_fitted_on(model)})"
        stack = replace(self, models=[*self.models, model], config=config, source=source)
        if blend_on is None:
            return stack
        inner = replace(stack, models=[*self.models, blend_model or model], config=replace(config, text_weights=None))
        histories, contexts, targets = conversation_requests(blend_on, self.catalog)
        learned, info = inner.learn_blend(histories, contexts, targets, seed=seed)
        stack.config = replace(config, text_weights=learned)
        stack.source += f"; text blend learned on {int(info['requests'])} conversation turns"
        return stack

    def learn_conversations(
        self,
        records: Sequence[Mapping[str, Any]],
        *,
        dialogs: Iterable[str] | None = None,
        config: CoMentionRecommenderConfig | None = None,
        tune: bool = True,
        fill: bool = True,
        blend_folds: int = 5,
        seed: int = 0,
    ) -> Stack:
        """A new stack that also learns from conversations: a `CoMentionRecommender` fitted on
        the records of `dialogs` (default all; the bundled `datasets.requests("redial-ml")`
        layout, with `context`), and the text blend re-learned on the same dialogs cross-fitted
        (`blend_folds` parts by dialog id, seeded: each part's turns scored with co-mention
        fitted on the other parts, so the blend never sees a table that counted the turn it
        ranks; five parts by default: tables fitted on 80% of the dialogs, closer to the final
        one than halves, so the co-mention's weight is not learned on a weaker table. On ReDial
        (served, 5 folds, seed 0) 5 parts against 2: R@10 0.1986 -> 0.2011, +0.0025 [+0.0004,
        +0.0045]).

        Without a `config`, and with `tune` (the default), the co-mention's settings (the
        text keys' `key_weight` first, then `shrink` and `dialog_weight`) are chosen by
        `tune_co_mention_recommender` on an inner split of these dialogs only; `tune=False`
        keeps `CoMentionRecommenderConfig()`. The choice is in the co-mention's `fit_info`.
        With `fill` (the default) the co-mention scores every candidate the other retrievers
        found too (`PipelineConfig.fill`), when the blend is learned and when it is served."""
        keep = None if dialogs is None else {str(d) for d in dialogs}
        chosen = [r for r in records if keep is None or str(r["dialog_id"]) in keep]
        if blend_folds < 2:
            raise ValueError(f"learn_conversations: blend_folds must be at least 2, got {blend_folds}")
        halves = conversation_dialogs(chosen, blend_folds, seed)
        if any(not h for h in halves):
            raise ValueError("learn_conversations: needs records from at least two dialogs")
        tuned: list[dict[str, Any]] | None = None
        if config is None and tune:
            config, tuned = tune_co_mention_recommender(chosen, self.catalog, seed=seed)
        final = CoMentionRecommender(config).fit_conversations(chosen, self.catalog)
        if tuned is not None:
            final.fit_info["tuned_on"] = f"inner split of {len(chosen)} turns, {len(tuned)} settings tried"
            final.fit_info["tuned"] = dataclasses.asdict(final.config)
        stack = self.with_model(final)
        if fill and final.name not in stack.config.fill:
            stack.config = replace(stack.config, fill=(*stack.config.fill, final.name))
        found: list[Candidates] = []
        targets: list[np.ndarray] = []
        for j, blend_half in enumerate(halves):
            fit_half = set().union(*(h for i, h in enumerate(halves) if i != j))
            half_model = CoMentionRecommender(config).fit_conversations(chosen, self.catalog, dialogs=fit_half)
            inner = replace(stack, models=[*self.models, half_model], config=replace(stack.config, text_weights=None))
            part = [r for r in chosen if str(r["dialog_id"]) in blend_half]
            histories, contexts, part_targets = conversation_requests(part, self.catalog)
            found += inner.candidates(histories, through="retrieve", contexts=contexts)
            targets += part_targets
        learned, info = learn_weights(found, targets, seed=seed)
        stack.config = replace(stack.config, text_weights=learned)
        stack.source += f"; text blend learned on {int(info['requests'])} conversation turns (cross-fitted)"
        return stack

    def scorer(self) -> StackScorer:
        return StackScorer(self)

    # -- persistence ----------------------------------------------------------------------------

    def save(self, folder: str | Path) -> Path:
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        for m in self.models:
            m.save(out / "models" / m.name)
        meta: dict[str, Any] = {
            "format": FORMAT,
            "models": [m.name for m in self.models],
            "dataset": self.dataset,
            "config": dataclasses.asdict(self.config),
            "student": None,
            "llm": None if self.llm is None else dataclasses.asdict(self.llm),
            "source": self.source,
        }
        if self.ranker is not None:
            meta["student"] = self.ranker.student.to_dict()
            np.savez_compressed(out / "item_stats.npz", allow_pickle=False, **self.ranker.stats.to_state())
        (out / "stack.json").write_text(json.dumps(meta, indent=2) + "\n")
        return out

    @classmethod
    def load(cls, folder: str | Path, catalog: Catalog | None = None) -> Stack:
        """A saved stack; the catalog comes from its named dataset unless `catalog` is given."""
        root = Path(folder)
        meta_path = root / "stack.json"
        if not meta_path.exists():
            raise FileNotFoundError(f"{root}: not a saved stack (no stack.json)")
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != FORMAT:
            raise ValueError(
                f"{meta_path}: stack format {meta.get('format')!r}, this coachrec reads format {FORMAT}; "
                "re-create it (coachrec coach) or load its models with --model-path"
            )
        models = [load(root / "models" / name) for name in meta["models"]]
        if catalog is None:
            if not meta.get("dataset"):
                raise ValueError(f"{meta_path}: no dataset recorded; pass the catalog the stack serves")
            catalog = catalog_for(datasets.load(meta["dataset"]))
        ranker = None
        if meta.get("student"):
            with np.load(root / "item_stats.npz") as z:
                stats = ItemStats.from_state({k: z[k] for k in z.files})
            ranker = LearnedRanker(Student.from_dict(meta["student"]), stats)
        config = _from_dict(PipelineConfig, meta["config"])
        llm = None if meta.get("llm") is None else _from_dict(LLMServeConfig, meta["llm"])
        return cls(
            models, catalog, config, ranker, llm, meta.get("dataset"), meta.get("source") or f"stack saved in {root}"
        )


def conversation_requests(
    records: Sequence[Mapping[str, Any]], catalog: Catalog
) -> tuple[list[np.ndarray], list[RequestText | None], list[np.ndarray]]:
    """Histories (the records' `history`, raw ids, if any), contexts and target item indices
    of request records (`context`, `targets`; ids not in the catalog are left out)."""
    histories, contexts, targets = [], [], []
    for i, r in enumerate(records):
        if "context" not in r or "targets" not in r:
            raise ValueError(f"request record {i}: needs 'context' and 'targets' to learn a blend from")
        histories.append(catalog.items.encode([str(x) for x in r.get("history") or []], unknown="drop"))
        contexts.append(r["context"] or None)
        targets.append(catalog.items.encode([str(x) for x in r["targets"]], unknown="drop"))
    return histories, contexts, targets


def _fitted_on(model: BaseRecommender) -> str:
    info = model.fit_info
    if info.get("fit_on") == "conversations":
        return f"learned from {info.get('turns', '?')} turns of {info.get('dialogs', '?')} dialogs"
    return f"fitted on {info.get('dataset', '?')}"


def load_models(
    path: str | Path, catalog: Catalog, config: PipelineConfig = PipelineConfig(), dataset: str | None = None
) -> Stack:
    """A stack over saved models: `path` is a saved stack, one saved model folder, or a folder
    of them (each a retriever)."""
    folder = Path(path)
    if (folder / "stack.json").exists():
        return Stack.load(folder, catalog)
    if (folder / "model.json").exists():
        folders = [folder]
    else:
        folders = sorted(p for p in folder.iterdir() if (p / "model.json").exists()) if folder.is_dir() else []
    if not folders:
        raise FileNotFoundError(
            f"{folder}: no saved coachrec stack or model (stack.json or model.json here or in a subfolder)"
        )
    return Stack([load(f) for f in folders], catalog, config, dataset=dataset, source=f"saved models in {folder}")


class StackScorer:
    """`score(histories)` over the full catalog for `metrics.evaluate`: candidates get their
    ranker score, every other item a score below all candidates."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.name = stack.describe()
        self.n_items = stack.models[0].n_items
        self._pipeline = stack._offline()

    def score(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        fallback = np.asarray(self.stack.models[0].score(list(histories)), dtype=np.float64)
        lo, hi = fallback.min(axis=1, keepdims=True), fallback.max(axis=1, keepdims=True)
        out = NON_CANDIDATE + (fallback - lo) / np.where(hi > lo, hi - lo, 1.0)
        for row, ranked in enumerate(self._pipeline.offline(histories, through="rank")):
            out[row, ranked.idx] = ranked.score
        scores: np.ndarray = out.astype(np.float32)
        return scores


def _from_dict(cls: type, values: dict[str, Any]) -> Any:
    """A (nested, frozen) config dataclass from its `dataclasses.asdict` form."""
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in values:
            continue
        value, hint = values[f.name], hints[f.name]
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            value = _from_dict(hint, value)  # type: ignore[arg-type]
        elif typing.get_origin(hint) in (dict, Mapping) and isinstance(value, dict):
            inner = typing.get_args(hint)[1] if typing.get_args(hint) else None
            if inner is not None and dataclasses.is_dataclass(inner):
                value = {k: _from_dict(inner, v) for k, v in value.items()}  # type: ignore[arg-type]
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[f.name] = value
    return cls(**kwargs)
