"""Per-request routing: no LLM, the small model, or escalation to a larger one.

Signals: the retriever's relative score margin between its top two candidates (a confident
retriever needs no reranking), the history length (a short history gives the retriever little
to go on) and whether the user typed a request (only a language model reads it). The rule, in
order:

1. free text given and margin < `escalate_margin`       -> escalate (when a larger tier exists)
2. no free text and margin >= `skip_margin`             -> none
3. history shorter than `short_history` and margin < `escalate_margin` -> escalate
4. otherwise                                            -> small

Cache hits are handled below the router: a `CachedBackend` answers without reaching the model,
and the span records `coachrec.llm.cached` and a cost of 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

Tier = Literal["none", "small", "escalate"]


@dataclass(frozen=True)
class RouterConfig:
    skip_margin: float = 0.25
    escalate_margin: float = 0.02
    short_history: int = 5
    escalation: bool = True
    """Whether a larger tier is configured; without it rules 1 and 3 fall back to small."""

    def __post_init__(self) -> None:
        if self.escalate_margin < 0 or self.skip_margin < 0:
            raise ValueError("router margins must be >= 0")
        if self.escalate_margin > self.skip_margin:
            raise ValueError(
                f"escalate_margin ({self.escalate_margin}) must not exceed skip_margin ({self.skip_margin})"
            )
        if self.short_history < 0:
            raise ValueError(f"short_history must be >= 0, got {self.short_history}")


@dataclass(frozen=True)
class Signals:
    margin: float
    """(top1 - top2) / |top1| of the retriever scores; 1.0 with a single candidate."""
    history_length: int
    free_text: bool

    def as_dict(self) -> dict[str, float | int | bool]:
        return {"margin": round(self.margin, 6), "history_length": self.history_length, "free_text": self.free_text}


@dataclass(frozen=True)
class Route:
    tier: Tier
    reason: str
    signals: Signals


def signals(scores: Sequence[float] | np.ndarray, history_length: int, request: str | None) -> Signals:
    """Router signals from the retriever scores (best first), the history and the request."""
    s = np.sort(np.asarray(scores, dtype=np.float64)[np.isfinite(scores)])[::-1]
    if len(s) < 2:
        margin = 1.0
    else:
        margin = float((s[0] - s[1]) / abs(s[0])) if s[0] != 0 else 0.0
    return Signals(margin, int(history_length), bool(request and request.strip()))


class Router:
    def __init__(self, config: RouterConfig | None = None) -> None:
        self.config = config or RouterConfig()

    def route(self, sig: Signals) -> Route:
        c = self.config
        uncertain = sig.margin < c.escalate_margin
        if sig.free_text and uncertain:
            return self._escalate(sig, f"free text and margin {sig.margin:.3f} < {c.escalate_margin}")
        if not sig.free_text and sig.margin >= c.skip_margin:
            return Route("none", f"no free text and margin {sig.margin:.3f} >= {c.skip_margin}", sig)
        if sig.history_length < c.short_history and uncertain:
            return self._escalate(
                sig,
                f"history {sig.history_length} < {c.short_history} and margin {sig.margin:.3f} < {c.escalate_margin}",
            )
        return Route("small", "free text" if sig.free_text else f"margin {sig.margin:.3f} < {c.skip_margin}", sig)

    def _escalate(self, sig: Signals, reason: str) -> Route:
        if self.config.escalation:
            return Route("escalate", reason, sig)
        return Route("small", reason + " (no escalation tier)", sig)
