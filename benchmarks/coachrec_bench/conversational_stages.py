"""Request understanding on ReDial: the serving path's text stages, measured with conv-full.

`measure(conv, links, ...)` returns `coachrec_bench.conversational.Measured` rows that
`coachrec bench conversational` appends to its own (`measure_rows` turns them into results
rows with the paired difference against GPT-4); `python -m coachrec_bench.conversational_stages`
runs them alone and writes `benchmarks/results/conversational_stages.json`.

What is scored. Each recommender turn becomes a request to the served stack: its context as a
conversation (seeker and recommender turns, no user id, no history) through the stack's own
stages (`Pipeline.offline`: understand -> retrieve -> rank), the stack fitted on MovieLens
latest-small. The stack ranks MovieLens items; each of ReDial's 6,281 candidate movies gets the
score of the MovieLens item part A's linker maps it to (`coachrec.data.linking`). Candidates
the linker leaves unlinked (36% of them, 11.7% of the targets; 16.6% before it also read the
names the dialogs write) cannot be proposed by a MovieLens stack: they rank below every linked
one, so unlinked targets are misses in the zero-shot rows. The semantic rows score the ReDial
candidate set itself instead: a linked candidate's text is its MovieLens text (title, genres,
tags), an unlinked one's its DBpedia name.

Rows:
- `semantic (MiniLM, static/full query)`, zero-shot: cosine of the request (seeker turns by
  recency, recommender turns less, negated phrases blanked) with each candidate's text.
- `intent x popularity (MovieLens)`, zero-shot: genres, eras, moods and tags read from the
  seeker's words, times MovieLens popularity.
- `mention-kNN (text mentions)`, zero-shot: item-kNN on the titles the understanding stage
  found in the text (part A's `mention-kNN (MovieLens)` reads the annotated entities instead).
- `text stack, learned blend (zero-shot)`: the whole served stack (item-kNN and text
  similarity to the titles found, popularity, intent, semantic), its text blend learned on
  simulated MovieLens requests only: nothing learned from ReDial.
- cross-fitted (two folds by dialog id, seed 0, as part A): `co-mention` (part A's
  `CoMention`, settings tuned on the training fold, no text read), `co-mention + content of the
  annotated mentions` (also no text read: MiniLM similarity of each candidate's text to the
  movies annotated as mentioned), `co-mention + text stages` (co-mention + the served stack's
  signals from the words), and both. Each held-out turn's candidates are the union of every
  signal's top 200 over the candidate set; the blend is `BlendRanker`'s (scores scaled to
  [0, 1] per turn, weighted sum) with weights learned (`coachrec.serve.stages.learn_weights`,
  pairwise logistic) on the training fold, whose co-mention features come from an inner
  two-fold split so the weights never see a co-mention table fitted on the turn it scores.
  Ablations drop one signal at a time from the full blend. Each row also gives its paired
  difference with co-mention alone (what the words add).

Latency: p50/p99 of serving one turn through `Pipeline.recommend` in process (tracing off,
no LLM), on a sample of turns.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from coachrec_bench.conversational import Measured

MIN_SCORE = -1e6
"""Score of candidates a configuration does not rank (below every ranked one)."""
TOP = 200
"""Columns each signal contributes to a turn's candidate set in the cross-fitted blend."""


# ---------------------------------------------------------------------- requests from turns
def requests(conv: Any) -> list[list[dict[str, str]]]:
    """Each turn's context as a conversation (`speaker`, `text`), in `conv.turns` order."""
    return [[{"speaker": s, "text": u} for s, u in conv.context(int(t))] for t in conv.turns["turn"].to_list()]


