"""Simulated clicks in the loop (opt-in, `LoopConfig.clicks`): logged impressions for the
`position_bias` signal, the `pal-ranker` remedy and the off-policy gate row.

    spec = ClickSpec.parse("ultra:1.0")            # position-based clicks, ULTRA's examination ** 1.0
    truth = later_truth(ctx.data, ctx.split.train)  # what each user really liked later
    log, stats = log_clicks(logging_stack(ctx.champion, 0.3), truth, spec, users, 2000, path, seed=0)

The planted truth is each user's leave-one-out held-out interactions (the ones no stack of the
run was fitted on), graded by their real rating (`coachrec.sim.truth.grade_of_rating`); every
other item is grade 0 (clicked, when examined, with the noise probability only). Built from the
training part itself (`PlantedTruth.holdout(split.train)`) the truth would be items the champion
has seen, which a served slate never shows. The logged traffic is served by the champion with
epsilon-greedy exploration (so every shown slot has a propensity) and its pool capped to what a
trace records (`TRACE_LIMIT` rows) and without MMR diversification (so the logged order is its
ranking), through `Service` and `Simulator`, into a trace store and a
feedback log of its own: what `read_slates` reads back.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from coachrec.data import Dataset
from coachrec.policy.ope import SlateLog
from coachrec.progress import SILENT, Progress
from coachrec.serve import Service, Stack
from coachrec.serve.candidates import TRACE_LIMIT
from coachrec.serve.feedback import feedback_path_for
from coachrec.serve.impressions import read_slates
from coachrec.sim import PlantedTruth, PositionBased, SimulationStats, Simulator, examination
from coachrec.sim.clicks import Curve
from coachrec.sim.truth import grade_of_rating
from coachrec.teacher import RelevanceCommittee


@dataclass(frozen=True)
class ClickSpec:
    """Position-based simulated clicks: examination `curve` ("ultra" or "inverse") to the power `eta`."""

    curve: Curve
    eta: float

    @classmethod
    def parse(cls, text: str) -> ClickSpec:
        """`CURVE:ETA`, e.g. `ultra:1.0` or `inverse:0.5`."""
        curve, sep, eta = text.partition(":")
        if curve not in ("ultra", "inverse"):
            raise ValueError(f"simulated clicks must be CURVE:ETA with CURVE ultra or inverse, got {text!r}")
        try:
            value = float(eta) if sep else 1.0
        except ValueError:
            raise ValueError(f"simulated clicks must be CURVE:ETA with a number ETA, got {text!r}") from None
        if not 0.0 <= value <= 4.0:
            raise ValueError(f"simulated clicks: eta must be in [0, 4], got {value}")
        return cls("ultra" if curve == "ultra" else "inverse", value)

    def model(self, k: int = 10) -> PositionBased:
        return PositionBased(examination(self.curve, self.eta, k))

    def __str__(self) -> str:
        return f"position-based, {self.curve} examination ** {self.eta:g}"


def later_truth(data: Dataset, train: Dataset, *, noise: float = 0.05) -> PlantedTruth:
    """The planted truth: `data`'s events not in `train` (the leave-one-out held-out ones),
    graded by rating (grade 4 for rating-free data); user and item indices are `data`'s."""
    held = data.events.join(train.events.select("user", "item").unique(), on=["user", "item"], how="anti")
    users = held["user"].to_numpy().astype(np.int64)
    items = held["item"].to_numpy().astype(np.int64)
    values = held["value"].to_numpy().astype(np.float64)
    rated = data.events["value"].max() is not None and float(data.events["value"].max()) > 1.0  # type: ignore[arg-type]
    grades = grade_of_rating(values) if rated else np.full(len(items), 4, np.int8)
    keys = users * data.n_items + items
    order = np.argsort(keys, kind="stable")
    keys, grades = keys[order], grades[order]
    last = np.r_[keys[1:] != keys[:-1], True] if len(keys) else np.zeros(0, bool)
    keys, grades = keys[last], grades[last]
    positive = grades > 0
    return PlantedTruth(
        data.n_items, keys[positive], grades[positive], noise, np.unique(keys[positive] // data.n_items)
    )


def logging_stack(champion: Stack, epsilon: float) -> Stack:
    """The champion as it logs traffic for off-policy evaluation: its own epsilon if it explores,
    else `epsilon`; each retriever's candidates capped so the pool fits in a trace; no MMR
    diversification (lambda 1), so the logged pool order is the champion's ranking, the order a
    candidate ranker's scores replace (`position_remedy.served_scores` scores the rank stage)."""
    if not 0.0 < epsilon < 1.0:
        raise ValueError(f"the logging epsilon must be in (0, 1), got {epsilon}")
    cfg = champion.config
    per_retriever = max(TRACE_LIMIT // max(len(champion.retriever_names), 1), 10)
    return replace(
        champion,
        config=replace(cfg, epsilon=cfg.epsilon if cfg.epsilon > 0 else epsilon,
                       candidates=min(cfg.candidates, per_retriever), diversity=1.0),
    )  # fmt: skip


def log_clicks(
    stack: Stack,
    truth: PlantedTruth,
    spec: ClickSpec,
    users: list[str],
    n_requests: int,
    db: Path,
    *,
    seed: int = 0,
    progress: Progress = SILENT,
) -> tuple[SlateLog, SimulationStats]:
    """Serve `n_requests` plain requests of `users` (drawn uniformly) through `stack` in a
    `Service` whose trace store is `db`; simulated users click by `spec` and the planted truth;
    the impressions and clicks are read back from the store and feedback log."""
    model = stack.models[0]
    if model.users is None:
        raise ValueError("the stack's models are not fitted")
    idx = model.users.encode(list(users), unknown="mask")
    idx = np.unique(idx[idx >= 0])
    if not len(idx):
        raise ValueError("none of the users is known to the served models")
    db.unlink(missing_ok=True)
    Path(feedback_path_for(db)).unlink(missing_ok=True)
    service = Service.open(stack, db=db)
    try:
        sim = Simulator(service, replace(truth, users=idx), spec.model(10), seed=seed)
        stats = sim.run(n_requests, k=10, progress=progress)
        log = read_slates(service.store, service.feedback)
    finally:
        service.close()
    return log, stats


def judged_relevance(committee: RelevanceCommittee, log: SlateLog) -> np.ndarray:
    """The relevance committee's P(relevant) of each shown item (n, K); NaN where no slot or
    the committee does not know the item."""
    if log.shown_items is None:
        raise ValueError("the log has no shown item ids")
    out = np.full(log.shown.shape, np.nan)
    for i in range(len(log)):
        slots = np.flatnonzero(log.slots[i])
        if len(slots):
            out[i, slots] = committee.probability(str(log.user_id[i]), [], list(log.shown_items[i, slots]))
    return out


def click_summary(log: SlateLog) -> dict[str, float]:
    return {
        "slates": float(len(log)),
        "impressions": float(log.impressions),
        "clicks": float(log.reward.sum()),
        "clicks_per_slate": float(log.reward.sum(axis=1).mean()) if len(log) else float("nan"),
    }


__all__ = ["ClickSpec", "click_summary", "judged_relevance", "later_truth", "log_clicks", "logging_stack"]
