"""Pipeline stages. Each takes a candidate set and returns one, inside a span of its kind.

The pipeline records every stage's input and output (item ids and scores), so when a result is
wrong a reader — or the teacher — can see which stage let an item in, promoted it or failed to
stop it. A new stage (the LLM reranker, a learned ranker) is any object with `name`, `kind`
and `__call__(ctx, candidates, span)`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np

from coachrec.policy import EpsilonGreedy, Explorer, mmr
from coachrec.policy.bandits import CandidateExplorer
from coachrec.ranking import ItemStats, Student, candidate_features
from coachrec.ranking.pal import PAL
from coachrec.serve.candidates import TRACE_LIMIT, Candidates, RequestContext
from coachrec.serve.retrievers import Retriever
from coachrec.tracing import NoopSpan, Span, SpanKind, SpanStatus
from coachrec.tracing.jsonenc import Encoded

AnySpan = Span | NoopSpan


class Stage(Protocol):
    name: str
    kind: SpanKind

    def __call__(self, ctx: RequestContext, candidates: Candidates, span: AnySpan) -> Candidates: ...


def _order_by_score(c: Candidates) -> Candidates:
    return c.take(np.lexsort((c.idx, -c.score)))


class Retrieve:
    """Runs every retriever (each in its own RETRIEVER span) and merges their lists.

    An item found by several retrievers appears once, with each retriever's score in `sources`;
    the merged list is ordered by the unweighted blend so its span reads as a ranking too.
    """

    kind = SpanKind.RETRIEVER

    def __init__(self, retrievers: Sequence[Retriever], name: str = "retrieve") -> None:
        if not retrievers:
            raise ValueError("Retrieve needs at least one retriever")
        names = [r.name for r in retrievers]
        if len(set(names)) != len(names):
            raise ValueError(f"retriever names must be unique, got {names}")
        self.retrievers = list(retrievers)
        self.names = tuple(names)
        self.name = name

    def __call__(self, ctx: RequestContext, candidates: Candidates, span: AnySpan) -> Candidates:
        lists = []
        recent: Encoded | None = None  # the history every retriever's span records, encoded once
        for retriever in self.retrievers:
            with ctx.tracer.span(f"{self.name}.{retriever.name}", kind=SpanKind.RETRIEVER) as s:
                idx, scores = retriever.retrieve(ctx)
                idx = np.asarray(idx, dtype=np.int64)
                if s.recording:
                    if recent is None:
                        recent = Encoded(ctx.catalog.decode(ctx.history[-50:]))
                    s.set_input(Encoded.join({"retriever": retriever.name, "history": recent}))
                    s.set_output(
                        {
                            "n": len(idx),
                            "items": ctx.catalog.decode(idx[:TRACE_LIMIT]),
                            "scores": np.round(scores[:TRACE_LIMIT], 6).tolist(),
                        }
                    )
            lists.append((idx, np.asarray(scores, dtype=np.float64)))
        all_idx = np.concatenate([idx for idx, _ in lists])
        items, inverse = np.unique(all_idx, return_inverse=True)
        sources = np.full((len(items), len(lists)), np.nan, dtype=np.float32)
        cols = np.repeat(np.arange(len(lists)), [len(idx) for idx, _ in lists])
        np.fmax.at(sources, (inverse, cols), np.concatenate([s for _, s in lists]).astype(np.float32))
        for r, retriever in enumerate(self.retrievers):
            fill = getattr(retriever, "score_items", None)  # text retrievers score any item cheaply
            missing = np.flatnonzero(np.isnan(sources[:, r])) if fill is not None else np.zeros(0, np.int64)
            if len(missing) and fill is not None:
                values = fill(ctx, items[missing])
                if values is not None:
                    sources[missing, r] = np.asarray(values, dtype=np.float32)
        merged = Candidates(items, np.zeros(len(items)), sources, self.names)
        merged.score = merged.normalized_sources().sum(axis=1)
        return _order_by_score(merged)


class BlendRanker:
    """Score = weighted sum of per-retriever scores scaled to [0, 1] (missing counts 0).

    `weights` (default 1 per retriever) rank requests without text, exactly as before text
    stages existed; `text_weights` (learned by `learn_weights`, default `weights`) rank
    requests with text, whose candidates also carry the text retrievers' scores.
    """

    kind = SpanKind.RANKER

    def __init__(self, weights: Mapping[str, float] | None = None, name: str = "rank",
                 text_weights: Mapping[str, float] | None = None) -> None:  # fmt: skip
        self.weights = dict(weights or {})
        self.text_weights = None if text_weights is None else dict(text_weights)
        self.name = name

    def __call__(self, ctx: RequestContext, candidates: Candidates, span: AnySpan) -> Candidates:
        use_text = ctx.has_text and self.text_weights is not None
        table = self.text_weights if use_text and self.text_weights is not None else self.weights
        unknown = set(table) - set(candidates.source_names)
        if unknown:
            raise ValueError(
                f"ranker weights name unknown retrievers {sorted(unknown)}; have {candidates.source_names}"
            )
        w = np.array([table.get(n, 1.0) for n in candidates.source_names])
        span.set_attribute("weights", dict(zip(candidates.source_names, w.tolist(), strict=False)))
        if use_text:
            span.set_attribute("weights.for", "text")
        candidates.score = candidates.normalized_sources() @ w
        return _order_by_score(candidates)


def learn_weights(
    candidate_sets: Sequence[Candidates],
    positives: Sequence[np.ndarray],
    *,
    negatives: int = 64,
    hard: int = 0,
    l2: float = 1e-3,
    iterations: int = 200,
    seed: int = 0,
) -> tuple[dict[str, float], dict[str, float]]:
    """Blend weights (per retriever, on the scores `BlendRanker` sees: scaled to [0, 1] over
    each candidate set) fitted by pairwise logistic regression: for each request, every
    positive (a target in its candidate set) against up to `negatives` sampled candidates,
    P(positive above negative) = sigmoid(w . (x_pos - x_neg)), an L2 penalty, fitted by L-BFGS-B,
    negatives drawn uniformly (`hard` > 0 takes that many from the top of the unweighted blend
    instead; on ReDial and MovieLens that collapsed the weights onto one retriever);
    weights kept >= 0 (a retriever proposing an item never counts against it) and scaled to
    sum to the number of retrievers. Returns the weights and fit statistics (pairs, requests
    used, pairwise accuracy before and after)."""
    if not candidate_sets:
        raise ValueError("learn_weights needs at least one candidate set")
    names = candidate_sets[0].source_names
    rng = np.random.default_rng(seed)
    diffs: list[np.ndarray] = []
    used = 0
    for c, pos in zip(candidate_sets, positives, strict=True):
        if c.source_names != names:
            raise ValueError(f"candidate sets have different retrievers: {c.source_names} vs {names}")
        is_pos = np.isin(c.idx, np.asarray(pos, dtype=np.int64))
        if not is_pos.any() or is_pos.all():
            continue
        used += 1
        x = c.normalized_sources()
        neg_rows = np.flatnonzero(~is_pos)
        if len(neg_rows) > negatives:
            by_blend = neg_rows[np.argsort(-x[neg_rows].sum(axis=1), kind="stable")]
            top, rest = by_blend[:hard], by_blend[hard:]
            neg_rows = np.concatenate([top, rng.choice(rest, min(len(rest), negatives - len(top)), replace=False)])
        for p in np.flatnonzero(is_pos):
            diffs.append(x[p] - x[neg_rows])
    if not diffs:
        raise ValueError("no request has a target among its candidates: nothing to learn the blend from")
    d = np.concatenate(diffs)
    w = _pairwise_logistic(d, l2, iterations)
    before = float((d @ np.ones(d.shape[1]) > 0).mean())
    total = w.sum()
    w = w * (len(w) / total) if total > 0 else np.ones_like(w)
    after = float((d @ w > 0).mean())
    stats = {"pairs": float(len(d)), "requests": float(used), "requests_given": float(len(candidate_sets)),
             "pairwise_accuracy_unweighted": round(before, 4), "pairwise_accuracy": round(after, 4)}  # fmt: skip
    return {n: round(float(v), 6) for n, v in zip(names, w, strict=False)}, stats


def _read_columns(names: tuple[str, ...], reads: tuple[str, ...], ranker: str) -> list[int]:
    """The columns of `names` holding the retrievers a learned ranker reads, in its order."""
    missing = [n for n in reads if n not in names]
    if missing:
        raise ValueError(f"{ranker} reads retrievers {missing} this pipeline does not have ({names})")
    return [names.index(n) for n in reads]


class LearnedRanker:
    """Score = the unweighted blend + `student.strength` * the student's P(pass) per candidate.

    A coached stack's `rank` stage: strength 0 is the blend's own ranking; `stats` are the
    training data's item statistics the student's features read. The student reads the
    retrievers it was distilled over (`reads`); one added later (`Stack.with_model`) enters only
    the text blend, so a request without text ranks exactly as when the student was distilled.
    """

    kind = SpanKind.RANKER

    def __init__(self, student: Student, stats: ItemStats, name: str = "rank",
                 text_weights: Mapping[str, float] | None = None) -> None:  # fmt: skip
        self.student = student
        self.stats = stats
        self.name = name
        self.text_weights = None if text_weights is None else dict(text_weights)
        self.reads = tuple(f.removeprefix("score.") for f in student.features if f.startswith("score."))
        """The retrievers whose scores the student's features were built from, in order."""

    def __call__(self, ctx: RequestContext, candidates: Candidates, span: AnySpan) -> Candidates:
        names = candidates.source_names
        cols = _read_columns(names, self.reads, "the distilled ranker")
        sources = candidates.sources[:, cols]
        if ctx.has_text and self.text_weights is not None:
            blend = candidates.normalized_sources() @ np.array([self.text_weights.get(n, 1.0) for n in names])
        else:  # a retriever added after distillation weighs 0 here and what only it proposed is
            # left out, so such a request ranks exactly as when the student was distilled
            blend = candidates.normalized_sources()[:, cols].sum(axis=1)
            if len(cols) and len(candidates):
                keep = ~np.isnan(sources).all(axis=1)
                if not keep.all():
                    candidates, sources, blend = candidates.take(keep), sources[keep], blend[keep]
        candidates.score = blend
        if len(candidates):
            x = candidate_features(self.stats, ctx.history, candidates.idx, sources, blend)
            candidates.score = blend + self.student.strength * self.student.probability(x)
        span.set_attributes({"ranker": "distilled-student", "strength": self.student.strength})
        return _order_by_score(candidates)


