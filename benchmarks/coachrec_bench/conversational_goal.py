"""The issue-12 goal on ReDial: the served stack that learns from conversations, cross-fitted,
on all 4,778 targets (conv-full), against GPT-4 on the same targets.

    coachrec bench conversational-goal      # writes benchmarks/results/conversational_goal.json

The per-turn features are cached (`default_cache()`, under $COACHREC_HOME/bench) for
`coachrec bench conversational-llm`, which reranks this bench's ranking with the LLMs.

Two folds by dialog id (seed 0, as `coachrec bench conversational`); for each fold everything
is learned on the other one: part A's `CoMention` (over ReDial's entity ids, settings tuned by
an inner split), the served `CoMentionRecommender` (over ml-latest-small items, what
`Stack.learn_conversations` adds to a served stack), and the blend weights on training-fold
features whose co-mention tables come from an inner
two-fold split (never a table that counted the turn it ranks).

Rows:
- `served stack + co-mention (learn_conversations)`: the stack users get, end to end: the
  default ml-latest-small stack, `Stack.learn_conversations` on the training fold's linked turns
  (with their context's text keys, which the default co-mention reads: `key_weight` 1),
  each held-out turn's conversation served through its own stages (`Pipeline.offline`), MovieLens
  items mapped to ReDial candidates by the linker (unlinked candidates rank last).
- `served signals + co-mention (entity ids) + content, learned blend`: the served stack's
  per-retriever scores (item-kNN and text similarity to the titles found, popularity, intent,
  semantic, the served co-mention), part A's entity-space co-mention (which also counts
  unlinked movies, genres and people) and the content of the annotated mentions, over every
  candidate; `BlendRanker`'s weighted sum with weights learned (`learn_weights`).
- `... learned ranker (GBDT)`: the same signals through gradient-boosted trees (sklearn's
  histogram GBDT, pointwise logistic; rounds chosen on a split of the training fold).
- where the served stack loses (linked candidates only): the learned blend with the candidates
  not linked to MovieLens left out (the most a stack serving MovieLens items can get from these
  signals), and the blend of the served stack's own signals only.
- ablations: one stage left out at a time, then one signal (weights re-learned on the other fold).

`--folds K` (default 2, the issue's protocol) deals the dialogs into K folds: each model learns
from (K-1)/K of them, and every target is still scored by a model that never saw its dialog.

    coachrec bench conversational-goal --served-only --key-weight 1   # conversational_goal_served.json

only the served row, twice on the same folds: the served co-mention over items only
(`key_weight` 0) and with the text keys (`CoMentionRecommenderConfig.key_weight`: what each
context's words ask for, genres, moods, catalog tags, eras, read by the served intent parser,
`serve.understanding.text_keys`, in the training records and in each served request alike),
with the paired difference by dialog (`compare_paired`). Measured (seed 0, 2 folds): R@10
0.1528 -> 0.1833, +0.0306 [+0.0233, +0.0377]; NDCG@10 +0.0158 [+0.0122, +0.0195]. The
unlinked titles a conversation names add nothing measurable (part A's co-mention over all
movies 0.1505 vs linked movies only 0.1511, default settings); the genres and people ReDial
annotates do (0.1798), and the text keys recover most of that on the serving path.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from coachrec_bench.conversational import Measured
from coachrec_bench.conversational_stages import (
    MIN_SCORE,
    Columns,
    _candidate_texts,
    _candidates,
    _finish,
    _positives,
    _rows,
    collect,
    mention_content,
    requests,
)

SIGNALS = (
    "co-mention",
    "co-mention (served)",
    "content",
    "itemknn",
    "pop",
    "intent",
    "semantic",
    "mentioned",
    "semantic-candidates",
)
"""Every signal a turn's candidates carry, in feature order."""


@dataclasses.dataclass
class FoldFeatures:
    fold: int
    train_turns: np.ndarray
    held_turns: np.ndarray
    train_sets: list[Any]  # Candidates over columns, co-mention features from the inner split
    train_positives: list[np.ndarray]
    held_sets: list[Any]
    co_mention: dict[str, Any]


@dataclasses.dataclass
class Built:
    folds: list[FoldFeatures]
    served_rows: dict[int, np.ndarray]  # turn -> column scores of the served stack (learn_conversations)
    served_info: list[dict[str, Any]]
    info: dict[str, Any]


