"""Position bias in the loop: the signal, the PAL remedy and an off-policy gate row.

- `position_bias`: from a log of served slates with clicks and the judged relevance of each
  shown item, the click rate by slot against the relevance by slot. Where clicks fall off with
  the slot faster than relevance does, users click what is on top because it is on top, and a
  ranker learned from those clicks learns position: failure mode `position_bias`.
- `pal-ranker` (a remedy for it): PAL (`coachrec.ranking.pal`) fitted on the logged
  impressions; its logistic pCTR becomes the candidate stack's distilled ranker (same features,
  same weights: the served order is PAL's pCTR order once the strength dominates the blend), the
  strength chosen on the selection users' validation NDCG like every remedy's choices.
- `ope_row`: the candidate's clicks per slate estimated on the logged traffic (OPE), paired
  with the logged policy's observed clicks by user, as a gate row; refused (not passed) when
  the effective sample size is too small to decide.

The remedy needs logged impressions with positions and clicks; it reads them from
`RemedyContext.logged` (a `SlateLog`, e.g. `read_slates(service.store, service.feedback)`; the
loop sets it with `LoopConfig.clicks`) and says so when it is absent.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from coachrec.coach.gate import GateConfig, GateRow
from coachrec.coach.remedies import Candidate, RemedyContext, RemedyError, remedy, selection_ndcg
from coachrec.policy import EpsilonGreedy, Greedy
from coachrec.policy.ope import OPEError, RewardModel, SlateLog, evaluate
from coachrec.ranking import ItemStats, Student, candidate_features
from coachrec.ranking.pal import PAL, PALConfig
from coachrec.serve import Stack

STRENGTHS = (1.0, 10.0, 100.0, 1e4)
"""Student strengths the remedy tries: 1e4 serves PAL's pCTR order (the blend only breaks ties)."""


@dataclass(frozen=True)
class PositionBias:
    """Click rate and judged relevance by slot, and the relative examination they imply."""

    click_rate: np.ndarray
    relevance: np.ndarray
    relative_examination: np.ndarray
    """(clicks_j / relevance_j) / (clicks_0 / relevance_0): 1 at every slot when clicks follow relevance."""
    lower_ratio: float
    """The same pooled over the lower half of the slots, with its bootstrap CI over users."""
    ci_low: float
    ci_high: float
    users: int
    flagged: bool
    reason: str


def position_bias(log: SlateLog, relevance: np.ndarray, *, margin: float = 0.2, n_boot: int = 500,
                  seed: int = 0) -> PositionBias:  # fmt: skip
    """Failure mode `position_bias` when the lower half of the slots gets, per unit of judged
    relevance, less than `1 - margin` of the top slot's clicks (the CI's upper bound below it).
    `relevance` (n, K): the judged relevance (or P(relevant)) of each shown item, NaN = not judged."""
    rel = np.asarray(relevance, dtype=np.float64)
    if rel.shape != log.shown.shape:
        raise ValueError(f"relevance must have the log's slate shape {log.shown.shape}, got {rel.shape}")
    judged = log.slots & ~np.isnan(rel)
    if not judged[:, 0].any():
        raise ValueError("no judged item at the top slot: the relevance by slot cannot be compared")
    users, group = np.unique(log.user_id.astype(str), return_inverse=True)
    k = log.shown.shape[1]
    clicks = np.zeros((len(users), k))
    judged_rel = np.zeros((len(users), k))
    np.add.at(clicks, group, np.where(judged, log.reward, 0.0))
    np.add.at(judged_rel, group, np.where(judged, rel, 0.0))
    shown = np.zeros((len(users), k))
    np.add.at(shown, group, judged.astype(np.float64))
    lower = np.arange(k) >= k // 2

    def ratio(c: np.ndarray, r: np.ndarray) -> np.ndarray:
        top = c[..., 0] / np.maximum(r[..., 0], 1e-12)
        low = c[..., lower].sum(axis=-1) / np.maximum(r[..., lower].sum(axis=-1), 1e-12)
        out: np.ndarray = low / np.maximum(top, 1e-12)
        return out

    c_all, r_all = clicks.sum(axis=0), judged_rel.sum(axis=0)
    per_slot = (c_all / np.maximum(r_all, 1e-12)) / max(c_all[0] / max(r_all[0], 1e-12), 1e-12)
    point = float(ratio(c_all, r_all))
    weights = np.random.default_rng(seed).multinomial(len(users), np.full(len(users), 1 / len(users)), size=n_boot)
    boots = ratio(weights @ clicks, weights @ judged_rel)
    lo, hi = (float(v) for v in np.quantile(boots, [0.025, 0.975]))
    flagged = hi < 1.0 - margin
    reason = (
        f"clicks per unit of judged relevance in slots {k // 2 + 1}-{k} are {point:.2f} of the top slot's "
        f"(95% CI [{lo:.2f}, {hi:.2f}] over {len(users)} users); "
        + (
            f"below {1 - margin:.2f}: position, not preference, drives clicks"
            if flagged
            else "no evidence of position bias"
        )
    )
    return PositionBias(c_all / np.maximum(shown.sum(axis=0), 1), r_all / np.maximum(shown.sum(axis=0), 1), per_slot,
                        point, lo, hi, len(users), flagged, reason)  # fmt: skip


