"""The `request_match` member of the teacher: does a shown item match what the user asked for?

Members score one (request, item) pair each, from the request's *seeker* turns (a message is
one seeker turn; in a conversation the most recent turns weigh most) and the item's catalog
text. Each gives features; a logistic blend fitted on labelled pairs of calibration dialogs
(`teacher.request_labels`: ReDial, the human recommender's movies against sampled negatives)
turns them into P(match):

- `EmbeddingMember`: MiniLM (the bundled all-MiniLM-L6-v2) cosine between the request vector
  (the recency-weighted mean of the seeker utterances' embeddings; also the whole
  conversation's, and the best single seeker utterance) and the item's text embedding
  (`Catalog.texts()`, computed once per catalog, cached on disk), each as the item's percentile
  among the catalog for that request. Judging a slate is a few matrix-vector products; each new
  utterance is encoded once (in-memory LRU cache).
- `MentionMember`: the titles the seeker names ("something like Super Troopers", found by
  `coachrec.data.linking.MentionFinder`) against the item: the MiniLM cosine of the item's
  text with each named movie's text (max and recency-weighted mean), and whether any was named.
- `LLMMember`: a per-item yes/no question to a local LLM, P(yes) from next-token logits
  (`teacher.llm_scoring.LogitScorer`, never parsed free text); its feature is logit(P(yes)).

`RequestMatchCommittee` blends one or more members (a member alone is a committee of one):

    committee = RequestMatchCommittee([EmbeddingMember(catalog), MentionMember(...)]).fit(x, y)
    committee.probability(context, item_ids)           # P(match) per item, NaN when unknown
    Judge(rubric, view, request_match=committee)        # judges the `request_match` criterion

`measured_request_match(...)` builds the labels, fits the blend on calibration dialogs and
measures it on evaluation dialogs: it returns the committee and its `JudgeQuality`, which
`coach.trust.criterion_trust(..., golden={"request_match": quality})` turns into trust.

The unit is the (request, shown item) *pair*: the gate judges `request_match` as the rate of
shown items that do not match the request, clustered by user, so trust is measured per pair
(kappa at the committee's threshold, bootstrap CI over dialogs).
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from coachrec.data import Catalog
from coachrec.llm import LLMBackend
from coachrec.models.content import DEFAULT_ENCODER, embed_texts, load_sentence_encoder
from coachrec.models.conversational import CoMentionRecommender, CoMentionRecommenderConfig
from coachrec.teacher.llm_scoring import LogitScorer
from coachrec.teacher.prompts import judge_prompt
from coachrec.teacher.quality import JudgeQuality, best_threshold, measure
from coachrec.teacher.relevance import LogisticBlend
from coachrec.teacher.request_labels import RequestLabels, RequestPairs, Sampler, request_labels

if TYPE_CHECKING:
    from coachrec.data.conversations import Conversations
    from coachrec.data.linking import CandidateLinks, MentionFinder
    from coachrec.teacher.rubric import RubricSpec

__all__ = [
    "REQUEST_MATCH", "CoMentionMember", "EmbeddingMember", "LLMMember", "MentionMember", "RequestMatchCommittee",
    "RequestMatchMember", "default_members", "measured_request_match", "pair_features", "request_match_quality",
    "request_turns", "seeker_texts",
]  # fmt: skip

REQUEST_MATCH = "request_match"
"""The rubric criterion a `RequestMatchCommittee` judges."""

Turns = tuple[tuple[str, str], ...]
SEEKERS = frozenset({"seeker", "user", "human", "customer"})
RECOMMENDERS = frozenset({"recommender", "system", "assistant", "bot", "agent"})
_PREFIX = re.compile(r"^\s*(" + "|".join(sorted(SEEKERS | RECOMMENDERS)) + r")\s*:\s?", re.IGNORECASE)


# ---------------------------------------------------------------------- request text
def request_turns(context: object) -> Turns:
    """A request's text as (speaker, utterance) turns, oldest first, speaker "seeker" or
    "recommender". A string is one seeker message, unless its lines start with speaker
    prefixes ("User: ...", "Recommender: ...", as a flattened conversation is written), in
    which case each prefixed line starts a turn. A sequence holds mappings or objects with
    `speaker` and `text`, or (speaker, text) pairs; unknown speakers count as the seeker."""
    if context is None:
        return ()
    if isinstance(context, str):
        lines = context.split("\n")
        if not any(_PREFIX.match(line) for line in lines):
            return (("seeker", context),) if context.strip() else ()
        turns: list[list[str]] = []
        for line in lines:
            m = _PREFIX.match(line)
            if m:
                side = "recommender" if m.group(1).lower() in RECOMMENDERS else "seeker"
                turns.append([side, line[m.end() :]])
            elif turns:
                turns[-1][1] += "\n" + line
            elif line.strip():
                turns.append(["seeker", line])
        return tuple((s, u) for s, u in turns)
    out: list[tuple[str, str]] = []
    for t in context:  # type: ignore[attr-defined]
        if isinstance(t, Mapping):
            speaker, text = t.get("speaker"), t.get("text")
        elif isinstance(t, tuple | list) and len(t) == 2:
            speaker, text = t
        else:
            speaker, text = getattr(t, "speaker", None), getattr(t, "text", None)
        side = "recommender" if str(speaker).lower() in RECOMMENDERS else "seeker"
        out.append((side, str(text or "")))
    return tuple(out)


def seeker_texts(turns: Turns, max_turns: int | None = None) -> list[str]:
    """The seeker's non-empty utterances, oldest first (the last `max_turns` of them)."""
    texts = [u.strip() for s, u in turns if s == "seeker" and u.strip()]
    return texts[-max_turns:] if max_turns else texts


