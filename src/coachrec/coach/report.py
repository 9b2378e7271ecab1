"""The run report: Markdown with PNG plots (failure-mode rates before/after, metric deltas with
CIs, latency and cost per tier), written to a folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from coachrec.coach.loop import LoopResult
from coachrec.coach.trust import kappa_table
from coachrec.teacher import CatalogView


def _plots(result: LoopResult, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    files = []

    def before_after(rows: list[Any], labels: list[str], xlabel: str, title: str, name: str) -> None:
        """Champion and candidate bars per gate row, saved as `name`."""
        fig, ax = plt.subplots(figsize=(9, 0.6 * len(rows) + 1.8))
        y = range(len(rows))
        ax.barh([i + 0.2 for i in y], [r.champion for r in rows], height=0.4, label="champion", color="#999999")
        ax.barh([i - 0.2 for i in y], [r.candidate for r in rows], height=0.4, label="candidate", color="#2b7bba")
        ax.set_yticks(list(y), labels)
        ax.set_xlabel(xlabel)
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
        ax.set_title(title)
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        files.append(name)

    if result.gate is not None:
        rates = [r for r in result.gate.rows if r.metric.endswith(" rate") and (r.champion or r.candidate)]
        if rates:
            before_after(
                rates,
                [f"{r.metric}\n({r.section})" for r in rates],
                "share of judged requests with the failure",
                "Failure-mode rates, same held-out requests",
                "failure_rates.png",
            )
        evidence = [r for r in result.gate.rows if not r.metric.endswith(" rate")]
        if evidence:
            before_after(
                evidence,
                [f"{r.metric}\n({r.section}, {r.role})" for r in evidence],
                "value (higher is better)",
                "Independent evidence: human suggestions, later interactions",
                "independent_evidence.png",
            )
    gated = [t for t in result.tried if t.gate is not None]
    if gated:
        n_rows = max(len(t.gate.rows) for t in gated if t.gate)
        fig, axes = plt.subplots(1, len(gated), figsize=(6 * len(gated) + 3, 0.5 * n_rows + 1.8), squeeze=False)
        for ax, t in zip(axes[0], gated, strict=True):
            assert t.gate is not None
            for i, r in enumerate(t.gate.rows):
                color = "#2b7bba" if r.passed or r.passed is None else "#c0392b"
                ax.errorbar(
                    r.delta, i, xerr=[[r.delta - r.ci_low], [r.ci_high - r.delta]], fmt="o", color=color, capsize=3
                )
            ax.axvline(0, color="black", lw=0.8)
            ax.set_yticks(range(len(t.gate.rows)), [f"{r.metric} ({r.section})" for r in t.gate.rows])
            ax.set_xlabel("candidate - champion, 95% CI by user (red: rule broken)")
            ax.xaxis.set_major_locator(MaxNLocator(5))
            ax.set_title(f"{t.remedy}: {'PROMOTED' if t.promoted else 'refused'}")
        fig.tight_layout()
        fig.savefig(out / "metric_deltas.png", dpi=110)
        plt.close(fig)
        files.append("metric_deltas.png")
    tiers = [t for t in result.tiers if t["ms_mean"] is not None]
    if tiers:
        fig, ax = plt.subplots(figsize=(7, 0.5 * len(tiers) + 1.5))
        ax.barh(range(len(tiers)), [t["ms_mean"] for t in tiers], color="#2b7bba")
        ax.set_yticks(range(len(tiers)), [t["tier"] for t in tiers])
        ax.set_xscale("log")
        ax.set_xlabel("mean latency per request / judged trace (ms, log scale)")
        ax.set_title("Latency per tier")
        fig.tight_layout()
        fig.savefig(out / "latency_tiers.png", dpi=110)
        plt.close(fig)
        files.append("latency_tiers.png")
    return files


def _examples(result: LoopResult, mode_name: str, n: int = 2) -> list[str]:
    """Example traces of a failure mode, in words: request, shown titles, the teacher's why."""
    mode = next(m for m in result.observation.report.modes if m.name == mode_name)
    view = CatalogView(result.context.catalog)
    cases = {c.trace_id: c for c in result.observation.served.cases}
    why = {(j.trace_id, j.criterion): j.rationale for j in result.observation.judgments}
    lines = []
    for trace_id in mode.examples[:n]:
        c = cases.get(trace_id)
        if c is None:
            continue
        set_fields = {k: v for k, v in c.constraints.items() if v and k not in ("exclude_seen", "require_all_genres")}
        request = (
            f"user {c.user_id}"
            + (f", asked {c.context!r}" if c.context else "")
            + (f", constraints {set_fields}" if set_fields else "")
        )
        shown = "; ".join(view.title(i) for i in c.items[:5])
        lines.append(
            f"  - trace `{trace_id}` ({request}): shown {shown} ... — *{why.get((trace_id, mode.criterion), mode.why)}*"
        )
    return lines


