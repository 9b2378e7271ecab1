"""`coachrec bench conversational`: recommenders on real conversations (ReDial test, 3,552
recommender turns, 4,778 (turn, target) pairs) against published zero-shot LLM results on
exactly those targets.

Protocol `conv-full` (`coachrec.metrics.conversational`): every one of the 6,281 candidate
movies ranked per turn, earlier-mentioned movies removed, each target scored on its own (an
earlier-mentioned target is a miss), candidates matched by name as in the published
evaluation, ties pessimistic. Every row covers all 4,778 targets (BAIZE: the 4,711 it has).

Configurations and where their signal comes from:
- `popularity`: how often each movie was a target or mentioned in the other fold's dialogs.
- `popularity (MovieLens)`, zero-shot: MovieLens latest-small rating counts, through the linker.
- `mention-kNN (MovieLens)`, zero-shot: item-kNN fitted on MovieLens latest-small, fed the
  linked movies mentioned so far; nothing learned from ReDial.
- `popularity + mention→target`: the co-mention table of earlier mentions (movies, genres,
  people as annotated) -> recommended movies, recency-weighted, without the dialog table.
- `popularity + co-mention`: both co-mention tables (mention -> target, and dialog
  co-occurrence); no text read.
Learned rows are cross-fitted: two folds by dialog id (seed 0), each scored by a model fitted on
the other; their settings are chosen by an inner split of the training fold only.

Each row: R@1/5/10/20, NDCG@10, MRR@10 (all targets), R@10 and NDCG@10 on the new (`rec`)
targets, the same by entity id (`match="id"`), the paired difference with GPT-4 on the same
targets (bootstrap CI resampling dialogs, sign-flip permutation p by dialog), and p50/p99
latency of scoring and ranking one turn, in process. Part B adds its text stages as rows
through `measure_rows`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from coachrec_bench.results import row, write

K_SHOWN = (1, 5, 10, 20)
REFERENCE_LABELS = {
    "gpt-4": "GPT-4",
    "gpt-3.5-turbo": "GPT-3.5-turbo",
    "vicuna-13b": "Vicuna-13B",
    "baize-v2-13b": "BAIZE-V2-13B",
}
DATASET = "redial-test"


@dataclass
class Measured:
    """One configuration's per-target rows and what else its row reports."""

    name: str
    per_target: Any  # polars frame, coachrec.metrics.conversational.conv_full output
    zero_shot: bool
    signals: str
    latency_ms: np.ndarray | None = None
    per_target_id: Any = None  # the same under match="id"
    extra: dict[str, Any] = field(default_factory=dict)


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def default_data() -> Path:
    from coachrec.datasets import shared_dir

    return shared_dir() / "datasets" / "redial"


def latency(score: Callable[[np.ndarray], np.ndarray], conv: Any, turns: Sequence[int], k: int = 20) -> np.ndarray:
    """Milliseconds to score one turn's candidates, remove its earlier mentions and take the
    top `k` (what serving that turn would cost in process), for each of `turns`."""
    from coachrec.models.base import top_k

    out = np.empty(len(turns))
    for i, t in enumerate(turns):
        prev, _ = conv.mentions([t])
        cols = conv.column(prev[0])
        t0 = time.perf_counter()
        s = score(np.array([t]))
        s[0, cols[cols >= 0]] = -np.inf
        top_k(s, k)
        out[i] = (time.perf_counter() - t0) * 1000
    return out


def _diff(gpt4: Any, pt: Any, metric: str, n_boot: int, n_perm: int) -> dict[str, float]:
    from coachrec.metrics.conversational import compare_paired

    c = compare_paired(gpt4, pt, metric, n_boot=n_boot, n_perm=n_perm)
    return {
        "delta": round(c.delta, 4),
        "ci_low": round(c.ci_low, 4),
        "ci_high": round(c.ci_high, 4),
        "p": round(c.p_value, 4),
        "n": c.n,
    }