def _records(conv: Any, links: Any, catalog: Any) -> dict[int, dict[str, Any]]:
    """Every turn's linked record (mentions, new targets as ml-latest-small ids) with its
    context, and the context's text keys (`coachrec.serve.understanding.record_keys`: what the
    words ask for, read by the served intent parser; the bundled records carry the same)."""
    from coachrec.models.conversational import linked_records
    from coachrec.serve.understanding import IntentParser, record_keys

    recs = linked_records(conv, links, [str(i) for i in catalog.items.ids])
    contexts = requests(conv)
    keyed = record_keys(IntentParser(catalog), [r | {"context": ctx} for r, ctx in zip(recs, contexts, strict=True)])
    return {int(r["turn"]): r for r in keyed}


def served_fold(
    conv: Any, cols: Any, base: Any, records: dict[int, dict[str, Any]], train: np.ndarray, held: np.ndarray,
    *, seed: int = 0, config: Any = None, learn: dict[str, Any] | None = None,
) -> tuple[dict[int, np.ndarray], dict[str, Any]]:  # fmt: skip
    """The stack users get on one fold: `base.learn_conversations` on the training turns'
    records (co-mention `config`, default: the settings it tunes on an inner split of those
    training turns; `learn`: its other arguments, default its defaults), each held-out turn's
    conversation served through its stages (`Pipeline.offline` up to "rank"), MovieLens items
    mapped to the candidate columns (unlinked candidates rank last). Returns turn -> column
    scores, and info."""
    t0 = time.perf_counter()
    stack = base.learn_conversations([records[int(t)] for t in train], seed=seed, config=config, **(learn or {}))
    learn_s = time.perf_counter() - t0
    n_items = len(base.catalog)
    reqs = [records[int(t)]["context"] or None for t in held]
    kept: list[Any] = []
    found = []
    for lo in range(0, len(held), 128):
        found += stack.candidates(
            [np.zeros(0, np.int64)] * len(reqs[lo : lo + 128]), through="rank", contexts=reqs[lo : lo + 128], keep=kept
        )
    pop = np.asarray(base.models[1].counts, np.float64)
    pop_col = cols.dense(np.log1p(pop) / np.log1p(pop.max()))
    rows: dict[int, np.ndarray] = {}
    for t, c, ctx in zip(held.tolist(), found, kept, strict=True):
        s = cols.sparse(c.idx, c.score, n_items)
        floor = MIN_SCORE / 2 + 1e-3 * np.nan_to_num(pop_col, nan=-1.0)
        allowed = cols.mask(np.flatnonzero(ctx.allowed | np.isin(np.arange(n_items), ctx.history)), n_items)
        rows[int(t)] = _finish(np.where(np.isnan(s), floor, s), allowed)
    co = next(m for m in stack.models if m.name == "co-mention")
    info = {"text_weights": stack.config.text_weights, "source": stack.source, "learn_seconds": round(learn_s, 1),
            "co_mention": co.get_params(), "co_mention_keys": int(getattr(co, "n_keys", 0)),
            "tuned_on": co.fit_info.get("tuned_on"), "fill": list(stack.config.fill)}  # fmt: skip
    return rows, info


