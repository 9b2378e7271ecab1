"""PAL (Guo et al., RecSys 2019): learn preference, not position, from logged clicks.

    P(click | x, slot) = ProbSeen(slot [, surface]) x pCTR(x)

Both towers are trained jointly on the product against the logged clicks; only `pCTR` serves
(a ranking never depends on a slot it has not assigned yet). `pCTR` is a logistic model or, with
`hidden`, a small MLP over the ranker's features of the (request, item) pair.

Identification. From clicks alone the product is identified only up to a common factor
(pCTR x c with ProbSeen / c gives the same clicks), so a free pair of towers drifts along that
ridge and pCTR's scale means nothing. ProbSeen is therefore the examination *relative to the
top slot*: `log ProbSeen(slot, surface) = phi[slot] + delta[surface]` with `phi[0] = 0` and
`delta[0] = 0` pinned, everything else free. `pCTR` is then the probability of a click if the
item were shown at the top slot (of surface 0): identified, and comparable with an IPW model
whose propensities are taken relative to the top slot, and with the truth `exam[0] * preference`.

Optimisation. The default is full-batch L-BFGS (deterministic given the seed, and it converges:
minibatch Adam with 400 steps left the lower slots' examination far from the optimum, too flat,
so position leaked into pCTR through the features correlated with it, such as the blend rank);
`optimizer="adam"` keeps minibatches for logs too large for one batch.

The same trainer fits the baselines the paper and the issue compare against, chosen by `mode`:

- "naive": pCTR alone on clicks (learns position as preference when slots follow the ranking);
- "position-feature": one MLP over the features and the slot one-hot, served at a fixed slot;
- "ipw": pCTR alone with clicks re-weighted by 1/(true examination relative to the top slot)
  (the unbiased pointwise loss of Saito et al. 2020, relative propensities clipped at `clip`):
  a reference that needs the truth.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

Mode = Literal["pal", "naive", "position-feature", "ipw"]
MODES: tuple[str, ...] = ("pal", "naive", "position-feature", "ipw")
Optimizer = Literal["lbfgs", "adam"]


@dataclass
class PALConfig:
    mode: Mode = "pal"
    hidden: int = 0
    """Hidden units of the pCTR MLP; 0: a logistic model (the default: on the ranker's dozen
    features an MLP of 32 fitted worse true-preference NDCG in every mode, `bench feedback`)."""
    epochs: int = 200
    """L-BFGS: iterations over the full batch; Adam: epochs of minibatches."""
    batch: int = 2048
    lr: float = 0.02
    """Adam's learning rate (L-BFGS uses a line search)."""
    l2: float = 1e-4
    """L2 penalty on pCTR's weights (never on ProbSeen)."""
    clip: float = 0.02
    """ipw: smallest relative examination propensity used as a divisor."""
    optimizer: Optimizer = "lbfgs"
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
        if self.config.optimizer not in ("lbfgs", "adam"):
            raise ValueError(f"optimizer must be 'lbfgs' or 'adam', got {self.config.optimizer!r}")
        import torch

        torch.manual_seed(self.config.seed)
        extra = self.n_positions if self.config.mode == "position-feature" else 0
        h = self.config.hidden
        n_in = self.n_features + extra
        layers = [torch.nn.Linear(n_in, h), torch.nn.ReLU(), torch.nn.Linear(h, 1)] if h else [torch.nn.Linear(n_in, 1)]
        self._ctr = torch.nn.Sequential(*layers)
        self._seen = torch.nn.Embedding(self.n_positions, 1)  # phi: log examination relative to slot 0
        torch.nn.init.zeros_(self._seen.weight)
        self._surface = torch.nn.Embedding(max(self.n_surfaces, 1), 1)  # delta: relative to surface 0
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

    def _log_seen(self, position: Any, surface: Any) -> Any:
        """log ProbSeen relative to (slot 0, surface 0), which are pinned at 0 (see the module)."""
        out = self._seen(position).squeeze(-1) * (position > 0)
        if self.n_surfaces:
            out = out + self._surface(surface).squeeze(-1) * (surface > 0)
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
        label = y_t
        if mode == "ipw" and examination is not None:
            exam = np.asarray(examination, dtype=np.float64)
            theta = np.maximum(exam[pos] / exam[0], self.config.clip)
            label = torch.as_tensor(y / theta, dtype=torch.float32)  # unbiased top-slot label c / theta (may exceed 1)
        ctr_params = self.parameters()["pctr"]
        params = ctr_params + (self.parameters()["probseen"] if mode == "pal" else [])
        weights = [p for p in ctr_params if p.dim() > 1]
        log_max = float(np.log1p(-1e-6))

        def loss_of(b: Any) -> Any:
            logit = self._ctr(inputs[b]).squeeze(-1)
            if mode == "pal":
                log_p = (torch.nn.functional.logsigmoid(logit) + self._log_seen(pos_t[b], surf_t[b])).clamp(max=log_max)
                loss = -(y_t[b] * log_p + (1 - y_t[b]) * torch.log1p(-torch.exp(log_p))).mean()
            else:  # BCE against the label (ipw's may exceed 1)
                r = label[b]
                loss = -(
                    r * torch.nn.functional.logsigmoid(logit) + (1 - r) * torch.nn.functional.logsigmoid(-logit)
                ).mean()
            return loss + self.config.l2 * sum((w**2).sum() for w in weights)

        start = time.perf_counter()
        losses = self._optimise(params, loss_of, len(pos))
        seconds = time.perf_counter() - start
        self.fit_info = {"mode": mode, "optimizer": self.config.optimizer, "impressions": len(pos),
                         "epochs": self.config.epochs, "seconds": round(seconds, 3),
                         "seconds_per_1m_impressions": round(seconds * 1e6 / len(pos), 2),
                         "final_loss": round(losses[-1], 6),
                         "loss_trace": [round(v, 6) for v in losses[:: max(len(losses) // 10, 1)]]}  # fmt: skip
        return self

    def _optimise(self, params: list[Any], loss_of: Any, n: int) -> list[float]:
        import torch

        losses: list[float] = []
        if self.config.optimizer == "lbfgs":
            everything = torch.arange(n)
            opt = torch.optim.LBFGS(params, lr=1.0, max_iter=self.config.epochs, history_size=20, tolerance_grad=1e-7,
                                    tolerance_change=1e-10, line_search_fn="strong_wolfe")  # fmt: skip

            def closure() -> Any:
                opt.zero_grad()
                loss = loss_of(everything)
                loss.backward()
                losses.append(float(loss.detach()))
                return loss

            opt.step(closure)  # type: ignore[no-untyped-call]  # torch leaves LBFGS.step's closure untyped
            return losses
        opt_adam = torch.optim.Adam(params, lr=self.config.lr)
        gen = torch.Generator().manual_seed(self.config.seed)
        for _ in range(self.config.epochs):
            order = torch.randperm(n, generator=gen)
            total = 0.0
            for lo in range(0, n, self.config.batch):
                b = order[lo : lo + self.config.batch]
                loss = loss_of(b)
                opt_adam.zero_grad()
                loss.backward()
                opt_adam.step()
                total += float(loss.detach()) * len(b)
            losses.append(total / n)
        return losses

    # -- serving -----------------------------------------------------------------------------

    def score(self, x: np.ndarray, *, position: int | None = None) -> np.ndarray:
        """pCTR of each row: what serves (PAL, ipw: the click probability at the top slot).
        A position-feature model scores at the fixed `position`."""
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
        """ProbSeen of each slot relative to the top slot of surface 0 (PAL only)."""
        import torch

        if self.config.mode != "pal":
            raise ValueError(f"a {self.config.mode!r} model has no ProbSeen tower")
        pos = torch.arange(self.n_positions)
        with torch.no_grad():
            out: np.ndarray = torch.exp(self._log_seen(pos, torch.full_like(pos, surface))).numpy().astype(np.float64)
        return out

    def click_probability(self, x: np.ndarray, position: np.ndarray, *, examination: np.ndarray | None = None,
                          surface: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
        """Predicted P(click) at the logged slots: PAL's product, the position-feature model at
        the slot, naive pCTR as is, ipw's top-slot pCTR times the true examination relative to
        the top slot."""
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
            product: np.ndarray = np.minimum(ctr * seen[s, pos], 1.0 - 1e-6)
            return product
        if mode == "ipw":
            if examination is None:
                raise ValueError("ipw predicts clicks only with the true examination per slot")
            exam = np.asarray(examination, dtype=np.float64)
            out_ipw: np.ndarray = ctr * (exam / exam[0])[pos]
            return out_ipw
        return ctr