def _candidate_texts(conv: Any, links: Any, catalog: Any) -> list[str]:
    """Text of each candidate column: its linked MovieLens item's text, else its DBpedia name."""
    from coachrec.data.conversations import display_name

    ml = catalog.texts()
    uris = dict(zip(conv.entities["id"].to_list(), conv.entities["uri"].to_list(), strict=True))
    out = []
    for e, item in zip(conv.candidates.tolist(), links.item.tolist(), strict=True):
        if item >= 0:
            out.append(ml[item])
        else:
            name = display_name(uris[int(e)])
            out.append(name.replace(" film)", ")").replace("(film)", "").strip())
    return out


@dataclasses.dataclass
class TurnSignals:
    """What the served stack computed for each turn, compactly (turns in `conv.turns` order)."""

    turns: np.ndarray
    histories: list[np.ndarray]  # MovieLens items the text named (liked or talked about)
    queries: list[list[tuple[str, float]]]  # the semantic retriever's (text, weight) pairs
    q_static: np.ndarray  # (n_turns, 384)
    intent: list[np.ndarray | None]  # MovieLens-space intent scores (None: no preference read)
    allowed: list[np.ndarray]  # MovieLens items the text's hard constraints allow
    cand_items: list[np.ndarray]  # the stack's candidates after `rank` (MovieLens items)
    cand_sources: list[np.ndarray]  # their raw per-retriever scores
    cand_score: list[np.ndarray]  # their blend score (the zero-shot ranking)
    source_names: tuple[str, ...]
    seconds: float


def collect(stack: Any, conv: Any, *, batch: int = 128, progress: Any = None) -> TurnSignals:
    """Run every turn through the stack's offline stages up to `rank`, keeping what each
    configuration needs."""
    from coachrec.progress import SILENT

    progress = progress or SILENT
    from coachrec.serve.semantic import SemanticRetriever

    reqs = requests(conv)
    semantic = SemanticRetriever(stack.catalog)  # its query_texts(ctx): what the served one embeds
    out = TurnSignals(
        conv.turns["turn"].to_numpy(), [], [], np.zeros((len(reqs), 384), np.float32), [], [], [], [], [], (), 0.0
    )
    t0 = time.perf_counter()
    with progress.bar("understand, retrieve, rank (ReDial turns)", len(reqs)) as advance:
        for lo in range(0, len(reqs), batch):
            kept: list[Any] = []
            found = stack.candidates(
                [np.zeros(0, np.int64)] * len(reqs[lo : lo + batch]),
                through="rank",
                contexts=[r or None for r in reqs[lo : lo + batch]],
                keep=kept,
            )
            for j, (ctx, c) in enumerate(zip(kept, found, strict=True)):
                out.histories.append(ctx.history.copy())
                out.queries.append(semantic.query_texts(ctx))
                q = ctx.attributes.get("semantic.query")
                if q is not None:
                    out.q_static[lo + j] = q
                s = ctx.attributes.get("intent.scores")
                out.intent.append(None if s is None else np.asarray(s, dtype=np.float32))
                out.allowed.append(np.flatnonzero(ctx.allowed | np.isin(np.arange(len(ctx.allowed)), ctx.history)))
                out.cand_items.append(c.idx.copy())
                out.cand_sources.append(c.sources.copy())
                out.cand_score.append(c.score.copy())
                out.source_names = c.source_names
            advance(min(lo + batch, len(reqs)), len(reqs))
    out.seconds = time.perf_counter() - t0
    return out


def full_queries(sig: TurnSignals) -> np.ndarray:
    """The same request embeddings with the full transformer as query encoder (utterances
    encoded in batches; what `query_encoder="full"` computes per request)."""
    from coachrec.serve.semantic import TransformerEncoder

    enc = TransformerEncoder()
    texts = sorted({t for q in sig.queries for t, _ in q})
    vecs = dict(zip(texts, enc.encode(texts), strict=True)) if texts else {}
    out = np.zeros((len(sig.queries), 384), np.float32)
    for i, q in enumerate(sig.queries):
        if q:
            v = np.asarray([w for _, w in q], np.float32) @ np.stack([vecs[t] for t, _ in q])
            n = float(np.linalg.norm(v))
            out[i] = v / n if n > 0 else v
    return out