def metrics_of(m: Measured, gpt4: Any, *, n_boot: int, n_perm: int) -> dict[str, Any]:
    """The metrics dict of one row (means over the row's targets, GPT-4 difference, latency)."""
    from coachrec.metrics.conversational import aggregate

    a, new = aggregate(m.per_target), aggregate(m.per_target, "rec")
    out: dict[str, Any] = {f"recall@{k}": round(a[f"recall@{k}"], 4) for k in K_SHOWN}
    out |= {"ndcg@10": round(a["ndcg@10"], 4), "mrr@10": round(a["mrr@10"], 4), "targets": int(a["n"])}
    out |= {
        "recall@10_new": round(new["recall@10"], 4),
        "ndcg@10_new": round(new["ndcg@10"], 4),
        "targets_new": int(new["n"]),
    }
    if m.per_target_id is not None:
        b = aggregate(m.per_target_id)
        out |= {"recall@10_by_id": round(b["recall@10"], 4), "ndcg@10_by_id": round(b["ndcg@10"], 4)}
    if gpt4 is not None and m.name != REFERENCE_LABELS["gpt-4"]:
        out["vs_gpt-4"] = {k: _diff(gpt4, m.per_target, k, n_boot, n_perm) for k in ("recall@10", "ndcg@10")}
    if m.latency_ms is not None and len(m.latency_ms):
        out |= {
            "latency_p50_ms": round(float(np.percentile(m.latency_ms, 50)), 3),
            "latency_p99_ms": round(float(np.percentile(m.latency_ms, 99)), 3),
            "latency_turns": len(m.latency_ms),
        }
    out |= {"zero_shot": m.zero_shot, "signals": m.signals, **m.extra}
    return out


def measure_rows(
    measured: Sequence[Measured], gpt4: Any, *, protocol: str, n_boot: int = 2000, n_perm: int = 10000
) -> list[dict[str, Any]]:
    """Results rows (`coachrec_bench.results.row`) of measured configurations."""
    rows = []
    for m in measured:
        metrics = metrics_of(m, gpt4, n_boot=n_boot, n_perm=n_perm) | {"load_1m": _load()}
        rows.append(row(m.name, DATASET, protocol, metrics))
    return rows


def _cross_fitted(
    name: str,
    conv: Any,
    fit: Callable[[Any, np.ndarray], Any],
    *,
    folds: int,
    seed: int,
    latency_turns: np.ndarray,
    signals: str,
    progress: Any,
) -> Measured:
    """Cross-fitted per-target rows by name and by id, and latency measured with each held-out
    turn's own fold model."""
    import polars as pl

    from coachrec.metrics.conversational import conv_full
    from coachrec.models.conversational import cross_fit

    pt, models = cross_fit(conv, fit, n_folds=folds, seed=seed, progress=progress)
    fold = conv.folds(folds, seed)
    turns = conv.turns["turn"].to_numpy()
    by_id = []
    for k, model in enumerate(models):
        held = conv.subset(turns[fold == k])
        by_id.append(conv_full(model.scorer(held), held, match="id"))
    lat = []
    for k, model in enumerate(models):
        mine = [t for t in latency_turns if fold[conv.row(t)] == k]
        lat.append(latency(model.scorer(conv), conv, mine))
    extra: dict[str, Any] = {"folds": folds, "fold_seed": seed}
    settings = [getattr(m, "chosen", None) for m in models]
    if any(s is not None for s in settings):
        extra["settings_per_fold"] = settings
    return Measured(name, pt, False, signals, np.concatenate(lat), pl.concat(by_id).sort("turn", "position"), extra)


def _zero_shot(
    name: str, conv: Any, scorer: Any, *, latency_turns: np.ndarray, signals: str, extra: dict[str, Any]
) -> Measured:
    from coachrec.metrics.conversational import conv_full

    score = scorer.scorer(conv)
    return Measured(
        name,
        conv_full(score, conv),
        True,
        signals,
        latency(score, conv, latency_turns),
        conv_full(score, conv, match="id"),
        extra,
    )


