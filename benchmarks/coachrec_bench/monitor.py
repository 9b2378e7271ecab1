"""`coachrec bench monitor`: planted drifts in replayed MovieLens traffic, who drifted, and cost.

Protocol. ml-latest-small, per-user time cut (`teacher.movielens.heldout_labels`): models and
judges see the earlier ratings; each user's later ratings are the human labels and the clicks.
Pools of served requests (the traced `serve.Pipeline`, written to a trace store and read back by
`monitor.read_window`):

- `base`: item-kNN + popularity stack, requests of all users (30% free text, 30% constraints);
- `users`: the same stack, requests only of the users whose history is most popular (top third);
- `swap`: a swapped model version (item-kNN with 20 neighbours and shrinkage 50 instead of 200/0);
- `requests`: the base stack with a changed request mix (55% free text, 10% constraints).

Feedback: an impression per shown item and a click where the item is among the user's later
ratings >= 4. Judges: program checks + the calibrated relevance committee (`base`); a stricter
judge (relevance item threshold 0.5 -> 0.6, the analogue of a stricter prompt), a lenient one
(0.5 -> 0.4); a retrained
judge (the committee's blend fitted on other calibration users). The anchor set: a golden set
published through the review store, one case per evaluation-half user whose slate is that
user's later-rated items, human label = the share liked reaching the criterion's threshold.

A stream is 14 days of `--per-day` requests drawn without replacement: days 1-7 from `base`
judged by the base judge (the reference), days 8-14 from the scenario's pool judged by the
scenario's judge. `--checks` checks spread over days 8-14 each compare the reference with the
current days so far, and re-judge a fresh random `--anchors` subset of the anchor set with the
scenario's judge against the pinned base run and its replicate (the base judge run twice): flips,
score shift and spread of the case scores, and the runs test pooling the `--pinned-runs` runs of
the base judge against the stream's re-judgings so far (`monitor.attribution`). Each check tests at its
alpha-spending level, so false alarms over the whole stream stay under `--alpha`; the stream's
verdict joins the sides (system, judge) that alarmed at any check.
Scenarios: none (drift-free), system (users, swap, requests), judge (stricter, lenient,
retrained), both.
Figures: attribution accuracy, detection rate and false alarms per scenario; beside them
Evidently's dataset-drift rule (>= 50% of columns, default tests) on the same windows and a
naive detector (a z-test of the judged failure rate, blaming the system). Label-free: the
relevance failure rate of the current window estimated by a logistic model of the base judge's
verdicts fitted on the reference window (`monitor.estimate`), against the scenario judge's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import polars as pl
import typer

from coachrec_bench.results import row, write

DATASET = "ml-latest-small"
KEPT = 3
"""Streams per scenario whose windows are also handed to Evidently itself."""
EVIDENTLY_SCRIPT = r"""
import json, sys
from pathlib import Path
import pandas as pd
from evidently import DataDefinition, Dataset, Report
from evidently.presets import DataDriftPreset

folder = Path(sys.argv[1])
out = []
for spec_file in sorted(folder.glob("*.json")):
    spec = json.loads(spec_file.read_text())
    ref = pd.read_parquet(folder / spec["reference"])
    cur = pd.read_parquet(folder / spec["current"])
    dd = DataDefinition(numerical_columns=spec["num"], categorical_columns=spec["cat"])
    snap = Report([DataDriftPreset()]).run(
        current_data=Dataset.from_pandas(cur, data_definition=dd),
        reference_data=Dataset.from_pandas(ref, data_definition=dd),
    )
    columns, dataset = {}, None
    for m in snap.dict()["metrics"]:
        cfg = m["config"]
        if cfg["type"].endswith("DriftedColumnsCount"):
            dataset = m["value"]
        elif cfg["type"].endswith("ValueDrift"):
            columns[cfg["column"]] = {"method": cfg["method"], "value": m["value"], "threshold": cfg["threshold"]}
    out.append({"name": spec_file.stem, "columns": columns, "dataset": dataset})