def _position_section(result: LoopResult) -> list[str]:
    """The `position_bias` signal on the logged (simulated) clicks, when the run logged them."""
    clicks = result.observation.clicks
    if not clicks:
        return []
    md = [
        "### Position bias on logged clicks (simulated)",
        "",
        f"{int(clicks['slates'])} slates of selection users served by the champion exploring epsilon-greedy "
        f"({clicks['epsilon']:g}, {clicks['candidates']} candidates per retriever, no MMR); simulated users click "
        f"{clicks['model']}, preferring their {clicks['truth']}: {int(clicks['impressions'])} impressions, "
        f"{int(clicks['clicks'])} clicks ({clicks['clicks_per_slate']:.3f} per slate).",
        "",
    ]
    signal = clicks.get("signal")
    if not isinstance(signal, dict):
        return [*md, f"> {signal}", ""]
    md += [
        f"**{'Flagged' if signal['flagged'] else 'Not flagged'}**: {signal['reason']}. A statistical signal, not a "
        "judge: it may be targeted when flagged; its gate evidence is the off-policy row on gate users' logged "
        "clicks (must improve) beside ground truth.",
        "",
        "| slot | click rate | judged relevance | clicks per relevance, relative to slot 1 |",
        "|---|---|---|---|",
    ]
    md += [
        f"| {j + 1} | {c:.4f} | {r:.4f} | {e:.3f} |"
        for j, (c, r, e) in enumerate(
            zip(signal["click_rate"], signal["relevance"], signal["relative_examination"], strict=True)
        )
    ]
    return [*md, ""]