def pool_features(stack: Stack, stats: ItemStats, log: SlateLog) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features (n, P, F) of every logged pool row as the stack's distilled ranker computes them
    at serving (`candidate_features` over the retrievers' scores, blend = their min-max scaled
    sum over the pool), the rows' item indices (n, P; -1 padding) and that blend (n, P)."""
    model = stack.models[0]
    if model.items is None or model.users is None:
        raise ValueError("the stack's models are not fitted")
    if log.pool_items is None or log.pool_sources is None:
        raise ValueError("the log has no candidate pools with retriever scores (read it with sources=True)")
    names = stack.retriever_names
    missing = [n for n in names if n not in log.source_names]
    if missing:
        raise ValueError(f"the log has no scores of retrievers {missing} (it has {list(log.source_names)})")
    cols = [log.source_names.index(n) for n in names]
    n, width = log.pool_items.shape
    idx = np.full((n, width), -1, dtype=np.int64)
    feats = np.zeros((n, width, len(stack.feature_names)))
    blends = np.zeros((n, width))
    users = model.users.encode([str(u) for u in log.user_id], unknown="mask")
    histories: dict[int, np.ndarray] = {}
    for i in range(n):
        m = int(log.pool[i].sum())
        if m == 0:
            continue
        idx[i, :m] = model.items.encode(list(log.pool_items[i, :m]), unknown="mask")
        u = int(users[i])
        if u not in histories:
            histories[u] = model.user_history(u) if u >= 0 else np.zeros(0, np.int64)
        src = log.pool_sources[i, :m][:, cols]
        present = ~np.isnan(src)
        lo = np.where(present, src, np.inf).min(axis=0)
        hi = np.where(present, src, -np.inf).max(axis=0)
        scaled = np.where(hi > lo, (src - lo) / np.where(hi > lo, hi - lo, 1.0), 1.0)
        blends[i, :m] = np.where(present, scaled, 0.0).sum(axis=1)
        feats[i, :m] = candidate_features(stats, histories[u], np.maximum(idx[i, :m], 0), src, blends[i, :m])
    return feats, idx, blends


def fit_pal(stack: Stack, stats: ItemStats, log: SlateLog, config: PALConfig | None = None) -> tuple[PAL, np.ndarray]:
    """PAL fitted on the log's impressions (logistic pCTR); also the pool features it read."""
    feats, _, _ = pool_features(stack, stats, log)
    rows, slots = np.nonzero(log.slots)
    if not len(rows):
        raise ValueError("the log has no impressions")
    cfg = config or PALConfig()
    if cfg.mode != "pal" or cfg.hidden:
        raise ValueError("the remedy serves PAL's logistic pCTR: PALConfig(mode='pal', hidden=0)")
    x = feats[rows, log.shown[rows, slots]]
    return PAL(x.shape[1], log.shown.shape[1], cfg).fit(x, slots, log.reward[rows, slots]), feats


def pal_student(model: PAL, features: tuple[str, ...], strength: float) -> Student:
    """PAL's logistic pCTR as a `Student`: the same probability of every feature row."""
    if model.config.hidden or model.config.mode != "pal":
        raise ValueError("only a logistic PAL model (hidden=0) is a Student")
    layer = model.parameters()["pctr"]
    weights = np.r_[float(layer[1].detach()[0]), layer[0].detach().numpy().astype(np.float64)[0]]
    return Student(features, weights, model.mu.copy(), model.sd.copy(), strength,
                   {"from": "pal", "fit": model.fit_info, "probseen": model.prob_seen().round(4).tolist()})  # fmt: skip


def served_scores(stack: Stack, feats: np.ndarray, blend: np.ndarray, log: SlateLog) -> np.ndarray:
    """What `stack`'s rank stage scores each logged pool row, `blend + strength * P_student`
    (NaN padding); a stack without a learned ranker scores the blend."""
    if stack.ranker is None:
        return np.where(log.pool, blend, np.nan)
    student = stack.ranker.student
    p = student.probability(feats.reshape(-1, feats.shape[2])).reshape(blend.shape)
    return np.where(log.pool, blend + student.strength * p, np.nan)


