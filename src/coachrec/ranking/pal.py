"""PAL (Guo et al., RecSys 2019): learn preference, not position, from logged clicks.

    P(click | x, slot) = ProbSeen(slot [, surface]) x pCTR(x)

Both towers are trained jointly on the product against the logged clicks; only `pCTR` serves
(a ranking never depends on a slot it has not assigned yet). `ProbSeen` is a logistic model of
the slot (plus a per-surface offset when a surface is given), `pCTR` a small MLP over the
ranker's features of the (request, item) pair. The product is identified only up to a common
factor (pCTR x c with ProbSeen / c gives the same clicks), so ProbSeen's curve is meaningful
relative to its first slot, and pCTR is calibrated only up to that factor.

The same trainer fits the baselines the paper and the issue compare against, chosen by `mode`:

- "naive": pCTR alone on clicks (learns position as preference when slots follow the ranking);
- "position-feature": one MLP over the features and the slot one-hot, served at a fixed slot;
- "ipw": pCTR alone with clicks re-weighted by 1/true examination (the unbiased pointwise loss
  of Saito et al. 2020, propensities clipped at `clip`): a reference that needs the truth.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

Mode = Literal["pal", "naive", "position-feature", "ipw"]
MODES: tuple[str, ...] = ("pal", "naive", "position-feature", "ipw")


@dataclass
class PALConfig:
    mode: Mode = "pal"
    hidden: int = 32
    epochs: int = 20
    batch: int = 2048
    lr: float = 0.02
    l2: float = 1e-5
    clip: float = 0.02
    """ipw: smallest examination propensity used as a divisor."""
    seed: int = 0


@dataclass
class PAL:
    """A fitted click model; `score` is what serves (pCTR), `click_probability` predicts clicks."""

    n_features: int
    n_positions: int
    config: PALConfig = field(default_factory=PALConfig)
    n_surfaces: int = 0
    fit_info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.config.mode not in MODES:
            raise ValueError(f"mode must be one of {list(MODES)}, got {self.config.mode!r}")
        import torch

        torch.manual_seed(self.config.seed)
        extra = self.n_positions if self.config.mode == "position-feature" else 0
        h = self.config.hidden
        self._ctr = torch.nn.Sequential(
            torch.nn.Linear(self.n_features + extra, h), torch.nn.ReLU(), torch.nn.Linear(h, 1)
        )
        self._seen = torch.nn.Embedding(self.n_positions, 1)
        torch.nn.init.zeros_(self._seen.weight)
        self._surface = torch.nn.Embedding(max(self.n_surfaces, 1), 1)
        torch.nn.init.zeros_(self._surface.weight)
        self.mu = np.zeros(self.n_features)
        self.sd = np.ones(self.n_features)

    # -- the towers --------------------------------------------------------------------------

    def parameters(self) -> dict[str, list[Any]]:
        """The towers' torch parameters by tower ("pctr", "probseen")."""
        return {"pctr": list(self._ctr.parameters()),
                "probseen": list(self._seen.parameters()) + list(self._surface.parameters())}  # fmt: skip

    def _inputs(self, x: np.ndarray, position: np.ndarray | None) -> Any:
        import torch

        z = (np.asarray(x, dtype=np.float64) - self.mu) / self.sd
        if self.config.mode == "position-feature":
            if position is None:
                raise ValueError("a position-feature model scores at a slot: give `position`")
            one_hot = np.zeros((len(z), self.n_positions))
            one_hot[np.arange(len(z)), np.asarray(position, dtype=np.int64)] = 1.0
            z = np.c_[z, one_hot]
        return torch.as_tensor(z, dtype=torch.float32)

    def _seen_logit(self, position: Any, surface: Any) -> Any:
        out = self._seen(position).squeeze(-1)
        if self.n_surfaces:
            out = out + self._surface(surface).squeeze(-1)
        return out

    # -- training ----------------------------------------------------------------------------

    def fit(
        self,
        x: np.ndarray,
        position: np.ndarray,
        click: np.ndarray,
        *,
        examination: np.ndarray | None = None,
        surface: np.ndarray | None = None,
    ) -> PAL:
        """Fit on logged impressions: features (N, F), 0-based slot (N,), click 0/1 (N,);
        `examination` (per slot) only for mode "ipw"; `surface` codes (N,) with `n_surfaces`."""
        import torch

        x = np.asarray(x, dtype=np.float64)
        pos = np.asarray(position, dtype=np.int64)
        y = np.asarray(click, dtype=np.float64)
        if x.shape != (len(pos), self.n_features) or len(y) != len(pos):
            raise ValueError(f"fit needs x (N, {self.n_features}), position (N,), click (N,); got {x.shape}, "
                             f"{pos.shape}, {y.shape}")  # fmt: skip
        if len(pos) == 0:
            raise ValueError("no impressions to fit on")
        if pos.min() < 0 or pos.max() >= self.n_positions:
            raise ValueError(f"positions must lie in [0, {self.n_positions}), got {pos.min()}..{pos.max()}")
        mode = self.config.mode
        if mode == "ipw" and examination is None:
            raise ValueError("mode 'ipw' needs the true examination propensity per slot")
        if self.n_surfaces and surface is None:
            raise ValueError(f"this model has {self.n_surfaces} surfaces: give each impression's surface")
        self.mu = x.mean(axis=0)
        sd = x.std(axis=0)
        self.sd = np.where(sd > 1e-12, sd, 1.0)
        inputs = self._inputs(x, pos)
        pos_t = torch.as_tensor(pos)
        surf_t = torch.as_tensor(np.zeros(len(pos), np.int64) if surface is None else np.asarray(surface, np.int64))
        y_t = torch.as_tensor(y, dtype=torch.float32)
        weight = None
        if mode == "ipw" and examination is not None:
            theta = np.maximum(np.asarray(examination, dtype=np.float64)[pos], self.config.clip)
            weight = torch.as_tensor(y / theta, dtype=torch.float32)  # unbiased relevance label c / theta
        params = self.parameters()["pctr"] + (self.parameters()["probseen"] if mode == "pal" else [])
        opt = torch.optim.Adam(params, lr=self.config.lr, weight_decay=self.config.l2)
        gen = torch.Generator().manual_seed(self.config.seed)
        start = time.perf_counter()
        losses = []
        for _ in range(self.config.epochs):
            order = torch.randperm(len(pos), generator=gen)
            total = 0.0
            for lo in range(0, len(pos), self.config.batch):
                b = order[lo : lo + self.config.batch]
                logit = self._ctr(inputs[b]).squeeze(-1)
                if mode == "pal":
                    # log P(click) = log sigmoid(a) + log sigmoid(b); log(1 - P) computed stably
                    log_p = torch.nn.functional.logsigmoid(logit) + torch.nn.functional.logsigmoid(
                        self._seen_logit(pos_t[b], surf_t[b])
                    )
                    log_not = torch.log1p(-torch.exp(log_p).clamp(max=1 - 1e-6))
                    loss = -(y_t[b] * log_p + (1 - y_t[b]) * log_not).mean()
                elif mode == "ipw" and weight is not None:
                    r = weight[b]  # BCE against the unbiased label r (may exceed 1)
                    loss = -(
                        r * torch.nn.functional.logsigmoid(logit) + (1 - r) * torch.nn.functional.logsigmoid(-logit)
                    ).mean()
                else:
                    loss = torch.nn.functional.binary_cross_entropy_with_logits(logit, y_t[b])
                opt.zero_grad()
                loss.backward()  # type: ignore[no-untyped-call]  # torch leaves Tensor.backward unannotated
                opt.step()
                total += float(loss.detach()) * len(b)
            losses.append(total / len(pos))
        seconds = time.perf_counter() - start
        self.fit_info = {"mode": mode, "impressions": len(pos), "epochs": self.config.epochs,
                         "seconds": round(seconds, 3), "seconds_per_1m_impressions": round(seconds * 1e6 / len(pos), 2),
                         "loss_by_epoch": [round(v, 5) for v in losses]}  # fmt: skip
        return self

    # -- serving -----------------------------------------------------------------------------

    def score(self, x: np.ndarray, *, position: int | None = None) -> np.ndarray:
        """pCTR of each row: what serves. A position-feature model scores at the fixed `position`."""
        import torch

        if self.config.mode == "position-feature":
            if position is None:
                raise ValueError("a position-feature model serves at a fixed slot: give `position` (0 = the top)")
            pos = np.full(len(x), position)
        else:
            pos = None
        with torch.no_grad():
            out: np.ndarray = torch.sigmoid(self._ctr(self._inputs(x, pos)).squeeze(-1)).numpy().astype(np.float64)
        return out

    def prob_seen(self, surface: int = 0) -> np.ndarray:
        """ProbSeen of each slot (PAL only; the other modes have no examination tower)."""
        import torch

        if self.config.mode != "pal":
            raise ValueError(f"a {self.config.mode!r} model has no ProbSeen tower")
        pos = torch.arange(self.n_positions)
        with torch.no_grad():
            out: np.ndarray = (
                torch.sigmoid(self._seen_logit(pos, torch.full_like(pos, surface))).numpy().astype(np.float64)
            )
        return out

    def click_probability(self, x: np.ndarray, position: np.ndarray, *, examination: np.ndarray | None = None,
                          surface: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
        """Predicted P(click) at the logged slots: PAL's product, the position-feature model at
        the slot, naive pCTR as is, ipw's pCTR times the given true `examination`."""
        pos = np.asarray(position, dtype=np.int64)
        mode = self.config.mode
        if mode == "position-feature":
            import torch

            with torch.no_grad():
                out: np.ndarray = torch.sigmoid(self._ctr(self._inputs(x, pos)).squeeze(-1)).numpy().astype(np.float64)
            return out
        ctr = self.score(x)
        if mode == "pal":
            seen = np.stack([self.prob_seen(s) for s in range(max(self.n_surfaces, 1))])
            s = np.zeros(len(pos), np.int64) if surface is None else np.asarray(surface, np.int64)
            product: np.ndarray = ctr * seen[s, pos]
            return product
        if mode == "ipw":
            if examination is None:
                raise ValueError("ipw predicts clicks only with the true examination per slot")
            return ctr * np.asarray(examination, dtype=np.float64)[pos]
        return ctr