class PALRanker:
    """Score = PAL's pCTR of each candidate (`coachrec.ranking.pal`): position-debiased click
    probability learned from logged impressions; the ProbSeen tower never serves. Features are
    `candidate_features` over the retrievers the model was trained on (`reads`, in order)."""

    kind = SpanKind.RANKER

    def __init__(self, model: PAL, stats: ItemStats, reads: Sequence[str], name: str = "rank") -> None:
        if model.config.mode == "position-feature":
            raise ValueError("a position-feature model has no position-free score to serve; serve PAL's pCTR")
        self.model = model
        self.stats = stats
        self.reads = tuple(reads)
        self.name = name

    def __call__(self, ctx: RequestContext, candidates: Candidates, span: AnySpan) -> Candidates:
        cols = _read_columns(candidates.source_names, self.reads, "the PAL ranker")
        blend = candidates.normalized_sources().sum(axis=1)
        candidates.score = blend
        if len(candidates):
            sources = candidates.sources[:, cols]
            x = candidate_features(self.stats, ctx.history, candidates.idx, sources, blend)
            candidates.score = self.model.score(x)
        span.set_attributes({"ranker": f"pal-{self.model.config.mode}"})
        return _order_by_score(candidates)


class ConstraintFilter:
    """Drops nonexistent, duplicate and forbidden candidates, counting each kind.

    Retrievers already search only allowed items; anything this stage removes leaked from
    upstream, and the counts in its span point at the leak.
    """

    kind = SpanKind.POLICY

    def __init__(self, name: str = "policy.constraints") -> None:
        self.name = name

    def __call__(self, ctx: RequestContext, candidates: Candidates, span: AnySpan) -> Candidates:
        idx = candidates.idx
        exists = (idx >= 0) & (idx < len(ctx.allowed))
        first = np.zeros(len(idx), dtype=bool)
        first[np.unique(idx, return_index=True)[1]] = True
        allowed = exists & ctx.allowed[np.where(exists, idx, 0)]
        keep = exists & first & allowed
        span.set_attributes(
            {
                "allowed_in_catalog": int(ctx.allowed.sum()),
                "dropped.nonexistent": int((~exists).sum()),
                "dropped.duplicate": int((exists & ~first).sum()),
                "dropped.forbidden": int((exists & first & ~allowed).sum()),
            }
        )
        return candidates.take(keep)


