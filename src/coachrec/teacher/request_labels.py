"""Human labels for the `request_match` criterion, from real conversations (ReDial).

In ReDial a person (the seeker) asks for movies in their own words and another person (the
recommender) answers with movies: the recommender's answer is a human judgment of which movies
match the request. `request_labels` turns it into labelled (request, item) pairs over a catalog
(MovieLens latest-small first, through `coachrec.data.linking.link_conversations`):

- one *request* per recommender turn: its context (the utterances so far, with speakers); the
  members read the seeker's turns, the most recent weighted most (and, as further views, the
  whole conversation and the movies it names: `teacher.request_match`);
- *positives*: the turn's targets (the movies the human recommended in that response) that
  link to the catalog and were not mentioned earlier in the dialog (condition "rec"; an
  earlier-mentioned target is a repeat, not a recommendation for the request, and a served
  slate never shows it);
- *negatives*, drawn from the linked candidate set (the data set's movies that link to the
  catalog), never a target of any turn of the same dialog and never a movie mentioned earlier
  in it, `negatives` per positive by each of two samplers, reported separately:
  `uniform` (every linked candidate equally likely) and `popularity` (a candidate of about the
  positive's popularity: drawn among the `window` linked candidates nearest to it in the
  popularity order; popularity from the catalog's own interactions, e.g. MovieLens rating
  counts, so a judge cannot pass by preferring famous movies);
- every pair keeps its dialog id, and dialogs are split (seeded, `Conversations.folds`) into a
  calibration part (blend weights, thresholds) and an evaluation part (every reported figure):
  no dialog is in both.

A turn whose targets do not link, or whose context has no seeker text, gives no pairs; both are
counted in `RequestLabels.counts`, never silently dropped.

The unit is the (request, item) *pair*: the gate judges `request_match` per (request, shown
item), as the rate of shown items that do not match the request, clustered by user; trust is
therefore measured per pair, with the bootstrap clustered by dialog.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from coachrec.data.conversations import Conversations
from coachrec.data.linking import CandidateLinks

Sampler = Literal["uniform", "popularity"]
SAMPLERS: tuple[Sampler, Sampler] = ("uniform", "popularity")
Part = Literal["calibration", "evaluation", "all"]
KIND_TARGET = "target"

__all__ = ["SAMPLERS", "RequestLabels", "RequestPairs", "Sampler", "request_labels"]


@dataclass(frozen=True)
class RequestPairs:
    """Parallel arrays, one entry per labelled (request, item) pair: the request's turn index
    (`Conversations` `turn`), its dialog id, the catalog item index, the label (True: the human
    recommended it) and the kind (`target`, `uniform` or `popularity`)."""

    turns: np.ndarray
    dialogs: np.ndarray
    items: np.ndarray
    labels: np.ndarray
    kinds: np.ndarray

    def __len__(self) -> int:
        return len(self.turns)

    def take(self, mask: np.ndarray) -> RequestPairs:
        return RequestPairs(self.turns[mask], self.dialogs[mask], self.items[mask], self.labels[mask], self.kinds[mask])

    @property
    def n_positive(self) -> int:
        return int(self.labels.sum())

    @property
    def n_dialogs(self) -> int:
        return len(np.unique(self.dialogs))


@dataclass
class RequestLabels:
    """Every labelled pair (`pairs`), each request's context (`requests[turn]`: (speaker,
    utterance) oldest first), the dialogs of the calibration part, and counts of what was used
    and what was left out. `select(sampler, part)` gives the positives with one sampler's
    negatives in one part."""

    pairs: RequestPairs
    requests: dict[int, tuple[tuple[str, str], ...]]
    calibration_dialogs: frozenset[str]
    counts: dict[str, int] = field(default_factory=dict)
    protocol: str = ""

    def part_mask(self, part: Part) -> np.ndarray:
        if part == "all":
            return np.ones(len(self.pairs), dtype=bool)
        cal = np.isin(self.pairs.dialogs, np.array(sorted(self.calibration_dialogs), dtype=object))
        if part == "calibration":
            return cal
        if part == "evaluation":
            return ~cal
        raise ValueError(f"part must be 'calibration', 'evaluation' or 'all', got {part!r}")

    def select(self, sampler: Sampler | Literal["both"], part: Part = "all") -> RequestPairs:
        """Positives and the negatives of `sampler` (or of both samplers) in `part`."""
        if sampler not in (*SAMPLERS, "both"):
            raise ValueError(f"sampler must be one of {SAMPLERS} or 'both', got {sampler!r}")
        kinds = self.pairs.kinds
        keep = (kinds == KIND_TARGET) | ((kinds == sampler) if sampler != "both" else True)
        return self.pairs.take(keep & self.part_mask(part))


def _popularity_order(pool: np.ndarray, popularity: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Pool items sorted by popularity, ties in a seeded random order."""
    tiebreak = rng.permutation(len(pool))
    return pool[np.lexsort((tiebreak, popularity[pool]))]


