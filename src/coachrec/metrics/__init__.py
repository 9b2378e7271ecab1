"""Ranking metrics under explicit protocols, beyond-accuracy metrics, paired statistics."""

from coachrec.metrics.beyond import average_popularity, coverage, gini, intra_list_diversity, novelty
from coachrec.metrics.evaluation import EvalResult, evaluate
from coachrec.metrics.protocol import NAMED as PROTOCOLS
from coachrec.metrics.protocol import Protocol, named
from coachrec.metrics.ranking import metrics_from_ranks, multi_target_ranks, target_ranks
from coachrec.metrics.stats import PairedComparison, cohen_kappa, compare, paired_bootstrap, permutation_test

__all__ = [
    "PROTOCOLS", "EvalResult", "PairedComparison", "Protocol", "average_popularity", "cohen_kappa", "compare",
    "coverage", "evaluate", "gini", "intra_list_diversity", "metrics_from_ranks", "multi_target_ranks", "named",
    "novelty", "paired_bootstrap", "permutation_test", "target_ranks",
]  # fmt: skip
