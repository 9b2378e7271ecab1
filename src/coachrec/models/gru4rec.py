"""GRU4Rec as its authors define it (Hidasi et al., ICLR 2016; Hidasi & Karatzoglou, CIKM 2018;
the official PyTorch code, github.com/hidasib/GRU4Rec_PyTorch_Official).

What makes it GRU4Rec rather than "a GRU over sequences":

- **Session-parallel mini-batches.** Each of `batch_size` slots walks through one session (here:
  one user's training sequence) event by event; when a session ends its slot's hidden state is
  reset and the next session takes the slot. The hidden state is carried between steps and
  detached (one-step truncated backpropagation), as in the official code.
- **Shared negative samples.** The targets of the other slots are negatives, plus `n_sample`
  extra items per step shared by the whole mini-batch, drawn from popularity ** `sample_alpha`.
  The scores are a (batch, batch + n_sample) matrix whose diagonal holds the targets.
- **Losses.** Cross-entropy over those columns (optional logQ correction) and BPR-max: BPR
  against the softmax-weighted negatives plus `bpreg` x the softmax-weighted squared scores.
- **Embeddings.** `constrained_embedding` ties the input embedding to the output weights; else
  `embedding > 0` is a separate input embedding; else the one-hot input feeds the first GRU
  layer directly (an item table of its input weights).
- **Optimizer.** Adagrad with momentum where item tables are updated only on the rows a step
  touches (`IndexedAdagradM`): untouched rows keep their accumulators and momentum unchanged.

Item tables are plain tensors: each step gathers the rows it needs into a small leaf tensor,
whose gradient is already coalesced; that is cheaper than torch's sparse embedding gradients.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numba
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from coachrec.data import Dataset
from coachrec.models.base import BaseRecommender
from coachrec.models.state_cache import StateCache, prefix_keys
from coachrec.models.training import fit_epochs

LOSSES = ("cross-entropy", "bpr-max")
#: output bias of items that had no training event (see `GRU4Rec._silence_untrained`)
UNTRAINED_BIAS = -1e4
#: how many events past a cached history prefix a served request looks back for it
PREFIX_LOOKBACK = 64


@dataclass
class GRU4RecConfig:
    """Defaults are the official code's class defaults; `create("gru4rec", dataset=...)`
    applies tuned, per-dataset settings (its published parameter files, `models/defaults.py`).

    `final_act` is applied to the sampled scores before the loss: "linear", "relu", "tanh",
    "elu-<alpha>", "leaky-<slope>". The official PyTorch code's `elu_param=a` is "elu-a" under
    BPR-max (it uses no activation under cross-entropy). Every option is monotone, so it never
    changes a ranking, only the training signal.
    `threads`: torch CPU threads while fitting and scoring (0 = torch's default).
    `score_batch`: histories run through the GRU at once when scoring."""

    loss: str = "cross-entropy"
    layers: list[int] = field(default_factory=lambda: [100])
    batch_size: int = 64
    dropout_p_embed: float = 0.0
    dropout_p_hidden: float = 0.0
    learning_rate: float = 0.05
    momentum: float = 0.0
    n_sample: int = 2048
    sample_alpha: float = 0.5
    embedding: int = 0
    constrained_embedding: bool = True
    final_act: str = "linear"
    bpreg: float = 1.0
    logq: float = 0.0
    epochs: int = 10
    seed: int = 0
    threads: int = 0
    score_batch: int = 512

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"gru4rec: loss must be one of {LOSSES}, got {self.loss!r}")
        raw: object = self.layers  # callers may also pass an int or a string
        if isinstance(raw, int):
            self.layers = [raw]
        elif isinstance(raw, str):  # "512" or "512/256" as in the official --params syntax
            self.layers = [int(x) for x in raw.replace(",", "/").split("/")]
        self.layers = [int(x) for x in self.layers]
        if not self.layers or min(self.layers) <= 0:
            raise ValueError(f"gru4rec: layers must be positive sizes, got {self.layers}")
        if self.batch_size < 1 or self.epochs < 0 or self.n_sample < 0:
            raise ValueError("gru4rec: batch_size >= 1, epochs >= 0 and n_sample >= 0 required")
        if self.loss == "cross-entropy" and self.n_sample == 0 and self.batch_size < 2:
            raise ValueError("gru4rec: cross-entropy without extra samples needs batch_size >= 2")
        final_activation(self.final_act)  # validates


def final_activation(spec: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The score activation named by `spec` (see `GRU4RecConfig.final_act`)."""
    name, _, arg = spec.partition("-")
    try:
        if name == "linear" and not arg:
            return lambda x: x
        if name == "relu" and not arg:
            return F.relu
        if name == "tanh" and not arg:
            return torch.tanh
        if name == "elu":
            alpha = float(arg) if arg else 1.0
            return lambda x: F.elu(x, alpha)
        if name == "leaky":
            slope = float(arg) if arg else 0.01
            return lambda x: F.leaky_relu(x, slope)
    except ValueError:
        pass
    raise ValueError(f"gru4rec: unknown final_act {spec!r}; use linear, relu, tanh, elu-<alpha> or leaky-<slope>")


# ---------------------------------------------------------------------------- optimizer
# The update is memory-bound: torch needs ~10 passes (gather, square, copy back, sqrt, ...) per
# step, a numba loop reads and writes each element once (`coachrec bench speed` measures it).
@numba.njit(fastmath=True, cache=True, parallel=True)
def _adagradm_rows(
    table: np.ndarray,
    acc: np.ndarray,
    mom: np.ndarray,
    rows: np.ndarray,
    grad: np.ndarray,
    lr: float,
    momentum: float,
    eps: float,
) -> None:  # pragma: no cover - compiled
    for i in numba.prange(rows.shape[0]):
        r = rows[i]
        for j in range(table.shape[1]):
            g = grad[i, j]
            a = acc[r, j] + g * g
            acc[r, j] = a
            m = momentum * mom[r, j] - lr * g / np.sqrt(a + eps)
            mom[r, j] = m
            table[r, j] += m


@numba.njit(fastmath=True, cache=True, parallel=True)
def _adagradm_dense(
    p: np.ndarray, acc: np.ndarray, mom: np.ndarray, grad: np.ndarray, lr: float, momentum: float, eps: float
) -> None:  # pragma: no cover - compiled
    for i in numba.prange(p.shape[0]):
        g = grad[i]
        a = acc[i] + g * g
        acc[i] = a
        m = momentum * mom[i] - lr * g / np.sqrt(a + eps)
        mom[i] = m
        p[i] += m


class IndexedAdagradM:
    """The authors' Adagrad with momentum.

    Per parameter: acc += g^2; mom = momentum * mom - lr * g / sqrt(acc + eps); p += mom.
    `step_rows` applies
    it to the given (unique) rows of an item table only, as the official code does for sparse
    gradients: untouched rows keep their accumulator and momentum; `step` to the dense
    parameters that have a `.grad`. Both run as one fused pass over the touched elements."""

    def __init__(self, lr: float = 0.05, momentum: float = 0.0, eps: float = 1e-6):
        if lr <= 0 or momentum < 0 or eps <= 0:
            raise ValueError("IndexedAdagradM: lr > 0, momentum >= 0 and eps > 0 required")
        self.lr, self.momentum, self.eps = lr, momentum, eps
        self.acc: dict[int, np.ndarray] = {}
        self.mom: dict[int, np.ndarray] = {}

    def _state(self, p: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        key = id(p)
        if key not in self.acc:
            if not (p.is_contiguous() and p.dtype == torch.float32):
                raise ValueError("IndexedAdagradM: parameters must be contiguous float32 CPU tensors")
            self.acc[key] = np.zeros(p.shape, dtype=np.float32)
            self.mom[key] = np.zeros(p.shape, dtype=np.float32)
        return self.acc[key], self.mom[key]

    @torch.no_grad()
    def step_rows(self, table: torch.Tensor, rows: torch.Tensor, grad: torch.Tensor) -> None:
        """Update `table[rows]` with `grad` (one row of gradient per unique row index)."""
        acc, mom = self._state(table)
        t, g = table.numpy(), grad.contiguous().numpy()
        if t.ndim == 1:  # a bias vector: rows of width 1
            t, acc, mom, g = t[:, None], acc[:, None], mom[:, None], g[:, None]
        _adagradm_rows(t, acc, mom, rows.numpy(), g, self.lr, self.momentum, self.eps)

    @torch.no_grad()
    def step(self, params: list[torch.Tensor]) -> None:
        for p in params:
            if p.grad is None:
                continue
            acc, mom = self._state(p)
            _adagradm_dense(
                p.numpy().reshape(-1),
                acc.reshape(-1),
                mom.reshape(-1),
                p.grad.contiguous().numpy().reshape(-1),
                self.lr,
                self.momentum,
                self.eps,
            )


def _uniform_(t: torch.Tensor, gen: torch.Generator, dim0_scale: int = 1, dim1_scale: int = 1) -> torch.Tensor:
    """The official initialisation: U(-s, s), s = sqrt(6 / (rows / dim0_scale + cols / dim1_scale))."""
    sigma = math.sqrt(6.0 / (t.shape[0] / dim0_scale + t.shape[1] / dim1_scale))
    with torch.no_grad():
        return t.uniform_(-sigma, sigma, generator=gen)


# ---------------------------------------------------------------------------- training schedule
@dataclass
class _Schedule:
    """Session-parallel mini-batches of one epoch, precomputed.

    Step t predicts `targets[ptr[t]:ptr[t+1]]` from `inputs[...]`. `remap[t]`, when not None,
    rebuilds the hidden state before step t: row j takes old row `remap[t][j]`, or zeros when
    that index equals the old row count (a new session started in that slot)."""

    inputs: torch.Tensor
    targets: torch.Tensor
    ptr: list[int]
    remap: list[torch.Tensor | None]

    def __len__(self) -> int:
        return len(self.remap)


def session_parallel_schedule(
    offsets: np.ndarray, order: np.ndarray, batch_size: int, min_rows: int = 1
) -> tuple[np.ndarray, np.ndarray, list[int], list[np.ndarray | None]]:
    """Event positions (input, target) of every step, as the official iterator walks them.

    `offsets`: session boundaries into the event array; `order`: the session order. Each round
    runs the slots for as many steps as the shortest remaining session allows, then refills
    the slots whose session ended; once no session is left, finished slots are dropped. Stops
    when fewer than `min_rows` slots remain. Every session must hold at least two events."""
    if len(order) and (np.diff(offsets)[order] < 2).any():
        raise ValueError("session_parallel_schedule: every session needs >= 2 events (an input and a target)")
    n_sess = len(order)
    iters = np.arange(min(batch_size, n_sess))
    maxiter = len(iters) - 1
    start = offsets[order[iters]].astype(np.int64)
    end = offsets[order[iters] + 1].astype(np.int64)
    ins: list[np.ndarray] = []
    ptr = [0]
    remaps: list[np.ndarray | None] = []
    pending: np.ndarray | None = None  # remap waiting for the next step
    zero = len(start)  # the "zeros" index of `pending`: the row count at the last step
    while len(start) >= min_rows:
        minlen = int((end - start).min())
        for i in range(minlen - 1):
            ins.append(start + i)
            ptr.append(ptr[-1] + len(start))
            remaps.append(pending)
            pending, zero = None, len(start)
        start = start + (minlen - 1)
        finished = end - start <= 1
        n_fin = int(finished.sum())
        iters[finished] = maxiter + np.arange(1, n_fin + 1)
        maxiter += n_fin
        valid = iters < n_sess
        if not valid.any():
            break
        refill = finished & valid
        sess = order[iters[refill]]
        start[refill] = offsets[sess]
        end[refill] = offsets[sess + 1]
        # new row j <- old row src[j], or zeros (index n_old) where a new session starts
        n_old = len(start)
        src = np.where(refill[valid], n_old, np.nonzero(valid)[0])
        if pending is not None:  # a round without steps: compose with the waiting remap
            src = np.where(src == n_old, zero, pending[np.minimum(src, n_old - 1)])
        pending = src
        iters, start, end = iters[valid], start[valid], end[valid]
    inputs = np.concatenate(ins) if ins else np.zeros(0, np.int64)
    return inputs, inputs + 1, ptr, remaps


class _Sampler:
    """Negative samples from popularity ** alpha, generated in large blocks (like the
    official sample cache) so a step only slices a precomputed tensor."""

    def __init__(self, pop: np.ndarray, alpha: float, n_sample: int, gen: torch.Generator, cache: int = 10_000_000):
        p = np.power(pop.astype(np.float64), alpha)
        cdf = np.cumsum(p) / p.sum()
        cdf[-1] = 1.0
        self.cdf = torch.tensor(cdf, dtype=torch.float64)
        self.n, self.gen = n_sample, gen
        self.rows = max(1, cache // max(n_sample, 1))
        self.block = torch.zeros(0, n_sample, dtype=torch.int64)
        self.pos = 0

    def next(self) -> torch.Tensor:
        if self.pos >= len(self.block):
            u = torch.rand(self.rows * self.n, generator=self.gen, dtype=torch.float64)
            self.block = (
                torch.searchsorted(self.cdf, u, right=True).clamp_(max=len(self.cdf) - 1).view(self.rows, self.n)
            )
            self.pos = 0
        self.pos += 1
        return self.block[self.pos - 1]


# ---------------------------------------------------------------------------- the network
def dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """Inverted dropout. The keep mask comes from 16-bit random integers (p resolved to
    1/65536), which torch draws about twice as fast on CPU as `bernoulli_` (nn.Dropout)."""
    if p <= 0:
        return x
    keep = torch.randint(0, 1 << 16, x.shape, dtype=torch.int32) >= round(p * (1 << 16))
    return x * keep * (1.0 / (1.0 - p))


class _Net(nn.Module):
    """Item tables (`Wy`, `By`, and `E` or `Wx0`) are buffers updated row-wise by the
    optimizer; the GRU layers are dense parameters."""

    # buffers registered in __init__ (`E` and `Wx0` only in their modes)
    Wy: torch.Tensor
    By: torch.Tensor
    E: torch.Tensor
    Wx0: torch.Tensor

    def __init__(self, n_items: int, cfg: GRU4RecConfig, gen: torch.Generator):
        super().__init__()
        layers = cfg.layers
        self.mode = "constrained" if cfg.constrained_embedding else ("embedding" if cfg.embedding > 0 else "onehot")
        self.register_buffer("Wy", _uniform_(torch.empty(n_items, layers[-1]), gen))
        self.register_buffer("By", torch.zeros(n_items))
        n_input = layers[-1]
        first = 0
        if self.mode == "embedding":
            self.register_buffer("E", _uniform_(torch.empty(n_items, cfg.embedding), gen))
            n_input = cfg.embedding
        elif self.mode == "onehot":
            # the first layer reads the one-hot input: its input weights are an item table
            self.register_buffer("Wx0", _uniform_(torch.empty(n_items, 3 * layers[0]), gen, dim1_scale=3))
            self.Wh0 = nn.Parameter(_uniform_(torch.empty(layers[0], 3 * layers[0]), gen, dim1_scale=3))
            self.Bh0 = nn.Parameter(torch.zeros(3 * layers[0]))
            first = 1
        self.first = first
        cells = []
        for i in range(first, len(layers)):
            cell = nn.GRUCell(layers[i - 1] if i > 0 else n_input, layers[i])
            # per gate U(-s, s), s = sqrt(6 / (fan_in + hidden)): the official code's default
            # (compatibility mode) initialisation of the GRU weights
            _uniform_(cell.weight_ih.data, gen, dim0_scale=3)
            _uniform_(cell.weight_hh.data, gen, dim0_scale=3)
            cell.bias_ih.data.zero_()
            cell.bias_hh.data.zero_()
            cells.append(cell)
        self.cells = nn.ModuleList(cells)
        self.p_embed, self.p_hidden = cfg.dropout_p_embed, cfg.dropout_p_hidden

    def input_table(self) -> torch.Tensor:
        return {
            "constrained": self.Wy,
            "embedding": getattr(self, "E", self.Wy),
            "onehot": getattr(self, "Wx0", self.Wy),
        }[self.mode]

    def onehot_step(self, vx: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """The official first layer over one-hot input; `vx` = the item's input-weight row."""
        vx = vx + self.Bh0
        vh = h @ self.Wh0
        vx_x, vx_r, vx_z = vx.chunk(3, 1)
        vh_x, vh_r, vh_z = vh.chunk(3, 1)
        r = torch.sigmoid(vx_r + vh_r)
        z = torch.sigmoid(vx_z + vh_z)
        cand = torch.tanh(r * vh_x + vx_x)
        return (1.0 - z) * h + z * cand

    def hidden(self, x: torch.Tensor, H: list[torch.Tensor], training: bool) -> torch.Tensor:
        """One step. `x` = input rows (embedding, or one-hot input weights); updates `H` in
        place (with the dropped-out activations, as the official code carries them)."""
        if self.mode == "onehot":
            x = self.onehot_step(x, H[0])
            if training:
                x = dropout(x, self.p_embed)
            H[0] = x
        elif training:
            x = dropout(x, self.p_embed)
        for j, cell in enumerate(self.cells):
            x = cell(x, H[self.first + j])
            if training:
                x = dropout(x, self.p_hidden)
            H[self.first + j] = x
        return x


# ---------------------------------------------------------------------------- the model
class GRU4Rec(BaseRecommender):
    """GRU4Rec: a GRU over the session predicts the next item; see the module docstring."""

    name = "gru4rec"
    Config = GRU4RecConfig
    renamed_settings: ClassVar[dict[str, str | None]] = {"n_epochs": "epochs"}  # the old name, in saved configs

    def __init__(self, config: GRU4RecConfig | None = None, **overrides: Any):
        super().__init__(config, **overrides)
        self.net: _Net | None = None
        self.epoch_losses: list[float] = []
        self.train_log: list[dict[str, Any]] = []
        self._untrained: np.ndarray | None = None
        #: hidden states (every layer) after served histories: one history scored at a time
        #: continues from its longest cached prefix (None: off; scores are the same either way)
        self.state_cache: StateCache[tuple[torch.Tensor, ...]] | None = StateCache()

    @contextlib.contextmanager
    def _threads(self) -> Iterator[None]:
        """torch and the numba optimizer both use `config.threads` (0 = their defaults)."""
        before, nb_before = torch.get_num_threads(), numba.get_num_threads()
        if self.config.threads > 0:
            torch.set_num_threads(self.config.threads)
            # numba.config sets its NUMBA_* settings at import time through globals()
            numba.set_num_threads(min(self.config.threads, numba.config.NUMBA_NUM_THREADS))  # type: ignore[attr-defined]
        try:
            yield
        finally:
            torch.set_num_threads(before)
            numba.set_num_threads(nb_before)

    # ------------------------------------------------------------------ training
    def _fit(self, data: Dataset) -> None:
        cache, self.state_cache = self.state_cache, None  # validation mid-training must not cache states
        try:
            self._fit_net(data)
        finally:
            if cache is not None:
                cache.clear()
            self.state_cache = cache

    def _fit_net(self, data: Dataset) -> None:
        cfg = self.config
        with self._threads():
            torch.manual_seed(cfg.seed)  # dropout draws from the global generator
            gen = torch.Generator().manual_seed(cfg.seed)
            self.net = _Net(data.n_items, cfg, gen)
            indptr, items = data.sequences()
            lengths = np.diff(indptr)
            sessions = np.nonzero(lengths > 1)[0]  # a one-event session has no next item to learn
            offsets = np.concatenate([[0], np.cumsum(lengths[sessions])]).astype(np.int64)
            # the official iterator orders sessions by start time; order-only data keeps user order
            if data.timestamps:
                t0 = data.events["time"].to_numpy()[indptr[sessions]]
                order = np.argsort(t0, kind="stable")
            else:
                order = np.arange(len(sessions))
            min_rows = 2 if cfg.n_sample == 0 else 1
            ins, outs, ptr, remaps = session_parallel_schedule(offsets, order, cfg.batch_size, min_rows)
            sched = _Schedule(
                torch.from_numpy(items[ins]),
                torch.from_numpy(items[outs]),
                ptr,
                [None if r is None else torch.from_numpy(r) for r in remaps],
            )
            pop = data.item_popularity()
            sampler = _Sampler(pop, cfg.sample_alpha, cfg.n_sample, gen) if cfg.n_sample > 0 else None
            log_pop = torch.log(torch.tensor(pop, dtype=torch.float32).clamp_(min=1)) if cfg.logq > 0 else None
            opt = IndexedAdagradM(cfg.learning_rate, cfg.momentum)
            self.epoch_losses = []
            self._untrained = pop == 0  # silenced in checkpoints (`_state`) and at the end

            def run_epoch() -> tuple[float, int]:
                loss = self._epoch(sched, sampler, log_pop, opt)
                self.epoch_losses.append(loss)
                return loss, len(sched.inputs)

            self.train_log = fit_epochs(self, self.net, cfg.epochs, run_epoch)
            self._silence_untrained(self._untrained)
            self.net.eval()

    @torch.no_grad()
    def _silence_untrained(self, untrained: np.ndarray) -> None:
        """Items without a training event keep their random initial vectors, which would rank
        them above real candidates; the official code has no such items (they are not in its
        item map). Zero their rows and give them a bias far below any trained score; scoring
        also leaves them out of histories."""
        idx = torch.from_numpy(np.nonzero(untrained)[0])
        if len(idx):
            assert self.net is not None
            self.net.Wy.index_fill_(0, idx, 0.0)
            self.net.By.index_fill_(0, idx, UNTRAINED_BIAS)

    def _epoch(
        self, sched: _Schedule, sampler: _Sampler | None, log_pop: torch.Tensor | None, opt: IndexedAdagradM
    ) -> float:
        """One pass over the schedule; returns the mean loss per predicted event."""
        cfg, net = self.config, self.net
        assert net is not None
        net.train()
        dense: list[torch.Tensor] = list(net.parameters())
        act = final_activation(cfg.final_act)
        in_table, out_table, bias = net.input_table(), net.Wy, net.By
        tied = net.mode == "constrained"
        B = min(cfg.batch_size, sched.ptr[1] - sched.ptr[0]) if len(sched) else cfg.batch_size
        H = [torch.zeros(B, d) for d in cfg.layers]
        count = 0
        losses = torch.zeros(len(sched))
        diag_cache: dict[int, torch.Tensor] = {}
        for t in range(len(sched)):
            lo, hi = sched.ptr[t], sched.ptr[t + 1]
            n = hi - lo
            remap = sched.remap[t]
            if remap is not None:
                H = [torch.cat([h, h.new_zeros(1, h.shape[1])]).index_select(0, remap) for h in H]
            x_idx, y_pos = sched.inputs[lo:hi], sched.targets[lo:hi]
            y = torch.cat([y_pos, sampler.next()]) if sampler is not None else y_pos
            # gather the rows this step touches into leaf tensors (coalesced gradients for free);
            # score against the unique rows once, then spread the columns to the samples
            if tied:
                rows, inv = torch.unique(torch.cat([x_idx, y]), return_inverse=True)
                w = out_table.index_select(0, rows).requires_grad_()
                x, y_inv = w[inv[:n]], inv[n:]
                b = bias.index_select(0, rows).requires_grad_()
            else:
                x_rows, x_inv = torch.unique(x_idx, return_inverse=True)
                rows, y_inv = torch.unique(y, return_inverse=True)
                e = in_table.index_select(0, x_rows).requires_grad_()
                w = out_table.index_select(0, rows).requires_grad_()
                b = bias.index_select(0, rows).requires_grad_()
                x = e[x_inv]
            h = net.hidden(x, H, training=True)
            H = [hh.detach() for hh in H]
            scores = act(torch.addmm(b, h, w.T)[:, y_inv])
            if n not in diag_cache:
                diag_cache[n] = torch.eye(n, scores.shape[1], dtype=torch.bool)
            diag = diag_cache[n]
            if cfg.loss == "cross-entropy":
                if log_pop is not None:
                    lp = log_pop[y]
                    if sampler is not None:
                        lp = torch.cat([lp[:n], lp[n:] * cfg.sample_alpha])
                    scores = scores - cfg.logq * lp
                loss = -torch.log_softmax(scores, dim=1).diagonal().sum()
            else:
                # BPR-max: softmax over the negatives (the diagonal is the target)
                soft = torch.softmax(scores.masked_fill(diag, float("-inf")), dim=1)
                target = scores.diagonal().unsqueeze(1)
                loss = (
                    -torch.log((torch.sigmoid(target - scores) * soft).sum(1) + 1e-24)
                    + cfg.bpreg * (scores.square() * soft).sum(1)
                ).sum()
            loss = loss / cfg.batch_size
            for p in dense:
                p.grad = None
            loss.backward()
            opt.step(dense)
            if not tied:
                assert e.grad is not None
                opt.step_rows(in_table, x_rows, e.grad)
            assert w.grad is not None and b.grad is not None  # leaves of this step's loss
            opt.step_rows(out_table, rows, w.grad)
            if tied:
                # the bias only scores outputs: update the output rows (as the official sparse
                # gradient of By does), not the input-only rows of the tied table
                used = torch.zeros(len(rows), dtype=torch.bool)
                used[y_inv] = True
                opt.step_rows(bias, rows[used], b.grad[used])
            else:
                opt.step_rows(bias, rows, b.grad)
            losses[t] = loss.detach() * (cfg.batch_size / n)
            count += n
        # events-weighted mean of the per-event loss, like the official log line
        weights = torch.tensor(np.diff(sched.ptr), dtype=torch.float32)
        total = float((losses * weights).sum() / max(count, 1)) if len(sched) else float("nan")
        if not math.isfinite(total):
            raise FloatingPointError("gru4rec: loss became NaN/inf; lower learning_rate or momentum")
        return total

    # ------------------------------------------------------------------ scoring
    @torch.no_grad()
    def final_hidden(self, histories: list[np.ndarray]) -> torch.Tensor:
        """The top layer's hidden state after each history (zeros for an empty one)."""
        net = self.net
        assert net is not None
        out = torch.zeros(len(histories), self.config.layers[-1])
        lengths = np.array([len(h) for h in histories], dtype=np.int64)
        order = np.argsort(-lengths, kind="stable")
        table = net.input_table()
        for lo in range(0, len(histories), self.config.score_batch):
            idx = order[lo : lo + self.config.score_batch]
            lens = lengths[idx]
            if lens[0] == 0:
                break
            pad = np.zeros((len(idx), int(lens[0])), dtype=np.int64)
            for r, i in enumerate(idx):
                pad[r, : lens[r]] = histories[i]
            seq = torch.from_numpy(pad)
            # rows are sorted by length: at step t the first `active[t]` rows are still running
            active = np.searchsorted(-lens, -np.arange(int(lens[0])), side="left")
            H = [torch.zeros(len(idx), d) for d in self.config.layers]
            for t in range(int(lens[0])):
                k = int(active[t])
                Hk = [h[:k] for h in H]
                net.hidden(table.index_select(0, seq[:k, t]), Hk, training=False)
                for h, hk in zip(H, Hk, strict=False):
                    h[:k] = hk
            out[torch.from_numpy(idx)] = H[-1]
        return out

    @torch.no_grad()
    def cached_final_hidden(self, history: np.ndarray, cache: StateCache[tuple[torch.Tensor, ...]]) -> torch.Tensor:
        """`final_hidden([history])`, continuing from the hidden state after the longest prefix
        of `history` in `cache` (looked for up to PREFIX_LOOKBACK events back) and caching the
        state after the whole history. Each step is the same batch-of-one computation as
        `final_hidden`'s, so the result is identical."""
        net = self.net
        assert net is not None
        if not len(history):
            return torch.zeros(1, self.config.layers[-1])
        shortest = len(history) - PREFIX_LOOKBACK
        keys = prefix_keys(history, shortest)
        found = cache.longest(keys)
        if found is None:
            done, H = 0, [torch.zeros(1, d) for d in self.config.layers]
        else:
            done, H = max(0, shortest) + found[0], list(found[1])
        if done < len(history):
            table = net.input_table()
            seq = torch.from_numpy(np.ascontiguousarray(history, dtype=np.int64))
            for t in range(done, len(history)):
                net.hidden(table.index_select(0, seq[t : t + 1]), H, training=False)
            cache.put(keys[-1], tuple(H))
        return H[-1]

    def _score(self, histories: list[np.ndarray]) -> np.ndarray:
        assert self.net is not None
        # like the official code, histories skip items the model never trained on
        trained = (self.net.By != UNTRAINED_BIAS).numpy()
        histories = [h[trained[h]] for h in histories]
        with self._threads():
            if len(histories) == 1 and self.state_cache is not None:  # serving: one request
                h = self.cached_final_hidden(histories[0], self.state_cache)
            else:
                h = self.final_hidden(histories)
            return torch.addmm(self.net.By, h, self.net.Wy.T).numpy().astype(np.float32, copy=False)

    # ------------------------------------------------------------------ persistence
    def _state(self) -> dict[str, np.ndarray]:
        assert self.net is not None
        state = {k: v.detach().numpy().copy() for k, v in self.net.state_dict().items()}
        if self._untrained is not None and self._untrained.any():  # a checkpoint mid-training
            state["Wy"][self._untrained] = 0.0
            state["By"][self._untrained] = UNTRAINED_BIAS
        return state

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        assert self.items is not None
        n_items = len(self.items)
        if self.state_cache is not None:
            self.state_cache.clear()
        self.net = _Net(n_items, self.config, torch.Generator().manual_seed(0))
        self.net.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()})
        self.net.eval()