def request_labels(
    conv: Conversations,
    links: CandidateLinks,
    popularity: Sequence[float] | np.ndarray,
    *,
    negatives: int = 1,
    window: int = 50,
    calibration_share: float = 0.5,
    seed: int = 0,
) -> RequestLabels:
    """Labelled (request, item) pairs from `conv`'s recommender turns (see the module doc).

    `links` maps `conv`'s candidates to catalog items; `popularity` has one value per catalog
    item (e.g. its interaction count) and drives the popularity-matched sampler. Dialogs are
    split into calibration and evaluation parts with `seed` (`calibration_share` of them, as
    whole dialogs, to calibration)."""
    if negatives < 1:
        raise ValueError(f"negatives must be at least 1 per positive, got {negatives}")
    if not 0 < calibration_share < 1:
        raise ValueError(f"calibration_share must be in (0, 1), got {calibration_share}")
    pop = np.asarray(popularity, dtype=np.float64)
    if links.item.max(initial=-1) >= len(pop):
        raise ValueError(f"popularity has {len(pop)} values, but the links reach item {int(links.item.max())}")
    rng = np.random.default_rng(seed)
    pool = np.unique(links.item[links.item >= 0])
    if len(pool) < 2 * negatives + 2:
        raise ValueError(f"only {len(pool)} candidates link to the catalog; too few to sample negatives from")
    by_pop = _popularity_order(pool, pop, rng)
    rank_of = {int(item): r for r, item in enumerate(by_pop.tolist())}

    def linked(entity_ids: Sequence[int]) -> list[int]:
        cols = conv.column(np.asarray(entity_ids, dtype=np.int64))
        items = links.item[cols[cols >= 0]] if len(cols) else np.zeros(0, np.int64)
        return [int(i) for i in items if i >= 0]

    tg = conv.targets
    t_turn, t_target, t_cond = tg["turn"].to_numpy(), tg["target"].to_numpy(), tg["condition"].to_list()
    dialog_targets: dict[str, set[int]] = {}
    for d, e in zip(tg["dialog_id"].to_list(), t_target.tolist(), strict=True):
        dialog_targets.setdefault(d, set()).update(linked([e]))
    targets_of: dict[int, list[tuple[int, str]]] = {}
    for t, e, c in zip(t_turn.tolist(), t_target.tolist(), t_cond, strict=True):
        targets_of.setdefault(int(t), []).append((int(e), c))

    counts = {
        "turns": conv.n_turns,
        "targets": conv.n_targets,
        "targets_mentioned_before": 0,
        "targets_unlinked": 0,
        "turns_without_linked_target": 0,
        "turns_without_seeker_text": 0,
    }
    turns_col, dialogs_col, items_col, labels_col, kinds_col = [], [], [], [], []
    requests: dict[int, tuple[tuple[str, str], ...]] = {}
    for t, d in zip(conv.turns["turn"].to_list(), conv.turns["dialog_id"].to_list(), strict=True):
        entries = targets_of.get(int(t), [])
        counts["targets_mentioned_before"] += sum(c == "dis" for _, c in entries)
        new = [e for e, c in entries if c == "rec"]
        new_items = linked(new)
        counts["targets_unlinked"] += len(new) - len(new_items)
        (prev,), _ = conv.mentions([t])
        mentioned = set(linked(prev))
        positives = list(dict.fromkeys(i for i in new_items if i not in mentioned))
        if not positives:
            counts["turns_without_linked_target"] += 1
            continue
        context = tuple((s, u) for s, u in conv.context(int(t)))
        if not any(s == "seeker" and u.strip() for s, u in context):
            counts["turns_without_seeker_text"] += 1
            continue
        requests[int(t)] = context
        forbidden = dialog_targets.get(d, set()) | mentioned
        chosen: set[int] = set()
        rows: list[tuple[int, bool, str]] = [(i, True, KIND_TARGET) for i in positives]
        for _ in range(len(positives) * negatives):
            u = _draw(rng, pool, forbidden | chosen)
            chosen.add(u)
            rows.append((u, False, "uniform"))
        chosen_pop: set[int] = set()
        for p in positives:
            centre = rank_of.get(p, int(np.searchsorted(pop[by_pop], pop[p])))
            for _ in range(negatives):
                q = _draw_near(rng, by_pop, centre, window, forbidden | chosen_pop)
                chosen_pop.add(q)
                rows.append((q, False, "popularity"))
        for item, label, kind in rows:
            turns_col.append(int(t))
            dialogs_col.append(d)
            items_col.append(item)
            labels_col.append(label)
            kinds_col.append(kind)
    pairs = RequestPairs(
        np.array(turns_col, dtype=np.int64),
        np.array(dialogs_col, dtype=object),
        np.array(items_col, dtype=np.int64),
        np.array(labels_col, dtype=bool),
        np.array(kinds_col, dtype=object),
    )
    dialogs = sorted(set(dialogs_col))
    order = np.random.default_rng(seed).permutation(len(dialogs))
    n_cal = round(calibration_share * len(dialogs))
    calibration = frozenset(dialogs[i] for i in order[:n_cal])
    counts |= {
        "requests": len(requests),
        "dialogs": len(dialogs),
        "calibration_dialogs": len(calibration),
        "positives": pairs.n_positive,
        "linked_candidates": len(pool),
    }
    protocol = (
        f"request-match pairs from {conv.source or 'conversations'}: positives = the human recommender's new targets "
        f"linked to the catalog ({counts['positives']:,} in {len(requests):,} turns of {len(dialogs):,} dialogs); "
        f"{negatives} negative(s) per positive from the {len(pool):,} linked candidates, never a target of the dialog "
        f"nor an earlier mention, uniform or popularity-matched ({window} nearest by popularity); dialogs split "
        f"{calibration_share:.0%} calibration / {1 - calibration_share:.0%} evaluation (seed {seed}); unit: pair"
    )
    return RequestLabels(pairs, requests, calibration, counts, protocol)


def _draw(rng: np.random.Generator, pool: np.ndarray, forbidden: set[int]) -> int:
    for _ in range(1000):
        item = int(pool[rng.integers(len(pool))])
        if item not in forbidden:
            return item
    free = np.setdiff1d(pool, np.fromiter(forbidden, dtype=np.int64, count=len(forbidden)))
    if not len(free):
        raise ValueError("no linked candidate is left to draw a negative from")
    return int(free[rng.integers(len(free))])


def _draw_near(rng: np.random.Generator, by_pop: np.ndarray, centre: int, window: int, forbidden: set[int]) -> int:
    """One item among the `window` allowed items nearest to rank `centre` of the popularity order."""
    near: list[int] = []
    lo, hi = centre - 1, centre + 1
    n = len(by_pop)
    while len(near) < window and (lo >= 0 or hi < n):
        for r in (hi, lo):
            if 0 <= r < n and int(by_pop[r]) not in forbidden and len(near) < window:
                near.append(int(by_pop[r]))
        lo, hi = lo - 1, hi + 1
    if not near:
        raise ValueError("no linked candidate is left to draw a popularity-matched negative from")
    return near[int(rng.integers(len(near)))]