def write_report(result: LoopResult, out: Path, title: str = "coachrec quickstart") -> Path:
    out.mkdir(parents=True, exist_ok=True)
    plots = _plots(result, out)
    ctx, obs = result.context, result.observation
    md: list[str] = [
        f"# {title} — {ctx.data.name}",
        "",
        f"Completed in {result.seconds:.0f} s. **Decision: {result.decision}**",
        "",
    ]
    md += [
        "## 1. Production stack",
        "",
        f"- data: {ctx.data}",
        f"- champion `{ctx.champion_id}`: {ctx.champion.describe()}, "
        f"fitted on the leave-one-out training part ({ctx.split.train.events.height:,} events)",
        "",
    ]
    md += [
        "## 2. Teacher and how far each criterion is trusted",
        "",
        "| criterion | member | kappa | n | AUC | may gate / distil | why |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in kappa_table(ctx.trust):
        md.append(
            f"| {r['criterion']} | {r['member']} | {'' if r['kappa'] is None else r['kappa']} | {r['n'] or ''} | "
            f"{'' if r['auc'] is None else r['auc']} | {'yes' if r['may_gate'] else 'no'} | {r['why']} |"
        )
    md += [
        "",
        f"Judge: `{obs.judge_version}`"
        + (f"; LLM member {obs.llm_model} on {obs.llm_traces} traces" if obs.llm_model else ""),
        *(["", f"> {obs.llm_note}"] if obs.llm_note else []),
        "",
    ]
    md += [
        f"## 3. Top failure modes ({obs.report.judged_traces} judged traces of {len(ctx.distill_users)} users, "
        "champion)",
        "",
        "| failure mode | criterion | traces | rate | where (span) | why (teacher) |",
        "|---|---|---|---|---|---|",
    ]
    for m in obs.report.modes[:8]:
        md.append(f"| {m.name} | {m.criterion} | {m.count} | {m.rate:.1%} | {m.span} | {m.why[:150]} |")
    if not obs.report.modes:
        md.append("| (none) | | | | | |")
    md.append("")
    md += _position_section(result)
    for m in obs.report.modes[:3]:
        if m.examples or m.name != "position_bias":
            md.append(f"- **{m.name}** examples:")
            md += _examples(result, m.name)
    md += ["", "## 4. Remedies tried", ""]
    if result.target_mode is None:
        md.append(f"Nothing targeted: {result.decision}")
    else:
        md += [
            f"Target failure mode: **{result.target_mode}**. Each remedy was built on the selection users' data and "
            "gated on its own on the gate users; at most one is promoted (the first in the order of the remedies' "
            "selection-side score that passes, with the target's alpha divided by the number gated).",
            "",
            "| remedy | span | what it did (on selection users) | candidate | decision |",
            "|---|---|---|---|---|",
        ]
        for t in result.tried:
            decision = (
                "not applicable"
                if t.gate is None
                else ("**PROMOTED**" if t.promoted else ("refused: " + "; ".join(t.gate.reasons)[:200]))
            )
            md.append(f"| {t.remedy} | {t.span} | {t.note} | {t.candidate_id or ''} | {decision} |")
        for t in result.tried:
            d = t.details.get("distillation")
            if d:
                md += [
                    "",
                    f"### {t.remedy}: distillation",
                    "",
                    f"- {d['pairs']:,} teacher-labelled (request, candidate) pairs from {d['requests']} distinct "
                    "users' traced "
                    "requests; soft labels weighted by teacher confidence and teacher-champion rank agreement",
                    f"- student fit: {json.dumps({k: round(v, 4) for k, v in d['student_fit'].items()})}",
                    "",
                    "| strength | valid NDCG@10 (selection users) | teacher pass rate |",
                    "|---|---|---|",
                ]
                md += [
                    f"| {r['strength']:g} | {r['valid_ndcg@10']:.4f} | {r['teacher_pass_rate']:.3f} |"
                    for r in d["strength_search"]
                ]
    md += ["", "## 5. Gate", ""]
    for t in result.tried:
        if t.gate is None:
            continue
        g = t.gate
        md += [
            f"### {t.remedy} (`{t.candidate_id}`)",
            "",
            f"Champion `{g.champion}` vs candidate `{g.candidate}`.",
            "",
            g.markdown(),
            "",
            *[f"- {k}: {v}" for k, v in g.protocol.items()],
            "",
            f"**{g.verdict()}**",
            "",
        ]
    md += [
        "## 6. Latency and cost per tier",
        "",
        "| tier | n | mean ms | p95 ms | USD per 1k | note |",
        "|---|---|---|---|---|---|",
    ]
    for tier in result.tiers:
        p95 = "" if tier["ms_p95"] is None else f"{tier['ms_p95']:.1f}"
        md.append(
            f"| {tier['tier']} | {tier['n']} | {tier['ms_mean']:.1f} | {p95} | {tier['usd_per_1k']:.5f} | "
            f"{tier['note']} |"
        )
    md += [
        "",
        "Cost = CPU time held at the LLM layer's default local price (2 cores at $0.05 per core-hour); no per-token "
        "charge.",
        "",
    ]
    md += [
        "## Plots",
        "",
        *[f"![{p}]({p})" for p in plots],
        "",
        "## Timings (s)",
        "",
        ", ".join(f"{k} {v:.0f}" for k, v in ctx.timings.items()),
        "",
    ]
    path = out / "report.md"
    path.write_text("\n".join(md))
    (out / "result.json").write_text(json.dumps(summary(result), indent=2, default=str) + "\n")
    return path


def summary(result: LoopResult) -> dict[str, Any]:
    """A JSON-ready summary of a run (what benchmarks and tests read)."""
    return {
        "dataset": result.context.data.name,
        "seconds": round(result.seconds, 1),
        "decision": result.decision,
        "promoted": result.promoted,
        "champion": result.context.champion_id,
        "candidate": result.candidate_id,
        "target_mode": result.target_mode,
        "failure_modes": [
            {"mode": m.name, "criterion": m.criterion, "traces": m.count, "rate": round(m.rate, 4), "span": m.span}
            for m in result.observation.report.modes
        ],
        "trust": kappa_table(result.context.trust),
        "before_after": result.before_after,
        "gate": result.gate.to_dict() if result.gate else None,
        "tiers": result.tiers,
        "remedies": [t.summary() for t in result.tried],
        **({"clicks": result.observation.clicks} if result.observation.clicks else {}),
    }
