"""The gate: may a candidate stack replace the champion?

It compares the two on the same evidence, paired, on the gate's users only (users no selection
step ever saw):

- **judged traffic**: the same requests (a golden set's requests when one is published, and
  the gate users' replayed traffic) served by both stacks through the traced pipeline and
  judged by the teacher; per failure mode, the rate difference;
- **independent evidence**: what the candidate was not fitted to: ground-truth later
  interactions (leave-one-out, full ranking, NDCG@10 and Recall@10) and, where a remedy brings
  them, human labels (e.g. held-out ReDial dialogs for a request-understanding remedy).

Statistics are clustered by user (by dialog for conversations): a repeated identical request is
counted once, each user's requests are averaged, the bootstrap resamples users and the
permutation test flips the sign of a user's whole difference. Promotion needs all of: the judge
of the targeted criterion may gate; the target's failure rate lower with the CI's upper bound
below 0 *and* p < alpha *and* at least `min_discordant` users whose outcome differs (a handful
of changed requests is not evidence); the rate of slates the judge could not score not higher;
every independent metric non-inferior (CI lower bound above -margin x the champion's value) or,
where a row says so, better. A candidate identical to the champion on every request is refused.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from coachrec.coach.trust import Trust
from coachrec.metrics import evaluate, named
from coachrec.metrics.stats import clustered_compare

GROUND_TRUTH = ("ndcg@10", "recall@10")
PROTOCOL = "loo-full"


@dataclass(frozen=True)
class GateConfig:
    margin: float = 0.02
    """Non-inferiority margin, relative: an independent metric may lose at most this share of
    the champion's value (the CI's lower bound must stay above -margin x champion)."""
    alpha: float = 0.05
    """The target's permutation p must be below this (beside the CI excluding zero)."""
    min_discordant: int = 10
    """Fewest users whose target outcome differs between the stacks for a promotion."""
    n_boot: int = 2000
    n_perm: int = 10000
    confidence: float = 0.95
    seed: int = 0


@dataclass(frozen=True)
class GateRow:
    section: str
    metric: str
    role: str
    """`target` (must improve), `guard` (must not get worse), `independent` (must improve) or `report`."""
    champion: float
    candidate: float
    delta: float
    ci_low: float
    ci_high: float
    p_value: float
    n: int
    """Clusters (users or dialogs) compared."""
    better: str
    """`lower` or `higher`."""
    passed: bool | None
    discordant: int = 0
    """Clusters whose outcome differs between the two stacks."""

    @property
    def ci(self) -> str:
        return f"[{self.ci_low:+.4f}, {self.ci_high:+.4f}]"


@dataclass
class GateReport:
    champion: str
    candidate: str
    target_mode: str
    target_criterion: str
    judge_version: str
    promote: bool
    reasons: list[str]
    rows: list[GateRow]
    trust: list[dict[str, Any]]
    protocol: dict[str, str]
    config: GateConfig = field(default_factory=GateConfig)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["rows"] = [asdict(r) for r in self.rows]
        return d

    def row(self, section: str, metric: str) -> GateRow:
        for r in self.rows:
            if r.section == section and r.metric == metric:
                return r
        raise KeyError(f"gate report has no row {section}/{metric}")

    def verdict(self) -> str:
        return f"{'PROMOTE' if self.promote else 'REFUSE'} {self.candidate}: " + "; ".join(self.reasons)

    def markdown(self) -> str:
        head = "| section | metric | role | champion | candidate | delta | 95% CI | p | clusters | differ | ok |"
        lines = [head, "|---" * 11 + "|"]
        for r in self.rows:
            ok = "" if r.passed is None else ("yes" if r.passed else "**no**")
            lines.append(
                f"| {r.section} | {r.metric} | {r.role} | {r.champion:.4f} | {r.candidate:.4f} | {r.delta:+.4f} | "
                f"{r.ci} | {r.p_value:.4f} | {r.n} | {r.discordant} | {ok} |"
            )
        return "\n".join(lines)