# ---------------------------------------------------------------------- column-space scores
class Columns:
    """Maps MovieLens-space vectors onto the candidate columns (unlinked: NaN)."""

    def __init__(self, links: Any) -> None:
        self.item = links.item
        self.linked = self.item >= 0
        self.n = len(self.item)

    def dense(self, v: np.ndarray) -> np.ndarray:
        out = np.full(self.n, np.nan, np.float32)
        out[self.linked] = np.asarray(v, np.float32)[self.item[self.linked]]
        return out

    def sparse(self, items: np.ndarray, values: np.ndarray, n_items: int) -> np.ndarray:
        """Values given for some MovieLens items (rows of `values`) onto columns, NaN elsewhere."""
        values = np.asarray(values, np.float32)
        full = np.full((n_items, *values.shape[1:]), np.nan, np.float32)
        full[items] = values
        out = np.full((self.n, *values.shape[1:]), np.nan, np.float32)
        out[self.linked] = full[self.item[self.linked]]
        return out

    def mask(self, allowed_items: np.ndarray, n_items: int) -> np.ndarray:
        """Columns allowed: unlinked ones, and linked ones whose item is allowed."""
        ok = np.zeros(n_items, bool)
        ok[allowed_items] = True
        out = np.ones(self.n, bool)
        out[self.linked] = ok[self.item[self.linked]]
        return out


