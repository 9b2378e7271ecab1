"""Semantic retrieval: the request's words against every item's text, in one matrix product.

    retriever = SemanticRetriever(catalog, query_encoder="static")
    retriever.warm()                          # item embeddings (cached on disk) and the encoder
    idx, scores = retriever.retrieve(ctx)     # cosine of the request with each allowed item

Items are embedded once per catalog from `Catalog.texts()` (title, genres, tags, free text)
with the bundled all-MiniLM-L6-v2 (`coachrec.models.content.embed_texts`, cached on disk by
the texts' hash). A request is embedded per request: each of its utterances (the seeker's last
words weigh most, earlier ones `recency` times less, the recommender's `recommender_weight`
times less; phrases the understanding stage found negated are blanked out, since an embedding
of "no horror" is close to horror films), then the weighted mean. The cosine with every item is
one (items x 384) matrix-vector product (0.3 ms for MovieLens latest-small's 9,742 items, so no
ANN index is needed at that size; `ann_threshold` is where one would start to pay).

Two query encoders, the same item embeddings:
- `"full"`: the transformer itself. About 1 ms per token on one CPU core, so 10-60 ms for a
  request: over the request path's budget on a 2-core machine.
- `"static"` (the serving default): per-token vectors distilled from the same transformer (each
  vocabulary token embedded alone once, cached on disk; tokens met for the first time are
  embedded then), averaged with stop words down-weighted. Well under a millisecond a request;
  it reads words rather than sentences, which is what retrieval over titles, genres and tags
  mostly needs. `coachrec bench conversational` reports both.

Utterance embeddings are kept in a small LRU cache, so a growing conversation only encodes its
new turns.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from coachrec.data import Catalog
from coachrec.models.content import DEFAULT_ENCODER, cache_dir, embed_texts, encoder_path, load_sentence_encoder
from coachrec.serve.candidates import RequestContext
from coachrec.serve.retrievers import top_allowed

__all__ = ["QueryEncoderName", "SemanticRetriever", "StaticEncoder", "TransformerEncoder", "query_encoder"]

QueryEncoderName = Literal["static", "full"]


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_STOPWORDS = _words(
    "a an the and or but of to in on at for with by from as is it its i me my we us you your he him his "
    "she her they them their this that these those be am are was were been being do did does have has "
    "had so very can will would should could just really any some one what who how why when where which "
    "if then than there here hi hey hello im i'm thanks thank please yes yeah ok okay well also too "
    "maybe something anything movie movies film films watch watched watching seen see like looking want "
    "recommend recommendation suggestions suggest good great"
)


class _Cache:
    """A small thread-safe LRU of text -> vector."""

    def __init__(self, size: int = 8192) -> None:
        self.size = size
        self.data: OrderedDict[str, np.ndarray] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: str) -> np.ndarray | None:
        with self.lock:
            v = self.data.get(key)
            if v is not None:
                self.data.move_to_end(key)
            return v

    def put(self, key: str, value: np.ndarray) -> None:
        with self.lock:
            self.data[key] = value
            if len(self.data) > self.size:
                self.data.popitem(last=False)


class TransformerEncoder:
    """The sentence-transformers encoder (mean pooling, L2-normalised), `max_tokens` per text."""

    name = "full"

    def __init__(self, encoder: str = DEFAULT_ENCODER, max_tokens: int = 128, threads: int = 1) -> None:
        self.encoder = encoder
        self.max_tokens = max_tokens
        self.threads = threads
        self._model: Any = None
        self._lock = threading.Lock()
        self._cache = _Cache()

    def _ready(self) -> Any:
        with self._lock:
            if self._model is None:
                model = load_sentence_encoder(self.encoder, self.threads)
                model.max_seq_length = self.max_tokens
                self._model = model
            return self._model

    def warm(self) -> None:
        self._ready()

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        out: list[np.ndarray | None] = [self._cache.get(t) for t in texts]
        todo = [i for i, v in enumerate(out) if v is None]
        if todo:
            emb = self._ready().encode([texts[i] for i in todo], normalize_embeddings=True, convert_to_numpy=True,
                                       show_progress_bar=False)  # fmt: skip
            for i, v in zip(todo, emb, strict=True):
                vec = np.asarray(v, dtype=np.float32)
                self._cache.put(texts[i], vec)
                out[i] = vec
        return np.stack([v for v in out if v is not None]) if texts else np.zeros((0, 384), np.float32)


class StaticEncoder:
    """Token vectors distilled from the transformer: each vocabulary token embedded alone
    (`[CLS] token [SEP]`, the token's own output vector), a text is the weighted mean of its
    tokens' vectors (stop words 0.1, punctuation 0), L2-normalised. The table is filled on
    demand, token by token, and kept on disk (`$COACHREC_HOME/embeddings/static-*.npz`)."""

    name = "static"

    def __init__(self, encoder: str = DEFAULT_ENCODER, threads: int = 1, max_tokens: int = 256) -> None:
        self.encoder = encoder
        self.threads = threads
        self.max_tokens = max_tokens
        self._lock = threading.Lock()
        self._cache = _Cache()
        self._model: Any = None
        self._tokenizer: Any = None
        self.table: np.ndarray | None = None
        self.filled: np.ndarray | None = None
        self.weights: np.ndarray | None = None
        folder = encoder_path(encoder)
        digest = hashlib.sha256(str(Path(folder).resolve()).encode()).hexdigest()[:12]
        self.path = cache_dir() / f"static-{Path(encoder).name}-{digest}.npz"
        self._dirty = 0

    def _ready(self) -> None:
        if self._tokenizer is not None:
            return
        from tokenizers import Tokenizer

        folder = Path(encoder_path(self.encoder))
        tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
        tok.no_padding()
        tok.no_truncation()
        vocab = tok.get_vocab()
        size = max(vocab.values()) + 1
        weights = np.ones(size, dtype=np.float32)
        for token, i in vocab.items():
            if (token.startswith("[") and token.endswith("]")) or re.fullmatch(r"[^\w]+", token):
                weights[i] = 0.0
            elif token in _STOPWORDS:
                weights[i] = 0.1
        table = np.zeros((size, 384), dtype=np.float32)
        filled = np.zeros(size, dtype=bool)
        if self.path.exists():
            with np.load(self.path) as z:
                if z["table"].shape == table.shape:
                    table, filled = z["table"].astype(np.float32), z["filled"].astype(bool)
        self.table, self.filled, self.weights = table, filled, weights
        self._tokenizer = tok

    def warm(self, texts: Sequence[str] = ()) -> None:
        """Load the table and fill the tokens of `texts` (and of nothing else)."""
        with self._lock:
            self._ready()
            ids = [
                np.asarray(e.ids, dtype=np.int64)
                for e in self._tokenizer.encode_batch(list(texts), add_special_tokens=False)
            ]
            if ids:
                self._fill(np.unique(np.concatenate(ids)))
            self.save()

    def _fill(self, ids: np.ndarray) -> None:
        assert self.table is not None and self.filled is not None
        missing = ids[~self.filled[ids]]
        if not len(missing):
            return
        import torch

        if self._model is None:
            self._model = load_sentence_encoder(self.encoder, self.threads)
        bert = self._model[0].auto_model
        cls_id = self._tokenizer.token_to_id("[CLS]")
        sep_id = self._tokenizer.token_to_id("[SEP]")
        with torch.inference_mode():
            for lo in range(0, len(missing), 1024):
                b = torch.as_tensor(missing[lo : lo + 1024])
                inp = torch.stack([torch.full_like(b, cls_id), b, torch.full_like(b, sep_id)], 1)
                out = bert(input_ids=inp, attention_mask=torch.ones_like(inp)).last_hidden_state[:, 1]
                self.table[missing[lo : lo + 1024]] = out.numpy()
        self.filled[missing] = True
        self._dirty += len(missing)

    def save(self) -> None:
        """Write the table when new tokens were filled (atomically)."""
        if not self._dirty or self.table is None or self.filled is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp.npz")
        np.savez(tmp, table=self.table, filled=self.filled)
        tmp.replace(self.path)
        self._dirty = 0

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), 384), dtype=np.float32)
        todo = []
        for r, t in enumerate(texts):
            v = self._cache.get(t)
            if v is None:
                todo.append(r)
            else:
                out[r] = v
        if not todo:
            return out
        with self._lock:
            self._ready()
            assert self.table is not None and self.weights is not None
            encs = self._tokenizer.encode_batch([texts[r] for r in todo], add_special_tokens=False)
            ids = [np.asarray(e.ids[: self.max_tokens], dtype=np.int64) for e in encs]
            new = np.unique(np.concatenate(ids)) if ids else np.zeros(0, np.int64)
            if len(new):
                self._fill(new)
            for r, tid in zip(todo, ids, strict=True):
                w = self.weights[tid]
                if len(tid) and w.sum() > 0:
                    v = w @ self.table[tid]
                    norm = float(np.linalg.norm(v))
                    out[r] = v / norm if norm > 0 else v
                self._cache.put(texts[r], out[r].copy())
        return out


_ENCODERS: dict[tuple[str, str], TransformerEncoder | StaticEncoder] = {}
_ENCODERS_LOCK = threading.Lock()


def query_encoder(
    kind: QueryEncoderName = "static", encoder: str = DEFAULT_ENCODER
) -> TransformerEncoder | StaticEncoder:
    """One shared query encoder per (kind, encoder) in this process."""
    if kind not in ("static", "full"):
        raise ValueError(f"query encoder must be 'static' or 'full', got {kind!r}")
    with _ENCODERS_LOCK:
        key = (kind, encoder)
        if key not in _ENCODERS:
            _ENCODERS[key] = StaticEncoder(encoder) if kind == "static" else TransformerEncoder(encoder)
        return _ENCODERS[key]


class _CatalogScores:
    """A retriever from one score per catalog item (`_scores`, None when the request gives
    nothing to score by): its top `n` allowed items, and the score of any candidate."""

    n: int

    def _scores(self, ctx: RequestContext) -> np.ndarray | None:
        raise NotImplementedError

    def retrieve(self, ctx: RequestContext) -> tuple[np.ndarray, np.ndarray]:
        scores = self._scores(ctx)
        if scores is None:
            return np.zeros(0, np.int64), np.zeros(0)
        return top_allowed(scores, ctx.allowed, self.n)

    def score_items(self, ctx: RequestContext, idx: np.ndarray) -> np.ndarray | None:
        scores = self._scores(ctx)
        return None if scores is None else scores[np.asarray(idx, dtype=np.int64)]


class SemanticRetriever(_CatalogScores):
    """The `n` allowed items whose text is closest (cosine) to the request's words.

    A request without text retrieves nothing. Item embeddings are computed on first use (or
    `warm()`), so a pipeline that never sees text never loads the encoder."""

    name = "semantic"

    def __init__(
        self,
        catalog: Catalog,
        n: int = 200,
        *,
        query_encoder_name: QueryEncoderName = "static",
        encoder: str = DEFAULT_ENCODER,
        recency: float = 0.6,
        recommender_weight: float = 0.3,
        embeddings: np.ndarray | None = None,
    ) -> None:
        if n < 1:
            raise ValueError(f"a retriever needs n >= 1 candidates, got {n}")
        self.catalog = catalog
        self.n = n
        self.encoder_name = encoder
        self.query_encoder_name = query_encoder_name
        self.recency = recency
        self.recommender_weight = recommender_weight
        self._items = None if embeddings is None else np.asfortranarray(embeddings, dtype=np.float32)
        self._lock = threading.Lock()

    @property
    def encoder(self) -> TransformerEncoder | StaticEncoder:
        return query_encoder(self.query_encoder_name, self.encoder_name)

    def item_embeddings(self) -> np.ndarray:
        with self._lock:
            if self._items is None:
                # column-major: the matrix-vector product reads it three times faster here
                self._items = np.asfortranarray(embed_texts(self.catalog.texts(), self.encoder_name))
            return self._items

    def warm(self) -> None:
        """Embed the catalog (or read its cache) and ready the query encoder."""
        self.item_embeddings()
        enc = self.encoder
        if isinstance(enc, StaticEncoder):
            enc.warm(self.catalog.texts())
        else:
            enc.warm()

    def query_texts(self, ctx: RequestContext) -> list[tuple[str, float]]:
        """(text, weight) pairs the request's embedding averages."""
        turns = ctx.turns
        if not turns:
            return []
        out: list[tuple[str, float]] = []
        if ctx.intent is not None:
            out += [(t, w) for t, w in ctx.intent.query if t and w > 0]
        else:
            rank = 0
            for t in reversed(turns):
                if t.speaker == "seeker" and t.text.strip():
                    out.append((t.text, self.recency**rank))
                    rank += 1
        if self.recommender_weight > 0:
            rank = 0
            for t in reversed(turns):
                if t.speaker == "recommender" and t.text.strip():
                    out.append((t.text, self.recommender_weight * self.recency**rank))
                    rank += 1
        return [(t, w) for t, w in out if w >= 1e-3][:12]

    def query_vector(self, ctx: RequestContext) -> np.ndarray | None:
        cached: np.ndarray | None = ctx.attributes.get("semantic.query")
        if cached is not None:
            return cached
        pairs = self.query_texts(ctx)
        if not pairs:
            return None
        vecs = self.encoder.encode([t for t, _ in pairs])
        mean: np.ndarray = np.asarray([w for _, w in pairs], dtype=np.float32) @ vecs
        norm = float(np.linalg.norm(mean))
        if norm == 0:
            return None
        q: np.ndarray = (mean / norm).astype(np.float32)
        ctx.attributes["semantic.query"] = q
        return q

    def _scores(self, ctx: RequestContext) -> np.ndarray | None:
        cached: np.ndarray | None = ctx.attributes.get("semantic.scores")
        if cached is not None:
            return cached
        q = self.query_vector(ctx)
        if q is None:
            return None
        scores: np.ndarray = np.asarray(self.item_embeddings() @ q, dtype=np.float64)
        ctx.attributes["semantic.scores"] = scores
        return scores

    def reasons(self, ctx: RequestContext, idx: np.ndarray) -> list[str]:
        words = (
            ctx.intent.request_text if ctx.intent is not None else (ctx.turns[-1].text if ctx.turns else "")
        ).strip()
        if len(words) > 60:
            words = words[-60:].split(" ", 1)[-1]
        text = f'close to what you asked for ("{words}")' if words else "close to what you asked for"
        return [text] * len(idx)


class MentionedRetriever(_CatalogScores):
    """Items whose text is closest to the titles the request names: the recency-weighted mean
    of the named titles' embeddings (the last named weighs most) against every item's, the
    same item embeddings as `SemanticRetriever`. Unlike item-kNN it needs no interactions, so
    a title named in a conversation finds neighbours among items nobody has rated together.
    A request naming no title (or without the `understand` stage) retrieves nothing."""

    name = "mentioned"

    def __init__(self, semantic: SemanticRetriever, n: int = 200, recency: float = 0.8) -> None:
        if n < 1:
            raise ValueError(f"a retriever needs n >= 1 candidates, got {n}")
        self.semantic = semantic
        self.n = n
        self.recency = recency

    def _scores(self, ctx: RequestContext) -> np.ndarray | None:
        cached: np.ndarray | None = ctx.attributes.get("mentioned.scores")
        if cached is not None:
            return cached
        named = ctx.intent.liked if ctx.intent is not None else []
        if not named:
            return None
        emb = self.semantic.item_embeddings()
        w = np.power(self.recency, np.arange(len(named))[::-1], dtype=np.float64).astype(np.float32)
        v = w @ emb[np.asarray(named, dtype=np.int64)]
        norm = float(np.linalg.norm(v))
        if norm == 0:
            return None
        scores: np.ndarray = np.asarray(emb @ (v / norm).astype(np.float32), dtype=np.float64)
        ctx.attributes["mentioned.scores"] = scores
        return scores

    def reasons(self, ctx: RequestContext, idx: np.ndarray) -> list[str]:
        named = np.asarray(ctx.intent.liked if ctx.intent is not None else [], dtype=np.int64)
        if not len(named):
            return ["close to what you asked for"] * len(idx)
        emb = self.semantic.item_embeddings()
        sims = emb[np.asarray(idx, dtype=np.int64)] @ emb[named].T
        best = named[sims.argmax(axis=1)]
        quoted = [ctx.catalog.quote(b) for b in best.tolist()]  # None: the allowlist refuses the title
        return [f"like {t}, which you mentioned" if t else "like a title you mentioned" for t in quoted]