def _recency_weights(n: int, recency: float) -> np.ndarray:
    """Weight of each of `n` utterances, oldest first: the most recent gets 1, the one before
    `recency`, and so on."""
    return np.power(recency, np.arange(n)[::-1], dtype=np.float64)


# ---------------------------------------------------------------------- members
class RequestMatchMember(Protocol):
    """Scores (request, item) pairs. `features(turns, rows)` has one row per catalog row of
    `rows`, one column per `feature_names`; NaN rows when the request has no seeker text."""

    name: str
    feature_names: tuple[str, ...]
    catalog: Catalog

    def features(self, turns: Turns, rows: np.ndarray) -> np.ndarray: ...


class _Encoder:
    """A sentence-transformers encoder held in memory, with an LRU cache of utterances."""

    def __init__(self, encoder: str, threads: int, cache_size: int) -> None:
        self.encoder = encoder
        self.threads = threads
        self.cache_size = cache_size
        self._model: Any = None
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()

    def _load(self) -> Any:
        if self._model is None:
            self._model = load_sentence_encoder(self.encoder, self.threads)
        return self._model

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """L2-normalised embeddings, (len(texts), dim)."""
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if missing:
            emb = self._load().encode(missing, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True)
            for t, e in zip(missing, np.asarray(emb, dtype=np.float32), strict=True):
                self._cache[t] = e
        out = np.stack([self._cache[t] for t in texts]) if texts else np.zeros((0, 0), np.float32)
        for t in texts:
            self._cache.move_to_end(t)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return out


