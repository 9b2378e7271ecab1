"""RUM: Sequential Recommendation with User Memory Networks (Chen et al., WSDM 2018).

Score of candidate item i for a user: `(p_u + alpha * read(M_u, i)) · q_i`, where `q_i` is
the item embedding, `p_u` the general user representation and `M_u` the user memory.

- `memory="item"` (RUM-I): the memory holds the embeddings of the last `slots` items; the
  read attends from the candidate over them, `w_k = softmax_k(q_i · m_k)`, and returns
  `sum_k w_k m_k`. The weights say "recommended because of item X" (`explain`).
- `memory="feature"` (RUM-F): `slots` latent preference slots with global keys `k_j`. Every
  consumed item i writes with attention `w_j = softmax_j(q_i · k_j)`, an erase vector
  `e = sigmoid(E q_i)` and an add vector `a = tanh(A q_i)`:
  `m_j <- m_j * (1 - w_j e) + w_j a`. A candidate reads with the same attention.

Deviation from the paper, so that anonymous histories and new users work without
retraining: the paper's `p_u` is a free per-user vector; here it is the mean of a second
("long-term") item embedding over the last `max_len` history items (FISM-style), which
is zero for an empty history. Training uses every position of each user's most recent
window (next-item targets), with softmax over the positive and shared negatives drawn by
popularity ** `neg_alpha` with the logQ correction ("sampled-ce", default) or the paper's
binary cross-entropy with one negative ("bce").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from coachrec.data import Dataset
from coachrec.models.base import BaseRecommender
from coachrec.models.sasrec import pad_left, training_windows
from coachrec.models.training import adam_epochs, torch_setup

MEMORIES = ("item", "feature")


class _RUMNet(nn.Module):
    def __init__(self, n_items: int, dim: int, slots: int, memory: str, alpha: float, dropout: float):
        super().__init__()
        self.item = nn.Embedding(n_items + 1, dim, padding_idx=0)
        self.long = nn.Embedding(n_items + 1, dim, padding_idx=0)
        self.memory, self.slots, self.alpha = memory, slots, alpha
        self.drop = nn.Dropout(dropout)
        if memory == "feature":
            self.keys = nn.Parameter(torch.empty(slots, dim))
            self.init_mem = nn.Parameter(torch.zeros(slots, dim))
            self.erase = nn.Linear(dim, dim)
            self.add = nn.Linear(dim, dim)
            nn.init.normal_(self.keys, std=dim**-0.5)
        nn.init.normal_(self.item.weight, std=dim**-0.5)
        nn.init.normal_(self.long.weight, std=dim**-0.5)
        with torch.no_grad():
            self.item.weight[0].zero_()
            self.long.weight[0].zero_()

    # -------------------------------------------------------------- user states per position
    def user_vectors(self, seq: torch.Tensor) -> torch.Tensor:
        """p_u after each position: mean long-term embedding of the items so far (B, L, d)."""
        count = (seq > 0).cumsum(1).clamp(min=1).unsqueeze(-1)
        out: torch.Tensor = self.drop(self.long(seq).cumsum(1) / count)
        return out

    def item_memory(self, seq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The last `slots` items up to each position: windows (B, L, K) of item+1, 0 = empty."""
        padded = nn.functional.pad(seq, (self.slots - 1, 0))
        win = padded.unfold(1, self.slots, 1)
        return self.drop(self.item(win)), win > 0

    def feature_memory(self, seq: torch.Tensor) -> torch.Tensor:
        """Memory after writing each position (B, L, K, d); padding positions write nothing."""
        q = self.item(seq)
        w = torch.softmax(q @ self.keys.T, dim=-1) * (seq > 0).unsqueeze(-1)
        e, a = torch.sigmoid(self.erase(q)), torch.tanh(self.add(q))
        mem = self.init_mem.expand(seq.shape[0], -1, -1)
        states = []
        for t in range(seq.shape[1]):
            wt = w[:, t, :, None]
            mem = mem * (1 - wt * e[:, t, None, :]) + wt * a[:, t, None, :]
            states.append(mem)
        out: torch.Tensor = self.drop(torch.stack(states, dim=1))
        return out

    # -------------------------------------------------------------- reads
    @staticmethod
    def item_attention(mem: torch.Tensor, mask: torch.Tensor, cand: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Item-memory attention of candidates (C, d) over memories (B, K, d) with slot mask
        (B, K): the read scores `sum_k w_k (m_k · q_c)` (B, C) and the weights (B, C, K).
        Empty memories read zero."""
        att = torch.einsum("bkd,cd->bck", mem, cand)
        w = torch.softmax(att.masked_fill(~mask[:, None, :], float("-inf")), dim=-1).nan_to_num(0.0)
        return (w * att).sum(-1), w

    def feature_read_scores(self, mem: torch.Tensor, cand: torch.Tensor, shared: bool) -> torch.Tensor:
        """`sum_k w_ck (m_k · q_c)` for memories (M, K, d) and candidates per row (M, d) or
        shared (C, d); `w_c = softmax(q_c · keys)`."""
        w = torch.softmax(cand @ self.keys.T, dim=-1)
        if shared:
            return (w[None] * torch.einsum("mkd,cd->mck", mem, cand)).sum(-1)
        return (w * torch.einsum("mkd,md->mk", mem, cand)).sum(-1)

    def position_scores(self, seq: torch.Tensor, where: torch.Tensor, cand: torch.Tensor, shared: bool) -> torch.Tensor:
        """Scores after the positions `where` (bool, B x L) of `seq`, for candidate items+1
        per selected position (M,) or shared by all of them (C,) -> (M,) or (M, C)."""
        p = self.user_vectors(seq)[where]
        q = self.item(cand)
        base = p @ q.T if shared else (p * q).sum(-1)
        if self.memory == "item":
            mem, mask = self.item_memory(seq)
            mem, mask = mem[where], mask[where]
            if shared:
                read = self.item_attention(mem, mask, q)[0]
            else:  # one candidate per row: the same attention without the (M, M) cross terms
                att = torch.einsum("mkd,md->mk", mem, q)
                read = (torch.softmax(att.masked_fill(~mask, float("-inf")), dim=-1).nan_to_num(0.0) * att).sum(-1)
        else:
            read = self.feature_read_scores(self.feature_memory(seq)[where], q, shared)
        out: torch.Tensor = base + self.alpha * read
        return out

    def final_state(self, seq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """User vector (B, d), memory (B, K, d) and slot mask (B, K) after the whole sequence."""
        p = self.user_vectors(seq)[:, -1]
        if self.memory == "item":
            mem, mask = self.item_memory(seq[:, -self.slots :])
            return p, mem[:, -1], mask[:, -1]
        return p, self.feature_memory(seq)[:, -1], torch.ones(seq.shape[0], self.slots, dtype=torch.bool)


@dataclass
class RUMConfig:
    """`memory`: "item" or "feature"; `slots`: memory size K; `alpha`: weight of the memory
    read in the merge `p_u + alpha * read`; `max_len`: history window (for training rows
    and the long-term user vector). `loss`: "sampled-ce" (softmax over the positive and
    `n_negatives` shared negatives drawn by popularity ** `neg_alpha`, logQ-corrected) or "bce"
    (paper: one negative per positive).
    Early stopping as in SASRec: `fit(train, valid=split.task("valid"))`."""

    memory: str = "item"
    slots: int = 5
    dim: int = 64
    alpha: float = 1.0
    max_len: int = 50
    dropout: float = 0.2
    loss: str = "sampled-ce"
    n_negatives: int = 512
    neg_alpha: float = 0.75
    epochs: int = 50
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    eval_every: int = 5
    patience: int = 3
    valid_users: int = 5000
    seed: int = 0
    threads: int = 1


class RUM(BaseRecommender):
    """User memory network; see the module docstring. Registered as `rum-item` and
    `rum-feature` (the subclasses below only change the default `memory`)."""

    name = "rum"
    Config = RUMConfig
    renamed_settings: ClassVar[dict[str, str | None]] = {"verbose": None}  # printed epochs; now on_epoch / logging
    item_chunk = 2048  # candidate items scored at once (batch x chunk x slots tensors)

    def _build(self, n_items: int) -> None:
        c = self.config
        if c.memory not in MEMORIES:
            raise ValueError(f"{self.name}: memory must be one of {MEMORIES}, got {c.memory!r}")
        if c.loss not in ("sampled-ce", "bce"):
            raise ValueError(f"{self.name}: loss must be 'sampled-ce' or 'bce', got {c.loss!r}")
        self.net = _RUMNet(n_items, c.dim, c.slots, c.memory, c.alpha, c.dropout)

    def _fit(self, data: Dataset) -> None:
        c = self.config
        gen = torch_setup(c.seed, c.threads)
        rng = np.random.default_rng(c.seed)
        n_items = data.n_items
        self._build(n_items)
        inp, tgt, lengths = training_windows(*data.sequences(), c.max_len)
        if len(inp) == 0:
            raise ValueError(f"{self.name}: no user has two or more events to learn a next item from")
        inp_t, tgt_t = torch.from_numpy(inp), torch.from_numpy(tgt)
        # sampled-ce proposal: popularity ** neg_alpha over item+1 (0 = padding, never drawn)
        pop = np.concatenate([[0.0], np.power(data.item_popularity() + 1.0, c.neg_alpha)])
        q = torch.from_numpy(pop / pop.sum())
        logq = torch.log(q.clamp(min=1e-30)).float()

        def batch_loss(b: np.ndarray) -> torch.Tensor:
            width = int(lengths[b].max())
            seq, target = inp_t[b, -width:], tgt_t[b, -width:]
            where = target > 0
            pos = target[where]
            if c.loss == "bce":
                neg = torch.randint(1, n_items + 1, pos.shape, generator=gen)
                s_pos = self.net.position_scores(seq, where, pos, shared=False)
                s_neg = self.net.position_scores(seq, where, neg, shared=False)
                bce = nn.functional.binary_cross_entropy_with_logits
                return bce(s_pos, torch.ones_like(s_pos)) + bce(s_neg, torch.zeros_like(s_neg))
            neg = torch.multinomial(q, c.n_negatives, replacement=True, generator=gen)
            s_pos = self.net.position_scores(seq, where, pos, shared=False) - logq[pos]
            s_neg = self.net.position_scores(seq, where, neg, shared=True) - logq[neg][None, :]
            logits = torch.cat([s_pos[:, None], s_neg.masked_fill(neg[None, :] == pos[:, None], float("-inf"))], dim=1)
            return nn.functional.cross_entropy(logits, torch.zeros(len(pos), dtype=torch.long))

        self.train_log = adam_epochs(self, self.net, lengths, batch_loss, self._valid, rng)

    @torch.no_grad()
    def _score(self, histories: list[np.ndarray]) -> np.ndarray:
        c = self.config
        if c.threads > 0:
            torch.set_num_threads(c.threads)
        self.net.eval()
        items = self.net.item.weight[1:]
        n = items.shape[0]
        out = np.empty((len(histories), n), dtype=np.float32)
        w_feat = torch.softmax(items @ self.net.keys.T, dim=-1) if c.memory == "feature" else None
        for lo in range(0, len(histories), 256):
            seq = torch.from_numpy(pad_left(histories[lo : lo + 256], c.max_len))
            p, mem, mask = self.net.final_state(seq)
            scores = p @ items.T
            for a in range(0, n, self.item_chunk):
                q = items[a : a + self.item_chunk]
                if w_feat is None:
                    read = self.net.item_attention(mem, mask, q)[0]
                else:
                    read = (w_feat[a : a + self.item_chunk][None] * torch.einsum("bkd,cd->bck", mem, q)).sum(-1)
                scores[:, a : a + self.item_chunk] += c.alpha * read
            out[lo : lo + len(seq)] = scores.numpy()
        return out

    @torch.no_grad()
    def explain(self, history: Sequence[str], item: str) -> list[tuple[str, float]]:
        """Why `item` scores for this history (raw ids, oldest first): the item-level memory
        attention from `item` over the last `slots` known history items, summed per item,
        largest first ("recommended because of item X")."""
        self._check_fitted()
        if self.config.memory != "item":
            raise ValueError(
                f"{self.name}: explanations by item need the item-level memory (memory='item'); "
                "feature slots are latent"
            )
        assert self.items is not None
        enc = self.items.encode(list(history), unknown="drop")
        target = self.items.index(item)
        mem_items = enc[-self.config.slots :]
        if len(mem_items) == 0:
            return []
        self.net.eval()
        seq = torch.from_numpy(mem_items + 1)[None]
        mem, mask = self.net.item_memory(seq)
        q = self.net.item(torch.tensor([target + 1]))
        _, w = self.net.item_attention(mem[:, -1], mask[:, -1], q)
        weights = w[0, 0, -len(mem_items) :].numpy()
        totals: dict[int, float] = {}
        for i, wt in zip(mem_items.tolist(), weights.tolist(), strict=True):
            totals[i] = totals.get(i, 0.0) + wt
        ranked = sorted(totals.items(), key=lambda kv: -kv[1])
        return [(str(self.items.decode([i])[0]), float(wt)) for i, wt in ranked]

    def _state(self) -> dict[str, np.ndarray]:
        return {k: v.detach().cpu().numpy() for k, v in self.net.state_dict().items()}

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        self._build(int(state["item.weight"].shape[0]) - 1)
        self.net.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in state.items()})
        self.net.eval()


@dataclass
class RUMItemConfig(RUMConfig):
    memory: str = "item"


@dataclass
class RUMFeatureConfig(RUMConfig):
    memory: str = "feature"
    slots: int = 20


class RUMItem(RUM):
    """RUM with item-level memory (`rum-item`); `explain` gives the attention per history item."""

    name = "rum-item"
    Config = RUMItemConfig


class RUMFeature(RUM):
    """RUM with feature-level memory (`rum-feature`)."""

    name = "rum-feature"
    Config = RUMFeatureConfig