def _finish(scores: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    out = np.where(np.isnan(scores), MIN_SCORE, scores)
    return np.where(allowed, out, 2 * MIN_SCORE).astype(np.float32)


def _rows(sig: TurnSignals, conv: Any, turns: np.ndarray) -> np.ndarray:
    pos = {int(t): i for i, t in enumerate(sig.turns.tolist())}
    return np.array([pos[int(t)] for t in turns], dtype=np.int64)


# ---------------------------------------------------------------------- the cross-fitted blend
def _candidates(features: np.ndarray, names: tuple[str, ...], top: int = TOP) -> Any:
    """A column-space candidate set: the union of each feature's top `top` columns."""
    from coachrec.serve.candidates import Candidates

    keep = np.zeros(features.shape[0], bool)
    for f in range(features.shape[1]):
        col = np.where(np.isnan(features[:, f]), -np.inf, features[:, f])
        n = min(top, int(np.isfinite(col).sum()))
        if n:
            keep[np.argpartition(-col, n - 1)[:n]] = True
    idx = np.flatnonzero(keep)
    return Candidates(idx, np.zeros(len(idx)), features[idx], names)


def _blend_scores(c: Any, weights: dict[str, float], n: int) -> np.ndarray:
    w = np.array([weights.get(name, 1.0) for name in c.source_names])
    out = np.full(n, np.nan, np.float32)
    out[c.idx] = c.normalized_sources() @ w
    return out


# ---------------------------------------------------------------------- measure
def measure(
    conv: Any,
    links: Any,
    *,
    folds: int = 2,
    seed: int = 0,
    tune: bool = True,
    latency_turns: int = 300,
    query_full: bool = True,
    progress: Any = None,
) -> tuple[list[Measured], dict[str, Any]]:
    """The text-stage rows (zero-shot and cross-fitted) and what else was learned (weights per
    fold, link coverage, the served stack's weights)."""
    import polars as pl

    from coachrec import datasets
    from coachrec.metrics.conversational import conv_full
    from coachrec.models.content import embed_texts
    from coachrec.models.conversational import CoMention, CoMentionConfig, tune_co_mention
    from coachrec.progress import SILENT
    from coachrec.serve import Stack
    from coachrec.serve.stages import learn_weights

    progress = progress or SILENT
    ml = datasets.load("ml-latest-small")
    assert ml.catalog is not None
    progress.step("fit the served stack on MovieLens latest-small (text blend learned on simulated requests)")
    stack = Stack.fit(ml, seed=seed)
    progress.note(f"stack: {stack.describe()}; text weights {stack.config.text_weights}")
    n_items = len(ml.catalog)
    cols = Columns(links)
    sig = collect(stack, conv, progress=progress)
    progress.note(f"{len(sig.turns):,} turns through understand/retrieve/rank in {sig.seconds:.1f} s")
    col_emb = embed_texts(_candidate_texts(conv, links, ml.catalog))
    itemknn = stack.models[0]
    pop = np.asarray(stack.models[1].counts, np.float64) if len(stack.models) > 1 else np.zeros(n_items)
    pop_col = cols.dense(np.log1p(pop) / np.log1p(pop.max()))
    info: dict[str, Any] = {
        "served_text_weights": stack.config.text_weights,
        "served_stack": stack.describe(),
        "unlinked_candidates": int((~cols.linked).sum()),
        "turn_texts_seconds": round(sig.seconds, 1),
    }
    t_cols = conv.column(conv.targets["target"].to_numpy())
    unlinked_targets = int(((t_cols < 0) | (links.item[np.maximum(t_cols, 0)] < 0)).sum())
    info["unlinked_targets"] = unlinked_targets
    progress.note(
        f"{unlinked_targets:,} of {conv.n_targets:,} targets are not linked to MovieLens (misses for a MovieLens stack)"
    )

    def masks(rows: np.ndarray) -> list[np.ndarray]:
        return [cols.mask(sig.allowed[r], n_items) for r in rows]

    def semantic_fn(q: np.ndarray) -> Any:
        def score(turns: np.ndarray) -> np.ndarray:
            rows = _rows(sig, conv, turns)
            s = q[rows] @ col_emb.T  # a turn without words scores 0 everywhere: popularity order
            return np.stack([_finish(s[i] + 1e-4 * np.nan_to_num(pop_col), m) for i, m in enumerate(masks(rows))])

        return score

    def intent_fn(turns: np.ndarray) -> np.ndarray:
        rows = _rows(sig, conv, turns)
        out = []
        for r, m in zip(rows, masks(rows), strict=True):
            v = sig.intent[r]
            s = cols.dense(v) if v is not None else np.zeros(cols.n, np.float32)
            out.append(_finish(s + 1e-4 * pop_col, m))
        return np.stack(out)

    def knn_fn(turns: np.ndarray) -> np.ndarray:
        rows = _rows(sig, conv, turns)
        s = np.asarray(itemknn.score([sig.histories[r] for r in rows]), np.float32)
        return np.stack([_finish(cols.dense(s[i]), m) for i, m in enumerate(masks(rows))])

    def stack_fn(turns: np.ndarray) -> np.ndarray:
        rows = _rows(sig, conv, turns)
        out = []
        for r, m in zip(rows, masks(rows), strict=True):
            s = cols.sparse(sig.cand_items[r], sig.cand_score[r], n_items)
            base = MIN_SCORE / 2 + 1e-3 * np.nan_to_num(pop_col, nan=-1.0)  # not proposed: below, by popularity
            out.append(_finish(np.where(np.isnan(s), base, s), m))
        return np.stack(out)

    measured: list[Measured] = []
    lat = serve_latency(stack, conv, latency_turns, seed)
    info["serve_latency_ms"] = {
        "p50": round(float(np.percentile(lat, 50)), 3),
        "p99": round(float(np.percentile(lat, 99)), 3),
    }
    link_note = "MovieLens items through the linker; unlinked candidates rank last"

    def zero_shot(name: str, fn: Any, signals: str, latency_ms: np.ndarray | None = None, **extra: Any) -> None:
        progress.step(f"zero-shot: {name}")
        measured.append(
            Measured(
                name,
                conv_full(fn, conv),
                True,
                signals,
                latency_ms,
                conv_full(fn, conv, match="id"),
                {"unlinked_targets": unlinked_targets, **extra},
            )
        )

    zero_shot(
        "semantic (MiniLM, static query)",
        semantic_fn(sig.q_static),
        "cosine of the request (per-token MiniLM vectors) with each candidate's text: MovieLens title, genres "
        "and tags where linked, the DBpedia name otherwise",
        query_encoder="static",
    )
    if query_full:
        progress.step("full-transformer query embeddings")
        qf = full_queries(sig)
        zero_shot(
            "semantic (MiniLM, full query)",
            semantic_fn(qf),
            "as above with the transformer itself encoding the request (slower)",
            query_encoder="full",
        )
    zero_shot(
        "intent × popularity (MovieLens)",
        intent_fn,
        "genres, eras, moods, tags read from the seeker's words, times MovieLens popularity; " + link_note,
    )
    zero_shot(
        "mention-kNN (text mentions)",
        knn_fn,
        "item-kNN fitted on MovieLens over the titles the understanding stage found in the text; " + link_note,
    )
    zero_shot(
        "text stack, learned blend (zero-shot)",
        stack_fn,
        "the served stack: understand, item-kNN on mentions + popularity + intent + semantic, blend learned on "
        "simulated MovieLens requests (nothing from ReDial); " + link_note,
        lat,
        weights=stack.config.text_weights,
    )

    # ---- cross-fitted: co-mention (+ content of the annotated mentions) + text signals,
    # weights learned on the other fold
    text_names = (*sig.source_names, "semantic-candidates")
    names = ("co-mention", "content", *text_names)
    content_vector = mention_content(conv, col_emb)

    def candidate_sets(turns: np.ndarray, comention: np.ndarray) -> list[Any]:
        """Each turn's candidates (the union of every signal's top 200) with every signal's score."""
        rows = _rows(sig, conv, turns)
        sem = sig.q_static[rows] @ col_emb.T
        out = []
        for i, (r, t) in enumerate(zip(rows, turns, strict=True)):
            f = np.full((cols.n, len(names)), np.nan, np.float32)
            f[:, 0] = comention[i]
            v = content_vector(int(t))
            if v is not None:
                f[:, 1] = col_emb @ v
            f[:, 2 : 2 + len(sig.source_names)] = cols.sparse(sig.cand_items[r], sig.cand_sources[r], n_items)
            if sig.q_static[r].any():
                f[:, -1] = sem[i]
            f[~cols.mask(sig.allowed[r], n_items)] = np.nan  # the text's hard constraints hold here too
            out.append(_candidates(f, names))
        return out

    def select(c: Any, keep_names: tuple[str, ...]) -> Any:
        keep = [names.index(n) for n in keep_names]
        return dataclasses.replace(c, sources=c.sources[:, keep], source_names=keep_names)

    configs: dict[str, tuple[str, ...]] = {
        "co-mention + content of the annotated mentions": ("co-mention", "content"),
        "co-mention + text stages, learned blend (cross-fitted)": ("co-mention", *text_names),
        "co-mention + content + text stages, learned blend (cross-fitted)": names,
    }
    full_name = "co-mention + content + text stages, learned blend (cross-fitted)"
    for drop in names[1:]:
        configs[f"  ablation: without {drop}"] = tuple(n for n in names if n != drop)
    folds_of = conv.folds(folds, seed)
    all_turns = conv.turns["turn"].to_numpy()
    per_fold: list[dict[str, Any]] = []
    parts: dict[str, list[Any]] = {name: [] for name in ("co-mention", *configs)}
    for k in range(folds):
        train, held = all_turns[folds_of != k], all_turns[folds_of == k]
        progress.step(
            f"fold {k + 1} of {folds}: co-mention on {len(train):,} turns, blend weights, score {len(held):,}"
        )
        cfg = CoMentionConfig()
        if tune:
            cfg, _ = tune_co_mention(conv, train, seed=seed)
        inner = conv.subset(train).folds(2, seed + 1)
        train_rows: list[int] = []
        sets: list[Any] = []
        for j in range(2):  # training features: co-mention from the other inner half of the training fold
            fit_t, score_t = train[inner != j], train[inner == j]
            co = CoMention(cfg).fit(conv, fit_t)
            for lo in range(0, len(score_t), 256):
                part = score_t[lo : lo + 256]
                sets += candidate_sets(part, co.scorer(conv)(part))
                train_rows += part.tolist()
        positives = _positives(conv, np.asarray(train_rows))
        learned = {
            name: learn_weights([select(c, keep) for c in sets], positives, seed=seed) for name, keep in configs.items()
        }
        del sets
        final = CoMention(cfg).fit(conv, train)
        held_conv = conv.subset(held)
        co_score = final.scorer(held_conv)
        held_sets: dict[int, Any] = {}
        for lo in range(0, len(held), 256):
            part = held[lo : lo + 256]
            held_sets.update(zip(part.tolist(), candidate_sets(part, co_score(part)), strict=True))

        def blend_fn(
            turns: np.ndarray, w: dict[str, float], keep: tuple[str, ...], by_turn: dict[int, Any] = held_sets
        ) -> np.ndarray:
            ones = np.ones(cols.n, bool)
            return np.stack([_finish(_blend_scores(select(by_turn[int(t)], keep), w, cols.n), ones) for t in turns])

        parts["co-mention"].append(conv_full(co_score, held_conv))
        for name, keep in configs.items():
            w = learned[name][0]
            parts[name].append(conv_full(lambda t, w=w, keep=keep: blend_fn(t, w, keep), held_conv))
        per_fold.append({"fold": k, "co_mention": {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)},
                         "weights": {name: learned[name][0] for name in configs},
                         "fit": learned[full_name][1]})  # fmt: skip
    info["cross_fitted"] = per_fold
    cf = {"folds": folds, "fold_seed": seed}
    co_pt = pl.concat(parts["co-mention"]).sort("turn", "position")
    measured.append(Measured("co-mention (same folds, nested)", co_pt, False,
                             "part A's CoMention fitted on the other fold (settings tuned on it); no text read",
                             extra=cf))  # fmt: skip
    signals = {
        "co-mention + content of the annotated mentions": "co-mention (other fold) + text-embedding similarity of the "
        "candidates to the movies annotated as mentioned so far (recency-weighted); no words read",
        "co-mention + text stages, learned blend (cross-fitted)": "co-mention (other fold) + the served stack's "
        "signals from the words: item-kNN and text similarity to the titles found, popularity, intent, "
        "semantic (MovieLens items through the linker) and semantic over all candidate texts; "
        "weights learned on the other fold",
        full_name: "both of the above, weights learned on the other fold (pairwise logistic, inner-fold co-mention)",
    }
    for name in configs:
        pt = pl.concat(parts[name]).sort("turn", "position")
        extra = dict(cf, weights_per_fold=[f["weights"][name] for f in per_fold])
        extra["vs_co-mention"] = {m: _paired(co_pt, pt, m) for m in ("recall@10", "ndcg@10")}
        lat_ms = lat if name == full_name else None
        text = signals.get(
            name, f"the full cross-fitted blend with {name.split('without ')[-1]} left out (weights re-learned)"
        )
        measured.append(Measured(name, pt, False, text, lat_ms, None, extra))
    return measured, info


