"""The policy layer: hard constraints that never leak, diversity re-ranking, exploration.

    from coachrec.policy import ConstraintIndex, Constraints, Range, mmr, EpsilonGreedy

    index = ConstraintIndex(dataset.catalog)          # once per catalog
    allowed = index.mask(Constraints(exclude_genres=("Horror",), ranges={"year": Range(1990, 1999)}),
                         seen=history)                # bool per item index
"""

from coachrec.policy.constraints import ConstraintError, ConstraintIndex, Constraints, Range
from coachrec.policy.diversity import mmr, normalize_rows
from coachrec.policy.exploration import EpsilonGreedy, Exploration, Explorer, request_rng

__all__ = [
    "ConstraintError",
    "ConstraintIndex",
    "Constraints",
    "EpsilonGreedy",
    "Exploration",
    "Explorer",
    "Range",
    "mmr",
    "normalize_rows",
    "request_rng",
]