def run(
    data: Path,
    *,
    folds: int = 2,
    seed: int = 0,
    tune: bool = True,
    latency_turns: int = 300,
    progress: Any = None,
) -> tuple[Any, dict[str, Any], list[Measured], Any]:
    """Load, link, measure every configuration. Returns the conversations, the references
    (name -> `Reference`), the measured configurations and the linker report."""
    import dataclasses

    from coachrec import datasets
    from coachrec.data.conversations import load_conversations
    from coachrec.data.linking import link_conversations
    from coachrec.metrics.conversational import REFERENCE_FILES, load_reference, reference_path
    from coachrec.models import create
    from coachrec.models.conversational import CoMention, CoMentionConfig, DialogPopularity, MentionKNN, tune_co_mention
    from coachrec.progress import SILENT

    progress = progress or SILENT
    progress.step(f"load {data}")
    conv = load_conversations(data)
    progress.note(
        f"{conv.n_turns:,} turns, {conv.n_targets:,} targets, {conv.n_dialogs:,} dialogs, "
        f"{conv.n_candidates:,} candidates"
    )
    mism = conv.condition_mismatches()
    progress.note(
        f"{mism.height} targets in {mism['turn'].n_unique()} turns count as mentioned before by name but not by id "
        "(the reference's rule, used here)"
    )
    refs = {}
    for model in REFERENCE_FILES:
        path = reference_path(data / "reference", model)
        if path.exists():
            refs[model] = load_reference(path, conv, name=REFERENCE_LABELS[model])
            r = refs[model]
            progress.note(
                f"{r.name}: {r.per_target.height:,} rows aligned; {r.reordered_turns} turns reordered, "
                f"{r.outside_rows} rows outside"
            )
    progress.step("link candidates to MovieLens latest-small")
    ml = datasets.load("ml-latest-small")
    assert ml.catalog is not None
    links = link_conversations(conv, ml.catalog, catalog_name="ml-latest-small")
    for line in links.report.lines():
        progress.note(line)
    rng = np.random.default_rng(seed)
    all_turns = conv.turns["turn"].to_numpy()
    lat_turns = np.sort(rng.choice(all_turns, min(latency_turns, len(all_turns)), replace=False))
    measured: list[Measured] = []
    link_info = {"linker": links.report.to_dict()}

    progress.step("zero-shot: MovieLens popularity and item-kNN over the linked mentions")
    measured.append(
        _zero_shot(
            "popularity (MovieLens)", conv, MentionKNN(create("pop").fit(ml), links), latency_turns=lat_turns,
            signals="MovieLens latest-small rating counts of the linked candidates", extra=link_info,
        )
    )  # fmt: skip
    measured.append(
        _zero_shot(
            "mention-kNN (MovieLens)", conv, MentionKNN(create("itemknn").fit(ml), links), latency_turns=lat_turns,
            signals="item-kNN fitted on MovieLens latest-small ratings; history = linked movies mentioned so far",
            extra=link_info,
        )
    )  # fmt: skip

    def tuned(fixed: dict[str, Any]) -> Callable[[Any, np.ndarray], Any]:
        def fit(c: Any, train: np.ndarray) -> Any:
            base = dataclasses.replace(CoMentionConfig(), **fixed)
            cfg = base
            if tune:
                from coachrec.models.conversational import CO_MENTION_GRID

                grid = {k: v for k, v in CO_MENTION_GRID.items() if k not in fixed}
                cfg, _ = tune_co_mention(c, train, grid=grid, base=base, seed=seed)
            model = CoMention(cfg).fit(c, train)
            model.chosen = {k: getattr(cfg, k) for k in ("recency", "shrink", "other_weight", "dialog_weight", "prior")}
            return model

        return fit

    configs: list[tuple[str, Callable[[Any, np.ndarray], Any], str]] = [
        (
            "popularity",
            lambda c, tr: DialogPopularity().fit(c, tr),
            "target and mention counts of the training fold's dialogs",
        ),
        (
            "popularity + mention→target",
            tuned({"dialog_weight": 0.0}),
            "training fold: counts of (entity mentioned earlier -> movie recommended), recency-weighted, "
            "plus popularity",
        ),
        (
            "popularity + co-mention",
            tuned({}),
            "training fold: mention -> recommended counts and dialog co-occurrence counts of entities and "
            "movies, plus popularity",
        ),
    ]
    for name, fit, signals in configs:
        progress.step(f"cross-fitted: {name}")
        measured.append(
            _cross_fitted(
                name, conv, fit, folds=folds, seed=seed, latency_turns=lat_turns, signals=signals, progress=progress
            )
        )
    for ref in refs.values():
        alignment = {
            "rows_aligned": ref.per_target.height,
            "turns_reordered": ref.reordered_turns,
            "rows_outside": ref.outside_rows,
            "targets_mentioned_before_by_name_only": mism.height,
        }
        signals = f"published zero-shot results of {ref.name} (He et al., CIKM 2023)"
        measured.append(Measured(ref.name, ref.per_target, True, signals, extra={"alignment": alignment}))
    return conv, refs, measured, links.report