def build(conv: Any, links: Any, *, folds: int = 2, seed: int = 0, tune: bool = True, progress: Any = None) -> Built:
    from coachrec import datasets
    from coachrec.models.content import embed_texts
    from coachrec.models.conversational import CoMention, CoMentionConfig, CoMentionRecommender, tune_co_mention
    from coachrec.progress import SILENT
    from coachrec.serve import Stack

    progress = progress or SILENT
    ml = datasets.load("ml-latest-small")
    catalog = ml.catalog
    assert catalog is not None
    progress.step("fit the default served stack on ml-latest-small")
    base = Stack.fit(ml, seed=seed)
    sig = collect(base, conv, progress=progress)
    cols = Columns(links)
    n_items = len(catalog)
    col_emb = embed_texts(_candidate_texts(conv, links, catalog))
    records = _records(conv, links, catalog)
    text_names = sig.source_names  # itemknn, pop, intent, semantic, mentioned

    content_vector = mention_content(conv, col_emb)

    def candidate_sets(turns: np.ndarray, comention: np.ndarray, served_co: Any) -> list[Any]:
        rows = _rows(sig, conv, turns)
        sem = sig.q_static[rows] @ col_emb.T
        served = np.asarray(served_co.score([sig.histories[r] for r in rows]), np.float32)
        out = []
        for i, (r, t) in enumerate(zip(rows, turns, strict=True)):
            f = np.full((cols.n, len(SIGNALS)), np.nan, np.float32)
            f[:, 0] = comention[i]
            f[:, 1] = cols.dense(served[i])
            v = content_vector(int(t))
            if v is not None:
                f[:, 2] = col_emb @ v
            s = cols.sparse(sig.cand_items[r], sig.cand_sources[r], n_items)
            for j, name in enumerate(text_names):
                f[:, SIGNALS.index(name)] = s[:, j]
            if sig.q_static[r].any():
                f[:, -1] = sem[i]
            f[~cols.mask(sig.allowed[r], n_items)] = np.nan
            out.append(_candidates(f, SIGNALS))
        return out

    def served_model(turns: np.ndarray) -> Any:
        return CoMentionRecommender().fit_conversations([records[int(t)] for t in turns], catalog)

    folds_of = conv.folds(folds, seed)
    all_turns = conv.turns["turn"].to_numpy()
    built: list[FoldFeatures] = []
    served_rows: dict[int, np.ndarray] = {}
    served_info: list[dict[str, Any]] = []
    for k in range(folds):
        train, held = all_turns[folds_of != k], all_turns[folds_of == k]
        progress.step(f"fold {k + 1} of {folds}: learn on {len(train):,} turns, features of {len(held):,}")
        cfg = CoMentionConfig()
        if tune:
            cfg, _ = tune_co_mention(conv, train, seed=seed)
        inner = conv.subset(train).folds(2, seed + 1)
        sets: list[Any] = []
        rows_used: list[int] = []
        for j in range(2):
            fit_t, score_t = train[inner != j], train[inner == j]
            co = CoMention(cfg).fit(conv, fit_t)
            sco = served_model(fit_t)
            for lo in range(0, len(score_t), 256):
                part = score_t[lo : lo + 256]
                sets += candidate_sets(part, co.scorer(conv)(part), sco)
                rows_used += part.tolist()
        positives = _positives(conv, np.asarray(rows_used))
        final = CoMention(cfg).fit(conv, train)
        held_conv = conv.subset(held)
        co_score = final.scorer(held_conv)
        sco = served_model(train)
        held_sets: list[Any] = []
        for lo in range(0, len(held), 256):
            part = held[lo : lo + 256]
            held_sets += candidate_sets(part, co_score(part), sco)
        built.append(FoldFeatures(k, np.asarray(rows_used), held, sets, positives, held_sets, dataclasses.asdict(cfg)))
        # the stack users get: learn_conversations on this training fold, served on the held-out one
        progress.step(f"fold {k + 1}: Stack.learn_conversations on the training fold, serve the held-out turns")
        rows, fold_info = served_fold(conv, cols, base, records, train, held, seed=seed)
        served_rows |= rows
        served_info.append({"fold": k} | fold_info)
    info = {
        "served_stack": base.describe(),
        "served_text_weights": base.config.text_weights,
        "unlinked_candidates": int((~cols.linked).sum()),
    }
    return Built(built, served_rows, served_info, info)


def load_cache(path: Path) -> Built:
    """A pickled `Built` (also one written by `python -m coachrec_bench.conversational_goal`)."""
    import __main__

    for cls in (Built, FoldFeatures):  # pickled as __main__.X when this module ran as a script
        setattr(__main__, cls.__name__, cls)
    built: Built = pickle.loads(path.read_bytes())
    return built


# ---------------------------------------------------------------------- rank stages
def _select(c: Any, keep: Sequence[str]) -> Any:
    idx = [SIGNALS.index(n) for n in keep]
    return dataclasses.replace(c, sources=c.sources[:, idx], source_names=tuple(keep))


def blend_scores(
    f: FoldFeatures, keep: Sequence[str], seed: int = 0
) -> tuple[list[tuple[np.ndarray, np.ndarray]], dict[str, float]]:
    """Held-out scores of the learned linear blend over `keep` (weights from the training fold)."""
    from coachrec.serve.stages import learn_weights

    weights, _ = learn_weights([_select(c, keep) for c in f.train_sets], f.train_positives, seed=seed)
    w = np.array([weights.get(n, 1.0) for n in keep])
    return [(c.idx, _select(c, keep).normalized_sources() @ w) for c in f.held_sets], weights


# ---------------------------------------------------------------------- learned ranker
RANKER_ITERATIONS = (50, 100, 200, 300, 400)
"""Boosting rounds tried; the count is chosen on an inner split of the training fold."""
RANKER_NEGATIVES = 150
"""Negatives sampled (uniformly) from each training turn's candidate set, beside all its positives."""


