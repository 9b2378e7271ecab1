"""SASRec (Kang & McAuley, ICDM 2018): causal self-attention over the last `max_len` items.

The network follows the authors' code: scaled item embeddings plus learned positional
embeddings, dropout, `layers` blocks of (layer-normed query) attention with a causal mask
and a point-wise feed-forward net, each with residuals, padding positions zeroed after
every block, a final layer norm, and output scores tied to the item embeddings.

Three losses (`loss`):
- "bce": the paper's binary cross-entropy with one uniformly sampled negative per position;
- "ce": full softmax cross-entropy over all items at every position (the default: Klenitskiy
  & Vasilev, RecSys 2023, show it lifts full-ranking accuracy far above "bce"); computed by
  `full_softmax_ce`, which takes the softmax in place, chunk by chunk, in a reused buffer
  (same loss and gradients as `cross_entropy(h @ E.T, y)`, about half the epoch time);
- "sampled-ce": softmax over the positive and `n_negatives` negatives, drawn with probability
  proportional to popularity ** `neg_alpha` (0 = uniform), with the logQ correction (for
  catalogs too large for the full softmax). `negatives="batch"` shares one draw across the
  mini-batch; "sequence" draws for each training sequence (shared by its positions), 128x more
  distinct negatives per step at batch 128 for about the same arithmetic (a batched product).

Optional early stopping: `fit(train, valid=split.task("valid"))` checks validation NDCG@10
(full ranking, seen items excluded) every `eval_every` epochs and keeps the best weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from coachrec.data import Dataset
from coachrec.models.base import BaseRecommender
from coachrec.models.state_cache import StateCache, history_key
from coachrec.models.training import adam_epochs, torch_setup

LOSSES = ("bce", "ce", "sampled-ce")
NEGATIVES = ("batch", "sequence")


# ---------------------------------------------------------------------- window helpers (SASRec, RUM)
def pad_left(histories: list[np.ndarray], width: int, shift: int = 1) -> np.ndarray:
    """The last `width` items of each history, right-aligned, as `item + shift` (0 = padding)."""
    out = np.zeros((len(histories), width), dtype=np.int64)
    for r, h in enumerate(histories):
        tail = h[-width:] if width else h[:0]
        if len(tail):
            out[r, width - len(tail) :] = tail + shift
    return out


def training_windows(indptr: np.ndarray, items: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per user with >= 2 events: inputs (the last `width` items before the final one) and
    next-item targets, both right-aligned with 0 = padding and items shifted by +1, plus the
    number of real positions per row."""
    seqs = [items[indptr[u] : indptr[u + 1]] for u in range(len(indptr) - 1)]
    seqs = [s[-(width + 1) :] for s in seqs if len(s) >= 2]
    inp = pad_left([s[:-1] for s in seqs], width)
    tgt = pad_left([s[1:] for s in seqs], width)
    return inp, tgt, (tgt > 0).sum(axis=1)