class EmbeddingMember:
    """MiniLM cosine between the request and each item's text embedding, as percentiles.

    Three views of the request, each scored against every catalog item (one matrix-vector
    product per view): the seeker's utterances (recency-weighted mean embedding, the most recent
    weighing 1, the one before `recency`, ...), the whole conversation (both speakers, the same
    weights: what was already suggested and how the seeker took it), and the best single seeker
    utterance. A raw cosine means different things for a long and a short request, so each
    feature is the item's *percentile* among the catalog's cosines for that request (1 = the
    closest item). Per-request catalog scores are cached (LRU), so judging a second slate of the
    same request costs only the lookups."""

    feature_names: tuple[str, ...] = ("seeker_pct", "conversation_pct", "utterance_max_pct")

    def __init__(
        self,
        catalog: Catalog,
        *,
        encoder: str = DEFAULT_ENCODER,
        recency: float = 0.6,
        max_turns: int = 8,
        threads: int = 1,
        cache_size: int = 20_000,
        item_embeddings: np.ndarray | None = None,
    ) -> None:
        self.name = "embedding"
        self.catalog = catalog
        self.encoder_name = encoder
        self.recency = recency
        self.max_turns = max_turns
        self.threads = threads
        self._encoder = _Encoder(encoder, threads, cache_size)
        self._items = item_embeddings
        self._scored: OrderedDict[Turns, np.ndarray] = OrderedDict()

    @property
    def item_embeddings(self) -> np.ndarray:
        """One L2-normalised row per catalog item (its `Catalog.texts()` embedding)."""
        if self._items is None:
            self._items = embed_texts(self.catalog.texts(), self.encoder_name, threads=self.threads)
        return self._items

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embeddings of utterances (cached); batch many at once to warm the cache."""
        return self._encoder.encode(list(texts))

    def texts(self, turns: Turns) -> list[str]:
        """Every utterance a request's features read (to warm the encoder cache in one batch)."""
        return [u.strip() for _, u in turns if u.strip()][-self.max_turns :]

    def _weighted(self, texts: list[str]) -> np.ndarray:
        v: np.ndarray = _recency_weights(len(texts), self.recency) @ self.encode(texts)
        norm = float(np.linalg.norm(v))
        return np.asarray(v / norm if norm > 0 else v, dtype=np.float32)

    def request_vector(self, turns: Turns) -> np.ndarray | None:
        """The recency-weighted mean embedding of the seeker's utterances, normalised; None
        when the request has no seeker text."""
        texts = seeker_texts(turns, self.max_turns)
        return self._weighted(texts) if texts else None

    def catalog_scores(self, turns: Turns) -> np.ndarray | None:
        """(3, n_items) cosines of every catalog item under the three views; None without
        seeker text."""
        if turns in self._scored:
            self._scored.move_to_end(turns)
            return self._scored[turns]
        seeker = seeker_texts(turns, self.max_turns)
        if not seeker:
            return None
        e = self.item_embeddings
        utterances = self.encode(seeker)
        views = [e @ self._weighted(seeker), e @ self._weighted(self.texts(turns)), (e @ utterances.T).max(axis=1)]
        out: np.ndarray = np.vstack(views)
        self._scored[turns] = out
        while len(self._scored) > 256:
            self._scored.popitem(last=False)
        return out

    def features(self, turns: Turns, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        s = self.catalog_scores(turns)
        if s is None:
            return np.full((len(rows), 3), np.nan)
        return np.column_stack([_percentile(view, rows) for view in s])


def _percentile(scores: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Share of all entries of `scores` below each `scores[rows]`."""
    return np.asarray((scores[None, :] < scores[rows][:, None]).mean(axis=1), dtype=np.float64)


class MentionMember:
    """How close the item is to the movies the conversation names ("like Super Troopers", and
    the recommender's earlier suggestions): the titles found by `MentionFinder` in the last
    `max_turns` utterances (both speakers: which movies were discussed is part of what is
    asked for; with `seeker_only`, the seeker's alone), and the MiniLM cosine of the item's text
    with theirs, as percentiles among the catalog: the closest named movie (max) and their
    centroid; plus whether any was named. A request naming no catalog title gives (0, 0, 0)."""

    feature_names: tuple[str, ...] = ("mention_max_pct", "mention_mean_pct", "has_mention")

    def __init__(
        self,
        embedding: EmbeddingMember,
        finder: MentionFinder | None = None,
        *,
        popularity: np.ndarray | None = None,
        max_turns: int = 8,
        seeker_only: bool = False,
    ) -> None:
        from coachrec.data.linking import MentionFinder

        self.name = "mentions"
        self.embedding = embedding
        self.catalog = embedding.catalog
        self.finder = finder or MentionFinder(embedding.catalog, popularity)
        self.max_turns = max_turns
        self.seeker_only = seeker_only
        self._found: OrderedDict[str, list[int]] = OrderedDict()
        self._scored: OrderedDict[Turns, np.ndarray | None] = OrderedDict()

    def _mentions(self, text: str) -> list[int]:
        if text not in self._found:
            self._found[text] = [m.item for m in self.finder.find(text)]
            while len(self._found) > 20_000:
                self._found.popitem(last=False)
        return self._found[text]

    def mentioned(self, turns: Turns) -> np.ndarray:
        """Catalog rows of the titles named, in order of first mention."""
        said = seeker_texts(turns, self.max_turns) if self.seeker_only else self.embedding.texts(turns)
        found = [item for text in said for item in self._mentions(text)]
        return np.array(list(dict.fromkeys(found)), dtype=np.int64)

    def features(self, turns: Turns, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        if not seeker_texts(turns):
            return np.full((len(rows), 3), np.nan)
        s = self.catalog_scores(turns)
        if s is None:
            return np.zeros((len(rows), 3))
        return np.column_stack([_percentile(s[0], rows), _percentile(s[1], rows), np.ones(len(rows))])

    def catalog_scores(self, turns: Turns) -> np.ndarray | None:
        """(2, n_items): every catalog item's cosine with the closest named movie and with their
        centroid; None when no movie is named. Cached per request (LRU)."""
        if turns in self._scored:
            self._scored.move_to_end(turns)
            return self._scored[turns]
        items = self.mentioned(turns)
        out: np.ndarray | None = None
        if len(items):
            e = self.embedding.item_embeddings
            out = np.vstack([(e @ e[items].T).max(axis=1), e @ e[items].mean(axis=0)])
        self._scored[turns] = out
        while len(self._scored) > 256:
            self._scored.popitem(last=False)
        return out


class CoMentionMember:
    """What human recommenders went on to suggest after the movies a conversation names: a
    `CoMentionRecommender` (mention -> next suggestion and same-dialog co-occurrence counts)
    learned from labelled conversations (`fit`: the calibration dialogs only), fed the titles
    `MentionMember` finds in the conversation, oldest first. Features: the item's co-mention
    score as a percentile among the catalog, the score itself (log-scaled), and how often human
    recommenders suggested or mentioned the item at all (the model's popularity). A conversation
    naming no known title gets the popularity alone; an unfitted member raises.

    It reads the signal a conversation-learned retriever reads, so a candidate fitted on it looks
    better to this member by construction: the gate's independent evidence (the human
    recommenders' actual suggestions in dialogs no step learned from) is what keeps that honest."""

    feature_names: tuple[str, ...] = ("comention_pct", "comention_log", "suggested_prior")

    def __init__(self, mentions: MentionMember, config: CoMentionRecommenderConfig | None = None) -> None:
        self.name = "co-mention"
        self.mentions = mentions
        self.embedding = mentions.embedding  # `pair_features` pre-encodes the utterances through it
        self.catalog = mentions.catalog
        self.config = config
        self.model: CoMentionRecommender | None = None

    def fit(self, records: Sequence[Mapping[str, Any]], dialogs: Iterable[str] | None = None) -> CoMentionMember:
        """Learn from request records (`dialog_id`, `mentions`, `targets`: raw catalog ids; the
        bundled `datasets.requests("redial-ml")` layout) of `dialogs` (default: all)."""
        self.model = CoMentionRecommender(self.config).fit_conversations(records, self.catalog, dialogs=dialogs)
        return self

    @property
    def turns(self) -> int:
        return int(self.model.fit_info["turns"]) if self.model is not None else 0

    def features(self, turns: Turns, rows: np.ndarray) -> np.ndarray:
        if self.model is None:
            raise RuntimeError("the co-mention member is not fitted: call fit(records, dialogs) first")
        rows = np.asarray(rows, dtype=np.int64)
        if not seeker_texts(turns):
            return np.full((len(rows), 3), np.nan)
        prior = np.asarray(self.model.popularity, dtype=np.float64)[rows]
        named = self.mentions.mentioned(turns)
        if not len(named):
            return np.column_stack([np.zeros(len(rows)), np.zeros(len(rows)), prior])
        s = np.asarray(self.model.score([named])[0], dtype=np.float64)
        return np.column_stack([_percentile(s, rows), np.log1p(100.0 * s[rows]), prior])


class LLMMember:
    """A per-item yes/no question to a local LLM: the conversation's last `max_turns` turns
    (as "Seeker:" / "Recommender:" lines; a message is one seeker turn) and one candidate movie (title, year, genres,
    a few tags), fenced as data; feature logit(P(yes)). The request comes first in the prompt,
    so the pairs of one request share their prefix (KV reuse)."""

    feature_names: tuple[str, ...] = ("logit_p_yes",)
    QUESTION = "Does the candidate movie match what the seeker asked for in this conversation?"

    def __init__(
        self, backend: LLMBackend, catalog: Catalog, *, max_turns: int = 6, question: str | None = None, tags: int = 5
    ) -> None:
        self.name = f"llm:{backend.model_id}"
        self.backend = backend
        self.scorer = LogitScorer(backend)
        self.catalog = catalog
        self.max_turns = max_turns
        self.question = question or self.QUESTION
        self.tags = tags
        self._titles = catalog.titles()
        self._genres = catalog.frame["genres"].to_list()
        self._tags = catalog.frame["tags"].to_list()

    def describe(self, row: int) -> str:
        genres = [g for g in self._genres[row] or [] if g and g != "(no genres listed)"]
        tags = list(self._tags[row] or [])[: self.tags]
        out = self._titles[row] + (f" [{', '.join(genres)}]" if genres else "")
        return out + (f" (tags: {', '.join(tags)})" if tags else "")

    def prompt(self, turns: Turns, row: int) -> str:
        said = [(s, u.strip()) for s, u in turns if u.strip()][-self.max_turns :]
        text = "\n".join(f"{'Seeker' if s == 'seeker' else 'Recommender'}: {u}" for s, u in said)
        return judge_prompt([("conversation", text), ("candidate_movie", self.describe(int(row)))], self.question)

    def features(self, turns: Turns, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        if not seeker_texts(turns):
            return np.full((len(rows), 1), np.nan)
        p = np.array([self.scorer.p_yes(self.prompt(turns, int(r))) for r in rows], dtype=np.float64)
        p = np.clip(p, 1e-6, 1 - 1e-6)
        return np.log(p / (1 - p))[:, None]


def default_members(
    catalog: Catalog, popularity: np.ndarray | None = None, embedding: EmbeddingMember | None = None
) -> list[RequestMatchMember]:
    """The recommended gating committee's members: the embedding and mention members (no LLM;
    cheap enough to judge every slate)."""
    emb = embedding or EmbeddingMember(catalog)
    return [emb, MentionMember(emb, popularity=popularity)]


# ---------------------------------------------------------------------- the committee
@dataclass(frozen=True)
class SlateMatch:
    """One slate's `request_match` verdict: `score` = share of judged items matching (NaN when
    unknown), P(match) per judged item, and why."""

    score: float
    p_match: dict[str, float]
    rationale: str
    details: dict[str, Any] = field(default_factory=dict)


class RequestMatchCommittee:
    """A calibrated blend of request-match members: `fit(x, labels)` on calibration pairs
    (features from `pair_features`), then `probability(context, items)` is P(match) of raw item
    ids and an item *matches* when P reaches `threshold` (the kappa-best threshold on the
    calibration pairs)."""

    def __init__(
        self,
        members: Sequence[RequestMatchMember],
        *,
        blend: LogisticBlend | None = None,
        threshold: float = 0.5,
        l2: float = 1.0,
    ) -> None:
        if not members:
            raise ValueError("a request-match committee needs at least one member")
        self.members = list(members)
        self.blend = blend
        self.threshold = threshold
        self.l2 = l2
        self.quality: JudgeQuality | None = None
        """Set by `measured_request_match`: how far the verdicts can be trusted."""
        catalogs = {id(m.catalog) for m in self.members}
        if len(catalogs) > 1:
            raise ValueError("every member of a request-match committee must read the same catalog")
        self.catalog: Catalog = self.members[0].catalog
        self._row = {str(item): i for i, item in enumerate(self.catalog.items.ids.tolist())}
        self._titles = self.catalog.titles()

    def rows(self, items: Sequence[str]) -> np.ndarray:
        """Catalog rows of raw item ids, -1 for ids the catalog lacks."""
        return np.fromiter((self._row.get(str(i), -1) for i in items), dtype=np.int64, count=len(items))

    @property
    def model_id(self) -> str:
        return "request-match(" + "+".join(m.name for m in self.members) + ")"

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(f"{m.name}.{f}" for m in self.members for f in m.feature_names)

    def feature_matrix(self, turns: Turns, rows: np.ndarray) -> np.ndarray:
        return np.column_stack([m.features(turns, rows) for m in self.members])

    def fit(self, x: np.ndarray, labels: np.ndarray) -> RequestMatchCommittee:
        """Blend weights and threshold from labelled calibration pairs (rows of `x` with a NaN
        feature are left out)."""
        ok = ~np.isnan(x).any(axis=1)
        self.blend = LogisticBlend.fit(x[ok], np.asarray(labels, dtype=bool)[ok], l2=self.l2)
        self.threshold = best_threshold(self.blend.predict(x[ok]), np.asarray(labels, dtype=bool)[ok])
        return self

    def probability_from_features(self, x: np.ndarray) -> np.ndarray:
        if self.blend is None:
            raise RuntimeError("the request-match committee has no blend yet; call fit on labelled pairs")
        out = np.full(len(x), np.nan)
        ok = ~np.isnan(x).any(axis=1)
        if ok.any():
            out[ok] = self.blend.predict(x[ok])
        return out

    def probability(self, context: object, items: Sequence[str]) -> np.ndarray:
        """P(match) of each raw item id for a request (a message, a flattened conversation or
        turns); NaN for items the catalog lacks, and for every item when the request has no
        seeker text."""
        turns = request_turns(context)
        rows = self.rows(items)
        out = np.full(len(rows), np.nan)
        known = rows >= 0
        if known.any() and seeker_texts(turns):
            out[known] = self.probability_from_features(self.feature_matrix(turns, rows[known]))
        return out

    def judge_slate(self, context: object, items: Sequence[str], explored: Sequence[bool] | None = None) -> SlateMatch:
        """The verdict on one served slate: the share of its judged items (exploration slots
        left out, as for relevance) whose P(match) reaches the threshold; NaN (unknown, not a
        pass) when the request has no seeker text or no item could be judged."""
        explored = list(explored) if explored is not None else [False] * len(items)
        shown = [item for item, e in zip(items, explored, strict=True) if not e]
        base = {"threshold": round(self.threshold, 4), "unit": "pair"}
        if not seeker_texts(request_turns(context)):
            return SlateMatch(float("nan"), {}, "unknown: the request has no text from the user to match", base)
        if not shown:
            return SlateMatch(float("nan"), {}, "unknown: every shown item was an exploration slot", base)
        p = self.probability(context, shown)
        known = ~np.isnan(p)
        if not known.any():
            return SlateMatch(float("nan"), {}, "unknown: no shown item is in the request-match catalog", base)
        p_match = {item: round(float(pi), 4) for item, pi in zip(shown, p, strict=True) if not np.isnan(pi)}
        matched = [item for item, pi in p_match.items() if pi >= self.threshold]
        score = len(matched) / len(p_match)
        weakest = sorted(zip(p_match.values(), self.rows(list(p_match)), strict=True))[:3]
        names = "; ".join(f"{self._titles[r]} ({pi:.2f})" for pi, r in weakest if r >= 0)
        rationale = (
            f"{len(matched)} of {len(p_match)} judged items match the request (P(match) >= "
            f"{self.threshold:.2f}); least matching: {names}"
        )
        unmatched = [item for item in p_match if item not in set(matched)]
        return SlateMatch(
            score, p_match, rationale, base | {"p_match": p_match, "unmatched": unmatched, "judged": len(p_match)}
        )

    # -- persistence -------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Blend weights, threshold and measured quality as JSON-ready data (members are code:
        `from_state` takes them again)."""
        if self.blend is None:
            raise RuntimeError("the request-match committee has no blend to save")
        return {
            "model_id": self.model_id,
            "features": list(self.feature_names),
            "weights": self.blend.weights.tolist(),
            "mean": self.blend.mean.tolist(),
            "scale": self.blend.scale.tolist(),
            "threshold": self.threshold,
            "quality": self.quality.to_dict() if self.quality is not None else None,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any], members: Sequence[RequestMatchMember]) -> RequestMatchCommittee:
        out = cls(members, threshold=float(state["threshold"]))
        if list(out.feature_names) != list(state["features"]):
            raise ValueError(
                f"saved committee has features {state['features']}, these members {list(out.feature_names)}"
            )
        out.blend = LogisticBlend(np.asarray(state["weights"]), np.asarray(state["mean"]), np.asarray(state["scale"]))
        q = state.get("quality")
        if q:
            q = {k: v for k, v in q.items() if k != "may_gate"}
            q["kappa_ci"] = tuple(q["kappa_ci"]) if q.get("kappa_ci") is not None else None
            out.quality = JudgeQuality(**q)
        return out


# ---------------------------------------------------------------------- measuring
def pair_features(
    member: RequestMatchMember, labels: RequestLabels, pairs: RequestPairs, progress: Any = None
) -> tuple[np.ndarray, float]:
    """The member's features of every pair (grouped by request) and the seconds it took per
    pair. An `EmbeddingMember` (or a `MentionMember`'s) gets every seeker utterance encoded in
    one batch first; that time is counted."""
    t0 = time.perf_counter()
    emb = member if isinstance(member, EmbeddingMember) else getattr(member, "embedding", None)
    if isinstance(emb, EmbeddingMember):
        texts = {
            u
            for t in np.unique(pairs.turns)
            for u in emb.texts(labels.requests[int(t)]) + seeker_texts(labels.requests[int(t)], emb.max_turns)
        }
        emb.encode(sorted(texts))
    out = np.zeros((len(pairs), len(member.feature_names)))
    turns = np.unique(pairs.turns)
    for n, t in enumerate(turns):
        rows = np.flatnonzero(pairs.turns == t)
        out[rows] = member.features(labels.requests[int(t)], pairs.items[rows])
        if progress is not None:
            progress(n + 1, len(turns))
    return out, (time.perf_counter() - t0) / max(len(pairs), 1)


def request_match_quality(
    committee: RequestMatchCommittee,
    calibration: tuple[np.ndarray, np.ndarray],
    evaluation: tuple[np.ndarray, np.ndarray, np.ndarray],
    *,
    kappa_floor: float = 0.4,
    protocol: str = "",
    seed: int = 0,
) -> JudgeQuality:
    """Fit `committee` on calibration (features, labels), measure it on evaluation (features,
    labels, dialog ids): AUC, kappa at the calibrated threshold with a bootstrap CI over
    dialogs, TPR/TNR, per (request, item) pair — the unit the gate judges `request_match` on."""
    committee.fit(*calibration)
    x, y, dialogs = evaluation
    p = committee.probability_from_features(x)
    ok = ~np.isnan(p)
    q = measure(
        REQUEST_MATCH,
        committee.model_id,
        p[ok] >= committee.threshold,
        np.asarray(y, bool)[ok],
        kappa_floor=kappa_floor,
        scores=p[ok],
        protocol=protocol,
        groups=np.asarray(dialogs)[ok],
        unit="pair",
        seed=seed,
    )
    committee.quality = q
    return q


def measured_request_match(
    conv: Conversations,
    links: CandidateLinks,
    catalog: Catalog,
    popularity: Sequence[float] | np.ndarray,
    rubric: RubricSpec | None = None,
    *,
    members: Sequence[RequestMatchMember] | None = None,
    sampler: Sampler = "popularity",
    negatives: int = 1,
    seed: int = 0,
) -> tuple[RequestMatchCommittee, JudgeQuality]:
    """The request-match committee for judging traces on `catalog`, and its measured quality.

    Labels from `conv` (`request_labels`: the human recommender's linked targets against
    `sampler` negatives); the blend and threshold are fitted on the calibration dialogs and
    the quality measured on the evaluation dialogs (no dialog in both), per (request, item)
    pair with a bootstrap CI by dialog, held against the rubric's `kappa_floor`. The committee
    returned is the one measured (`committee.quality` holds the same `JudgeQuality`). Default
    members: `default_members(catalog, popularity)` (embedding + mentions)."""
    floor = rubric.kappa_floor if rubric is not None else 0.4
    labels = request_labels(conv, links, popularity, negatives=negatives, seed=seed)
    members = list(members) if members is not None else default_members(catalog, np.asarray(popularity, float))
    committee = RequestMatchCommittee(members)
    cal, ev = labels.select(sampler, "calibration"), labels.select(sampler, "evaluation")
    feats = {}
    for name, pairs in (("calibration", cal), ("evaluation", ev)):
        feats[name] = np.column_stack([pair_features(m, labels, pairs)[0] for m in members])
    q = request_match_quality(
        committee,
        (feats["calibration"], cal.labels),
        (feats["evaluation"], ev.labels, ev.dialogs),
        kappa_floor=floor,
        protocol=f"{labels.protocol}; negatives: {sampler}",
        seed=seed,
    )
    return committee, q