def mention_content(conv: Any, col_emb: np.ndarray) -> Callable[[int], np.ndarray | None]:
    """Per turn: the recency-weighted (0.8 per utterance back) mean text embedding of the movies
    annotated as mentioned so far, normalised; None when none is in the candidate set."""
    prev, ages = conv.mentions(all_turns_of(conv))
    row_of_turn = {int(t): i for i, t in enumerate(conv.turns["turn"].to_list())}

    def content_vector(turn: int) -> np.ndarray | None:
        r = row_of_turn[int(turn)]
        c = conv.column(prev[r])
        keep = c >= 0
        if not keep.any():
            return None
        w = np.power(0.8, np.asarray(ages[r], dtype=np.float64)[keep]).astype(np.float32)
        v = w @ col_emb[c[keep]]
        return np.asarray(v / max(float(np.linalg.norm(v)), 1e-12))

    return content_vector


def all_turns_of(conv: Any) -> np.ndarray:
    return np.asarray(conv.turns["turn"].to_numpy(), dtype=np.int64)


def _paired(a: Any, b: Any, metric: str) -> dict[str, float]:
    from coachrec.metrics.conversational import compare_paired

    c = compare_paired(a, b, metric, n_boot=1000, n_perm=2000)
    return {
        "delta": round(c.delta, 4),
        "ci_low": round(c.ci_low, 4),
        "ci_high": round(c.ci_high, 4),
        "p": round(c.p_value, 4),
    }