class Diversify:
    """MMR over the catalog's genre vectors: picks the first k, leaves the rest in score order."""

    kind = SpanKind.POLICY

    def __init__(self, lam: float = 0.8, name: str = "policy.diversity") -> None:
        if not 0.0 <= lam <= 1.0:
            raise ValueError(f"diversity lambda must be in [0, 1], got {lam}")
        self.lam = lam
        self.name = name

    def __call__(self, ctx: RequestContext, candidates: Candidates, span: AnySpan) -> Candidates:
        span.set_attribute("lambda", self.lam)
        features = ctx.catalog.features[candidates.idx]
        return candidates.take(mmr(candidates.score, features, ctx.k, self.lam))


class Explore:
    """Lets an `Explorer` choose the shown slots; records what was explored and its propensity."""

    kind = SpanKind.POLICY

    def __init__(self, explorer: Explorer | CandidateExplorer | None = None, name: str = "policy.explore") -> None:
        self.explorer: Explorer | CandidateExplorer = explorer if explorer is not None else EpsilonGreedy()
        self.name = name

    def __call__(self, ctx: RequestContext, candidates: Candidates, span: AnySpan) -> Candidates:
        if isinstance(self.explorer, CandidateExplorer):  # learners: they see the candidates themselves
            features = np.c_[candidates.normalized_sources(), ctx.catalog.features[candidates.idx]]
            result = self.explorer.explore_candidates(candidates.idx, candidates.score, features, ctx.k, ctx.request_id)
        else:
            result = self.explorer.explore(len(candidates), ctx.k, ctx.request_id, scores=candidates.score)
        out = candidates.take(result.order)
        out.explored = result.explored
        out.propensity = result.propensity
        span.set_attributes({"explorer": self.explorer.name, "explored": int(result.explored.sum())})
        return out


