"""Which of the teacher's criteria may gate a promotion or be distilled.

- program criteria are exact checks of the trace (a constraint leak is a fact, not an opinion):
  trusted by construction;
- the relevance criterion (the recommender committee) is measured against later real ratings
  of the same users (`teacher.heldout_labels`, evaluation half), at the rubric's item threshold;
  on implicit data (no ratings), against later interactions (`teacher.heldout_interactions`);
- LLM criteria are measured against human labels of a golden set; without one they are
  unmeasured and may report but not gate.

A criterion may gate only when its `JudgeQuality.may_gate` holds (kappa at or above the
rubric's floor on enough cases).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from coachrec.data import Catalog, Dataset
from coachrec.metrics import cohen_kappa
from coachrec.teacher import JudgeQuality, RelevanceCommittee, RelevanceConfig, RubricSpec, measure
from coachrec.teacher.implicit_relevance import ImplicitCommittee
from coachrec.teacher.later_interactions import heldout_interactions
from coachrec.teacher.movielens import RatedPairs, heldout_labels
from coachrec.teacher.request_match import (
    CoMentionMember,
    EmbeddingMember,
    MentionMember,
    RequestMatchCommittee,
    Turns,
    default_members,
    request_match_quality,
    request_turns,
    seeker_texts,
)


@dataclass(frozen=True)
class Trust:
    criterion: str
    member: str
    may_gate: bool
    reason: str
    quality: JudgeQuality | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "criterion": self.criterion,
            "member": self.member,
            "may_gate": self.may_gate,
            "reason": self.reason,
            "quality": self.quality.to_dict() if self.quality else None,
        }


def has_ratings(data: Dataset) -> bool:
    """True when the events carry graded ratings (not only 0/1 interactions)."""
    return data.events["value"].n_unique() > 2


def later_slates(users: np.ndarray, size: int) -> np.ndarray:
    """Slate index of each pair: each user's pairs (in time order) cut into slates of `size`."""
    out = np.zeros(len(users), np.int64)
    start = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])  # pairs are sorted by user
    n = 0
    for lo, hi in zip(start, np.r_[start[1:], len(users)], strict=True):
        chunks = np.arange(hi - lo) // size
        out[lo:hi] = n + chunks
        n += int(chunks[-1]) + 1
    return out