def per_cluster(
    values: np.ndarray, clusters: Sequence[str], keys: Sequence[str] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Values with repeated identical requests (same `keys` entry) counted once, NaN dropped;
    returns (values, cluster of each)."""
    values = np.asarray(values, dtype=np.float64)
    keep = ~np.isnan(values)
    if keys is not None:
        first = np.zeros(len(values), dtype=bool)
        first[np.unique(np.asarray(keys, dtype=object), return_index=True)[1]] = True
        keep &= first
    return values[keep], np.asarray(clusters, dtype=object)[keep]


def _row(
    section: str,
    metric: str,
    role: str,
    a: np.ndarray,
    b: np.ndarray,
    clusters: np.ndarray,
    better: str,
    config: GateConfig,
    passed: Callable[[float, float, float], bool] | None,
) -> GateRow:
    c = clustered_compare(
        a, b, clusters, n_boot=config.n_boot, n_perm=config.n_perm, confidence=config.confidence, seed=config.seed
    )
    _, g = np.unique(clusters, return_inverse=True)
    differ = int((np.bincount(g, weights=np.abs(b - a) > 1e-12) > 0).sum())
    n = int(g.max()) + 1 if len(g) else 0
    return GateRow(
        section,
        metric,
        role,
        c.mean_a,
        c.mean_b,
        c.delta,
        c.ci_low,
        c.ci_high,
        c.p_value,
        n,
        better,
        None if passed is None else passed(c.ci_low, c.ci_high, c.p_value),
        differ,
    )


def failure_rows(
    section: str,
    champion: Mapping[str, np.ndarray],
    candidate: Mapping[str, np.ndarray],
    users: Sequence[str],
    target_mode: str,
    config: GateConfig,
    *,
    keys: Sequence[str] | None = None,
    unknown: tuple[np.ndarray, np.ndarray] | None = None,
) -> list[GateRow]:
    """One row per failure mode judged on both sides: rate of the mode over the requests both
    judged (NaN = the criterion did not apply or could not judge), clustered by `users`, repeated
    identical requests (`keys`) once. `unknown`: per request, 1 where the target criterion could
    not judge the slate (champion, candidate) — a guard, so a candidate cannot escape the judge."""
    rows = []
    for mode in sorted(set(champion) & set(candidate), key=lambda m: (m != target_mode, m)):
        a, b = np.asarray(champion[mode], dtype=np.float64), np.asarray(candidate[mode], dtype=np.float64)
        both = np.where(~np.isnan(a) & ~np.isnan(b), 0.0, np.nan)
        av, cl = per_cluster(a + both, users, keys)
        bv, _ = per_cluster(b + both, users, keys)
        if not len(av):
            continue
        role = "target" if mode == target_mode else "report"
        rule = (lambda lo, hi, p: hi < 0 and p < config.alpha) if role == "target" else None
        rows.append(_row(section, f"{mode} rate", role, av, bv, cl, "lower", config, rule))
    if unknown is not None:
        av, cl = per_cluster(unknown[0], users, keys)
        bv, _ = per_cluster(unknown[1], users, keys)
        if len(av):
            rows.append(
                _row(
                    section,
                    "unjudgeable slate rate",
                    "guard",
                    av,
                    bv,
                    cl,
                    "lower",
                    config,
                    lambda lo, hi, p: not (lo > 0),
                )
            )
    return rows


def conversation_recall_row(
    requests: Sequence[Any],
    champion: Any,
    candidate: Any,
    targets: Mapping[str, Sequence[str]],
    clusters: Sequence[str],
    role: str,
    config: GateConfig,
) -> GateRow:
    """Recall@10 of the human recommender's next movies in the slates each stack served for the
    same conversations (`Served` of each side), clustered by dialog: human ground truth the
    candidate was never fitted to. As `independent` it must improve; as `guard`, not worsen
    beyond the margin."""

    def recall(served: Any) -> np.ndarray:
        out = np.full(len(requests), np.nan)
        for i, (req, case) in enumerate(zip(requests, served.cases, strict=True)):
            want = set(targets.get(req.request_id, ()))
            if want:
                out[i] = len(want & set(case.items[:10])) / len(want)
        return out

    a, b = recall(champion), recall(candidate)
    keep = ~np.isnan(a)
    cl = np.asarray(clusters, dtype=object)[keep]
    rule = _better(config.alpha) if role == "independent" else _above(-config.margin * float(a[keep].mean()))
    return _row(
        "conversations",
        "recall@10 of the human recommender's next movies",
        role,
        a[keep],
        b[keep],
        cl,
        "higher",
        config,
        rule,
    )


def ground_truth_rows(
    champion_scorer: Any, candidate_scorer: Any, split: Any, users: Sequence[str], config: GateConfig
) -> list[GateRow]:
    """Leave-one-out full-ranking NDCG@10 and Recall@10 on `users`' last interactions, paired by
    user; non-inferiority with a relative margin."""
    proto = named(PROTOCOL)
    a = evaluate(champion_scorer, split, proto, ks=(10,))
    b = evaluate(candidate_scorer, split, proto, ks=(10,))
    ids = np.asarray(split.train.users.ids, dtype=object)[a.users]
    keep = np.isin(ids, np.asarray(list(users), dtype=object))
    if not keep.any():
        raise ValueError("ground truth: none of the gate users has a test interaction")
    rows = []
    for m in GROUND_TRUTH:
        floor = -config.margin * float(a.per_user[m][keep].mean())
        rows.append(
            _row(
                "ground truth",
                m,
                "guard",
                a.per_user[m][keep],
                b.per_user[m][keep],
                ids[keep],
                "higher",
                config,
                _above(floor),
            )
        )
    return rows


def _above(floor: float) -> Callable[[float, float, float], bool]:
    return lambda lo, hi, p: lo > floor


def _better(alpha: float) -> Callable[[float, float, float], bool]:
    return lambda lo, hi, p: lo > 0 and p < alpha


def decide(
    rows: Sequence[GateRow],
    trust: Mapping[str, Trust],
    target_mode: str,
    target_criterion: str,
    config: GateConfig,
    *,
    stand_in: str | None = None,
) -> tuple[bool, list[str]]:
    """Apply the promotion rules; returns (promote, reasons) with every broken rule named.
    `stand_in`: for a target no judge emits (a statistical signal such as `position_bias`), the
    section whose `independent` row must pass in place of a target row (the off-policy row)."""
    problems, good = [], []
    t = trust.get(target_criterion)
    if t is None or not t.may_gate:
        problems.append(f"the judge of {target_criterion!r} may not gate ({t.reason if t else 'quality unknown'})")
    else:
        good.append(f"judge of {target_criterion!r} trusted ({t.reason})")
    if rows and all(r.discordant == 0 for r in rows):
        problems.append("the candidate gives the champion's result on every request and user: nothing to promote")
    targets = [r for r in rows if r.role == "target"]
    if stand_in is not None:
        if not any(r.section == stand_in and r.role == "independent" for r in rows):
            problems.append(f"{target_mode!r} is gated by its {stand_in!r} row, and there is none")
    elif not targets:
        problems.append(f"no judged case of failure mode {target_mode!r} on both sides")
    for r in targets:
        if not r.passed:
            problems.append(
                f"{r.section}: {r.metric} not lower with confidence (delta {r.delta:+.4f}, CI {r.ci}, "
                f"p {r.p_value:.3f}; needs the CI's upper bound below 0 and p < {config.alpha})"
            )
        elif r.discordant < config.min_discordant:
            problems.append(
                f"{r.section}: {r.metric} differs for only {r.discordant} of {r.n} users "
                f"(at least {config.min_discordant} needed: too sparse to be evidence)"
            )
        else:
            good.append(
                f"{r.section}: {r.metric} {r.champion:.3f} -> {r.candidate:.3f} (delta {r.delta:+.4f}, CI {r.ci}, "
                f"p {r.p_value:.3f}, {r.discordant} users differ)"
            )
    independent = [r for r in rows if r.role in ("guard", "independent")]
    if not any(r.section == "ground truth" for r in independent):
        problems.append("no ground-truth comparison")
    for r in independent:
        if r.passed:
            good.append(
                f"{r.section}: {r.metric} {'better' if r.role == 'independent' else 'not worse'} "
                f"(delta {r.delta:+.4f}, CI {r.ci})"
            )
        elif r.role == "independent":
            problems.append(
                f"{r.section}: {r.metric} not better with confidence (delta {r.delta:+.4f}, CI {r.ci}, "
                f"p {r.p_value:.3f})"
            )
        elif r.section == "ground truth":
            problems.append(
                f"ground truth {r.metric} may be worse: delta {r.delta:+.4f}, CI {r.ci}; the lower bound must be "
                f"above -{config.margin:.0%} of the champion's {r.champion:.4f} ({PROTOCOL})"
            )
        else:
            problems.append(f"{r.section}: {r.metric} higher for the candidate (delta {r.delta:+.4f}, CI {r.ci})")
    return (not problems, problems if problems else good)