def _turn_shape(conv: Any, turns: np.ndarray) -> dict[int, tuple[float, float]]:
    """Per turn: how many entities were mentioned so far and how many utterances it has."""
    prev, _ = conv.mentions(turns)
    return {
        int(t): (float(len(p)), float(len(conv.context(int(t))))) for t, p in zip(turns.tolist(), prev, strict=True)
    }


def ranker_matrix(c: Any, shape: tuple[float, float]) -> np.ndarray:
    """A candidate set's rows for the learned ranker: each signal raw (NaN where absent), scaled
    to [0, 1] over the set, and as log(1 + rank) within the set; then the turn's shape."""
    raw = c.sources.astype(np.float32)
    rank = np.full_like(raw, np.nan)
    for j in range(raw.shape[1]):
        ok = ~np.isnan(raw[:, j])
        order = np.argsort(-raw[ok, j], kind="stable")
        r = np.empty(int(ok.sum()), np.float32)
        r[order] = np.arange(len(r), dtype=np.float32)
        rank[ok, j] = np.log1p(r)
    turn = np.broadcast_to(np.asarray(shape, np.float32), (len(raw), 2))
    return np.hstack([raw, c.normalized_sources().astype(np.float32), rank, turn])


def _ranker_sample(conv: Any, sets: Sequence[Any], positives: Sequence[np.ndarray], turns: np.ndarray,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    shape = _turn_shape(conv, turns)
    xs, ys = [], []
    for c, pos, t in zip(sets, positives, turns.tolist(), strict=True):
        is_pos = np.isin(c.idx, pos)
        if not is_pos.any():
            continue
        neg = np.flatnonzero(~is_pos)
        rows = np.concatenate([np.flatnonzero(is_pos), rng.choice(neg, min(RANKER_NEGATIVES, len(neg)), replace=False)])
        xs.append(ranker_matrix(c, shape[int(t)])[rows])
        ys.append(is_pos[rows])
    return np.vstack(xs), np.concatenate(ys)


def _booster(iterations: int, seed: int) -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(
        learning_rate=0.05, max_iter=iterations, max_leaf_nodes=31, min_samples_leaf=100, l2_regularization=1.0,
        early_stopping=False, random_state=seed,
    )  # fmt: skip


def ranker_scores(
    conv: Any, f: FoldFeatures, keep: Sequence[str], *, seed: int = 0, iterations: int | None = None
) -> tuple[list[tuple[np.ndarray, np.ndarray]], dict[str, Any]]:
    """Held-out scores of gradient-boosted trees (pointwise logistic; sklearn's histogram GBDT)
    over the signals `keep`, fitted on the training fold's candidate sets (their co-mention
    features from the inner split). The number of rounds is chosen on the training fold only:
    fitted on half its dialogs, conv-full R@10 of the other half at each of `RANKER_ITERATIONS`
    (unless `iterations` is given); then refitted on the whole training fold."""
    rng = np.random.default_rng(seed)
    train = [_select(c, keep) for c in f.train_sets]
    info: dict[str, Any] = {}
    if iterations is None:
        sub = conv.subset(f.train_turns)  # halves by dialog, aligned with the training sets
        half_of = dict(zip(sub.turns["turn"].to_list(), sub.folds(2, seed + 2).tolist(), strict=True))
        half = np.asarray([half_of[int(t)] for t in f.train_turns.tolist()])
        a, b = np.flatnonzero(half == 0), np.flatnonzero(half == 1)
        x, y = _ranker_sample(conv, [train[i] for i in a], [f.train_positives[i] for i in a], f.train_turns[a], rng)
        model = _booster(max(RANKER_ITERATIONS), seed).fit(x, y)
        b_turns = f.train_turns[b]
        shape = _turn_shape(conv, b_turns)
        staged: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {n: [] for n in RANKER_ITERATIONS}
        for i, t in zip(b.tolist(), b_turns.tolist(), strict=True):
            c = train[i]
            for n, s in enumerate(model.staged_decision_function(ranker_matrix(c, shape[int(t)])), start=1):
                if n in staged:
                    staged[n].append((c.idx, np.asarray(s, np.float32)))
        probe = dataclasses.replace(f, held_turns=b_turns)
        from coachrec.metrics.conversational import aggregate

        inner = {n: round(aggregate(per_target(conv, [probe], [staged[n]]))["recall@10"], 4) for n in RANKER_ITERATIONS}
        iterations = max(inner, key=lambda n: (inner[n], -n))
        info["inner_recall@10"] = inner
    x, y = _ranker_sample(conv, train, f.train_positives, f.train_turns, rng)
    model = _booster(iterations, seed).fit(x, y)
    shape = _turn_shape(conv, f.held_turns)
    held = []
    for c, t in zip(f.held_sets, f.held_turns.tolist(), strict=True):
        sel = _select(c, keep)
        held.append((sel.idx, np.asarray(model.decision_function(ranker_matrix(sel, shape[int(t)])), np.float32)))
    info |= {"iterations": iterations, "training_rows": len(y), "training_positives": int(y.sum())}
    return held, info


def linked_only(scores: list[tuple[np.ndarray, np.ndarray]], linked: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """The same scores with every candidate not linked to the MovieLens catalog left out
    (ranked last): what a stack serving that catalog could show at best."""
    return [(idx[linked[idx]], s[linked[idx]]) for idx, s in scores]


def per_target(conv: Any, folds: list[FoldFeatures], scores: list[list[tuple[np.ndarray, np.ndarray]]]) -> Any:
    """conv-full rows of all targets, each fold's turns scored by its own held-out scores."""
    import polars as pl

    from coachrec.metrics.conversational import conv_full

    parts = []
    n = conv.n_candidates
    for f, fold_scores in zip(folds, scores, strict=True):
        by_turn = {int(t): s for t, s in zip(f.held_turns.tolist(), fold_scores, strict=True)}

        def score(turns: np.ndarray, by_turn: dict[int, tuple[np.ndarray, np.ndarray]] = by_turn) -> np.ndarray:
            out = np.full((len(turns), n), MIN_SCORE, np.float32)
            for i, t in enumerate(turns.tolist()):
                idx, s = by_turn[int(t)]
                out[i, idx] = s
            return out

        parts.append(conv_full(score, conv.subset(f.held_turns)))
    return pl.concat(parts).sort("turn", "position")


FULL = "served signals + co-mention (entity ids) + content, learned blend"


def served_per_target(conv: Any, built: Built) -> Any:
    from coachrec.metrics.conversational import conv_full

    def score(turns: np.ndarray) -> np.ndarray:
        return np.stack([built.served_rows[int(t)] for t in turns])

    return conv_full(score, conv)


RANKER = "served signals + co-mention (entity ids) + content, learned ranker (GBDT)"
SERVED_SIGNALS = ("co-mention (served)", "itemknn", "pop", "intent", "semantic", "mentioned")
"""What a stack serving MovieLens items computes from a request's words (its retrievers)."""
STAGE_ABLATIONS = {
    "co-mention (entity ids)": ("co-mention",),
    "co-mention (served)": ("co-mention (served)",),
    "content": ("content",),
    "text stages (intent, semantic, mentioned)": ("intent", "semantic", "mentioned", "semantic-candidates"),
    "MovieLens collaborative (item-kNN, popularity)": ("itemknn", "pop"),
}
"""Per-stage ablations of the learned blend: one stage (group of signals) left out at a time."""


HeldScores = list[list[tuple[np.ndarray, np.ndarray]]]
"""Per fold, per held-out turn: candidate columns and their scores."""


def evaluate(conv: Any, built: Built, *, seed: int = 0, ablations: bool = True, linked: np.ndarray | None = None,
             progress: Any = None) -> tuple[list[Measured], dict[str, HeldScores]]:  # fmt: skip
    """The goal rows (see the module docstring) and each ranker's held-out scores per fold.
    `linked`: per candidate column, whether it is linked to MovieLens (adds the rows that
    leave the unlinked ones out)."""
    from coachrec.progress import SILENT

    progress = progress or SILENT
    cf = {"folds": len(built.folds), "fold_seed": seed}
    measured = [
        Measured(
            "served stack + co-mention (learn_conversations)",
            served_per_target(conv, built),
            False,
            "the default ml-latest-small stack + Stack.learn_conversations on the other fold's linked turns, "
            "each turn's conversation served through its stages; unlinked candidates rank last",
            extra=cf | {"per_fold": built.served_info},
        )
    ]
    held: dict[str, HeldScores] = {}

    def row(name: str, signals: str, fold_scores: list[Any], extra: dict[str, Any]) -> None:
        held[name] = fold_scores
        measured.append(Measured(name, per_target(conv, built.folds, fold_scores), False, signals, extra=cf | extra))

    def add(name: str, signals: str, keep: Sequence[str], only_linked: bool = False) -> None:
        progress.step(name)
        fold_scores, fold_weights = [], []
        for f in built.folds:
            sc, weights = blend_scores(f, keep, seed=seed)
            fold_scores.append(linked_only(sc, linked) if only_linked and linked is not None else sc)
            fold_weights.append(weights)
        row(name, signals, fold_scores, {"signals_used": list(keep), "weights_per_fold": fold_weights})

    def add_ranker(name: str, signals: str, keep: Sequence[str]) -> None:
        progress.step(name)
        fold_scores, infos = [], []
        for f in built.folds:
            sc, info = ranker_scores(conv, f, keep, seed=seed)
            fold_scores.append(sc)
            infos.append(info)
        row(name, signals, fold_scores, {"signals_used": list(keep), "ranker_per_fold": infos})

    add(
        FULL,
        "BlendRanker over every signal (the served stack's retrievers with the served co-mention, part A's "
        "entity-space co-mention, content of the annotated mentions); weights learned on the other fold",
        SIGNALS,
    )
    add_ranker(
        RANKER,
        "gradient-boosted trees (pointwise logistic) over every signal (raw, scaled per turn, rank per turn) and the "
        "turn's shape (mentions so far, utterances); fitted on the other fold, rounds chosen on a split of it",
        SIGNALS,
    )
    if linked is not None:
        add("  the learned blend, MovieLens-linked candidates only", "the learned blend's scores with the candidates "
            "not linked to ml-latest-small left out (misses): the best a stack serving MovieLens items could do with "
            "these signals", SIGNALS, only_linked=True)  # fmt: skip
        add("  served signals only, learned blend", "BlendRanker over the served stack's own signals only "
            "(" + ", ".join(SERVED_SIGNALS) + "), over the bench's candidate union (linked candidates)",
            SERVED_SIGNALS, only_linked=True)  # fmt: skip
    if ablations:
        for what, drop in STAGE_ABLATIONS.items():
            text = f"the learned blend without {', '.join(drop)} (weights re-learned)"
            add(f"  stage ablation: without {what}", text, tuple(n for n in SIGNALS if n not in drop))
        for drop_one in SIGNALS:
            add(f"  blend ablation: without {drop_one}", f"the full blend without {drop_one} (weights re-learned)",
                tuple(n for n in SIGNALS if n != drop_one))  # fmt: skip
    return measured, held


COMMAND = "coachrec bench conversational-goal"


def default_cache(folds: int = 2) -> Path:
    from coachrec.llm.registry import coachrec_home

    return coachrec_home() / "bench" / ("conversational_goal.pkl" if folds == 2 else f"conversational_goal_{folds}.pkl")


def features(conv: Any, links: Any, *, cache: Path | None, folds: int = 2, seed: int = 0, rebuild: bool = False,
             progress: Any = None) -> Built:  # fmt: skip
    """The cached features when `cache` exists (and not `rebuild`), else built and cached."""
    if cache is not None and cache.exists() and not rebuild:
        return load_cache(cache)
    built = build(conv, links, folds=folds, seed=seed, progress=progress)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_bytes(pickle.dumps(built))
    return built


def main(data: Path | None = None, *, cache: Path | None = None, folds: int = 2, seed: int = 0,
         ablations: bool = True, rebuild: bool = False) -> Path:  # fmt: skip
    from coachrec import datasets
    from coachrec.cli.console import RichProgress
    from coachrec.data.conversations import load_conversations
    from coachrec.data.linking import link_conversations
    from coachrec.metrics.conversational import DESCRIPTION, REFERENCE_FILES, load_reference, reference_path
    from coachrec_bench.conversational import REFERENCE_LABELS, default_data, measure_rows, show
    from coachrec_bench.results import write

    folder = data or default_data()
    progress = RichProgress()
    conv = load_conversations(folder)
    ml = datasets.load("ml-latest-small")
    links = link_conversations(conv, ml.catalog, catalog_name="ml-latest-small")
    built = features(conv, links, cache=cache, folds=folds, seed=seed, rebuild=rebuild, progress=progress)
    measured, _ = evaluate(conv, built, seed=seed, ablations=ablations, linked=links.item >= 0, progress=progress)
    refs = {}
    for model in REFERENCE_FILES:
        path = reference_path(folder / "reference", model)
        if path.exists():
            refs[model] = load_reference(path, conv, name=REFERENCE_LABELS[model])
    gpt4 = refs["gpt-4"].per_target if "gpt-4" in refs else None
    if gpt4 is not None:
        measured.append(Measured(refs["gpt-4"].name, gpt4, True, "published zero-shot results (He et al., CIKM 2023)"))
    rows = measure_rows(measured, gpt4, protocol=DESCRIPTION["name"])
    for r in rows:
        r["command"] = COMMAND if folds == 2 else f"{COMMAND} --folds {folds}"
    rows[0]["metrics"]["run"] = built.info | {
        "load_1m": round(os.getloadavg()[0], 2),
        "link_report": links.report.to_dict(),
    }
    out = write("conversational_goal" if folds == 2 else f"conversational_goal_folds{folds}", rows)
    show(rows, f"ReDial test ({conv.n_targets:,} targets, {folds} folds) — the goal: served stack learning from "
         "conversations")  # fmt: skip
    return out


SERVED = "served stack + co-mention (learn_conversations)"


def served_variants(conv: Any, links: Any, variants: dict[str, Any], *, folds: int = 2, seed: int = 0,
                    progress: Any = None) -> dict[str, tuple[Any, list[dict[str, Any]]]]:  # fmt: skip
    """The `SERVED` row only, once per variant (name -> `learn_conversations` arguments:
    `config` a co-mention config, None or absent: tuned; `tune`, `fill`), on the same folds:
    name -> (per-target conv-full rows, per-fold info)."""
    from coachrec import datasets
    from coachrec.metrics.conversational import conv_full
    from coachrec.progress import SILENT
    from coachrec.serve import Stack

    progress = progress or SILENT
    ml = datasets.load("ml-latest-small")
    catalog = ml.catalog
    progress.step("fit the default served stack on ml-latest-small")
    base = Stack.fit(ml, seed=seed)
    cols = Columns(links)
    records = _records(conv, links, catalog)
    folds_of = conv.folds(folds, seed)
    all_turns = conv.turns["turn"].to_numpy()
    out = {}
    for name, args in variants.items():
        rows: dict[int, np.ndarray] = {}
        infos = []
        learn = dict(args)
        config = learn.pop("config", None)
        for k in range(folds):
            progress.step(f"{name}: fold {k + 1} of {folds}")
            fold_rows, info = served_fold(
                conv, cols, base, records, all_turns[folds_of != k], all_turns[folds_of == k], seed=seed,
                config=config, learn=learn,
            )  # fmt: skip
            rows |= fold_rows
            infos.append({"fold": k} | info)

        def score(turns: np.ndarray, rows: dict[int, np.ndarray] = rows) -> np.ndarray:
            return np.stack([rows[int(t)] for t in turns])

        out[name] = (conv_full(score, conv), infos)
    return out


DEFAULT_SERVED = (
    f"{SERVED}, as served by default (settings tuned on the training fold, co-mention fills candidates, "
    "blend learned on 5 parts)"
)


def _paired_rows(a: Any, b: Any) -> dict[str, dict[str, float]]:
    from coachrec.metrics.conversational import compare_paired

    out = {}
    for metric in ("recall@10", "ndcg@10"):
        c = compare_paired(a, b, metric)
        out[metric] = {"delta": round(c.delta, 4), "ci_low": round(c.ci_low, 4), "ci_high": round(c.ci_high, 4),
                       "p": round(c.p_value, 4), "n": c.n}  # fmt: skip
    return out


def main_served(data: Path | None = None, *, folds: int = 2, seed: int = 0, key_weight: float = 1.0) -> Path:
    """`SERVED` before (co-mention over items only, `key_weight` 0) and after (with the text
    keys at `key_weight`), both with the defaults settings otherwise, untuned and unfilled (as
    first measured), and as `learn_conversations` serves by default (`DEFAULT_SERVED`: its
    settings tuned on an inner split of the training fold, the co-mention filling every
    candidate), paired by dialog (after vs before, default vs after); writes
    benchmarks/results/conversational_goal_served.json."""
    from coachrec import datasets
    from coachrec.cli.console import RichProgress
    from coachrec.data.conversations import load_conversations
    from coachrec.data.linking import link_conversations
    from coachrec.metrics.conversational import DESCRIPTION, load_reference, reference_path
    from coachrec.models.conversational import CoMentionRecommenderConfig
    from coachrec_bench.conversational import REFERENCE_LABELS, default_data, measure_rows, show
    from coachrec_bench.results import write

    folder = data or default_data()
    progress = RichProgress()
    conv = load_conversations(folder)
    ml = datasets.load("ml-latest-small")
    links = link_conversations(conv, ml.catalog, catalog_name="ml-latest-small")
    before, after = f"{SERVED}, items only (key_weight 0)", f"{SERVED}, + text keys (key_weight {key_weight:g})"
    variants: dict[str, dict[str, Any]] = {
        before: {"config": CoMentionRecommenderConfig(key_weight=0.0), "fill": False, "blend_folds": 2},
        after: {"config": CoMentionRecommenderConfig(key_weight=key_weight), "fill": False, "blend_folds": 2},
        DEFAULT_SERVED: {},
    }
    found = served_variants(conv, links, variants, folds=folds, seed=seed, progress=progress)
    cf = {"folds": folds, "fold_seed": seed}
    cfg_of = "Stack.learn_conversations(config=CoMentionRecommenderConfig(key_weight={:g}), fill=False, blend_folds=2)"
    how = {before: cfg_of.format(0), after: cfg_of.format(key_weight),
           DEFAULT_SERVED: "Stack.learn_conversations() with its defaults (co-mention settings tuned on an "
                           "inner split of the training fold's dialogs only; the co-mention scores every "
                           "merged candidate; the text blend learned on 5 parts of them)"}  # fmt: skip
    measured = [
        Measured(name, pt, False, f"the default ml-latest-small stack + {how[name]} on the other folds' linked turns "
                 "(their context's text keys read by the served intent parser), each turn's conversation served "
                 "through its stages; unlinked candidates rank last",
                 extra=cf | {"per_fold": infos})
        for name, (pt, infos) in found.items()
    ]  # fmt: skip
    path = reference_path(folder / "reference", "gpt-4")
    gpt4 = load_reference(path, conv, name=REFERENCE_LABELS["gpt-4"]).per_target if path.exists() else None
    rows = measure_rows(measured, gpt4, protocol=DESCRIPTION["name"])
    paired = _paired_rows(found[before][0], found[after][0])
    rows[1]["metrics"]["vs_items_only"] = paired
    paired_default = _paired_rows(found[after][0], found[DEFAULT_SERVED][0])
    rows[2]["metrics"]["vs_key_weight"] = paired_default
    for r in rows:
        r["command"] = f"{COMMAND} --served-only --key-weight {key_weight:g}" + (
            f" --folds {folds}" if folds != 2 else ""
        )
    out = write("conversational_goal_served" if folds == 2 else f"conversational_goal_served_folds{folds}", rows)
    show(rows, f"ReDial test ({conv.n_targets:,} targets, {folds} folds): the served stack, co-mention without "
         "and with text keys")  # fmt: skip
    print("after - before (paired by dialog):", paired)
    print("default - after (paired by dialog):", paired_default)
    return out


def bench_conversational_goal(
    data: Annotated[Path | None, typer.Option(help="CRS-layout folder (default: the shared ReDial test data)")] = None,
    seed: Annotated[int, typer.Option(help="seed of the fold assignment")] = 0,
    folds: Annotated[
        int,
        typer.Option(
            help="folds by dialog (the issue's protocol: 2; more folds learn from more "
            "dialogs, each target still scored by a model that never saw its dialog)"
        ),
    ] = 2,
    ablations: Annotated[bool, typer.Option(help="also the blend with one signal left out at a time")] = True,
    rebuild: Annotated[bool, typer.Option(help="recompute the per-turn features even if cached")] = False,
    served_only: Annotated[
        bool,
        typer.Option(
            help="only the served-stack row, with the co-mention over items only and with text keys, paired "
            "(writes conversational_goal_served.json)"
        ),
    ] = False,
    key_weight: Annotated[float, typer.Option(help="--served-only: the co-mention's key_weight after")] = 1.0,
) -> None:
    """The served stack that learns from conversations on ReDial, cross-fitted, vs GPT-4
    (conv-full); writes benchmarks/results/conversational_goal.json (conversational_goal_foldsK.json
    for K folds other than 2)."""
    if served_only:
        print(main_served(data, folds=folds, seed=seed, key_weight=key_weight))
        return
    print(main(data, cache=default_cache(folds), folds=folds, seed=seed, ablations=ablations, rebuild=rebuild))