def _positives(conv: Any, turns: np.ndarray) -> list[np.ndarray]:
    """Target columns (new targets) of each turn."""
    tg = conv.targets.filter(conv.targets["condition"] == "rec")
    by_turn: dict[int, list[int]] = {}
    for t, e in zip(tg["turn"].to_list(), tg["target"].to_list(), strict=True):
        by_turn.setdefault(int(t), []).append(int(e))
    out = []
    for t in turns.tolist():
        c = conv.column(by_turn.get(int(t), []))
        out.append(c[c >= 0])
    return out


def serve_latency(stack: Any, conv: Any, n: int, seed: int) -> np.ndarray:
    """Milliseconds to serve one turn (its conversation as `context`, k 20) through
    `Pipeline.recommend` in process, tracing off, for `n` sampled turns (after 10 warm-up
    requests)."""
    from coachrec.serve import RecommendRequest
    from coachrec.tracing import Tracer

    pipeline = stack.pipeline(Tracer(enabled=False))
    pipeline.warm()
    reqs = requests(conv)
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(reqs), min(n, len(reqs)), replace=False)

    def request(i: int) -> RecommendRequest:  # a turn with no words yet: an anonymous empty history
        return RecommendRequest(history=[], context=reqs[i] or None, k=20)

    for i in pick[:10]:
        pipeline.recommend(request(int(i)))
    out = []
    for i in pick:
        t0 = time.perf_counter()
        pipeline.recommend(request(int(i)))
        out.append((time.perf_counter() - t0) * 1000)
    return np.asarray(out)