class Guardrail:
    """The last check: each shown item exists, satisfies the constraints, is not a duplicate and
    has a finite score. A violator is dropped, the next valid candidate takes its place, and the
    drop is recorded in the span (whose status becomes ERROR: a violation reaching this point
    is a bug upstream, and the status is the cheapest thing to query for)."""

    kind = SpanKind.GUARDRAIL

    def __init__(self, name: str = "guardrail") -> None:
        self.name = name

    def __call__(self, ctx: RequestContext, candidates: Candidates, span: AnySpan) -> Candidates:
        seen: set[int] = set()
        keep: list[int] = []
        dropped: list[dict[str, object]] = []
        history = ctx.history.tolist()
        start, window = 0, 2 * ctx.k  # check a window at a time; grow it only when items drop
        while len(keep) < ctx.k and start < len(candidates):
            rows = np.arange(start, min(start + window, len(candidates)))
            idx = candidates.idx[rows]
            reasons = ctx.catalog.index.violations(ctx.constraints, idx, history)
            for row, item, reason in zip(rows.tolist(), idx.tolist(), reasons, strict=False):
                if len(keep) == ctx.k:
                    break
                if reason is None and item in seen:
                    reason = "duplicate"
                if reason is None and not np.isfinite(candidates.score[row]):
                    reason = "non-finite score"
                if reason is None:
                    keep.append(row)
                    seen.add(item)
                else:
                    dropped.append(
                        {"item": ctx.catalog.decode(idx[[row - start]])[0], "position": row, "reason": reason}
                    )
            start += len(rows)
        span.set_attribute("dropped", len(dropped))
        if dropped:
            span.set_attribute("violations", dropped)
            span.set_status(SpanStatus.ERROR, f"guardrail dropped {len(dropped)} item(s): {dropped[:3]}")
        return candidates.take(np.asarray(keep, dtype=np.int64))


class Explain:
    """Per-item reasons from the retriever that contributed most to each item's score."""

    kind = SpanKind.TOOL

    def __init__(self, retrievers: Sequence[Retriever], name: str = "explain") -> None:
        self.retrievers = {r.name: r for r in retrievers}
        self.name = name

    def __call__(self, ctx: RequestContext, candidates: Candidates, span: AnySpan) -> Candidates:
        reasons = [""] * len(candidates)
        if len(candidates):
            best = candidates.normalized_sources().argmax(axis=1)
            for r, name in enumerate(candidates.source_names):
                rows = np.flatnonzero(best == r)
                if len(rows) and name in self.retrievers:
                    for row, text in zip(rows, self.retrievers[name].reasons(ctx, candidates.idx[rows]), strict=False):
                        reasons[row] = text
        if candidates.explored is not None:
            for row in np.flatnonzero(candidates.explored):
                reasons[row] = "something new: shown to explore beyond your usual picks"
        candidates.reasons = reasons
        return candidates


def _pairwise_logistic(d: np.ndarray, l2: float, iterations: int) -> np.ndarray:
    """argmin over w >= 0 of mean(log(1 + exp(-d w))) + l2/2 |w|^2 (L-BFGS-B with bounds)."""
    from scipy.optimize import minimize

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        z = d @ w
        value = float(np.logaddexp(0.0, -z).mean() + 0.5 * l2 * w @ w)
        wrong = 0.5 * (1.0 - np.tanh(0.5 * z))  # sigmoid(-z), stable
        grad = -(d * wrong[:, None]).mean(axis=0) + l2 * w
        return value, grad

    start = np.ones(d.shape[1])
    found = minimize(loss, start, jac=True, method="L-BFGS-B", bounds=[(0.0, None)] * d.shape[1],
                     options={"maxiter": iterations})  # fmt: skip
    return np.asarray(found.x, dtype=np.float64)
