"""The request path: retrieve -> rank -> policy -> guardrail -> explain, one span per stage.

    pipeline = Pipeline.from_models([itemknn, pop], catalog, tracer=tracer)
    result = pipeline.recommend(RecommendRequest(user_id="1", k=10,
                                constraints=Constraints(exclude_genres=("Horror",))))
    result.items, result.scores, result.reasons, result.note

A constraint that leaves fewer than k items returns fewer and says so in `note`; nothing is ever
relaxed silently.

With `PipelineConfig(understand=True, semantic=True)` the request's `context` (a message, or a
conversation as turns with speakers) is read: an `understand` stage before `retrieve` finds
titles, genres, eras, moods and negations (`coachrec.serve.understanding`), and two more
retrievers score items by intent and by text similarity (`coachrec.serve.semantic`). A
request without text runs exactly as it would without those stages.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from coachrec.data import Catalog
from coachrec.models import BaseRecommender
from coachrec.policy import Constraints, EpsilonGreedy
from coachrec.serve.candidates import Candidates, RequestContext, RequestText, ServingCatalog, Turn, as_turns, flatten
from coachrec.serve.retrievers import RecommenderRetriever, Retriever, ScoresRetriever
from coachrec.serve.semantic import MentionedRetriever, QueryEncoderName, SemanticRetriever
from coachrec.serve.stages import BlendRanker, ConstraintFilter, Diversify, Explain, Explore, Guardrail, Retrieve, Stage
from coachrec.serve.understanding import IntentParser, IntentRetriever, Understand, model_retriever, popularity_of
from coachrec.tracing import NoopSpan, SpanKind, Tracer
from coachrec.tracing.jsonenc import Encoded
from coachrec.tracing.model import new_trace_id

_SCORED_KINDS = (SpanKind.RETRIEVER, SpanKind.RANKER)
"""Spans of these kinds also record each retriever's score per item (what the ranker blended)."""