def main(
    data: Path | None = None,
    *,
    folds: int = 2,
    seed: int = 0,
    tune: bool = True,
    latency_turns: int = 300,
    query_full: bool = True,
    n_boot: int = 2000,
    n_perm: int = 10000,
    out: str = "conversational_stages",
) -> Path:
    """Measure the text-stage rows with GPT-4 beside them and write `benchmarks/results/OUT.json`."""
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
    refs = {}
    for model in REFERENCE_FILES:
        path = reference_path(folder / "reference", model)
        if path.exists():
            refs[model] = load_reference(path, conv, name=REFERENCE_LABELS[model])
    measured, info = measure(
        conv,
        links,
        folds=folds,
        seed=seed,
        tune=tune,
        latency_turns=latency_turns,
        query_full=query_full,
        progress=progress,
    )
    gpt4 = refs["gpt-4"].per_target if "gpt-4" in refs else None
    if gpt4 is not None:
        measured.append(Measured(refs["gpt-4"].name, gpt4, True, "published zero-shot results (He et al., CIKM 2023)"))
    rows = measure_rows(measured, gpt4, protocol=DESCRIPTION["name"], n_boot=n_boot, n_perm=n_perm)
    rows[0]["metrics"]["run"] = info | {"load_1m": round(os.getloadavg()[0], 2)}
    path = write(out, rows)
    show(rows, f"ReDial test ({conv.n_targets:,} targets) — text stages")
    return path


if __name__ == "__main__":  # python -m coachrec_bench.conversational_stages [DATA]
    import sys

    print(main(Path(sys.argv[1]) if len(sys.argv) > 1 else None))