class _FullSoftmaxCE(torch.autograd.Function):
    """Mean softmax cross-entropy of `h @ W.T` (N, V) against targets `y`, with both
    gradients computed in the forward pass, chunk by chunk, into a reused (N, V) workspace.

    Equal to `cross_entropy(h @ W.T, y)` but far fewer passes over the (N, V) logits (the
    softmax is taken in place while a chunk is still in cache) and no fresh 30+ MB tensor
    per batch (each would cost page faults): about half the time of the plain version."""

    @staticmethod
    def forward(
        ctx: Any, h: torch.Tensor, weight: torch.Tensor, y: torch.Tensor, workspace: torch.Tensor
    ) -> torch.Tensor:
        n, chunk = h.shape[0], 64
        grad = workspace[: n * weight.shape[0]].view(n, weight.shape[0])
        grad_h = torch.empty_like(h)
        total = torch.zeros((), dtype=torch.float64)
        rows = torch.arange(min(n, chunk))
        for lo in range(0, n, chunk):
            hi = min(n, lo + chunk)
            g, yc, r = grad[lo:hi], y[lo:hi], rows[: hi - lo]
            torch.mm(h[lo:hi], weight.t(), out=g)
            top = g.amax(1, keepdim=True)
            picked = g[r, yc]
            g.sub_(top).exp_()
            norm = g.sum(1, keepdim=True)
            total += (norm.log() + top).sum(dtype=torch.float64) - picked.sum(dtype=torch.float64)
            g.div_(norm)
            g[r, yc] -= 1.0
            torch.mm(g, weight, out=grad_h[lo:hi])
        grad_w = grad.t() @ h
        ctx.save_for_backward(grad_h, grad_w)
        ctx.n = n
        return (total / n).to(h.dtype)

    @staticmethod
    def backward(ctx: Any, out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        grad_h, grad_w = ctx.saved_tensors
        scale = out / ctx.n
        return grad_h * scale, grad_w * scale, None, None


def full_softmax_ce(
    h: torch.Tensor, weight: torch.Tensor, y: torch.Tensor, workspace: list[torch.Tensor]
) -> torch.Tensor:
    """`cross_entropy(h @ weight.T, y)`; `workspace` holds one reusable buffer (grown on demand)."""
    if not (h.requires_grad or weight.requires_grad):
        return nn.functional.cross_entropy(h @ weight.t(), y)
    need = h.shape[0] * weight.shape[0]
    if not workspace or workspace[0].numel() < need:
        workspace[:] = [torch.empty(int(need * 1.25), dtype=h.dtype)]
    out: torch.Tensor = _FullSoftmaxCE.apply(h, weight, y, workspace[0])  # type: ignore[no-untyped-call]  # torch leaves Function.apply unannotated
    return out


# ---------------------------------------------------------------------- network
class _Block(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.ln_attn = nn.LayerNorm(dim, eps=1e-8)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.ln_ff = nn.LayerNorm(dim, eps=1e-8)
        self.ff = nn.Sequential(
            nn.Linear(dim, dim), nn.Dropout(dropout), nn.ReLU(), nn.Linear(dim, dim), nn.Dropout(dropout)
        )

    def forward(self, x: torch.Tensor, causal: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        q = self.ln_attn(x)
        x = q + self.attn(q, x, x, attn_mask=causal, need_weights=False)[0]
        x = self.ln_ff(x)
        x = x + self.ff(x)
        return x * keep


class _SASRecNet(nn.Module):
    def __init__(self, n_items: int, max_len: int, dim: int, layers: int, heads: int, dropout: float):
        super().__init__()
        self.item = nn.Embedding(n_items + 1, dim, padding_idx=0)
        self.pos = nn.Embedding(max_len, dim)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(_Block(dim, heads, dropout) for _ in range(layers))
        self.ln = nn.LayerNorm(dim, eps=1e-8)
        self.max_len, self.heads, self.scale = max_len, heads, math.sqrt(dim)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_normal_(p)
        with torch.no_grad():
            self.item.weight[0].zero_()

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        """Hidden states (B, L, dim) for right-aligned sequences (B, L), L <= max_len."""
        width = seq.shape[1]
        pos = torch.arange(self.max_len - width, self.max_len, device=seq.device)
        keep = (seq > 0).unsqueeze(-1).to(self.item.weight.dtype)
        x = self.drop(self.item(seq) * self.scale + self.pos(pos)) * keep
        # causal, and padding keys are ignored, so scores do not depend on how far a batch is
        # padded; every position may see itself (an empty history then reads a zero vector)
        blocked = torch.ones(width, width, dtype=torch.bool, device=seq.device).triu(1) | (seq == 0)[:, None, :]
        blocked &= ~torch.eye(width, dtype=torch.bool, device=seq.device)
        mask = blocked.repeat_interleave(self.heads, dim=0)
        for block in self.blocks:
            x = block(x, mask, keep)
        out: torch.Tensor = self.ln(x)
        return out


# ---------------------------------------------------------------------- model
@dataclass
class SASRecConfig:
    """`loss`: "ce" (full softmax, default), "bce" (paper) or "sampled-ce" (with
    `n_negatives` negatives drawn by popularity ** `neg_alpha`, per mini-batch or per sequence:
    `negatives`). `epochs` is a maximum when fitted with a
    validation task (early stopping after `patience` checks without improvement).
    `valid_users` caps the users used for each validation check (0 = all). `threads`: torch
    CPU threads (0 = torch's default); 1 is fastest for these small ops on a busy 2-core box.
    Per-epoch progress goes to `on_epoch` and the `coachrec.models.training` logger."""

    max_len: int = 50
    dim: int = 64
    layers: int = 2
    heads: int = 1
    dropout: float = 0.5
    loss: str = "ce"
    n_negatives: int = 256
    neg_alpha: float = 0.75
    negatives: str = "batch"
    epochs: int = 100
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    eval_every: int = 5
    patience: int = 3
    valid_users: int = 5000
    seed: int = 0
    threads: int = 1


class SASRec(BaseRecommender):
    """Self-attentive sequential recommendation; scores = last hidden state · item embeddings."""

    name = "sasrec"
    Config = SASRecConfig
    renamed_settings: ClassVar[dict[str, str | None]] = {"verbose": None}  # printed epochs; now on_epoch / logging

    def _build(self, n_items: int) -> None:
        c = self.config
        if c.loss not in LOSSES:
            raise ValueError(f"sasrec: loss must be one of {LOSSES}, got {c.loss!r}")
        if c.negatives not in NEGATIVES:
            raise ValueError(f"sasrec: negatives must be one of {NEGATIVES}, got {c.negatives!r}")
        self.net = _SASRecNet(n_items, c.max_len, c.dim, c.layers, c.heads, c.dropout)
        #: last-position states of served input windows (a new net starts empty)
        self.state_cache: StateCache[torch.Tensor] = StateCache()

    def _fit(self, data: Dataset) -> None:
        c = self.config
        gen = torch_setup(c.seed, c.threads)
        rng = np.random.default_rng(c.seed)
        n_items = data.n_items
        self._build(n_items)
        inp, tgt, lengths = training_windows(*data.sequences(), c.max_len)
        if len(inp) == 0:
            raise ValueError("sasrec: no user has two or more events to learn a next item from")
        inp_t, tgt_t = torch.from_numpy(inp), torch.from_numpy(tgt)
        # sampled-ce proposal: popularity ** neg_alpha over item+1 (0 = padding, never drawn)
        pop = np.concatenate([[0.0], np.power(data.item_popularity() + 1.0, c.neg_alpha)])
        q = torch.from_numpy(pop / pop.sum())
        logq = torch.log(q.clamp(min=1e-30)).float()

        def batch_loss(b: np.ndarray) -> torch.Tensor:
            width = int(lengths[b].max())
            target = tgt_t[b, -width:]
            return self._loss(self.net(inp_t[b, -width:]), target, n_items, gen, q, logq, workspace)

        workspace: list[torch.Tensor] = []

        self.train_log = adam_epochs(self, self.net, lengths, batch_loss, self._valid, rng)

    def _loss(
        self,
        seq_h: torch.Tensor,
        target: torch.Tensor,
        n_items: int,
        gen: torch.Generator,
        q: torch.Tensor,
        logq: torch.Tensor,
        workspace: list[torch.Tensor],
    ) -> torch.Tensor:
        mask = target > 0
        h, pos = seq_h[mask], target[mask]
        emb = self.net.item.weight
        if self.config.loss == "ce":
            return full_softmax_ce(h, emb[1:], pos - 1, workspace)
        pos_logit = (h * emb[pos]).sum(-1)
        if self.config.loss == "bce":
            neg = torch.randint(1, n_items + 1, pos.shape, generator=gen)
            neg_logit = (h * emb[neg]).sum(-1)
            bce = nn.functional.binary_cross_entropy_with_logits
            return bce(pos_logit, torch.ones_like(pos_logit)) + bce(neg_logit, torch.zeros_like(neg_logit))
        n_neg = self.config.n_negatives
        if self.config.negatives == "sequence":  # one draw per sequence: (B, n) ids, a batched product
            seqs = torch.multinomial(q, n_neg * len(seq_h), replacement=True, generator=gen).view(len(seq_h), n_neg)
            per_seq = torch.bmm(seq_h, emb[seqs].transpose(1, 2))  # (B, W, n)
            neg = seqs[torch.arange(len(seq_h))[:, None].expand_as(target)[mask]]  # (P, n)
            neg_logit, neg_logq = per_seq[mask], logq[neg]
        else:
            neg = torch.multinomial(q, n_neg, replacement=True, generator=gen)[None, :].expand(len(pos), -1)
            neg_logit, neg_logq = h @ emb[neg[0]].T, logq[neg[0]][None, :]
        neg_logit = neg_logit.masked_fill(neg == pos[:, None], float("-inf"))
        # logQ correction: sampled softmax stays an unbiased stand-in for the full softmax
        logits = torch.cat([pos_logit[:, None] - logq[pos][:, None], neg_logit - neg_logq], dim=1)
        return nn.functional.cross_entropy(logits, torch.zeros(len(pos), dtype=torch.long))

    @torch.no_grad()
    def _score(self, histories: list[np.ndarray]) -> np.ndarray:
        c = self.config
        if c.threads > 0:
            torch.set_num_threads(c.threads)
        was_training = self.net.training
        self.net.eval()
        out = np.empty((len(histories), self.net.item.num_embeddings - 1), dtype=np.float32)
        # serving one history (not a validation pass mid-training): its window's state may be cached
        cache = self.state_cache if len(histories) == 1 and self._valid is None else None
        key = history_key(histories[0][-c.max_len :]) if cache is not None else b""
        for lo in range(0, len(histories), 512):
            h = cache.get(key) if cache is not None else None
            if h is None:
                seq = torch.from_numpy(pad_left(histories[lo : lo + 512], c.max_len))
                width = max(1, int((seq > 0).sum(1).max()))
                h = self.net(seq[:, -width:])[:, -1]
                if cache is not None:
                    cache.put(key, h)
            out[lo : lo + len(h)] = (h @ self.net.item.weight[1:].T).numpy()
        self.net.train(was_training)
        return out

    def _state(self) -> dict[str, np.ndarray]:
        return {k: v.detach().cpu().numpy() for k, v in self.net.state_dict().items()}

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        self._build(int(state["item.weight"].shape[0]) - 1)
        self.net.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in state.items()})
        self.net.eval()