@remedy("pal-ranker", modes=("position_bias",), span="rank")
def pal_ranker(ctx: RemedyContext) -> Candidate:
    """PAL's position-debiased pCTR, learned from logged clicks, as the ranker (strength chosen on selection users)."""
    log = ctx.logged
    if log is None:
        raise RemedyError(
            "pal-ranker learns from logged impressions with positions and clicks; this context carries none "
            "(run the loop with simulated clicks, LoopConfig.clicks / coachrec coach --simulate-clicks ultra:1.0, "
            "or set RemedyContext.logged to read_slates(service.store, service.feedback))"
        )
    champion = replace(ctx.champion, ranker=None)
    stats = ItemStats.from_data(ctx.split.train, champion.catalog)
    model, _ = fit_pal(champion, stats, log, PALConfig(seed=ctx.seed))
    scores: dict[float, float] = {}
    stacks: dict[float, Stack] = {}
    for strength in STRENGTHS:
        stacks[strength] = champion.with_ranker(pal_student(model, champion.feature_names, strength), stats)
        scores[strength] = selection_ndcg(stacks[strength], ctx.split, ctx.selection_users)
    best = max(scores, key=lambda s: scores[s])
    seen = model.prob_seen()
    note = (
        f"PAL on {model.fit_info['impressions']} logged impressions (ProbSeen relative to slot 1: "
        f"{np.round(seen, 2).tolist()}); strength {best:g} of {list(STRENGTHS)} by selection NDCG@10"
    )
    return Candidate(stacks[best], note, {"valid_ndcg@10": scores[best]},
                     {"selection_ndcg_by_strength": scores, "pal_fit": model.fit_info,
                      "probseen": seen.round(4).tolist()})  # fmt: skip


def ope_row(log: SlateLog, champion: Stack, candidate: Stack, stats: ItemStats, *, estimator: str = "iips",
            min_ess: float = 200.0, config: GateConfig | None = None, model: RewardModel | None = None,
            role: str = "guard", n_boot: int = 500, seed: int = 0) -> GateRow:  # fmt: skip
    """Gate row "off-policy (logged traffic)": the candidate's clicks per slate estimated on the
    logged slates (served by `champion` with its epsilon-greedy exploration) against the clicks
    observed, paired by user: a "guard" passes when the difference's CI lower bound is above
    -margin x the logged value, an "independent" row (must improve) when it is above 0. Not
    passed, with the reason in the metric, when the effective sample size is under `min_ess`.
    The default estimator, iips, assumes position-based clicks (as PAL does); its weights are
    per slot, so its ESS stays usable where whole-slate weights (ips, snips) collapse."""
    cfg = config or GateConfig()
    feats, _, blend = pool_features(champion, stats, log)
    target_scores = served_scores(candidate, feats, blend, log)
    target = EpsilonGreedy(candidate.config.epsilon) if candidate.config.epsilon > 0 else Greedy()
    logging = EpsilonGreedy(champion.config.epsilon) if champion.config.epsilon > 0 else Greedy()
    if champion.ranker is not None:
        raise OPEError("the logged ranking must be the pool order (a champion without a learned ranker)")
    got = evaluate(log, target, target_scores, model=model, logging=logging, estimators=(estimator,),
                   n_boot=n_boot, seed=seed)[estimator]  # fmt: skip
    logged = float(log.reward.sum(axis=1).mean())
    users, group = np.unique(log.user_id.astype(str), return_inverse=True)
    top = np.argsort(-np.where(log.pool, target_scores, -np.inf), axis=1, kind="stable")[:, : log.shown.shape[1]]
    differs = (top != np.arange(top.shape[1])[None, :]).any(axis=1)
    discordant = len(np.unique(group[differs]))
    metric = f"clicks per slate ({estimator}, ESS {got.ess:.0f})"
    if role not in ("guard", "independent"):
        raise ValueError(f"role must be 'guard' or 'independent', got {role!r}")
    passed: bool = got.delta_low > (-cfg.margin * logged if role == "guard" else 0.0)
    if got.ess < min_ess:
        metric = f"clicks per slate ({estimator}): refused, ESS {got.ess:.0f} < {min_ess:.0f}, the logs cannot decide"
        passed = False
    elif got.unsupported_mass is not None and got.unsupported_mass > 0:
        metric = f"clicks per slate ({estimator}): refused, {got.unsupported_mass:.3f} of the mass unsupported"
        passed = False
    return GateRow("off-policy (logged traffic)", metric, role, logged, got.value, got.delta, got.delta_low,
                   got.delta_high, float("nan"), len(users), "higher", passed, discordant)  # fmt: skip


def signal_details(signal: PositionBias) -> dict[str, Any]:
    """The signal as a report dict."""
    return {"flagged": signal.flagged, "reason": signal.reason, "lower_ratio": round(signal.lower_ratio, 4),
            "ci": [round(signal.ci_low, 4), round(signal.ci_high, 4)], "users": signal.users,
            "click_rate": signal.click_rate.round(4).tolist(), "relevance": signal.relevance.round(4).tolist(),
            "relative_examination": signal.relative_examination.round(4).tolist()}  # fmt: skip