def measured_committee(
    data: Dataset,
    rubric: RubricSpec,
    config: RelevanceConfig | None = None,
    *,
    slate_size: int = 10,
    seed: int = 0,
) -> tuple[RelevanceCommittee, JudgeQuality]:
    """The relevance committee for judging traces of a stack fitted on `data`, and its measured
    quality on the unit the gate judges: a *slate*. As `teacher.calibrated_committee`: blend
    weights fitted on the calibration half of held-out later ratings (every later rating,
    relevant = rating >= `like`: the rubric's P(rating >= 4)); the split-fitted committee is then
    scored on the evaluation half (users the blend never saw). Each evaluation user's later rated
    items, in time order, are cut into slates of `slate_size` (the served slate size; a last
    chunk under half that size is dropped), each judged as the rubric judges a served slate (pass
    when at least `pass_threshold` of its items reach `item_threshold`) against the same rule
    applied to the real ratings; kappa with a bootstrap CI over users, whose lower bound must
    reach the floor. The members are then refitted on all of `data`. Data without graded
    ratings gets `measured_implicit_committee` instead (`config` does not apply)."""
    if not has_ratings(data):
        return measured_implicit_committee(data, rubric, seed=seed)
    config = config or RelevanceConfig()
    labels = heldout_labels(data, like=config.like, dislike=config.dislike, seed=seed)
    split = RelevanceCommittee(config).fit(labels.train)
    split.fit_blend(split.pair_features(labels.calibration), labels.calibration.labels)
    ev = labels.evaluation
    p = split.probability_from_features(split.pair_features(ev))
    spec = rubric.criterion("relevance")
    slate = later_slates(ev.users, slate_size)
    size = np.bincount(slate).astype(np.float64)
    keep = size >= max(slate_size // 2, 1)
    judged = np.bincount(slate, weights=(p >= spec.item_threshold).astype(float)) / size >= spec.pass_threshold
    human = np.bincount(slate, weights=np.asarray(ev.labels, dtype=float)) / size >= spec.pass_threshold
    owner = np.zeros(len(size), np.int64)
    owner[slate] = ev.users
    item_kappa = cohen_kappa(p >= spec.item_threshold, np.asarray(ev.labels, dtype=bool))
    quality = measure(
        "relevance",
        split.model_id,
        judged[keep],
        human[keep],
        kappa_floor=rubric.kappa_floor,
        scores=(np.bincount(slate, weights=p) / size)[keep],
        groups=owner[keep],
        unit="slate",
        seed=seed,
        protocol=f"{labels.protocol}; each evaluation user's later rated items cut into slates of {slate_size} "
        f"({int(keep.sum())} slates of {len(np.unique(owner[keep]))} users; human pass rate "
        f"{human[keep].mean():.2f}), pass when >= {spec.pass_threshold} of its items reach P >= "
        f"{spec.item_threshold}, CI by user; item-level kappa {item_kappa:.3f} on {len(p)} pairs",
    )
    full = RelevanceCommittee(config).fit(data)
    full.blend = split.blend
    return full, quality


def balanced(pairs: RatedPairs) -> RatedPairs:
    """Each user's relevant pairs and as many of their first not-relevant ones (pairs sorted by
    user): the blend is then fitted at even odds, so P >= 0.5 means more likely than not."""
    keep = np.zeros(len(pairs), bool)
    start = np.flatnonzero(np.r_[True, pairs.users[1:] != pairs.users[:-1]])
    for lo, hi in zip(start, np.r_[start[1:], len(pairs)], strict=True):
        pos = np.flatnonzero(pairs.labels[lo:hi]) + lo
        neg = np.flatnonzero(~pairs.labels[lo:hi]) + lo
        keep[pos] = True
        keep[neg[: len(pos)]] = True
    return pairs.take(keep)


def mixed_slates(pairs: RatedPairs, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One slate per user of implicit pairs (sorted by user): all the user's later interactions
    and a seeded number, uniform in 0..(their not-relevant pairs), of not-relevant items; so the
    share of real later choices varies from slate to slate around the pass threshold. Returns the
    kept pairs' indices and each one's slate number."""
    rng = np.random.default_rng(seed + 11)
    rows, slate = [], []
    start = np.flatnonzero(np.r_[True, pairs.users[1:] != pairs.users[:-1]])
    for n, (lo, hi) in enumerate(zip(start, np.r_[start[1:], len(pairs)], strict=True)):
        pos = np.flatnonzero(pairs.labels[lo:hi]) + lo
        neg = np.flatnonzero(~pairs.labels[lo:hi]) + lo
        take = np.r_[pos, neg[: int(rng.integers(len(neg) + 1))]]
        rows.append(take)
        slate.append(np.full(len(take), n))
    return np.concatenate(rows), np.concatenate(slate)


def measured_implicit_committee(
    data: Dataset, rubric: RubricSpec, *, seed: int = 0
) -> tuple[RelevanceCommittee, JudgeQuality]:
    """`measured_committee` for implicit data: the `ImplicitCommittee` blended on the calibration
    half of later interactions against popularity-matched never-chosen items
    (`teacher.heldout_interactions`, balanced to even odds), measured on the evaluation half's
    users: one slate per user of their later interactions and a random number of never-chosen
    items (`mixed_slates`), judged by the rubric's slate rule against the same rule applied to
    which items really were chosen later; kappa CI by user."""
    labels = heldout_interactions(data, negatives=2, seed=seed)
    split = ImplicitCommittee().fit(labels.train)
    cal = balanced(labels.calibration)
    split.fit_blend(split.pair_features(cal), cal.labels)
    rows, slate = mixed_slates(labels.evaluation, seed)
    ev = labels.evaluation.take(rows)
    p = split.probability_from_features(split.pair_features(ev))
    spec = rubric.criterion("relevance")
    size = np.bincount(slate).astype(np.float64)
    judged = np.bincount(slate, weights=(p >= spec.item_threshold).astype(float)) / size >= spec.pass_threshold
    human = np.bincount(slate, weights=ev.labels.astype(float)) / size >= spec.pass_threshold
    owner = np.zeros(len(size), np.int64)
    owner[slate] = ev.users
    item_kappa = cohen_kappa(p >= spec.item_threshold, ev.labels)
    quality = measure(
        "relevance",
        split.model_id,
        judged,
        human,
        kappa_floor=rubric.kappa_floor,
        scores=np.bincount(slate, weights=p) / size,
        groups=owner,
        unit="slate",
        seed=seed,
        protocol=f"{labels.protocol}; blend fitted at even odds (one never-chosen item per later interaction); "
        f"one slate per evaluation user ({len(size)} slates, median size {int(np.median(size))}): their later "
        f"interactions and a random number (uniform, up to two per interaction) of never-chosen items; human "
        f"pass rate {human.mean():.2f}; pass when >= {spec.pass_threshold} of its items reach P >= "
        f"{spec.item_threshold}, against the share really chosen later; item-level kappa {item_kappa:.3f} "
        f"on {len(p)} pairs",
    )
    full = ImplicitCommittee().fit(data)
    full.blend = split.blend
    return full, quality


def criterion_trust(
    rubric: RubricSpec,
    *,
    relevance: JudgeQuality | None = None,
    golden: Mapping[str, JudgeQuality] | None = None,
) -> dict[str, Trust]:
    """Trust per rubric criterion from the measurements available."""
    out: dict[str, Trust] = {}
    golden = golden or {}
    for c in rubric.criteria:
        q = golden.get(c.name) if c.member != "recommender" else (relevance or golden.get(c.name))
        if c.member == "program":
            out[c.name] = Trust(c.name, c.member, True, f"exact program check ({c.check})", q)
        elif q is None:
            where = "later real ratings" if c.member == "recommender" else "a golden set with human labels"
            out[c.name] = Trust(c.name, c.member, False, f"judge quality not measured (needs {where})")
        else:
            out[c.name] = Trust(c.name, c.member, q.may_gate, f"{q.judge}: {q.reason()}", q)
    return out


def kappa_table(trust: Mapping[str, Trust]) -> list[dict[str, Any]]:
    """Rows for reports: criterion, member, kappa, n, may gate, why."""
    rows = []
    for t in trust.values():
        q = t.quality
        rows.append(
            {
                "criterion": t.criterion,
                "member": t.member,
                "kappa": None if q is None else round(q.kappa, 3),
                "n": None if q is None else q.n,
                "auc": None if q is None or q.auc is None else round(float(q.auc), 3),
                "may_gate": t.may_gate,
                "why": t.reason,
            }
        )
    return rows


def measured_request_match(
    rows: Sequence[Mapping[str, Any]],
    catalog: Catalog,
    popularity: np.ndarray,
    rubric: RubricSpec,
    calibration_dialogs: set[str],
    evaluation_dialogs: set[str],
    *,
    seed: int = 0,
    window: int = 50,
    max_requests: int = 400,
    co_mention: bool = True,
) -> tuple[RequestMatchCommittee, JudgeQuality]:
    """The request-match committee for the coach, from the bundled ReDial requests: positives
    are the human recommender's next movies (linked, not mentioned before), negatives one
    popularity-matched catalog movie per positive (among the `window` nearest in popularity,
    never a target or mention of the dialog); the blend and threshold are fitted on
    `calibration_dialogs` (the selection dialogs) and the quality measured per (request, item)
    pair on `evaluation_dialogs` (the unused dialogs: never the gate's), CI by dialog. At most
    `max_requests` requests (seeded) of each part are labelled: every request costs a sentence
    encoding.

    With `co_mention`, the committee also has a `CoMentionMember` learned from every turn of the
    calibration dialogs; the calibration pairs' co-mention features are cross-fitted (two halves
    of the calibration dialogs, each featurised by the member learned on the other), so the
    blend does not learn to trust counts that include the pair's own dialog."""
    members = default_members(catalog, popularity)
    mention_member = next(m for m in members if isinstance(m, MentionMember))
    co = CoMentionMember(mention_member) if co_mention else None
    committee = RequestMatchCommittee([*members, co] if co is not None else members)
    order = np.argsort(-np.asarray(popularity, dtype=np.float64), kind="stable")
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    rng = np.random.default_rng(seed)
    by_dialog: dict[str, set[int]] = {}
    for r in rows:
        by_dialog.setdefault(r["dialog_id"], set()).update(committee.rows([*r["targets"], *r["mentions"]]).tolist())
    chosen: list[Mapping[str, Any]] = []
    for keep in (calibration_dialogs, evaluation_dialogs):
        mine = [r for r in rows if r["dialog_id"] in keep]
        chosen += [mine[i] for i in sorted(rng.permutation(len(mine))[:max_requests].tolist())]
    halves = split_dialogs(sorted(calibration_dialogs), seed)
    labelled: list[tuple[str, Turns, np.ndarray, np.ndarray, str]] = []  # part, turns, items, labels, dialog
    for r in chosen:
        part = (
            "ev"
            if r["dialog_id"] in evaluation_dialogs
            else ("cal0" if r["dialog_id"] in halves[0] else "cal1")
            if r["dialog_id"] in calibration_dialogs
            else None
        )
        turns = request_turns(r["context"])
        if part is None or not any(s == "seeker" and u.strip() for s, u in turns):
            continue
        pos = committee.rows(r["targets"])
        pos = pos[pos >= 0]
        forbidden = by_dialog[r["dialog_id"]]
        neg = []
        for p in pos.tolist():
            lo = max(0, int(rank[p]) - window // 2)
            pool = [int(i) for i in order[lo : lo + window] if int(i) not in forbidden]
            if pool:
                neg.append(pool[int(rng.integers(len(pool)))])
        items = np.concatenate([pos, np.asarray(neg, dtype=np.int64)])
        if len(items):
            labels = np.r_[np.ones(len(pos), bool), np.zeros(len(neg), bool)]
            labelled.append((part, turns, items, labels, r["dialog_id"]))
    if not any(p.startswith("cal") for p, *_ in labelled) or not any(p == "ev" for p, *_ in labelled):
        raise ValueError("request_match: no labelled pairs in the calibration or the evaluation dialogs")

    emb = next(m for m in members if isinstance(m, EmbeddingMember))
    emb.encode(sorted({u for _, turns, *_ in labelled for u in emb.texts(turns) + seeker_texts(turns, emb.max_turns)}))
    features: dict[str, list[np.ndarray]] = {"cal": [], "ev": []}
    ys: dict[str, list[np.ndarray]] = {"cal": [], "ev": []}
    ev_dialogs: list[str] = []
    passes = [("cal0", halves[1]), ("cal1", halves[0]), ("ev", calibration_dialogs)]
    for part, learn_on in passes:
        if co is not None:
            co.fit(rows, dialogs=learn_on)
        for p, turns, items, labels, dialog in labelled:
            if p != part:
                continue
            key = "ev" if part == "ev" else "cal"
            features[key].append(committee.feature_matrix(turns, items))
            ys[key].append(labels)
            if key == "ev":
                ev_dialogs.extend([dialog] * len(items))
    cal = (np.vstack(features["cal"]), np.concatenate(ys["cal"]))
    ev = (np.vstack(features["ev"]), np.concatenate(ys["ev"]), np.asarray(ev_dialogs, dtype=object))
    protocol = (
        "ReDial requests linked to the catalog: the human recommender's next movies vs "
        f"popularity-matched negatives; blend fitted on {len(calibration_dialogs)} selection dialogs, measured "
        f"on {len(set(ev[2].tolist()))} unused dialogs (never the gate's), per (request, item) pair"
        + (
            f"; co-mention member learned on the selection dialogs' {co.turns} turns (cross-fitted in two halves "
            "for the calibration pairs)"
            if co is not None
            else ""
        )
    )
    return committee, request_match_quality(
        committee, cal, ev, kappa_floor=rubric.kappa_floor, protocol=protocol, seed=seed
    )


def split_dialogs(dialogs: Sequence[str], seed: int) -> tuple[set[str], set[str]]:
    """Two seeded halves of `dialogs` (cross-fitting inside the calibration dialogs)."""
    order = np.random.default_rng(seed + 7).permutation(len(dialogs))
    half = len(dialogs) // 2
    return {dialogs[i] for i in order[:half]}, {dialogs[i] for i in order[half:]}
