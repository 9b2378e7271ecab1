"""A click simulator with planted truth on real data, driving the real serving path.

`PlantedTruth.holdout` hides each user's latest interactions as their true preference and
returns the rest to fit the served stack on; `examination` and the click models
(`PositionBased`, `Cascade`, `TrustBias`) turn a shown slate into clicks; `Simulator` sends
requests through a `Service`, so impressions, clicks and propensities land in the trace store
and the feedback log exactly as production traffic's would.
"""

from coachrec.sim.clicks import Cascade, ClickModel, PositionBased, TrustBias, examination
from coachrec.sim.driver import SimulationStats, Simulator, replay_clicks, set_explorer
from coachrec.sim.truth import PlantedTruth

__all__ = [
    "Cascade",
    "ClickModel",
    "PlantedTruth",
    "PositionBased",
    "SimulationStats",
    "Simulator",
    "TrustBias",
    "examination",
    "replay_clicks",
    "set_explorer",
]