print(json.dumps(out))
"""
SCENARIOS: dict[str, tuple[str, str, str]] = {
    # name: (pool of days 8-14, judge of days 8-14, expected verdict)
    "none": ("base", "base", "none"),
    "system:users": ("users", "base", "system"),
    "system:swap": ("swap", "base", "system"),
    "system:requests": ("requests", "base", "system"),
    "judge:stricter": ("base", "stricter", "judge"),
    "judge:lenient": ("base", "lenient", "judge"),
    "judge:retrained": ("base", "retrained", "judge"),
    "both:users+stricter": ("users", "stricter", "both"),
}


@dataclass
class Sim:
    pools: dict[str, pl.DataFrame]
    """Pool name -> window frame (base judge's fail columns) plus `fail.*@<judge>` columns."""
    anchor_labels: dict[str, Any]
    """Judge name (and `replicate`: the base judge run a second time) -> `AnchorRun`."""
    anchor_p: dict[str, dict[str, tuple[dict[str, float], float, float]]]
    """Judge -> anchor trace -> (shown item -> P(relevant), item threshold, pass threshold)."""
    golden: list[Any]
    spans: int
    read_s: float
    compare_s: float
    timings: dict[str, float]


def _heldout_likes(data: Any, train: Any) -> dict[str, set[str]]:
    full = data.events.select("user", "item", "value")
    seen = train.events.select("user", "item").with_columns(pl.lit(True).alias("in_train"))
    later = full.join(seen, on=["user", "item"], how="left").filter(
        pl.col("in_train").is_null() & (pl.col("value") >= 4.0)
    )
    users, items = data.users.ids, data.items.ids
    out: dict[str, set[str]] = {}
    for u, i in later.select("user", "item").iter_rows():
        out.setdefault(str(users[u]), set()).add(str(items[i]))
    return out


def _write_feedback(store_path: Path, served: Any, likes: dict[str, set[str]]) -> None:
    from coachrec.serve.feedback import FeedbackEvent, FeedbackLog, feedback_path_for

    events = []
    for case in served.cases:
        liked = likes.get(case.user_id or "", set())
        for p, item in enumerate(case.items):
            events.append(FeedbackEvent(case.request_id or "", item, "impression", position=p, user_id=case.user_id))
            if item in liked:
                events.append(FeedbackEvent(case.request_id or "", item, "click", position=p, user_id=case.user_id))
    log = FeedbackLog(feedback_path_for(store_path))
    try:
        log.append(events)
    finally:
        log.close()


def _judges(train: Any, catalog: Any) -> dict[str, Any]:
    from coachrec.teacher import CatalogView, Judge, load_rubric
    from coachrec.teacher.relevance import RelevanceConfig, calibrated_committee

    rubric = load_rubric()
    names = [c.name for c in rubric.criteria if c.member in ("program", "recommender")]
    committee = calibrated_committee(train)
    retrained = calibrated_committee(train, RelevanceConfig(seed=1))
    criteria = tuple(
        c.model_copy(update={"item_threshold": 0.6}) if c.name == "relevance" else c for c in rubric.criteria
    )
    stricter = rubric.model_copy(update={"criteria": criteria})
    lenient = rubric.model_copy(
        update={
            "criteria": tuple(
                c.model_copy(update={"item_threshold": 0.4}) if c.name == "relevance" else c for c in rubric.criteria
            )
        }
    )
    view = CatalogView(catalog)
    return {
        "base": Judge(rubric, view, relevance=committee, criteria=names),
        "stricter": Judge(stricter, view, relevance=committee, criteria=names),
        "lenient": Judge(lenient, view, relevance=committee, criteria=names),
        "retrained": Judge(rubric, view, relevance=retrained, criteria=names),
    }


def _fail_frame(judgments: list[Any], suffix: str) -> pl.DataFrame:
    rows = [
        (j.trace_id, f"fail.{j.criterion}{suffix}", int(j.label == "fail"))
        for j in judgments
        if j.label in ("pass", "fail")
    ]
    frame = pl.DataFrame(rows, schema=["trace_id", "criterion", "f"], orient="row")
    return frame.pivot(on="criterion", index="trace_id", values="f", aggregate_function="last")


def _anchor_store(
    store: Any, labels: Any, data: Any, rng: np.random.Generator, k: int = 8
) -> list[tuple[str, str, bool]]:
    """Anchor traces: per evaluation user, a traced slate of their later-rated items. Returns
    (trace id, user, human pass of relevance)."""
    from coachrec.tracing import SpanKind, Tracer

    tracer = Tracer(store)
    users, items = data.users.ids, data.items.ids
    pairs = labels.evaluation
    train_hist = {int(u): seq for u, seq in zip(*_histories(labels.train), strict=False)}
    out = []
    for u in np.unique(pairs.users):
        mask = pairs.users == u
        shown_idx, liked = pairs.items[mask][:k], pairs.labels[mask][:k]
        if len(shown_idx) < 4:
            continue
        shown = [str(items[i]) for i in shown_idx]
        history = [str(items[i]) for i in train_hist.get(int(u), [])][-50:]
        user = str(users[u])
        with tracer.trace_request("recommend", user_id=user, input={"user_id": user, "k": len(shown)}) as root:
            with tracer.span("retrieve.anchor", kind=SpanKind.RETRIEVER) as s:
                s.set_input({"retriever": "anchor", "history": history})
                s.set_output({"n": len(shown), "items": shown, "scores": [1.0] * len(shown)})
            with tracer.span("rank", kind=SpanKind.RANKER) as s:
                s.set_output({"n": len(shown), "items": shown, "scores": [1.0] * len(shown)})
            root.set_output({"items": shown, "scores": [1.0] * len(shown), "note": None})
        out.append((root.trace_id, user, bool(liked.mean() >= 0.5)))
    store.flush()
    return out


def _histories(train: Any) -> tuple[list[int], list[np.ndarray]]:
    ev = train.events.group_by("user", maintain_order=True).agg(pl.col("item"))
    return ev["user"].to_list(), [np.asarray(x) for x in ev["item"].to_list()]


def _publish_anchor(review_path: Path, judgments: list[Any], cases: list[Any], human: dict[str, bool]) -> list[Any]:
    from coachrec.review import ReviewStore

    review = ReviewStore(review_path)
    try:
        review.enqueue(judgments, cases, review_below=0.0, audit_rate=1.0)
        for item in review.items():
            if item.criterion == "relevance":
                review.annotate(
                    item.item_id, "correct", label="pass" if human[item.trace_id] else "fail", reviewer="later-ratings"
                )
            else:
                review.annotate(item.item_id, "skip")
        review.publish("anchor", description="later MovieLens ratings of evaluation users' slates")
        return review.golden_cases("anchor")
    finally:
        review.close()


def simulate(folder: Path, pool_size: int, seed: int, progress: Any) -> Sim:
    from coachrec import datasets
    from coachrec.coach.traffic import serve
    from coachrec.models import create
    from coachrec.monitor import ItemStats, anchor_labels, compare, read_window
    from coachrec.serve import Stack
    from coachrec.serve.pipeline import PipelineConfig
    from coachrec.serve.stack import catalog_for
    from coachrec.teacher import record
    from coachrec.teacher.movielens import heldout_labels
    from coachrec.teacher.traffic import replay_requests
    from coachrec.tracing import TraceStore

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    data = datasets.load(DATASET)
    labels = heldout_labels(data, seed=seed)
    train = labels.train
    catalog = catalog_for(train)
    config = PipelineConfig(candidates=100)
    base = Stack.fit(train, ("itemknn", "pop"), config)
    swapped = Stack(
        [create("itemknn", dataset=train, neighbors=20, shrink=50.0).fit(train), create("pop").fit(train)],
        catalog,
        config,
    )
    judges = _judges(train, catalog)
    timings["fit_s"] = time.perf_counter() - t0
    progress("fitted stacks and judges")
    users = [str(u) for u in train.users.ids]
    pop = np.log1p(np.asarray(train.item_popularity(), dtype=np.float64))
    hist_users, hist_items = _histories(train)
    taste = {
        str(train.users.ids[u]): float(pop[items].mean()) for u, items in zip(hist_users, hist_items, strict=False)
    }
    popular_users = sorted(users, key=lambda u: -taste.get(u, 0.0))[: len(users) // 3]
    likes = _heldout_likes(data, train)
    items = ItemStats.from_dataset(train)
    pool_specs = {
        "base": (base, replay_requests(users, pool_size, seed=seed + 1)),
        "users": (base, replay_requests(popular_users, pool_size, seed=seed + 2)),
        "swap": (swapped, replay_requests(users, pool_size, seed=seed + 3)),
        "requests": (base, replay_requests(users, pool_size, context_rate=0.55, constraint_rate=0.1, seed=seed + 4)),
    }
    pools: dict[str, pl.DataFrame] = {}
    spans = 0
    read_s = compare_s = 0.0
    for name, (stack, requests) in pool_specs.items():
        path = folder / f"{name}.duckdb"
        store = TraceStore(path)
        try:
            t = time.perf_counter()
            served = serve(stack, requests, store)
            timings[f"serve_{name}_s"] = time.perf_counter() - t
            _write_feedback(path, served, likes)
            t = time.perf_counter()
            by_judge = {j: judge.judge(served.cases) for j, judge in judges.items()}
            timings[f"judge_{name}_s"] = time.perf_counter() - t
            record(store, by_judge["base"])
            store.flush()
            spans += store.spans(columns=["span_id"]).num_rows
            t = time.perf_counter()
            window = read_window(store, items=items)
            read_s += time.perf_counter() - t
            t = time.perf_counter()
            compare(window, window)
            compare_s += time.perf_counter() - t
        finally:
            store.close()
        frame = window.frame
        for j in ("stricter", "lenient", "retrained"):
            frame = frame.join(_fail_frame(by_judge[j], f"@{j}"), on="trace_id", how="left")
        pools[name] = frame
        progress(f"pool {name}: {frame.height} requests served, judged by {len(judges)} judges")
    anchor_path = folder / "anchor.duckdb"
    store = TraceStore(anchor_path)
    try:
        from coachrec.teacher import cases_from_store

        anchors = _anchor_store(store, labels, train, np.random.default_rng(seed))
        cases = cases_from_store(store, [a[0] for a in anchors], skip_foreign=False)
        runs = {j: judge.judge(cases) for j, judge in judges.items()}
        runs["replicate"] = judges["base"].judge(cases)  # the pinned judge's replay noise (none: deterministic)
        golden = _publish_anchor(folder / "anchor.review.duckdb", runs["base"], cases, {a[0]: a[2] for a in anchors})
    finally:
        store.close()
    progress(f"anchor set: {len(golden)} human-labelled cases published as golden set 'anchor'")
    anchor_p = {}
    for j, judge in judges.items():
        spec = judge.rubric.criterion("relevance")
        anchor_p[j] = {
            r.trace_id: (dict(r.details["p_relevant"]), spec.item_threshold, spec.pass_threshold)
            for r in runs[j]
            if r.criterion == "relevance" and r.details.get("p_relevant")
        }
    return Sim(
        pools, {j: anchor_labels(r) for j, r in runs.items()}, anchor_p, golden, spans, read_s, compare_s, timings
    )


def _window(frame: pl.DataFrame, judge: str) -> Any:
    from coachrec.monitor import Window

    if judge != "base":
        suffix = f"@{judge}"
        own = [c for c in frame.columns if c.endswith(suffix)]
        frame = frame.drop([c for c in frame.columns if c.startswith("fail.") and "@" not in c]).rename(
            {c: c[: -len(suffix)] for c in own}
        )
    return Window(frame.drop([c for c in frame.columns if "@" in c and c.startswith("fail.")]))


def _naive(reference: Any, current: Any, alpha: float) -> bool:
    """A z-test of the judged relevance failure rate between the windows."""
    from coachrec.monitor import drift_test

    ref = reference.frame["fail.relevance"].drop_nulls().to_numpy()
    cur = current.frame["fail.relevance"].drop_nulls().to_numpy()
    result = drift_test("fail.relevance", ref, cur, "cat", test="z", threshold=alpha)
    return result.drifted


def _label_free(reference: Any, current: Any) -> tuple[float, float]:
    """(estimated, judged) relevance failure rate of the current window, the estimate from a
    failure model fitted on the judged reference window (base judge)."""
    from coachrec.monitor.estimate import FailureModel

    model = FailureModel.fit(reference, "relevance")
    return model.estimate(current), float(current.frame["fail.relevance"].drop_nulls().mean() or 0.0)


def _noisy_run(sim: Sim, judge: str, noise: float, rng: np.random.Generator) -> Any:
    """The anchor run of `judge` as a stochastic judge would give it: each shown item's
    P(relevant) plus N(0, noise) before the item threshold (a fresh draw per run)."""
    from coachrec.monitor import AnchorRun

    labels, scores = {}, {}
    for trace, (by_item, item_threshold, pass_threshold) in sim.anchor_p[judge].items():
        p = np.array([by_item[i] for i in sorted(by_item)]) + rng.normal(0.0, noise, len(by_item))
        score = float(np.mean(p >= item_threshold))
        labels[(trace, "relevance")] = "pass" if score >= pass_threshold else "fail"
        scores[(trace, "relevance")] = score
    return AnchorRun(labels, scores)


def run_streams(
    sim: Sim,
    streams: int,
    null_streams: int,
    per_day: int,
    anchors: int,
    seed: int,
    alpha: float,
    checks: int,
    noise: float,
    pinned_runs: int = 4,
) -> tuple[dict[str, Any], list[Any]]:
    """Each stream: 7 reference days, then `checks` checks spread over days 8-14 (the current
    window grows to the check's day; a fresh anchor subset re-judged at each check), each side
    at its spending level of alpha / 2; the stream's verdict joins every side that alarmed."""
    from coachrec.monitor import attribute, compare, judge_drift, spending_levels

    rng = np.random.default_rng(seed)
    levels = spending_levels(alpha / 2, checks)
    results: dict[str, Any] = {}
    kept: list[Any] = []
    days = 7 * per_day
    for scenario, (pool, judge, expected) in SCENARIOS.items():
        n_streams = null_streams if scenario == "none" else streams
        verdicts, evidently, naive, label_free, first_alarm = [], [], [], [], []
        for s in range(n_streams):
            base = sim.pools["base"]
            order = rng.permutation(base.height)
            reference = _window(base[order[:days]], "base")
            if pool == "base":
                current = _window(base[order[days : 2 * days]], judge)
            else:
                other = sim.pools[pool]
                current = _window(other[rng.permutation(other.height)[:days]], judge)
            pinned = sim.anchor_labels["base"] if noise == 0 else _noisy_run(sim, "base", noise, rng)
            replicate = sim.anchor_labels["replicate"] if noise == 0 else _noisy_run(sim, "base", noise, rng)
            more_pinned = [
                sim.anchor_labels["replicate"] if noise == 0 else _noisy_run(sim, "base", noise, rng)
                for _ in range(pinned_runs - 2)
            ]
            earlier: list[Any] = []  # this stream's re-judgings so far, pooled by the runs test
            judge_alarm = system_alarm = False
            alarm_day = None
            for k, level in enumerate(levels, 1):
                upto = round(days * k / checks)
                subset = [
                    sim.golden[i]
                    for i in rng.choice(len(sim.golden), size=min(anchors, len(sim.golden)), replace=False)
                ]
                rejudged = sim.anchor_labels[judge] if noise == 0 else _noisy_run(sim, judge, noise, rng)
                drift = judge_drift(subset, pinned, rejudged, alpha=level, replicate=replicate,
                                    reference_runs=more_pinned, current_runs=earlier)  # fmt: skip
                earlier.append(rejudged)
                verdict = attribute(reference, current.take(np.arange(upto)), drift, alpha=level)
                judge_alarm |= verdict.judge.drifted
                system_alarm |= verdict.system.drifted
                if alarm_day is None and verdict.verdict != "none":
                    alarm_day = 7 + 7 * k / checks
            verdicts.append(
                "both"
                if judge_alarm and system_alarm
                else "judge"
                if judge_alarm
                else "system"
                if system_alarm
                else "none"
            )
            first_alarm.append(alarm_day)
            evidently.append(compare(reference, current).dataset_drift())
            naive.append(_naive(reference, current, alpha))
            label_free.append(_label_free(reference, current))
            if s < KEPT:
                kept.append((scenario, s, reference, current))
        v = np.array(verdicts)
        right, alarms = int(np.sum(v == expected)), int(np.sum(v != "none"))
        days_to_alarm = [d for d in first_alarm if d is not None]
        results[scenario] = {
            "expected": expected,
            "streams": n_streams,
            "attribution_accuracy": right / n_streams,
            "attribution_accuracy_ci95": _wilson(right, n_streams),
            "alarm_rate": alarms / n_streams,
            "alarm_rate_ci95": _wilson(alarms, n_streams),
            "mean_alarm_day": float(np.mean(days_to_alarm)) if days_to_alarm else None,
            "verdicts": {k: int(np.sum(v == k)) for k in ("none", "system", "judge", "both")},
            "evidently_dataset_drift_rate": float(np.mean(evidently)),
            "naive_failure_rate_z_alarm_rate": float(np.mean(naive)),
            "label_free_relevance_failure_rate_mae": float(np.mean([abs(e - j) for e, j in label_free])),
            "judged_relevance_failure_rate_current": float(np.mean([j for _, j in label_free])),
            "estimated_relevance_failure_rate_current": float(np.mean([e for e, _ in label_free])),
        }
    return results, kept


def _wilson(k: int, n: int, z: float = 1.96) -> list[float]:
    """Wilson score interval of a proportion k / n."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [float(centre - half), float(centre + half)]


def bench_monitor(
    streams: Annotated[int, typer.Option("--streams", help="Simulated 14-day streams per drifted scenario.")] = 40,
    null_streams: Annotated[
        int, typer.Option("--null-streams", help="Drift-free streams (the false-alarm rate's sample).")
    ] = 400,
    per_day: Annotated[int, typer.Option("--per-day", help="Requests per simulated day.")] = 60,
    pool_size: Annotated[int, typer.Option("--pool", help="Served requests per pool.")] = 1200,
    anchors: Annotated[int, typer.Option("--anchors", help="Anchor cases re-judged per check.")] = 200,
    pinned_runs: Annotated[
        int,
        typer.Option("--pinned-runs", min=2, help="Runs of the pinned judge on the anchor set (with the replicate)."),
    ] = 4,
    alpha: Annotated[
        float, typer.Option("--alpha", help="False alarms per stream, all checks and both sides together.")
    ] = 0.05,
    checks: Annotated[int, typer.Option("--checks", help="Checks spread over days 8-14 (7: daily).")] = 7,
    noise: Annotated[
        str,
        typer.Option("--judge-noise", help="Comma-separated sd of noise on the judge's item probabilities (0: as is)."),
    ] = "0,0.05",
    seed: Annotated[int, typer.Option("--seed")] = 0,
    out: Annotated[Path, typer.Option("--out", help="Where the pools' trace stores and the report go.")] = Path(
        "runs/bench-monitor"
    ),
) -> None:
    """Attribution accuracy and false alarms per planted scenario; Evidently's rule beside it."""
    from coachrec.cli.console import console

    con = console()
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.duckdb*"):
        old.unlink()
    t0 = time.perf_counter()
    sim = simulate(out, pool_size, seed, lambda msg: con.print(f"monitor bench: {msg}", markup=False))
    noise_levels = [float(x) for x in noise.split(",") if x.strip()]
    by_noise = {
        n: run_streams(sim, streams, null_streams, per_day, anchors, seed, alpha, checks, n, pinned_runs)
        for n in noise_levels
    }
    results, kept = by_noise[noise_levels[0]]
    # whole pools (1,200 rows, above Evidently's 1,000-row cut: distances, not p-values) as well
    whole = [(f"pool:{p}", 0, _window(sim.pools["base"], "base"), _window(sim.pools[p], "base")) for p in sim.pools]
    protocol = __doc__.split("Protocol. ", 1)[1].split("\n\n", 1)[0].replace("\n", " ") if __doc__ else ""
    protocol += (
        f" {streams} streams per drifted scenario and {null_streams} drift-free ones (resampled from the pools), "
        f"{per_day} requests a day, pools of {pool_size}, {checks} checks over days 8-14 with "
        f"{anchors} anchors re-judged per check; alpha {alpha} per stream over all checks (Pocock spending "
        f"increments as per-check levels, alpha / 2 per side, Bonferroni within a side). Judge noise: each "
        f"shown item's P(relevant) + N(0, sd) before the item threshold, a fresh draw per anchor run (the "
        f"pinned run, its replicate and every re-judging); sd 0 is the deterministic committee."
    )
    rows = []
    for level, (res, _) in by_noise.items():
        for scenario, metrics in res.items():
            rows.append(row(f"monitor attribution: {scenario} (judge noise {level:g})", DATASET, protocol, metrics))
        injected = [m for s, m in res.items() if s != "none"]
        rows.append(
            row(
                f"monitor attribution: summary (judge noise {level:g})",
                DATASET,
                protocol,
                {
                    "attribution_accuracy_injected": float(np.mean([m["attribution_accuracy"] for m in injected])),
                    "false_alarm_rate_drift_free": res["none"]["alarm_rate"],
                    "false_alarm_rate_drift_free_ci95": res["none"]["alarm_rate_ci95"],
                    "drift_free_streams": res["none"]["streams"],
                },
            )
        )
    drift_free = results["none"]
    drifted = [m for s, m in results.items() if s != "none"]
    summary = {
        "attribution_accuracy_injected": float(np.mean([m["attribution_accuracy"] for m in drifted])),
        "false_alarm_rate_drift_free": drift_free["alarm_rate"],
        "false_alarm_rate_drift_free_ci95": drift_free["alarm_rate_ci95"],
        "evidently_rule_false_alarm_rate_drift_free": drift_free["evidently_dataset_drift_rate"],
        "naive_z_false_alarm_rate_drift_free": drift_free["naive_failure_rate_z_alarm_rate"],
        "spans_read": sim.spans,
        "monitor_s_per_1m_spans": (sim.read_s + sim.compare_s) / sim.spans * 1e6,
        "read_s_per_1m_spans": sim.read_s / sim.spans * 1e6,
        "anchor_cases": len(sim.golden),
        **{f"anchor_verdicts_changed_{j}": _changed(sim, j) for j in ("stricter", "lenient", "retrained")},
        **{k: round(v, 2) for k, v in sim.timings.items()},
        "total_s": time.perf_counter() - t0,
    }
    rows.append(row("monitor attribution: summary", DATASET, protocol, summary))
    try:
        cross = evidently_cross_check(out / "evidently", kept + whole[1:])
    except Exception as exc:  # the attribution rows above stand on their own
        cross = {"ran": False, "reason": f"cross-check failed: {type(exc).__name__}: {exc}"}
    rows.append(row("monitor cross-check: Evidently itself on the same windows", DATASET, protocol, cross))
    path = write("monitor", rows)
    for level, (res, _) in by_noise.items():
        _print(res, f"judge noise {level:g}", con)
    con.print(f"Evidently cross-check: {cross}", markup=False)
    _report(out, kept)
    con.print(f"wrote {path} and {out / 'report' / 'report.md'}", markup=False)


def evidently_python() -> Path | None:
    """Evidently's own venv (its pins clash with coachrec's): `$COACHREC_EVIDENTLY_PY` or
    `.venv-evidently/bin/python`."""
    import os

    path = Path(os.environ.get("COACHREC_EVIDENTLY_PY", ".venv-evidently/bin/python"))
    return path if path.exists() else None


def evidently_cross_check(folder: Path, kept: list[Any]) -> dict[str, Any]:
    """Evidently's DataDriftPreset on the kept windows (and whole pools); per-column test,
    statistic and verdict and the dataset verdict compared with ours."""
    import json
    import subprocess

    from coachrec.monitor import compare
    from coachrec.monitor.windows import column_kind

    python = evidently_python()
    if python is None:
        return {
            "ran": False,
            "reason": "no Evidently venv: python3 -m venv .venv-evidently && "
            ".venv-evidently/bin/pip install evidently==0.7.23 'pandas<2.3'",
        }
    folder.mkdir(parents=True, exist_ok=True)
    ours = {}
    for scenario, s, reference, current in kept:
        name = f"{scenario.replace(':', '_').replace('+', '_')}-{s}"
        report = compare(reference, current)
        columns = [c.column for c in report.columns]
        reference.frame.select(columns).write_parquet(folder / f"{name}.ref.parquet")
        current.frame.select(columns).write_parquet(folder / f"{name}.cur.parquet")
        spec = {
            "reference": f"{name}.ref.parquet",
            "current": f"{name}.cur.parquet",
            "num": [c for c in columns if column_kind(c) == "num"],
            "cat": [c for c in columns if column_kind(c) == "cat"],
        }
        (folder / f"{name}.json").write_text(json.dumps(spec))
        ours[name] = report
    t = time.perf_counter()
    done = subprocess.run(
        [str(python), "-c", EVIDENTLY_SCRIPT, str(folder)], capture_output=True, text=True, timeout=1800, check=False
    )
    if done.returncode != 0:
        return {"ran": False, "reason": f"Evidently failed: {done.stderr.strip()[-500:]}"}
    theirs = json.loads(done.stdout.strip().splitlines()[-1])
    names = {"K-S p_value": "ks", "chi-square p_value": "chisquare", "Z-test p_value": "z",
             "Wasserstein distance (normed)": "wasserstein", "Jensen-Shannon distance": "jensenshannon",
             "PSI": "psi"}  # fmt: skip
    same_test = same_verdict = same_dataset = n_cols = 0
    used: dict[str, int] = {}
    gaps: list[float] = []
    disagreements: list[str] = []
    for entry in theirs:
        report = ours[entry["name"]]
        ev_share = (entry["dataset"] or {}).get("share", 0.0)
        same_dataset += int(report.dataset_drift() == (ev_share >= 0.5))
        for c in report.columns:
            other = entry["columns"].get(c.column)
            if other is None:
                continue
            n_cols += 1
            used[c.test] = used.get(c.test, 0) + 1
            test = names.get(other["method"], other["method"])
            p_value_test = "p_value" in other["method"]
            drifted = other["value"] < other["threshold"] if p_value_test else other["value"] >= other["threshold"]
            same_test += int(test == c.test)
            same_verdict += int(drifted == c.drifted)
            mine = c.p_value if p_value_test else c.statistic
            if test == c.test and mine is not None:
                gaps.append(abs(float(mine) - float(other["value"])))
            if drifted != c.drifted or test != c.test:
                disagreements.append(
                    f"{entry['name']}:{c.column} ours {c.test} {c.drifted} / Evidently {test} {drifted}"
                )
    return {
        "ran": True,
        "evidently": "0.7.23 DataDriftPreset (default tests)",
        "window_pairs": len(theirs),
        "columns_compared": n_cols,
        "columns_by_test": used,
        "same_test_share": same_test / max(n_cols, 1),
        "same_column_verdict_share": same_verdict / max(n_cols, 1),
        "same_dataset_verdict_share": same_dataset / max(len(theirs), 1),
        "max_abs_gap_statistic_or_p": max(gaps) if gaps else None,
        "disagreements": disagreements[:20],
        "evidently_s": time.perf_counter() - t,
    }


def _changed(sim: Sim, judge: str) -> float:
    """Share of the whole anchor set's relevance verdicts that `judge` gives differently from base."""
    keys = [(c.trace_id, c.criterion) for c in sim.golden if c.criterion == "relevance"]
    base, other = sim.anchor_labels["base"], sim.anchor_labels[judge]
    both = [k for k in keys if k in base and k in other]
    return float(np.mean([base[k] != other[k] for k in both])) if both else 0.0


def _print(results: dict[str, Any], title: str, con: Any) -> None:
    from coachrec.cli.console import print_rows

    rows = [
        [
            s,
            m["expected"],
            str(m["streams"]),
            f"{m['attribution_accuracy']:.3f}",
            f"{m['alarm_rate']:.3f} [{m['alarm_rate_ci95'][0]:.3f}, {m['alarm_rate_ci95'][1]:.3f}]",
            "" if m["mean_alarm_day"] is None else f"{m['mean_alarm_day']:.1f}",
            " ".join(f"{k}:{v}" for k, v in m["verdicts"].items()),
            f"{m['evidently_dataset_drift_rate']:.3f}",
            f"{m['naive_failure_rate_z_alarm_rate']:.3f}",
            f"{m['label_free_relevance_failure_rate_mae']:.3f}",
        ]
        for s, m in results.items()
    ]
    print_rows(
        [
            "scenario",
            "expected",
            "streams",
            "attribution acc",
            "alarm rate [95% CI]",
            "first alarm day",
            "verdicts",
            "Evidently rule alarms",
            "naive z alarms",
            "label-free MAE",
        ],
        rows,
        title=f"monitor: who drifted ({title})",
        con=con,
    )
    injected = np.mean([m["attribution_accuracy"] for s, m in results.items() if s != "none"])
    con.print(
        f"{title}: injected scenarios attribution {injected:.3f}; drift-free false alarms "
        f"{results['none']['alarm_rate']:.3f}",
        markup=False,
    )


def _report(out: Path, kept: list[Any]) -> None:
    """The monitor report of one simulated system drift (Markdown + plots), its requests placed
    on their simulated days (7 reference days, then 7 current ones)."""
    from coachrec.monitor import Window
    from coachrec.monitor.report import DAY_NS, write_report

    scenario, _, reference, current = next(k for k in kept if k[0] == "system:users")

    def on_days(window: Any, first_day: int) -> Any:
        per_day = max(window.n // 7, 1)
        days = first_day + np.arange(window.n) // per_day
        return Window(window.frame.with_columns(pl.Series("start_ns", days * DAY_NS, dtype=pl.Int64)))

    write_report(
        out / "report",
        on_days(reference, 0),
        on_days(current, 7),
        title=f"Simulated drift: {scenario} (days 1-7 vs 8-14)",
    )
