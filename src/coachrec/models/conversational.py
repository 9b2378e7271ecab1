"""Scorers over a conversational data set's candidate set, learned from conversations or
borrowed zero-shot from a catalog's interactions.

- `CoMention`: popularity of targets and mentions in the training dialogs, plus co-mention
  counts: entities mentioned earlier in a dialog (movies, and also genres, people: ReDial
  annotates them) -> the movies recommended next, each pair weighted by how recently the
  entity was mentioned (`recency ** age`, age in utterances), every source's row shrunk
  towards zero by `shrink` (a source seen a few times says little). No text is read.
- `MentionKNN`: zero-shot: a recommender fitted on another catalog's interactions (item-kNN
  on MovieLens latest-small), fed the linked movies mentioned so far as a history; candidates
  the linker could not place score below every linked one.
- `cross_fit`: two (or more) folds by dialog id (seeded); fit on the other folds, score this
  one, so every target is scored by a model that never saw its dialog. `tune_co_mention`
  picks the settings by an inner split of the training dialogs only.

Every scorer gives `scorer(conv)`, the `score(turns)` function `coachrec.metrics.conversational.conv_full` takes.

Served: `CoMentionRecommender` (name "co-mention") is the same co-mention learning over a
catalog's item indices, a `BaseRecommender` a `Stack` serves as one more retriever (its history:
the titles the understand stage found in the conversation, oldest first):

    from coachrec import datasets
    from coachrec.models.conversational import CoMentionRecommender, conversation_dialogs
    from coachrec.serve import Stack

    ml = datasets.load("ml-latest-small")
    reqs = datasets.requests("redial-ml")             # 2,825 ReDial turns linked to ml-latest-small
    fit_ids, blend_ids = conversation_dialogs(reqs, 2, seed=0)   # two disjoint halves of the dialogs
    model = CoMentionRecommender().fit_conversations(reqs, ml.catalog, dialogs=fit_ids)
    stack = Stack.fit(ml).with_model(model, blend_on=[r for r in reqs if r["dialog_id"] in blend_ids])
    # or in one call (inner split, blend learned on dialogs the blend's co-mention never saw):
    stack = Stack.fit(ml).learn_conversations(reqs, dialogs=selection_ids, seed=0)

`fit_conversations(conversations, catalog, *, dialogs=None, links=None)`: `conversations` are
request records (`dialog_id`, `mentions` and `targets`: raw item ids of `catalog`, mentions oldest
first; the bundled `datasets.requests("redial-ml")` format) or a `Conversations` (then `links`, a
`CandidateLinks` to `catalog`, default `link_conversations(conv, catalog)`); `dialogs` keeps only
those dialog ids. Saved and loaded like any model (`Stack.save/load` work).

Text keys: with `key_weight > 0`, a record's `keys` (what its conversation's words ask for,
`kind:value` oldest first, "genre:horror", "tag:adam sandler", "year:-1979", read by the served
intent parser: `coachrec.serve.understanding.text_keys`; the bundled records carry them) are
co-mention sources too, each with its own rows, so "people who asked for something scary were
then recommended Y" is learned. `score_keyed(histories, keys)` reads them; a served stack's
`KeyedRetriever` hands it the keys of the request's own text (nothing else: no annotation).
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import polars as pl
import scipy.sparse as sp

from coachrec.data import Catalog, Dataset, IdMap
from coachrec.data.conversations import Conversations
from coachrec.data.linking import CandidateLinks
from coachrec.metrics.conversational import Match, aggregate, conv_full
from coachrec.models.base import BaseRecommender
from coachrec.models.row_sum import weighted_row_sums
from coachrec.progress import SILENT, Progress

__all__ = [
    "CO_MENTION_GRID", "CO_MENTION_RECOMMENDER_GRID", "CoMention", "CoMentionConfig", "CoMentionRecommender",
    "CoMentionRecommenderConfig", "ConversationScorer", "DialogPopularity", "MentionKNN", "conversation_dialogs",
    "cross_fit", "linked_records", "records_recall", "tune_co_mention", "tune_co_mention_recommender",
]  # fmt: skip

ScoreFn = Callable[[np.ndarray], np.ndarray]


class ConversationScorer(Protocol):
    name: str

    def scorer(self, conv: Conversations) -> ScoreFn:
        """`score(turns)` over `conv`'s candidate columns for turn indices of `conv`."""


