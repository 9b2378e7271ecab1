"""The evaluation protocol: it travels with every number coachrec reports."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Literal


@dataclass(frozen=True)
class Protocol:
    """How a ranking metric was computed.

    - `split`: how held-out events were chosen ("leave-one-out", "temporal", "by-session").
    - `candidates`: "full" ranks the target against every item; "sampled" against
      `n_negatives` items drawn per user (`sampler`: "uniform" or "popularity"), never items
      the user has seen and never the target.
    - `exclude_seen`: items in the user's history cannot be recommended (the target itself
      always competes, even when the user saw it before).
    - `ties`: "pessimistic" ranks a target below every item with an equal score.
    - `fit_on`: the events the model was fitted on: "train" (the papers' protocol: SASRec,
      LlamaRec), or "train+valid" (refit after model selection, as the official GRU4Rec
      evaluation scripts do with leave-one-out data); the test history is train + valid either way.
    """

    split: str = "leave-one-out"
    candidates: Literal["full", "sampled"] = "full"
    n_negatives: int = 0
    sampler: Literal["uniform", "popularity"] = "uniform"
    exclude_seen: bool = True
    ties: Literal["pessimistic"] = "pessimistic"
    seed: int = 0
    fit_on: Literal["train", "train+valid"] = "train"

    def __post_init__(self) -> None:
        if self.fit_on not in FIT_ON:
            raise ValueError(f"fit_on must be one of {FIT_ON}, got {self.fit_on!r}")
        if self.candidates not in ("full", "sampled"):
            raise ValueError(f"candidates must be 'full' or 'sampled', got {self.candidates!r}")
        if self.candidates == "sampled" and self.n_negatives <= 0:
            raise ValueError("a sampled protocol needs n_negatives > 0")
        if self.sampler not in ("uniform", "popularity"):
            raise ValueError(f"sampler must be 'uniform' or 'popularity', got {self.sampler!r}")
        if self.ties != "pessimistic":
            raise ValueError("only pessimistic tie-breaking is implemented")

    @property
    def short(self) -> str:
        base = {"leave-one-out": "loo", "temporal": "temporal", "by-session": "session"}.get(self.split, self.split)
        if self.candidates == "full":
            name = f"{base}-full"
        else:
            pop = "pop" if self.sampler == "popularity" else ""
            name = f"{base}-sampled{pop}{self.n_negatives}"
        return name if self.fit_on == "train" else f"{name}/{self.fit_on}"

    def describe(self) -> str:
        cand = (
            "full ranking over all items"
            if self.candidates == "full"
            else f"{self.n_negatives} {self.sampler}-sampled negatives (seed {self.seed})"
        )
        seen = "seen items excluded" if self.exclude_seen else "seen items kept"
        fit = "" if self.fit_on == "train" else ", model fitted on train + validation events"
        return f"{self.split}, {cand}, {seen}, ties pessimistic{fit}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"name": self.short, "description": self.describe()}


#: The events a model may be fitted on (`Split.fit_data`).
FIT_ON = ("train", "train+valid")

#: The named protocols of the CLI (`--protocol`).
NAMED: dict[str, Protocol] = {
    "loo-full": Protocol("leave-one-out", "full"),
    "loo-sampled100": Protocol("leave-one-out", "sampled", 100, "uniform"),
    "loo-sampledpop100": Protocol("leave-one-out", "sampled", 100, "popularity"),
    "temporal-full": Protocol("temporal", "full"),
    "session-full": Protocol("by-session", "full"),
}


def named(name: str) -> Protocol:
    """A named protocol; "NAME/train+valid" is NAME with the model fitted on train + valid."""
    base, _, fit_on = name.partition("/")
    if base not in NAMED or (fit_on and fit_on not in FIT_ON):
        raise ValueError(f"unknown protocol {name!r}; choose from {sorted(NAMED)}, optionally with '/train+valid'")
    return replace(NAMED[base], fit_on=fit_on) if fit_on else NAMED[base]  # type: ignore[arg-type]  # checked above
