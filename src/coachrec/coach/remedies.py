"""Remedies: the declared catalogue of changes the coach may try against a failure mode.

Each remedy is a function from the champion `Stack` (and what the iteration observed) to a
candidate `Stack`, tagged with the failure modes it addresses and the span it changes. Every
choice a remedy makes (a strength, blend weights, a model) is made on the *selection* users'
data only; the gate then judges each candidate on users no remedy saw.

    @remedy("my-idea", modes=("irrelevant_items",), span="rank")
    def my_idea(ctx: RemedyContext) -> Candidate:
        ...
        return Candidate(stack, note="why this candidate", selection={"valid_ndcg@10": ...})

A remedy that cannot apply raises `RemedyError` with the reason (it is reported, not fatal).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from coachrec.coach.distill import DistillConfig, DistillError, distill, selection_rows
from coachrec.coach.trust import Trust
from coachrec.data import Catalog, EvalTask, Split
from coachrec.metrics import evaluate, named
from coachrec.models import BaseRecommender, create
from coachrec.policy.ope import SlateLog
from coachrec.progress import SILENT, Progress
from coachrec.serve import PipelineConfig, RecommendRequest, Stack
from coachrec.teacher import JudgeCase, RelevanceCommittee, RubricSpec


class RemedyError(ValueError):
    """A remedy that does not apply here (the message says why)."""


@dataclass
class RemedyContext:
    """What a remedy may read: the champion, the training split, the selection users (never the
    gate's), their judged traffic, and the teacher."""

    champion: Stack
    split: Split
    selection_users: list[str]
    cases: list[JudgeCase]
    rubric: RubricSpec
    trust: dict[str, Trust]
    committee: RelevanceCommittee | None
    target_mode: str
    distill: DistillConfig = field(default_factory=DistillConfig)
    seed: int = 0
    progress: Progress = SILENT
    conversations: list[RecommendRequest] = field(default_factory=list)
    """The selection dialogs' requests (ReDial), whose human targets a remedy may learn from."""
    targets: dict[str, list[str]] = field(default_factory=dict)
    """Request id -> the movies the human recommender suggested next."""
    dialog_records: list[dict[str, Any]] = field(default_factory=list)
    """Every turn of the selection dialogs (the bundled `datasets.requests("redial-ml")` layout:
    `dialog_id`, `context`, `mentions`, `targets`), for remedies that learn from conversations."""
    logged: SlateLog | None = None
    """The selection users' logged impressions with positions, propensities and (simulated)
    clicks (`LoopConfig.clicks`), for remedies that learn from clicks; None when not logged."""


@dataclass
class Candidate:
    stack: Stack
    note: str
    selection: dict[str, float] = field(default_factory=dict)
    """What the remedy measured on the selection users; the first value orders the gating
    (higher first)."""
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Remedy:
    name: str
    modes: tuple[str, ...]
    span: str
    """The span (stage) of the pipeline the candidate changes."""
    build: Callable[[RemedyContext], Candidate]
    description: str


REMEDIES: dict[str, Remedy] = {}


def remedy(
    name: str, *, modes: Sequence[str], span: str
) -> Callable[[Callable[[RemedyContext], Candidate]], Callable[[RemedyContext], Candidate]]:
    """Register a remedy for `modes` (a user's own remedies too: decorate and import)."""

    def register(fn: Callable[[RemedyContext], Candidate]) -> Callable[[RemedyContext], Candidate]:
        if name in REMEDIES:
            raise ValueError(f"a remedy named {name!r} is already registered")
        REMEDIES[name] = Remedy(name, tuple(modes), span, fn, (fn.__doc__ or "").strip().split("\n")[0])
        return fn

    return register


def remedies_for(mode: str) -> list[Remedy]:
    return [r for r in REMEDIES.values() if mode in r.modes]


def selection_ndcg(stack: Stack, split: Split, users: Sequence[str]) -> float:
    """NDCG@10 (full ranking, seen items excluded) of the stack's ranker on the selection users'
    validation interactions: the yardstick every remedy's choice is made with."""
    task = split.task("valid")
    rows = np.sort(selection_rows(split, users, len(task.users), seed=0))
    mine = EvalTask(task.users[rows], [task.histories[r] for r in rows], [task.targets[r] for r in rows])
    result = evaluate(stack.scorer(), mine, named("loo-full"), ks=(10,))
    return float(result.metrics["ndcg@10"])


def strongest_stack(
    split: Split, options: Sequence[Sequence[str]], config: PipelineConfig, catalog: Catalog, users: Sequence[str]
) -> tuple[Stack, dict[tuple[str, ...], float]]:
    """The first champion: of the retriever sets in `options` (each model fitted once on the
    training part), the stack with the best selection-user validation NDCG@10, and every score."""
    fitted: dict[str, BaseRecommender] = {}
    scores: dict[tuple[str, ...], float] = {}
    stacks: dict[tuple[str, ...], Stack] = {}
    for names in options:
        for name in names:
            if name not in fitted:
                fitted[name] = create(name, dataset=split.train).fit(split.train)
        key = tuple(names)
        stacks[key] = Stack(
            [fitted[n] for n in key],
            catalog,
            config,
            dataset=split.train.name,
            source=f"{'+'.join(key)} fitted on the {split.train.name} training part",
        )
        scores[key] = selection_ndcg(stacks[key], split, users)
    best = max(scores, key=lambda k: scores[k])
    return stacks[best], scores


# -- the built-in catalogue ---------------------------------------------------------------------


@remedy("distilled-student", modes=("irrelevant_items",), span="rank")
def distilled_student(ctx: RemedyContext) -> Candidate:
    """A logistic ranker distilled from the relevance committee's verdicts on selection traffic."""
    if ctx.committee is None:
        raise RemedyError("no relevance committee to distil (none could be measured on this data)")
    try:
        d = distill(
            ctx.champion,
            ctx.committee,
            ctx.cases,
            ctx.split,
            ctx.rubric,
            ctx.trust,
            ctx.target_mode,
            ctx.distill,
            progress=lambda text: ctx.progress.note(text, level="dim"),
            users=ctx.selection_users,
        )
    except DistillError as exc:
        raise RemedyError(str(exc)) from exc
    strength = d.stack.ranker.student.strength if d.stack.ranker is not None else 0.0
    best = next((r for r in d.strength_search if r["strength"] == strength), {})
    return Candidate(
        d.stack, d.note, {"valid_ndcg@10": best.get("valid_ndcg@10", float("nan"))}, {"distillation": d.summary()}
    )


@remedy("learned-blend-weights", modes=("irrelevant_items",), span="rank")
def learned_blend_weights(ctx: RemedyContext) -> Candidate:
    """Blend weights per retriever chosen on the selection users' validation NDCG@10."""
    names = ctx.champion.retriever_names
    if len(names) < 2:
        raise RemedyError("the champion has one retriever: there is no blend to weigh")
    if ctx.champion.ranker is not None:
        raise RemedyError("the champion ranks with a distilled student, which reads each retriever's score itself")
    grid = [0.0, 0.25, 0.5, 1.0, 2.0, 4.0]
    base = selection_ndcg(ctx.champion, ctx.split, ctx.selection_users)
    best, best_w = base, None
    for w in grid:  # the first retriever keeps weight 1; the others share w (a 1-d search)
        weights = {names[0]: 1.0, **dict.fromkeys(names[1:], w)}
        trial = replace(ctx.champion, config=replace(ctx.champion.config, weights=weights))
        score = selection_ndcg(trial, ctx.split, ctx.selection_users)
        if score > best + 1e-9:
            best, best_w = score, weights
    if best_w is None:
        raise RemedyError(f"no weighting beats the champion's blend on selection users (valid NDCG@10 {base:.4f})")
    stack = replace(ctx.champion, config=replace(ctx.champion.config, weights=best_w))
    return Candidate(
        stack, f"weights {best_w}: selection valid NDCG@10 {base:.4f} -> {best:.4f}", {"valid_ndcg@10": best}
    )


@remedy("diversity-strength", modes=("monotonous_slate",), span="policy.diversity")
def diversity_strength(ctx: RemedyContext) -> Candidate:
    """A stronger MMR diversity setting (lambda one step lower than the champion's)."""
    lam = ctx.champion.config.diversity
    if lam <= 0.5:
        raise RemedyError(f"diversity lambda is already {lam}: lowering it further trades too much relevance")
    new = round(lam - 0.1, 2)
    stack = replace(ctx.champion, config=replace(ctx.champion.config, diversity=new))
    return Candidate(stack, f"MMR lambda {lam} -> {new}", {})


@remedy("request-understanding", modes=("ignores_request",), span="understand")
def request_understanding(ctx: RemedyContext) -> Candidate:
    """Read the request: mentions as history, intent (genres, years, negations), semantic
    retrieval over item text, with the text blend learned on the selection conversations."""
    items = ctx.champion.models[0].items
    if items is None:
        raise RemedyError("the champion's models are not fitted")
    convs = [r for r in ctx.conversations if r.context and ctx.targets.get(r.request_id or "")]
    if len(convs) < 20:
        raise RemedyError(f"only {len(convs)} selection conversations with human targets to learn the text blend on")
    histories = [_encode(items, r.history or ()) for r in convs]
    targets = [_encode(items, ctx.targets[r.request_id or ""]) for r in convs]
    base = replace(ctx.champion, config=replace(ctx.champion.config, understand=True, semantic=True))
    weights, fit = base.learn_blend(histories, [r.context for r in convs], targets, seed=ctx.seed)
    stack = replace(base, config=replace(base.config, text_weights=weights))
    before = _conversation_recall(ctx.champion, convs, histories, targets)
    after = _conversation_recall(stack, convs, histories, targets)
    note = (
        f"understand + intent + semantic retrieval; text blend learned on {len(convs)} selection conversations "
        f"{ {k: round(v, 3) for k, v in weights.items()} }; selection recall@10 {before:.4f} -> {after:.4f}"
    )
    return Candidate(stack, note, {"selection_recall@10": after}, {"text_blend": {"weights": weights, "fit": fit}})


def _encode(items: Any, ids: Sequence[str]) -> np.ndarray:
    enc = items.encode(list(ids), unknown="mask")
    return np.asarray(enc[enc >= 0], dtype=np.int64)


def _conversation_recall(
    stack: Stack, convs: Sequence[RecommendRequest], histories: Sequence[np.ndarray], targets: Sequence[np.ndarray]
) -> float:
    """Mean recall@10 of the targets in the stack's ranked candidates (offline, same stages)."""
    found = stack.candidates(histories, through="rank", contexts=[r.context for r in convs])
    hits = [
        len(set(c.idx[:10].tolist()) & set(t.tolist())) / len(t) for c, t in zip(found, targets, strict=True) if len(t)
    ]
    return float(np.mean(hits)) if hits else 0.0


@remedy("learn-from-conversations", modes=("ignores_request",), span="retrieve")
def learn_from_conversations(ctx: RemedyContext) -> Candidate:
    """Learn from what people asked for together: a co-mention retriever fitted on the selection
    dialogs (what human recommenders suggested after the movies named), beside the request
    understanding stages, with the text blend re-learned on those dialogs (cross-fitted)."""
    records = [r for r in ctx.dialog_records if r.get("targets")]
    dialogs = sorted({str(r["dialog_id"]) for r in records})
    if len(dialogs) < 20:
        raise RemedyError(f"only {len(dialogs)} selection dialogs with human suggestions to learn from")
    convs = [r for r in ctx.conversations if r.context and ctx.targets.get(r.request_id or "")]
    if not convs:
        raise RemedyError("no selection conversations to measure the candidate on")
    base = replace(ctx.champion, config=replace(ctx.champion.config, understand=True, semantic=True))
    # The selection figure is measured honestly: learn on half of the selection dialogs, measure
    # on the replayed requests of the other half; the candidate itself learns on all of them.
    fit_half = set(dialogs[::2])
    held = [r for r in convs if _dialog(r) not in fit_half]
    probe = base.learn_conversations(records, dialogs=fit_half, seed=ctx.seed)
    items = ctx.champion.models[0].items
    histories = [_encode(items, r.history or ()) for r in held]
    targets = [_encode(items, ctx.targets[r.request_id or ""]) for r in held]
    before = _conversation_recall(ctx.champion, held, histories, targets)
    after = _conversation_recall(probe, held, histories, targets)
    stack = base.learn_conversations(records, seed=ctx.seed)
    weights = stack.config.text_weights or {}
    note = (
        f"co-mention retriever learned on {len(records)} turns of {len(dialogs)} selection dialogs + understand, "
        f"intent, semantic stages; text blend { ({k: round(v, 3) for k, v in weights.items()}) }; recall@10 on "
        f"{len(held)} selection conversations of dialogs the probe did not learn from {before:.4f} -> {after:.4f}"
    )
    return Candidate(stack, note, {"selection_recall@10": after}, {"text_blend": {"weights": weights}})


def _dialog(request: RecommendRequest) -> str:
    rid = request.request_id or ""
    return rid.split(":")[1] if rid.startswith("redial:") else ""
