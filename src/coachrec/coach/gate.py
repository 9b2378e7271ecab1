"""The gate: may a candidate stack replace the champion?

It compares the two on the same evidence, paired:

- **judged traffic**: the same requests (a golden set's requests when one is published, and
  held-out users' replayed traffic) served by both stacks through the traced pipeline and judged
  by the teacher; per failure mode, the rate difference with a paired bootstrap CI;
- **ground truth**: leave-one-out, full-ranking NDCG@10 and Recall@10 on real later
  interactions, per user, paired.

Promotion needs all of: the judge of the targeted criterion may gate (kappa floor); the
candidate's targeted failure rate is lower with the CI's upper bound below 0; each ground-truth
metric's CI lower bound is above `-tolerance`. Otherwise the refusal lists every rule broken.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from coachrec.coach.trust import Trust
from coachrec.metrics import compare, evaluate, named

GROUND_TRUTH = ("ndcg@10", "recall@10")
PROTOCOL = "loo-full"


@dataclass(frozen=True)
class GateConfig:
    tolerance: float = 0.01
    """Largest ground-truth loss accepted: each metric's CI lower bound must stay above -tolerance."""
    n_boot: int = 2000
    confidence: float = 0.95
    seed: int = 0


@dataclass(frozen=True)
class GateRow:
    section: str
    metric: str
    role: str
    """`target` (must improve), `guard` (must not get worse) or `report`."""
    champion: float
    candidate: float
    delta: float
    ci_low: float
    ci_high: float
    p_value: float
    n: int
    better: str
    """`lower` or `higher`."""
    passed: bool | None

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

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GateReport:
        rows = [GateRow(**r) for r in d["rows"]]
        return cls(d["champion"], d["candidate"], d["target_mode"], d["target_criterion"], d["judge_version"], bool(d["promote"]),
                   list(d["reasons"]), rows, list(d["trust"]), dict(d["protocol"]), GateConfig(**d.get("config", {})))

    def row(self, section: str, metric: str) -> GateRow:
        for r in self.rows:
            if r.section == section and r.metric == metric:
                return r
        raise KeyError(f"gate report has no row {section}/{metric}")

    def verdict(self) -> str:
        if self.promote:
            return f"PROMOTE {self.candidate}: " + "; ".join(self.reasons)
        return f"REFUSE {self.candidate}: " + "; ".join(self.reasons)

    def markdown(self) -> str:
        lines = ["| section | metric | role | champion | candidate | delta | 95% CI | p | n | ok |", "|---" * 10 + "|"]
        for r in self.rows:
            ok = "" if r.passed is None else ("yes" if r.passed else "**no**")
            lines.append(f"| {r.section} | {r.metric} | {r.role} | {r.champion:.4f} | {r.candidate:.4f} | {r.delta:+.4f} | "
                         f"{r.ci} | {r.p_value:.4f} | {r.n} | {ok} |")
        return "\n".join(lines)


def _row(section: str, metric: str, role: str, a: np.ndarray, b: np.ndarray, better: str, config: GateConfig,
         passed: Callable[[float, float], bool] | None) -> GateRow:
    c = compare(a, b, n_boot=config.n_boot, confidence=config.confidence, seed=config.seed)
    return GateRow(section, metric, role, c.mean_a, c.mean_b, c.delta, c.ci_low, c.ci_high, c.p_value, c.n, better,
                   None if passed is None else passed(c.ci_low, c.ci_high))


def failure_rows(section: str, champion: Mapping[str, np.ndarray], candidate: Mapping[str, np.ndarray], target_mode: str,
                 config: GateConfig) -> list[GateRow]:
    """One row per failure mode judged on both sides: rate of the mode over the cases both
    judged (NaN = the criterion did not apply), paired by request."""
    rows = []
    for mode in sorted(set(champion) & set(candidate), key=lambda m: (m != target_mode, m)):
        a, b = champion[mode], candidate[mode]
        both = ~np.isnan(a) & ~np.isnan(b)
        if not both.any():
            continue
        role = "target" if mode == target_mode else "report"
        rows.append(_row(section, f"{mode} rate", role, a[both], b[both], "lower", config,
                         (lambda lo, hi: hi < 0) if role == "target" else None))
    return rows


def ground_truth_rows(champion_scorer: Any, candidate_scorer: Any, split: Any, config: GateConfig) -> list[GateRow]:
    proto = named(PROTOCOL)
    a = evaluate(champion_scorer, split, proto, ks=(10,))
    b = evaluate(candidate_scorer, split, proto, ks=(10,))
    return [_row("ground truth", m, "guard", a.per_user[m], b.per_user[m], "higher", config,
                 lambda lo, hi: lo > -config.tolerance) for m in GROUND_TRUTH]


def decide(rows: Sequence[GateRow], trust: Mapping[str, Trust], target_mode: str, target_criterion: str,
           config: GateConfig) -> tuple[bool, list[str]]:
    """Apply the promotion rules; returns (promote, reasons) with every broken rule named."""
    problems, good = [], []
    t = trust.get(target_criterion)
    if t is None or not t.may_gate:
        problems.append(f"the judge of {target_criterion!r} may not gate ({t.reason if t else 'quality unknown'})")
    else:
        good.append(f"judge of {target_criterion!r} trusted ({t.reason})")
    targets = [r for r in rows if r.role == "target"]
    if not targets:
        problems.append(f"no judged case of failure mode {target_mode!r} on both sides")
    for r in targets:
        if r.passed:
            good.append(f"{r.section}: {r.metric} {r.champion:.3f} -> {r.candidate:.3f} (delta {r.delta:+.4f}, CI {r.ci})")
        else:
            problems.append(f"{r.section}: {r.metric} not lower with confidence (delta {r.delta:+.4f}, CI {r.ci}; "
                            "the CI's upper bound must be below 0)")
    guards = [r for r in rows if r.role == "guard"]
    if not guards:
        problems.append("no ground-truth comparison")
    for r in guards:
        if r.passed:
            good.append(f"{r.metric} not worse (delta {r.delta:+.4f}, CI {r.ci} above -{config.tolerance})")
        else:
            problems.append(f"ground truth {r.metric} may be worse: delta {r.delta:+.4f}, CI {r.ci}; the lower bound must be "
                            f"above -{config.tolerance} ({PROTOCOL})")
    return (not problems, good if not problems else problems)