class UnknownUserError(KeyError):
    """A user id the models were not fitted on, with no history to go on."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass
class RecommendRequest:
    """`user_id` (known to the models), or an anonymous `history` of raw item ids, or both, or
    neither when there is `context`: free text (a message) or a conversation, a list of turns
    (`Turn`, or mappings with `speaker` "seeker" | "recommender" (or "user" | "assistant") and
    `text`), oldest first."""

    user_id: str | None = None
    history: Sequence[str] | None = None
    k: int = 10
    constraints: Constraints = field(default_factory=Constraints)
    context: RequestText | None = None
    request_id: str | None = None

    def turns(self) -> tuple[Turn, ...]:
        """The context as turns (`ValueError` naming what is wrong with it)."""
        return as_turns(self.context)

    def to_trace(self) -> dict[str, Any]:
        context: Any = self.context
        if context is not None and not isinstance(context, str):
            context = [{"speaker": t.speaker, "text": t.text} for t in as_turns(context)]
        return {
            "user_id": self.user_id,
            "history": None if self.history is None else list(self.history),
            "k": self.k,
            "constraints": self.constraints.to_dict(),
            "context": context,
        }


@dataclass
class RecommendResult:
    request_id: str
    trace_id: str | None  # None when the trace was sampled out
    items: list[str]
    titles: list[str]
    scores: list[float]
    reasons: list[str]
    explored: list[bool]
    propensity: list[float | None]
    k: int
    note: str | None
    allowed_in_catalog: int
    ignored_history: list[str]


@dataclass(frozen=True)
class PipelineConfig:
    """`candidates`: items each retriever returns; `weights`: ranker blend per retriever name
    (requests without text); `diversity`: MMR lambda (1 = off); `epsilon`/`seed`:
    epsilon-greedy exploration (0 = off).

    Reading text: `understand` adds the `understand` stage and the `intent` retriever;
    `semantic` the `semantic` retriever (`query_encoder`: "static" or "full") and, with
    `understand`, the `mentioned` one (items whose text is close to the titles named); `text_weights`:
    the blend for requests with text (learned: `Stack.learn_blend`); `scores`: names of
    signals handed in per request (`RequestContext.scores`, offline), each a `ScoresRetriever`;
    `fill`: names of model retrievers that score every merged candidate (from the full-catalog
    row they compute anyway), not only their own top `candidates`, so an item another retriever
    found gets its real score from them, not "missing" (`Stack.learn_conversations` fills the
    co-mention's)."""

    candidates: int = 200
    weights: dict[str, float] | None = None
    diversity: float = 0.8
    epsilon: float = 0.0
    seed: int = 0
    understand: bool = False
    semantic: bool = False
    query_encoder: QueryEncoderName = "static"
    text_weights: dict[str, float] | None = None
    scores: tuple[str, ...] = ()
    fill: tuple[str, ...] = ()

    @property
    def reads_text(self) -> bool:
        return self.understand or self.semantic

    def text_retriever_names(self) -> tuple[str, ...]:
        """The retrievers these settings add after the models' own, in order."""
        names: tuple[str, ...] = ("intent",) if self.understand else ()
        if self.semantic:
            names += ("semantic", "mentioned") if self.understand else ("semantic",)
        return (*names, *self.scores)


class Pipeline:
    """Composable stages run in order inside one trace per request."""

    def __init__(
        self,
        catalog: ServingCatalog,
        stages: Sequence[Stage],
        models: Sequence[BaseRecommender],
        tracer: Tracer | None = None,
    ) -> None:
        if not models:
            raise ValueError("a pipeline needs at least one fitted model (for user histories)")
        self.catalog = catalog
        self.stages = list(stages)
        self.models = list(models)
        self.tracer = tracer or Tracer()
        self.closers: list[Callable[[], None]] = []
        """Resources the stages hold (the LLM tiers' model backends), released by `close`."""
        self._users = models[0]
        if self._users.items is None or len(self._users.items) != len(catalog):
            raise ValueError("the models' item map does not match the catalog")

    @classmethod
    def from_models(
        cls,
        models: Sequence[BaseRecommender],
        catalog: Catalog,
        *,
        tracer: Tracer | None = None,
        config: PipelineConfig = PipelineConfig(),
        retrievers: Sequence[Retriever] | None = None,
        ranker: Stage | None = None,
    ) -> Pipeline:
        """The standard stages over fitted models sharing one item map (`retrievers` overrides
        the one-retriever-per-model default, `ranker` the weighted blend)."""
        items = models[0].items
        for m in models[1:]:
            if m.items is None or items is None or list(m.items.ids) != list(items.ids):
                raise ValueError(f"model {m.name} was fitted on another item map than {models[0].name}")
        serving = ServingCatalog(catalog, items)
        parser = IntentParser(serving.data, popularity_of(models, len(serving))) if config.understand else None
        rets: list[Retriever] = (
            list(retrievers)
            if retrievers is not None
            else [model_retriever(m, config.candidates, parser, fill=m.name in config.fill) for m in models]
        )
        before: list[Stage] = []
        if parser is not None:
            before.append(Understand(parser))
            rets.append(IntentRetriever(parser, serving, popularity_of(models, len(serving)), config.candidates))
        if config.semantic:
            semantic = SemanticRetriever(serving.data, config.candidates, query_encoder_name=config.query_encoder)
            rets.append(semantic)
            if config.understand:  # the titles the understand stage found, by their text
                rets.append(MentionedRetriever(semantic, config.candidates))
        rets += [ScoresRetriever(name, config.candidates) for name in config.scores]
        stages: list[Stage] = [
            *before,
            Retrieve(rets),
            ranker if ranker is not None else BlendRanker(config.weights, text_weights=config.text_weights),
            ConstraintFilter(),
            Diversify(config.diversity),
            Explore(EpsilonGreedy(config.epsilon, config.seed)),
            Guardrail(),
            Explain(rets),
        ]
        return cls(serving, stages, models, tracer)

    @property
    def waits_on_llm(self) -> bool:
        """Whether a stage may wait on a language model (seconds): the HTTP layer then keeps
        requests off its event loop."""
        return any(getattr(stage, "waits_on_llm", False) for stage in self.stages)

    def close(self) -> None:
        for close in self.closers:
            close()
        self.closers.clear()

    def warm(self) -> None:
        """Load what the first request with text would (item embeddings, query encoder), so
        it is not slow; a pipeline without text stages has nothing to load."""
        for r in _retrievers(self):
            warm = getattr(r, "warm", None)
            if warm is not None:
                warm()

    # -- offline scoring ---------------------------------------------------------------------

    def offline(
        self,
        histories: Sequence[np.ndarray],
        *,
        through: str = "rank",
        batch: int = 256,
        contexts: Sequence[RequestText | None] | None = None,
        scores: Sequence[dict[str, np.ndarray]] | None = None,
        keep: list[RequestContext] | None = None,
    ) -> list[Candidates]:
        """Each history's candidates after the stages up to and including the one named
        `through`, untraced, with no constraints but "seen items excluded": the same stage
        code a served request runs, for metrics, distillation and the gate. Model scores are
        computed a batch at a time (after the `understand` stage, which may add titles the text
        mentions to a history) and handed to the retrievers through `RequestContext.scores`.
        `contexts`: each request's text (None: none); `scores`: signals handed in per request
        (for the `PipelineConfig.scores` retrievers). `keep`, when given, receives each
        request's context after the stages (its intent, history, constraints), in order."""
        names = [stage.name for stage in self.stages]
        if through not in names:
            raise ValueError(f"through: no stage {through!r} in this pipeline; it has {names}")
        for given, what in ((contexts, "contexts"), (scores, "scores")):
            if given is not None and len(given) != len(histories):
                raise ValueError(f"{what}: {len(given)} for {len(histories)} histories")
        stages = self.stages[: names.index(through) + 1]
        first = next((i for i, s in enumerate(stages) if isinstance(s, Retrieve)), len(stages))
        scorers = [r for r in _retrievers(self) if isinstance(r, RecommenderRetriever)]
        none = Constraints()
        span = NoopSpan()
        tracer = Tracer(enabled=False)
        out: list[Candidates] = []
        for start in range(0, len(histories), batch):
            ctxs = []
            for row, h in enumerate(histories[start : start + batch]):
                history = np.asarray(h, dtype=np.int64)
                turns = as_turns(contexts[start + row]) if contexts is not None else ()
                ctx = RequestContext(f"offline-{start + row}", None, history, 10, none,
                                     self.catalog.index.mask(none, history), self.catalog, tracer,
                                     flatten(turns), turns=turns)  # fmt: skip
                if scores is not None:
                    ctx.scores.update(scores[start + row])
                candidates = Candidates.empty()
                for stage in stages[:first]:
                    candidates = stage(ctx, candidates, span)
                ctxs.append((ctx, candidates))
            model_scores = {r.name: r.score_contexts([ctx for ctx, _ in ctxs]) for r in scorers}
            for row, (ctx, candidates) in enumerate(ctxs):
                ctx.scores.update({name: s[row] for name, s in model_scores.items()})
                for stage in stages[first:]:
                    candidates = stage(ctx, candidates, span)
                out.append(candidates)
                if keep is not None:
                    keep.append(ctx)
        return out

    # -- the request -------------------------------------------------------------------------

    def history_of(self, request: RecommendRequest) -> tuple[np.ndarray, list[str]]:
        """The item indices the request's user has seen, oldest first, and unknown history ids."""
        model = self._users
        hist = np.zeros(0, dtype=np.int64)
        if request.user_id is not None:
            if model.users is not None and request.user_id in model.users:
                hist = model.user_history(model.users.index(request.user_id))
            elif request.history is None:
                raise UnknownUserError(f"user_id: unknown user {request.user_id!r}; pass a history for a new user")
        elif request.history is None and request.context is None:
            raise UnknownUserError("user_id: give a user_id, an anonymous history or a context")
        ignored: list[str] = []
        if request.history:
            enc = self.catalog.items.encode(list(request.history), unknown="mask")
            ignored = [str(h) for h, e in zip(request.history, enc, strict=False) if e < 0]
            hist = np.concatenate([hist, enc[enc >= 0]])
        return hist.astype(np.int64), ignored

    def recommend(self, request: RecommendRequest) -> RecommendResult:
        if request.k < 1:
            raise ValueError(f"k: must be at least 1, got {request.k}")
        self.catalog.index.validate(request.constraints)
        turns = request.turns()
        request_id = request.request_id or new_trace_id()
        with self.tracer.trace_request(
            "recommend", user_id=request.user_id, request_id=request_id, input=request.to_trace()
        ) as root:
            history, ignored = self.history_of(request)
            allowed = self.catalog.index.mask(request.constraints, history)
            ctx = RequestContext(
                request_id,
                request.user_id,
                history,
                request.k,
                request.constraints,
                allowed,
                self.catalog,
                self.tracer,
                flatten(turns),
                turns=turns,
            )
            candidates = Candidates.empty()
            # the previous stage's output is this one's input: encoded once (with the per-retriever
            # scores whenever either stage records them)
            recorded: Encoded | None = None
            recorded_sources = False
            for stage in self.stages:
                with self.tracer.span(stage.name, kind=stage.kind) as span:
                    sources = stage.kind in _SCORED_KINDS
                    if span.recording and len(candidates):
                        span.set_input(
                            recorded
                            if recorded is not None and (recorded_sources or not sources)
                            else candidates.trace(self.catalog, sources=sources)
                        )
                    candidates = stage(ctx, candidates, span)
                    if span.recording and not getattr(stage, "own_output", False):
                        recorded, recorded_sources = Encoded(candidates.trace(self.catalog, sources=sources)), sources
                        span.set_output(recorded)
            result = self._result(ctx, candidates, root.trace_id, ignored)
            if root.recording:
                root.set_output({"items": result.items, "scores": result.scores, "note": result.note})
        return result

    def _result(self, ctx: RequestContext, c: Candidates, trace_id: str | None, ignored: list[str]) -> RecommendResult:
        n_allowed = int(ctx.allowed.sum())
        note = None
        if len(c) < ctx.k:
            if n_allowed < ctx.k:
                note = (
                    f"returned {len(c)} of the {ctx.k} items asked for: the constraints allow only "
                    f"{n_allowed} of the catalog's {len(self.catalog)} items"
                )
            else:
                note = (
                    f"returned {len(c)} of the {ctx.k} items asked for: the retrievers found only "
                    f"{len(c)} items satisfying the constraints for this history"
                )
        n = len(c)
        return RecommendResult(
            request_id=ctx.request_id,
            trace_id=trace_id,
            items=self.catalog.decode(c.idx),
            titles=self.catalog.titles[c.idx].tolist(),
            scores=np.round(c.score, 6).tolist(),
            reasons=c.reasons if c.reasons is not None else [""] * n,
            explored=c.explored.tolist() if c.explored is not None else [False] * n,
            propensity=[None if np.isnan(p) else round(float(p), 6) for p in c.propensity]
            if c.propensity is not None
            else [None] * n,
            k=ctx.k,
            note=note,
            allowed_in_catalog=n_allowed,
            ignored_history=ignored,
        )


def _retrievers(pipeline: Pipeline) -> list[Retriever]:
    return [r for stage in pipeline.stages if isinstance(stage, Retrieve) for r in stage.retrievers]