def show(rows: list[dict[str, Any]], title: str) -> None:
    from coachrec.cli.console import print_rows

    def f(v: Any, digits: int = 4) -> str:
        return "" if v is None else f"{v:.{digits}f}" if isinstance(v, float) else str(v)

    table_rows = []
    for r in rows:
        m = r["metrics"]
        d = m.get("vs_gpt-4", {}).get("recall@10")
        diff = f"{d['delta']:+.4f} [{d['ci_low']:+.4f}, {d['ci_high']:+.4f}] p={d['p']:.3f}" if d else ""
        lat = f"{m['latency_p50_ms']:.2f} / {m['latency_p99_ms']:.2f}" if "latency_p50_ms" in m else ""
        table_rows.append(
            [
                r["name"],
                "yes" if m.get("zero_shot") else "no",
                *(f(m.get(f"recall@{k}")) for k in K_SHOWN),
                f(m.get("ndcg@10")),
                f(m.get("mrr@10")),
                diff,
                lat,
                f"{m['targets']:,}",
            ]
        )
    headers = [
        "configuration",
        "zero-shot",
        "R@1",
        "R@5",
        "R@10",
        "R@20",
        "NDCG@10",
        "MRR@10",
        "R@10 − GPT-4 [95% CI] p",
        "p50/p99 ms",
        "targets",
    ]
    print_rows(headers, table_rows, title=title, right=headers[2:])


def plot_cost(rows: list[dict[str, Any]], path: Path, metric: str = "recall@10") -> Path | None:
    """R@10 against cost per 1,000 requests (log scale), one point per row whose metrics have
    `cost_per_1k_requests` (USD); returns the path, or None when no row has a cost yet (part B
    adds costs: the LLM layer's local price, and the published models' API prices)."""
    pts = [
        (r["name"], r["metrics"]["cost_per_1k_requests"], r["metrics"][metric])
        for r in rows
        if "cost_per_1k_requests" in r.get("metrics", {})
    ]
    if not pts:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    floor = min([c for _, c, _ in pts if c > 0] or [1e-4]) / 10
    for name, cost, value in pts:
        x = max(cost, floor)
        ax.scatter([x], [value])
        ax.annotate(name, (x, value), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("cost per 1,000 requests (USD, log scale; free configurations at the left edge)")
    ax.set_ylabel(metric.replace("recall", "R"))
    ax.set_title(f"ReDial test, conv-full: {metric} against cost")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def bench_conversational(
    data: Annotated[Path | None, typer.Option(help="CRS-layout folder (default: the shared ReDial test data)")] = None,
    folds: Annotated[int, typer.Option(help="folds by dialog id for cross-fitting")] = 2,
    seed: Annotated[int, typer.Option(help="seed of the fold assignment and the latency sample")] = 0,
    tune: Annotated[
        bool, typer.Option(help="choose co-mention settings by an inner split of each training fold")
    ] = True,
    latency_turns: Annotated[int, typer.Option(help="turns timed one at a time per configuration")] = 300,
    n_boot: Annotated[int, typer.Option(help="bootstrap resamples (of dialogs) for the CI against GPT-4")] = 2000,
    n_perm: Annotated[int, typer.Option(help="sign flips (by dialog) for the permutation p against GPT-4")] = 10000,
) -> None:
    """Recommenders on ReDial conversations vs GPT-4 and other LLMs on the same targets
    (conv-full); writes benchmarks/results/conversational.json."""
    from coachrec.cli.console import RichProgress, console
    from coachrec.metrics.conversational import DESCRIPTION

    folder = data or default_data()
    t0 = time.perf_counter()
    load_start = _load()
    conv, refs, measured, report = run(
        folder, folds=folds, seed=seed, tune=tune, latency_turns=latency_turns, progress=RichProgress()
    )
    gpt4 = refs["gpt-4"].per_target if "gpt-4" in refs else None
    protocol = DESCRIPTION["name"]
    rows = measure_rows(measured, gpt4, protocol=protocol, n_boot=n_boot, n_perm=n_perm)
    for r in rows:
        r["metrics"]["load_1m_start"] = load_start
    path = write("conversational", rows)
    show(rows, f"ReDial test ({conv.n_targets:,} targets, {conv.n_dialogs:,} dialogs) — {protocol}")
    con = console()
    for line in report.lines()[:3]:
        con.out(line, highlight=False)
    con.out(
        f"wrote {path} in {time.perf_counter() - t0:.0f} s; load {load_start} at start, {_load()} at end",
        highlight=False,
    )
