"""`coachrec bench coach`: the effect of one coach iteration.

Per dataset: the targeted failure mode's rate before (champion) and after (candidate) on the
same held-out replayed requests, with a paired bootstrap CI, and ground-truth NDCG@10 /
Recall@10 (leave-one-out, full ranking) before and after, with the gate's decision.

On Beauty (order-only interactions, no item text, no attributes) only the exact program
criteria that need neither ratings nor attributes apply (no_duplicates, not_consumed,
slate_complete, upstream_constraint_leak, explanation_grounding); the relevance criterion is
calibrated on later ratings >= 4 and does not apply, nor do the LLM criteria (no item text) or
constraint adherence (no genres or years to constrain). When no failure mode may be
distilled, the row says why and before = after = the champion.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from coachrec_bench.results import row, write

console = Console()


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.1f}/{five:.1f}/{fifteen:.1f} (1/5/15-min load on {os.cpu_count()} cores)"


def _champion_truth(result: Any) -> dict[str, float]:
    from coachrec.metrics import evaluate, named

    r = evaluate(result.context.champion.scorer(), result.context.split, named("loo-full"), ks=(10,))
    return {"ndcg@10": r.metrics["ndcg@10"], "recall@10": r.metrics["recall@10"]}


def applicable(result: Any) -> dict[str, str]:
    """Which rubric criteria can be judged on this data at all, and why not."""
    from coachrec.coach.trust import has_ratings

    data = result.context.data
    catalog = data.catalog
    out = {}
    for c in result.context.rubric.criteria:
        if c.member == "recommender" and not has_ratings(data):
            out[c.name] = "applies: no ratings, so calibrated on later interactions (teacher.heldout_interactions)"
        elif c.member == "llm" and catalog is None:
            out[c.name] = "does not apply: no item text (titles are bare ids)"
        elif c.name == "constraint_adherence" and (catalog is None or "year" not in catalog.frame.columns):
            out[c.name] = "does not apply: no genres or years to constrain"
        else:
            out[c.name] = "applies"
    return out


def _row(result: Any, requests: int, started: str) -> dict[str, Any]:
    from coachrec.coach.report import summary

    s = summary(result)
    metrics: dict[str, Any] = {
        "decision": result.decision,
        "promoted": result.promoted,
        "target_mode": result.target_mode,
        "seconds": round(result.seconds, 1),
        "load_start": started,
        "load_end": _load(),
        "criteria_apply": applicable(result),
        "criteria_trust": {
            t["criterion"]: ("may gate: " if t["may_gate"] else "report only: ") + t["why"] for t in s["trust"]
        },
        "top_failure_modes": s["failure_modes"][:5],
        "remedies": [
            {"remedy": t.remedy, "note": t.note, "promoted": t.promoted, "reasons": t.gate.reasons if t.gate else None}
            for t in result.tried
        ],
    }
    metrics["gates"] = {
        t.remedy: {
            "promoted": t.promoted,
            "rows": [
                {
                    "section": r.section,
                    "metric": r.metric,
                    "role": r.role,
                    "champion": r.champion,
                    "candidate": r.candidate,
                    "delta": r.delta,
                    "ci95": [r.ci_low, r.ci_high],
                    "p": r.p_value,
                    "clusters": r.n,
                    "differ": r.discordant,
                    "passed": r.passed,
                }
                for r in t.gate.rows
            ],
        }
        for t in result.tried
        if t.gate is not None
    }
    if result.gate is not None:
        target = next(r for r in result.gate.rows if r.role == "target")
        metrics["target_rate"] = {
            "section": target.section,
            "before": target.champion,
            "after": target.candidate,
            "delta": target.delta,
            "relative": target.delta / target.champion if target.champion else None,
            "ci95": [target.ci_low, target.ci_high],
            "p": target.p_value,
            "clusters": target.n,
        }
        human = [r for r in result.gate.rows if r.metric.startswith("recall@10 of the human")]
        if human:
            h = human[0]
            metrics["human_recall@10"] = {
                "before": h.champion,
                "after": h.candidate,
                "delta": h.delta,
                "ci95": [h.ci_low, h.ci_high],
                "p": h.p_value,
                "dialogs": h.n,
            }
        for m in ("ndcg@10", "recall@10"):
            g = result.gate.row("ground truth", m)
            metrics[m] = {
                "before": g.champion,
                "after": g.candidate,
                "delta": g.delta,
                "ci95": [g.ci_low, g.ci_high],
                "users": g.n,
            }
        metrics["remedy"] = result.chosen.remedy if result.chosen else None
    else:
        truth = _champion_truth(result)
        metrics["target_rate"] = None
        for m, v in truth.items():
            metrics[m] = {
                "before": v,
                "after": v,
                "delta": 0.0,
                "ci95": None,
                "users": result.context.split.test.n_users,
            }
    protocol = (
        f"one coach iteration: users split 40/40/20 (selection, gate, unused); {requests} replayed requests of "
        "selection "
        f"users judged, every remedy for the target built on selection users; {requests} requests of gate users served "
        "by champion and each candidate and judged (95% CI by user bootstrap, sign-flip permutation by user); ground "
        "truth leave-one-out full ranking over all items (gate users' last interaction), ranker output before policy; "
        "all stacks fitted on the leave-one-out training part"
    )
    return row("coach", result.context.data.name, protocol, metrics)


def bench_coach(
    datasets: Annotated[str, typer.Option("--datasets", help="Comma-separated datasets.")] = "ml-latest-small,beauty",
    requests: Annotated[int, typer.Option(help="Replayed requests per side (distil / gate).")] = 400,
    llm: Annotated[str, typer.Option(help="LLM member for the LLM criteria (reporting only).")] = "none",
    seeds: Annotated[str, typer.Option(help="Comma-separated seeds (users, dialogs and traffic).")] = "0,1",
    iterations: Annotated[int, typer.Option(help="Coach iterations per run, each on the last one's champion.")] = 2,
    champions: Annotated[
        str,
        typer.Option(
            help="Candidate first champions, ';'-separated retriever sets ('itemknn;sequential-rules+itemknn'); "
            "empty: LoopConfig's default."
        ),
    ] = "",
) -> None:
    """Failure-mode rate and ground-truth NDCG@10/Recall@10 before and after each coach iteration."""
    from coachrec.cli.console import RichProgress as RichUI
    from coachrec.coach import LoopConfig, Registry, run_iterations
    from coachrec.coach.report import write_report

    rows = []
    for name in [d.strip() for d in datasets.split(",") if d.strip()]:
        for seed in [int(x) for x in seeds.split(",") if x.strip()]:
            tmp = Path(tempfile.mkdtemp(prefix=f"coachrec-bench-coach-{name}-{seed}-"))
            registry = Registry(tmp / "registry")
            config = LoopConfig(dataset=name, distill_requests=requests, gate_requests=requests, llm=llm, seed=seed)
            if champions.strip():
                sets = tuple(tuple(m.strip() for m in c.split("+")) for c in champions.split(";") if c.strip())
                config = replace(config, champions=sets)
            started = _load()
            for it, out, result in run_iterations(config, registry, tmp, RichUI(console), iterations=iterations):
                write_report(result, out, title=f"coachrec bench coach ({name}, seed {seed}, iteration {it})")
                r = _row(result, requests, started)
                r["metrics"] |= {"seed": seed, "iteration": it, "report": str(out / "report.md")}
                rows.append(r)
                write("coach", rows)  # after every iteration: a long run that stops keeps what it measured
                console.print(f"{name} seed {seed} iteration {it}: {result.decision} (report in {out})")
                started = _load()
    table = Table(title="bench coach: one iteration, before -> after", title_justify="left")
    for col in (
        "dataset",
        "seed/iteration",
        "target mode",
        "rate before",
        "rate after",
        "delta [95% CI]",
        "NDCG@10",
        "Recall@10",
        "decision",
    ):
        table.add_column(col, overflow="fold")
    for r in rows:
        m = r["metrics"]
        t = m["target_rate"]
        nd, rc = m["ndcg@10"], m["recall@10"]
        table.add_row(
            r["dataset"],
            f"{m['seed']}/{m['iteration']}",
            str(m["target_mode"]),
            "" if t is None else f"{t['before']:.3f}",
            "" if t is None else f"{t['after']:.3f}",
            "" if t is None else f"{t['delta']:+.3f} [{t['ci95'][0]:+.3f}, {t['ci95'][1]:+.3f}]",
            f"{nd['before']:.4f} -> {nd['after']:.4f}",
            f"{rc['before']:.4f} -> {rc['after']:.4f}",
            m["decision"][:120],
        )
    console.print(table)
    console.print(f"wrote {write('coach', rows)}")