# ---------------------------------------------------------------------- learned from dialogs
@dataclass
class CoMentionConfig:
    """`recency`: weight of a mention `age` utterances old is `recency ** age` (when pairs are
    counted and when a turn is scored). `shrink`: added to each source's total weight, in both
    count tables. `other_weight`: weight of sources that are not movies (genres, people, ...)
    relative to movies. `dialog_weight`: weight of the dialog co-occurrence table against the
    mention -> target table. `prior`: weight of the popularity prior (max-normalised).
    `mention_prior`: how much one dialog mentioning a movie adds to its popularity, against 1
    per time it is a target. `new_only`: count only targets not mentioned before (what
    conv-full scores) as targets."""

    recency: float = 0.9
    shrink: float = 10.0
    other_weight: float = 1.0
    dialog_weight: float = 1.0
    prior: float = 0.02
    mention_prior: float = 0.5
    new_only: bool = True


def _turn_mask(frame: pl.DataFrame, turns: np.ndarray) -> pl.Series:
    return pl.Series(np.isin(frame["turn"].to_numpy(), turns))


def _training_pairs(
    conv: Conversations, turns: np.ndarray, recency: float, new_only: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(source entity ids, target columns, weights) of every (earlier mention, target) pair of
    the given turns, and the target column of every counted target."""
    tg = conv.targets.filter(_turn_mask(conv.targets, turns))
    if new_only:
        tg = tg.filter(pl.col("condition") == "rec")
    t_cols = conv.column(tg["target"].to_numpy())
    keep = t_cols >= 0
    t_turns, t_cols = tg["turn"].to_numpy()[keep], t_cols[keep]
    prev, ages = conv.mentions(t_turns)
    lengths = np.array([len(p) for p in prev], dtype=np.int64)
    src = np.fromiter(itertools.chain.from_iterable(prev), dtype=np.int64, count=int(lengths.sum()))
    age = np.fromiter(itertools.chain.from_iterable(ages), dtype=np.float64, count=int(lengths.sum()))
    cols = np.repeat(t_cols, lengths)
    w = np.power(recency, age)
    self_pair = conv.column(src) == cols
    return src[~self_pair], cols[~self_pair], w[~self_pair], t_cols


def _dialog_entities(conv: Conversations, turns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(dialog code, entity id) of every distinct entity mentioned or recommended in the
    dialogs of the given turns (only what those turns show: earlier mentions and targets)."""
    sub = conv.turns.filter(_turn_mask(conv.turns, turns)).select(
        "dialog_id", pl.concat_list("prev_entity", "targets").alias("e")
    )
    pairs = sub.explode("e").drop_nulls().unique()
    codes = pairs["dialog_id"].cast(pl.Categorical).to_physical().to_numpy().astype(np.int64)
    return codes, pairs["e"].to_numpy()


def _row_normalised(counts: sp.csr_matrix, shrink: float) -> sp.csr_matrix:
    totals = np.asarray(counts.sum(axis=1)).ravel()
    return sp.csr_matrix(sp.diags(1.0 / (totals + shrink)) @ counts, dtype=np.float32)


class CoMention:
    """Popularity + co-mention counts learned from the training turns of a `Conversations`.

    Two count tables, entity x candidate, each row divided by its total plus `shrink` (an
    estimate of P(candidate | source) shrunk towards zero for rare sources):
    - mention -> target: for every target of a training turn, each entity mentioned earlier
      in its dialog, weighted `recency ** age`;
    - dialog co-occurrence: 1 for every (entity, movie) pair that occurs in the same training
      dialog (mentioned or recommended; a movie not with itself).
    A turn's score sums, over its earlier mentions, `recency ** age` (times `other_weight` for
    non-movies) times (mention -> target row + `dialog_weight` * dialog row), plus `prior` *
    popularity."""

    name = "co-mention"
    Config = CoMentionConfig

    def __init__(self, config: CoMentionConfig | None = None, **overrides: Any):
        self.config = dataclasses.replace(config or CoMentionConfig(), **overrides)
        self.matrix: sp.csr_matrix | None = None

    def fit(self, conv: Conversations, turns: np.ndarray | Sequence[int] | None = None) -> CoMention:
        """Count on the given turn indices (default: all turns of `conv`)."""
        c = self.config
        turns = conv.turns["turn"].to_numpy() if turns is None else np.asarray(turns, dtype=np.int64)
        self.entity_ids = conv.entities["id"].to_numpy()
        self.is_movie = conv.entities["is_movie"].to_numpy()
        n_e, n_c = len(self.entity_ids), conv.n_candidates
        self.n_candidates = n_c
        src, cols, w, t_cols = _training_pairs(conv, turns, c.recency, c.new_only)
        directed = sp.csr_matrix((w, (np.searchsorted(self.entity_ids, src), cols)), shape=(n_e, n_c))
        codes, ents = _dialog_entities(conv, turns)
        n_d = int(codes.max()) + 1 if len(codes) else 0
        incidence = sp.csr_matrix(
            (np.ones(len(ents)), (codes, np.searchsorted(self.entity_ids, ents))), shape=(n_d, n_e)
        )
        e_cols = conv.column(ents)
        m = e_cols >= 0
        movies = sp.csr_matrix((np.ones(int(m.sum())), (codes[m], e_cols[m])), shape=(n_d, n_c))
        dialog = (incidence.T @ movies).tocoo()
        not_self = self.entity_ids[dialog.row] != conv.candidates[dialog.col]
        dialog = sp.csr_matrix((dialog.data[not_self], (dialog.row[not_self], dialog.col[not_self])), shape=(n_e, n_c))
        self.matrix = (
            _row_normalised(directed, c.shrink) + c.dialog_weight * _row_normalised(dialog, c.shrink)
        ).tocsr()
        pop = np.bincount(t_cols, minlength=n_c).astype(np.float64)
        mentioned = (
            conv.turns.filter(_turn_mask(conv.turns, turns)).select("dialog_id", "prev_entity").explode("prev_entity")
        )
        m_cols = conv.column(mentioned.drop_nulls().unique()["prev_entity"].to_numpy())
        pop += c.mention_prior * np.bincount(m_cols[m_cols >= 0], minlength=n_c)
        self.popularity = (pop / max(pop.max(), 1.0)).astype(np.float32)
        return self

    def score_mentions(
        self, mentions: Sequence[Sequence[int]], ages: Sequence[Sequence[int]] | None = None
    ) -> np.ndarray:
        """Scores of every candidate column for each list of mentioned entity ids (with their
        ages in utterances; default 0). Unknown entity ids are ignored."""
        if self.matrix is None:
            raise RuntimeError("co-mention: not fitted; call fit(conv, turns)")
        c = self.config
        lengths = np.array([len(m) for m in mentions], dtype=np.int64)
        ids = np.fromiter(itertools.chain.from_iterable(mentions), dtype=np.int64, count=int(lengths.sum()))
        age = (
            np.zeros(len(ids))
            if ages is None
            else np.fromiter(itertools.chain.from_iterable(ages), dtype=np.float64, count=int(lengths.sum()))
        )
        rows = np.repeat(np.arange(len(mentions)), lengths)
        pos = np.searchsorted(self.entity_ids, ids).clip(max=len(self.entity_ids) - 1)
        known = self.entity_ids[pos] == ids
        w = np.power(c.recency, age) * np.where(self.is_movie[pos], 1.0, c.other_weight)
        x = sp.csr_matrix((w[known], (rows[known], pos[known])), shape=(len(mentions), len(self.entity_ids)))
        out = np.asarray((x @ self.matrix).todense(), dtype=np.float32)
        out += c.prior * self.popularity
        return out

    def scorer(self, conv: Conversations) -> ScoreFn:
        def score(turns: np.ndarray) -> np.ndarray:
            prev, ages = conv.mentions(turns)
            return self.score_mentions(prev, ages)

        return score


class DialogPopularity:
    """How often each candidate was a target (and, at `mention_prior`, mentioned) in the
    training turns, whatever the conversation: `CoMention` without its co-mention part."""

    name = "popularity"

    def __init__(self, mention_prior: float = 0.5):
        self.inner = CoMention(prior=1.0, mention_prior=mention_prior, dialog_weight=0.0)

    def fit(self, conv: Conversations, turns: np.ndarray | Sequence[int] | None = None) -> DialogPopularity:
        self.inner.fit(conv, turns)
        return self

    def scorer(self, conv: Conversations) -> ScoreFn:
        pop = self.inner.popularity

        def score(turns: np.ndarray) -> np.ndarray:
            return np.broadcast_to(pop, (len(turns), len(pop))).copy()

        return score


# ---------------------------------------------------------------------- zero-shot from a catalog
class MentionKNN:
    """A recommender fitted on a catalog's interactions (`model.score(histories)` over the
    catalog's items), fed each turn's linked earlier-mentioned movies, oldest first. Linked
    candidates get the model's score, unlinked ones one less than the lowest linked score, so
    they tie below all of them (pessimistic ties make them misses unless nothing is linked)."""

    name = "mention-knn"

    def __init__(self, model: Any, links: CandidateLinks):
        self.model = model
        self.links = links
        if int(getattr(model, "n_items", len(links.item))) <= int(links.item.max(initial=-1)):
            raise ValueError("the links point at items the model does not have: link against the model's own catalog")

    def histories(self, conv: Conversations, turns: np.ndarray) -> list[np.ndarray]:
        prev, _ = conv.mentions(turns)
        return [self.links.history(conv.column(p)) for p in prev]

    def score_histories(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        item = self.links.item
        linked = item >= 0
        s = np.asarray(self.model.score(list(histories)), dtype=np.float32)
        out = np.empty((len(histories), len(item)), dtype=np.float32)
        vals = s[:, item[linked]]
        out[:, linked] = vals
        low = vals.min(axis=1, keepdims=True) if vals.size else np.zeros((len(histories), 1), np.float32)
        out[:, ~linked] = low - 1.0
        return out

    def scorer(self, conv: Conversations) -> ScoreFn:
        def score(turns: np.ndarray) -> np.ndarray:
            return self.score_histories(self.histories(conv, turns))

        return score


# ---------------------------------------------------------------------- cross-fitting and tuning
#: the settings `tune_co_mention` searches by default
CO_MENTION_GRID: dict[str, Sequence[Any]] = {
    "dialog_weight": (0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0),
    "recency": (0.7, 0.8, 0.9, 1.0),
    "shrink": (2.0, 5.0, 10.0, 20.0, 40.0, 80.0),
    "other_weight": (0.25, 0.5, 1.0, 1.5),
    "prior": (0.005, 0.02, 0.05, 0.1),
}


def _split_turns(conv: Conversations, turns: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    sub = conv.subset(turns)
    return sub.folds(n_folds, seed)


def tune_co_mention(
    conv: Conversations,
    turns: np.ndarray,
    *,
    grid: Mapping[str, Sequence[Any]] | None = None,
    metric: str = "recall@10",
    seed: int = 0,
    match: Match = "name",
    base: CoMentionConfig | None = None,
    progress: Progress = SILENT,
) -> tuple[CoMentionConfig, list[dict[str, Any]]]:
    """The `CoMention` settings with the best mean `metric` over an inner two-fold split (by
    dialog, seeded) of the given training turns only, and every setting's score. A coordinate
    search: one setting at a time over its grid values, the others held, twice round."""
    grid = dict(CO_MENTION_GRID if grid is None else grid)
    turns = np.asarray(turns, dtype=np.int64)
    inner = _split_turns(conv, turns, 2, seed + 1)
    parts = [(turns[inner != k], conv.subset(turns[inner == k])) for k in range(2)]
    tried: dict[tuple[tuple[str, Any], ...], float] = {}
    log: list[dict[str, Any]] = []

    def value(cfg: CoMentionConfig) -> float:
        key = tuple(sorted((k, getattr(cfg, k)) for k in grid))
        if key not in tried:
            vals = [
                aggregate(conv_full(CoMention(cfg).fit(conv, tr).scorer(held), held, match=match))[metric]
                for tr, held in parts
            ]
            tried[key] = float(np.mean(vals))
            log.append(dict(key) | {metric: tried[key]})
        return tried[key]

    best = base or CoMentionConfig()
    best_v = value(best)
    with progress.bar("tune co-mention", 2 * len(grid)) as advance:
        done = 0
        for _ in range(2):
            for name, values in grid.items():
                for v in values:
                    cand = dataclasses.replace(best, **{name: v})
                    cv = value(cand)
                    if cv > best_v + 1e-12:
                        best, best_v = cand, cv
                done += 1
                advance(done, 2 * len(grid))
    return best, log


def cross_fit(
    conv: Conversations,
    fit: Callable[[Conversations, np.ndarray], ConversationScorer],
    *,
    n_folds: int = 2,
    seed: int = 0,
    match: Match = "name",
    progress: Progress = SILENT,
) -> tuple[pl.DataFrame, list[ConversationScorer]]:
    """Per-target conv-full rows of every target of `conv`, each fold's targets scored by
    `fit(conv, training turn indices)` fitted on the other folds (by dialog, `conv.folds`).
    The rows get a `fold` column; the fitted scorers are returned in fold order."""
    folds = conv.folds(n_folds, seed)
    turns = conv.turns["turn"].to_numpy()
    out, models = [], []
    for k in range(n_folds):
        progress.step(
            f"fold {k + 1} of {n_folds}: fit on {int((folds != k).sum()):,} turns, score {int((folds == k).sum()):,}"
        )
        model = fit(conv, turns[folds != k])
        held = conv.subset(turns[folds == k])
        out.append(conv_full(model.scorer(held), held, match=match).with_columns(pl.lit(k).alias("fold")))
        models.append(model)
    return pl.concat(out).sort("turn", "position"), models


# ---------------------------------------------------------------------- served: over a catalog's items
@dataclass
class CoMentionRecommenderConfig:
    """As `CoMentionConfig`, over catalog items: `recency` weighs a mention `age` places back in
    the history (the most recent: age 0) by `recency ** age`, when pairs are counted and when a
    history is scored; `shrink` is added to each source item's total weight; `dialog_weight`
    weighs the dialog co-occurrence table against the mention -> target one; `prior` the
    popularity prior (max-normalised); `mention_prior` what one dialog mentioning an item adds
    to its popularity against 1 per time it is a target. `key_weight`: see below; the keys
    are counted like items (their own recency over the keys, their own rows in both tables)."""

    recency: float = 0.9
    shrink: float = 20.0
    dialog_weight: float = 8.0
    prior: float = 0.02
    mention_prior: float = 0.5
    key_weight: float = 1.0
    """Weight of the records' text `keys` (what the words asked for: "genre:comedy", "tag:tom
    hanks", ... oldest first) as co-mention sources beside the mentioned items (1: as much as an
    item); 0 learns no key rows (items only, as before keys). Records without `keys` learn none
    either way. On ReDial (served stack, 2 folds, `coachrec bench conversational-goal
    --served-only`) 1 against 0: R@10 +0.0306 [+0.0233, +0.0377], NDCG@10 +0.0158."""


ConversationRecords = Sequence[Mapping[str, Any]]


def conversation_dialogs(records: ConversationRecords, n_folds: int = 2, seed: int = 0) -> list[set[str]]:
    """The records' dialog ids in `n_folds` disjoint sets (seeded, by dialog id): fit on one,
    learn the blend or evaluate on another."""
    dialogs = sorted({str(r["dialog_id"]) for r in records})
    order = np.random.default_rng(seed).permutation(len(dialogs))
    out: list[set[str]] = [set() for _ in range(n_folds)]
    for rank, i in enumerate(order.tolist()):
        out[rank % n_folds].add(dialogs[i])
    return out


def linked_records(
    conv: Conversations, links: CandidateLinks, item_ids: Sequence[str], turns: np.ndarray | None = None
) -> list[dict[str, Any]]:
    """Request records (the bundled `redial-ml` layout: `dialog_id`, `turn`, `mentions`,
    `targets` as raw catalog ids) of `conv`'s turns, movies through `links`: mentions are the
    linked movies mentioned before (oldest first), targets the linked ones not mentioned before.
    Every turn is kept (one without a linked target still shows what its dialog mentions)."""
    ids = np.asarray(item_ids, dtype=object)
    chosen = conv.turns if turns is None else conv.turns.filter(_turn_mask(conv.turns, np.asarray(turns)))
    out: list[dict[str, Any]] = []
    for row in chosen.iter_rows(named=True):
        prev, ages = conv.mentions(np.asarray([row["turn"]]))
        order = np.argsort(-np.asarray(ages[0], dtype=np.int64), kind="stable")  # oldest first
        mentioned = links.history(conv.column(np.asarray(prev[0], dtype=np.int64)[order]))
        mentioned = np.asarray(list(dict.fromkeys(mentioned.tolist())), dtype=np.int64)
        seen = set(mentioned.tolist())
        targets = list(dict.fromkeys(links.history(conv.column(np.asarray(row["targets"] or []))).tolist()))
        out.append({
            "dialog_id": str(row["dialog_id"]), "turn": int(row["turn"]),
            "mentions": [str(ids[i]) for i in mentioned.tolist()],
            "targets": [str(ids[i]) for i in targets if i not in seen],
        })  # fmt: skip
    return out


class CoMentionRecommender(BaseRecommender):
    """Co-mention learning from conversations, over a catalog's item indices (see the module
    docstring for the API). Two tables, item x item, each row divided by its total + `shrink`:
    mention -> target (every item mentioned before a turn -> each new target of that turn,
    weighted `recency ** age`) and dialog co-occurrence (1 per pair of items in the same dialog,
    mentioned or recommended). A history scores the recency-weighted sum of its items' rows
    (mention -> target + `dialog_weight` * co-occurrence) plus `prior` * popularity (targets,
    and dialogs mentioning the item at `mention_prior`). No text is read."""

    name = "co-mention"
    Config = CoMentionRecommenderConfig
    matrix: sp.csr_matrix
    popularity: np.ndarray

    def _fit(self, data: Dataset) -> None:
        raise TypeError(
            "co-mention learns from conversations, not from a Dataset: "
            "call fit_conversations(records_or_conversations, catalog, dialogs=...)"
        )

    def fit_conversations(
        self,
        conversations: ConversationRecords | Conversations,
        catalog: Catalog,
        *,
        dialogs: Iterable[str] | None = None,
        links: CandidateLinks | None = None,
    ) -> CoMentionRecommender:
        """Count on the conversations' (or the `dialogs` subset's) turns; items are `catalog`'s.
        Raises `ValueError` when no turn has a target in the catalog (nothing to learn)."""
        t0 = time.perf_counter()
        if isinstance(conversations, Conversations):
            if links is None:
                from coachrec.data.linking import link_conversations

                links = link_conversations(conversations, catalog)
            records: ConversationRecords = linked_records(conversations, links, [str(i) for i in catalog.items.ids])
        else:
            records = conversations
        if dialogs is not None:
            keep = {str(d) for d in dialogs}
            records = [r for r in records if str(r["dialog_id"]) in keep]
        index = {str(raw): i for i, raw in enumerate(catalog.items.ids.tolist())}
        unknown = 0

        def encode(raw: Sequence[Any]) -> list[int]:
            nonlocal unknown
            out = [index.get(str(x), -1) for x in raw]
            unknown += sum(1 for o in out if o < 0)
            return [o for o in out if o >= 0]

        n = len(index)
        use_keys = self.config.key_weight > 0
        key_index: dict[str, int] = {}
        src: list[int] = []
        dst: list[int] = []
        wts: list[float] = []
        targets_all: list[int] = []
        by_dialog: dict[str, set[int]] = {}
        keys_in: dict[str, set[int]] = {}
        mentioned_in: dict[str, set[int]] = {}
        rec = self.config.recency
        for r in records:
            mentions, targets = encode(r.get("mentions") or []), encode(r.get("targets") or [])
            d = str(r["dialog_id"])
            by_dialog.setdefault(d, set()).update(mentions, targets)
            mentioned_in.setdefault(d, set()).update(mentions)
            targets_all += targets
            sources = [list(reversed(mentions))]
            if use_keys:  # key rows come after the catalog's items
                keys = [n + key_index.setdefault(str(k), len(key_index)) for k in _ordered_keys(r.get("keys"))]
                keys_in.setdefault(d, set()).update(keys)
                sources.append(list(reversed(keys)))
            for newest_first in sources:
                for age, m in enumerate(newest_first):
                    for t in targets:
                        if t != m:
                            src.append(m)
                            dst.append(t)
                            wts.append(rec**age)
        if not targets_all:
            raise ValueError("co-mention: no conversation turn has a target in this catalog; nothing to learn")
        n_src = n + len(key_index)
        directed = sp.csr_matrix((np.asarray(wts), (np.asarray(src, np.int64), np.asarray(dst, np.int64))), (n_src, n))
        rows, cols = [], []
        for d, items in by_dialog.items():
            ii = np.fromiter(items, dtype=np.int64)
            a, b = np.meshgrid(ii, ii, indexing="ij")
            off = a != b
            rows.append(a[off])
            cols.append(b[off])
            kk = np.fromiter(keys_in.get(d, ()), dtype=np.int64)
            if len(kk) and len(ii):
                ka, kb = np.meshgrid(kk, ii, indexing="ij")
                rows.append(ka.ravel())
                cols.append(kb.ravel())
        r_all = np.concatenate(rows) if rows else np.zeros(0, np.int64)
        c_all = np.concatenate(cols) if cols else np.zeros(0, np.int64)
        dialog = sp.csr_matrix((np.ones(len(r_all)), (r_all, c_all)), (n_src, n))
        shrink = self.config.shrink
        self.matrix = (
            _row_normalised(directed, shrink) + self.config.dialog_weight * _row_normalised(dialog, shrink)
        ).tocsr()
        pop = np.bincount(np.asarray(targets_all, np.int64), minlength=n).astype(np.float64)
        ments = np.fromiter((i for s in mentioned_in.values() for i in s), dtype=np.int64)
        pop += self.config.mention_prior * np.bincount(ments, minlength=n)
        self.popularity = (pop / max(float(pop.max()), 1.0)).astype(np.float32)
        self.items, self.users = catalog.items, IdMap([])
        self.keys = np.asarray(list(key_index), dtype=str)
        self._key_index = key_index
        self._hist_indptr, self._hist_items = np.zeros(1, np.int64), np.zeros(0, np.int64)
        self.fit_info = {
            "fit_on": "conversations",
            "dialogs": len(by_dialog),
            "turns": len(records),
            "targets": len(targets_all),
            "unknown_ids": unknown,
            "items": n,
            "keys": len(key_index),
            "pairs": int(self.matrix.nnz),
            "seconds": round(time.perf_counter() - t0, 3),
        }
        return self

    def _score(self, histories: list[np.ndarray]) -> np.ndarray:
        return self.score_keyed(histories, None)

    @property
    def n_keys(self) -> int:
        """How many text keys the model learned rows for (0: it reads items only)."""
        return int(self.matrix.shape[0] - self.matrix.shape[1])

    def score_keyed(self, histories: Sequence[np.ndarray], keys: Sequence[Sequence[str]] | None) -> np.ndarray:
        """Scores of every item for each history (item indices, oldest first) and, when the
        model learned key rows, each request's text keys (oldest first; `key_weight` times the
        recency weight among the keys; unknown keys are ignored). `score(histories)` is this
        without keys."""
        lengths = np.array([len(h) for h in histories], dtype=np.int64)
        items = (
            np.concatenate([np.asarray(h, np.int64) for h in histories]) if len(histories) else np.zeros(0, np.int64)
        )
        rows = np.repeat(np.arange(len(histories)), lengths)
        age = np.concatenate([np.arange(k - 1, -1, -1) for k in lengths]) if len(items) else np.zeros(0)
        w = np.power(self.config.recency, age.astype(np.float64))
        if keys is not None and self.n_keys:
            if len(keys) != len(histories):
                raise ValueError(f"keys: {len(keys)} lists for {len(histories)} histories")
            index, n = self._keys(), self.matrix.shape[1]
            k_rows, k_cols, k_w = [], [], []
            for i, ks in enumerate(keys):
                known = [n + index[k] for k in _ordered_keys(ks) if k in index]
                for a, col in enumerate(reversed(known)):
                    k_rows.append(i)
                    k_cols.append(col)
                    k_w.append(self.config.key_weight * self.config.recency**a)
            rows = np.concatenate([rows, np.asarray(k_rows, np.int64)])
            items = np.concatenate([items, np.asarray(k_cols, np.int64)])
            w = np.concatenate([w, np.asarray(k_w, np.float64)])
        out = weighted_row_sums(self.matrix, rows, items, w, len(histories)).astype(np.float32)
        out += self.config.prior * self.popularity
        return out

    def _keys(self) -> dict[str, int]:
        index: dict[str, int] | None = self.__dict__.get("_key_index")
        if index is None:
            index = {str(k): j for j, k in enumerate(getattr(self, "keys", np.zeros(0, str)).tolist())}
            self._key_index = index
        return index

    def _state(self) -> dict[str, np.ndarray]:
        m = self.matrix
        return {"data": m.data, "indices": m.indices, "indptr": m.indptr, "popularity": self.popularity,
                "keys": np.asarray(getattr(self, "keys", np.zeros(0, str)), dtype=str)}  # fmt: skip

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        n = len(state["popularity"])
        keys = np.asarray(state["keys"], dtype=str) if "keys" in state else np.zeros(0, str)  # saved before keys
        self.matrix = sp.csr_matrix((state["data"], state["indices"], state["indptr"]), shape=(n + len(keys), n))
        self.popularity = state["popularity"]
        self.keys = keys
        self.__dict__.pop("_key_index", None)


def _ordered_keys(keys: Iterable[Any] | None) -> list[str]:
    """A record's or request's keys, oldest first, each once (at its last occurrence)."""
    out: dict[str, None] = {}
    for k in keys or ():
        key = str(k)
        out.pop(key, None)
        out[key] = None
    return list(out)


CO_MENTION_RECOMMENDER_GRID: dict[str, Sequence[Any]] = {
    "key_weight": (0.0, 0.25, 0.5, 1.0, 2.0),
    "shrink": (10.0, 20.0, 40.0),
    "dialog_weight": (4.0, 8.0, 16.0),
}
"""What `tune_co_mention_recommender` tries by default: the weight of the text keys first,
then the two settings the keys change most (how fast a rare source's row is trusted, the
dialog table against the mention -> target one)."""


def records_recall(
    model: CoMentionRecommender, records: ConversationRecords, catalog: Catalog, k: int = 10
) -> tuple[float, int]:
    """Recall@k of `model` alone on the records' targets (raw ids of `catalog`) given their
    mentions and `keys`, the items mentioned before left out (what conv-full scores, over the
    catalog's items): (recall, targets counted)."""
    index = {str(raw): i for i, raw in enumerate(catalog.items.ids.tolist())}
    hits = total = 0
    for lo in range(0, len(records), 512):
        part = records[lo : lo + 512]
        hists = [
            np.asarray([index[str(m)] for m in r.get("mentions") or [] if str(m) in index], np.int64) for r in part
        ]
        scores = model.score_keyed(hists, [list(r.get("keys") or []) for r in part])
        for row, (r, h) in enumerate(zip(part, hists, strict=True)):
            seen = set(h.tolist())
            targets = {index[str(t)] for t in r.get("targets") or [] if str(t) in index} - seen
            if not targets:
                continue
            s = scores[row].astype(np.float64)
            s[h] = -np.inf
            top = np.argpartition(-s, min(k, len(s) - 1))[:k]
            hits += len(targets & set(top.tolist()))
            total += len(targets)
    return hits / max(total, 1), total


def tune_co_mention_recommender(
    records: ConversationRecords,
    catalog: Catalog,
    *,
    grid: Mapping[str, Sequence[Any]] | None = None,
    base: CoMentionRecommenderConfig | None = None,
    seed: int = 0,
    k: int = 10,
) -> tuple[CoMentionRecommenderConfig, list[dict[str, Any]]]:
    """The `CoMentionRecommender` settings with the best mean recall@k (`records_recall`)
    over an inner two-fold split (by dialog, `conversation_dialogs(records, 2, seed + 1)`) of
    the given records only, and every setting tried with its score. A coordinate search from
    `base` (default the defaults): one setting at a time over its grid values (default
    `CO_MENTION_RECOMMENDER_GRID`), the others held; a setting moves only when it scores
    better, so ties keep `base`. Pass only training dialogs: this reads their targets."""
    grid = dict(CO_MENTION_RECOMMENDER_GRID if grid is None else grid)
    halves = conversation_dialogs(records, 2, seed + 1)
    if any(not h for h in halves):
        raise ValueError("tune_co_mention_recommender: needs records from at least two dialogs")
    parts = [
        (
            [r for r in records if str(r["dialog_id"]) in halves[a]],
            [r for r in records if str(r["dialog_id"]) in halves[1 - a]],
        )
        for a in range(2)
    ]
    tried: dict[str, float] = {}
    log: list[dict[str, Any]] = []

    def value(cfg: CoMentionRecommenderConfig) -> float:
        key = repr(cfg)
        if key not in tried:
            vals = []
            for fit_on, score_on in parts:
                try:
                    model = CoMentionRecommender(cfg).fit_conversations(fit_on, catalog)
                except ValueError:  # no target of this half in the catalog: nothing learned, nothing found
                    vals.append(0.0)
                    continue
                vals.append(records_recall(model, score_on, catalog, k)[0])
            tried[key] = float(np.mean(vals))
            log.append(dataclasses.asdict(cfg) | {f"recall@{k}": round(tried[key], 6)})
        return tried[key]

    best = base or CoMentionRecommenderConfig()
    best_v = value(best)
    for name, values in grid.items():
        for v in values:
            cand = dataclasses.replace(best, **{name: v})
            cv = value(cand)
            if cv > best_v + 1e-12:
                best, best_v = cand, cv
    return best, log
