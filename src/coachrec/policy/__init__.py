"""The policy layer: hard constraints that never leak, diversity re-ranking, exploration.

from coachrec.policy import ConstraintIndex, Constraints, Range, mmr, EpsilonGreedy

index = ConstraintIndex(dataset.catalog)          # once per catalog
allowed = index.mask(Constraints(exclude_genres=("Horror",), ranges={"year": Range(1990, 1999)}),
                     seen=history)                # bool per item index
"""

from coachrec.policy.constraints import ConstraintError, Constraints, Range
from coachrec.policy.diversity import mmr
from coachrec.policy.exploration import EpsilonGreedy, Exploration, Explorer, Greedy, PlackettLuce, SlatePolicy

__all__ = [
    "ConstraintError",
    "Constraints",
    "EpsilonGreedy",
    "Exploration",
    "Explorer",
    "Greedy",
    "PlackettLuce",
    "Range",
    "SlatePolicy",
    "mmr",
]
