"""`coachrec bench teacher`: how fast and how trustworthy the teacher is, and what it finds.

1. Relevance judge quality against held-out MovieLens ratings (`teacher.movielens`): the
   recommender committee on every labelled pair; each local LLM (P(yes) from logits, history in
   both orders for swap consistency) on a subset of users, with the committee on that same
   subset and an LLM+committee blend (fitted on calibration users) to see whether the LLM helps.
2. Throughput: judgments per minute of logit scoring vs free-text JSON generation on the same
   prompts in the same run, with the parse-failure rate of each.
3. Traces of the bundled data set: replayed requests served by the default stack, judged by
   the full committee, and the top failure modes found.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from coachrec_bench.results import row, write

console = Console()
DATASET = "ml-latest-small"


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.1f}/{five:.1f}/{fifteen:.1f} (1/5/15-min load on {os.cpu_count()} cores)"


def _relevance_prompt(liked: list[str], candidate: str) -> str:
    from coachrec.teacher.prompts import judge_prompt, numbered

    return judge_prompt(
        [("movies_the_user_rated_highly", numbered(liked)), ("candidate_movie", candidate)],
        "Would this user rate the candidate movie 4 stars or more out of 5?",
    )


def _users_subset(pairs: Any, n: int, seed: int, per_user: int = 4) -> np.ndarray:
    """About `n` pairs, at most `per_user` from each randomly drawn user: a user's pairs share
    the history prefix of the prompt (KV reuse), and the cap keeps the users many."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(pairs), dtype=bool)
    for u in rng.permutation(np.unique(pairs.users)):
        if mask.sum() >= n:
            break
        rows = np.flatnonzero(pairs.users == u)
        mask[rng.permutation(rows)[:per_user]] = True
    return mask


def _llm_pair_scores(backend: Any, labels: Any, pairs: Any, history_items: int) -> tuple[np.ndarray, np.ndarray]:
    """P(yes) per pair with the liked-history list in original and reversed order."""
    from coachrec.teacher.llm_scoring import LogitScorer

    scorer = LogitScorer(backend)
    train = labels.train
    describe = describer(train)
    indptr, hist = train.sequences()
    values = train.events["value"].to_numpy()
    first, second = np.zeros(len(pairs)), np.zeros(len(pairs))
    t0 = time.perf_counter()
    for reverse, out in ((False, first), (True, second)):
        console.print(
            f"  {backend.model_id}: {len(pairs)} pairs, {'reversed' if reverse else 'original'} history order "
            f"({time.perf_counter() - t0:.0f} s so far; load {_load()})"
        )
        for r in range(len(pairs)):
            u = int(pairs.users[r])
            lo, hi = indptr[u], indptr[u + 1]
            liked = [describe(int(i)) for i in hist[lo:hi][values[lo:hi] >= 4.0][-history_items:]]
            if reverse:
                liked = liked[::-1]
            out[r] = scorer.p_yes(_relevance_prompt(liked, describe(int(pairs.items[r]))))
    return first, second


def describer(data: Any) -> Any:
    from coachrec.teacher import CatalogView

    view = CatalogView(data.catalog)
    ids = data.items.ids.tolist()
    return lambda idx: view.describe(str(ids[idx]))


def bench_teacher(
    models: Annotated[
        str,
        typer.Option(
            "--models",
            help="LLM roles to measure, each with its labelled pairs per half "
            "(calibration, evaluation): small:30,medium:24,teacher:20.",
        ),
    ] = "small:30,medium:24,teacher:20",
    speed_prompts: Annotated[
        int, typer.Option("--speed-prompts", help="Prompts per model for logit vs JSON throughput.")
    ] = 3,
    json_tokens: Annotated[int, typer.Option("--json-tokens", help="Generation budget of the JSON judge.")] = 32,
    threads: Annotated[
        int, typer.Option("--threads", help="llama.cpp threads (1 is fastest on a busy 2-core box).")
    ] = 1,
    traces: Annotated[int, typer.Option("--traces", help="Replayed requests to serve and judge.")] = 300,
    llm_traces: Annotated[int, typer.Option("--llm-traces", help="Of those, traces the LLM criteria judge.")] = 2,
    trace_llm: Annotated[
        str, typer.Option("--trace-llm", help="LLM member judging traces (a role or none).")
    ] = "teacher",
    sequential: Annotated[
        str, typer.Option("--sequential", help="Sequential model joining the committee (e.g. sasrec; none).")
    ] = "none",
    sequential_epochs: Annotated[int, typer.Option("--sequential-epochs")] = 20,
    history_items: int = 5,
    seed: int = 0,
) -> None:
    """Teacher speed, judge quality vs held-out ratings, and failure modes on replayed traces."""
    from coachrec import datasets
    from coachrec.llm import LlamaCppConfig
    from coachrec.teacher import RelevanceCommittee, load_rubric, measure
    from coachrec.teacher.movielens import heldout_labels
    from coachrec.teacher.quality import best_threshold, kappa_interval
    from coachrec.teacher.relevance import RelevanceConfig

    rows: list[dict[str, Any]] = []
    started = _load()
    data = datasets.load(DATASET)
    labels = heldout_labels(data, sample="balanced", seed=seed)
    floor = load_rubric().kappa_floor

    # 1. the recommender committee on every labelled pair -------------------------------------
    y = labels.evaluation.labels
    configs = [("relevance-committee (kNN ensemble)", RelevanceConfig(seed=seed))]
    if sequential != "none":
        configs.append(
            (
                f"relevance-committee + {sequential}",
                RelevanceConfig(
                    extra_models=(sequential,),
                    extra_model_config={sequential: {"epochs": sequential_epochs}},
                    seed=seed,
                ),
            )
        )
    for name, config in configs:
        t0 = time.perf_counter()
        committee = RelevanceCommittee(config).fit(labels.train)
        x_cal, x_eval = committee.pair_features(labels.calibration), committee.pair_features(labels.evaluation)
        committee.fit_blend(x_cal, labels.calibration.labels)
        p_cal, p_eval = committee.probability_from_features(x_cal), committee.probability_from_features(x_eval)
        fit_s = time.perf_counter() - t0
        judges = [(name, p_cal, p_eval, 0.5)]
        if config.extra_models == ():
            item_mean = committee.features.index("item_mean")
            judges.append(
                (
                    "item-mean-rating baseline",
                    x_cal[:, item_mean],
                    x_eval[:, item_mean],
                    best_threshold(x_cal[:, item_mean], labels.calibration.labels),
                )
            )
        for judge_name, _scores_cal, scores_eval, t in judges:
            q = measure(
                "relevance",
                judge_name,
                scores_eval >= t,
                y,
                kappa_floor=floor,
                scores=scores_eval,
                protocol=labels.protocol,
            )
            lo, hi = kappa_interval(scores_eval >= t, y, labels.evaluation.users, seed=seed)
            rows.append(
                row(
                    "teacher",
                    DATASET,
                    f"relevance judge vs held-out ratings: {labels.protocol}; threshold {t:.3f}; "
                    "kappa 95% interval by user bootstrap (500)",
                    {
                        "judge": judge_name,
                        "pairs": q.n,
                        "users": len(np.unique(labels.evaluation.users)),
                        "kappa": q.kappa,
                        "kappa_ci": [round(lo, 3), round(hi, 3)],
                        "tpr": q.tpr,
                        "tnr": q.tnr,
                        "auc": q.auc,
                        "swap_consistency": None,
                        "may_gate": q.may_gate,
                        "positive_rate": float(y.mean()),
                        "fit_seconds": round(fit_s, 1),
                        "blend": committee.blend_weights() if judge_name == name else None,
                        "load": _load(),
                    },
                )
            )
        console.print(f"{name}: kappa {rows[-len(judges)]['metrics']['kappa']:.3f} ({fit_s:.0f} s)")

    # 2. LLM members on a user subset: quality, and logit vs JSON throughput -------------------
    describe = describer(labels.train)
    llama = LlamaCppConfig(n_threads=threads, n_ctx=2048)
    for spec in [m.strip() for m in models.split(",") if m.strip()]:
        role, _, n_pairs = spec.partition(":")
        rows.extend(
            _llm_member(
                role,
                int(n_pairs or 30),
                labels,
                p_cal,
                p_eval,
                name,
                describe,
                llama,
                speed_prompts,
                json_tokens,
                history_items,
                floor,
                seed,
            )
        )

    # 3. traces of the bundled data set ------------------------------------------------------
    rows.extend(_judge_replayed_traces(data, labels, committee, traces, llm_traces, trace_llm, llama, seed))
    _print(rows)
    path = write("teacher", rows)
    console.print(f"wrote {path}; load at start {started}, at end {_load()}")


def _llm_member(
    role: str,
    n_pairs: int,
    labels: Any,
    p_cal: np.ndarray,
    p_eval: np.ndarray,
    committee_name: str,
    describe: Any,
    llama: Any,
    speed_prompts: int,
    json_tokens: int,
    history_items: int,
    floor: float,
    seed: int,
) -> list[dict[str, Any]]:
    """Quality of one LLM as a relevance judge (and blended with the committee), and its speed
    with logit scoring vs JSON generation."""
    from coachrec.llm import LLMError, load_backend
    from coachrec.teacher import measure
    from coachrec.teacher.llm_scoring import JsonScorer, LogitScorer
    from coachrec.teacher.quality import best_threshold, kappa_interval
    from coachrec.teacher.relevance import LogisticBlend

    rows: list[dict[str, Any]] = []
    cal_mask = _users_subset(labels.calibration, n_pairs, seed)
    eval_mask = _users_subset(labels.evaluation, n_pairs, seed + 1)
    cal, ev = labels.calibration.take(cal_mask), labels.evaluation.take(eval_mask)
    sub_p_cal, sub_p_eval = p_cal[cal_mask], p_eval[eval_mask]
    name = committee_name
    q = measure("relevance", f"{name} (LLM subset)", sub_p_eval >= 0.5, ev.labels, kappa_floor=floor, scores=sub_p_eval)
    rows.append(
        row(
            "teacher",
            DATASET,
            f"relevance judge on the LLM pair subset ({len(ev)} evaluation pairs, "
            f"{len(np.unique(ev.users))} users); threshold 0.5",
            {
                "judge": q.judge,
                "pairs": q.n,
                "kappa": q.kappa,
                "tpr": q.tpr,
                "tnr": q.tnr,
                "auc": q.auc,
                "may_gate": q.may_gate,
            },
        )
    )
    try:
        backend = load_backend(role, llama=llama)
    except LLMError as exc:
        console.print(f"[yellow]skipping {role}: {exc}[/yellow]")
        return rows
    t0 = time.perf_counter()
    a_cal, b_cal = _llm_pair_scores(backend, labels, cal, history_items)
    a_ev, b_ev = _llm_pair_scores(backend, labels, ev, history_items)
    seconds = time.perf_counter() - t0
    s_cal, s_ev = (a_cal + b_cal) / 2, (a_ev + b_ev) / 2
    t = best_threshold(s_cal, cal.labels)
    q = measure(
        "relevance",
        backend.model_id,
        s_ev >= t,
        ev.labels,
        kappa_floor=floor,
        swap_consistent=(a_ev >= t) == (b_ev >= t),
        scores=s_ev,
    )
    # blend: does the LLM add anything to the committee? (logistic fit on calibration users)
    blend = LogisticBlend.fit(np.column_stack([sub_p_cal, s_cal]), cal.labels)
    pb = blend.predict(np.column_stack([sub_p_eval, s_ev]))
    qb = measure("relevance", f"committee+{backend.model_id}", pb >= 0.5, ev.labels, kappa_floor=floor, scores=pb)
    lo, hi = kappa_interval(s_ev >= t, ev.labels, ev.users, seed=seed)
    n_prompts = 2 * (len(cal) + len(ev))
    rows.append(
        row(
            "teacher",
            DATASET,
            f"LLM relevance judge, P(yes) from logits, mean of both history orders; threshold {t:.3f} "
            f"chosen on {len(cal)} calibration pairs; {len(ev)} evaluation pairs",
            {
                "judge": backend.model_id,
                "pairs": q.n,
                "users": len(np.unique(ev.users)),
                "kappa": q.kappa,
                "kappa_ci": [round(lo, 3), round(hi, 3)],
                "tpr": q.tpr,
                "tnr": q.tnr,
                "auc": q.auc,
                "swap_consistency": q.swap_consistency,
                "may_gate": q.may_gate,
                "blend_with_committee": {"kappa": qb.kappa, "tpr": qb.tpr, "tnr": qb.tnr, "auc": qb.auc},
                "prompts": n_prompts,
                "judgments_per_minute": round(60 * n_prompts / seconds, 1),
                "load": _load(),
            },
        )
    )
    console.print(
        f"{backend.model_id}: kappa {q.kappa:.3f} auc {q.auc} swap {q.swap_consistency}; blend kappa {qb.kappa:.3f}"
    )
    # throughput: the same prompts, logit then JSON, in this run
    prompts = []
    indptr, hist = labels.train.sequences()
    values = labels.train.events["value"].to_numpy()
    for r in range(min(speed_prompts, len(ev))):
        u = int(ev.users[r])
        lo, hi = indptr[u], indptr[u + 1]
        liked = [describe(int(i)) for i in hist[lo:hi][values[lo:hi] >= 4.0][-history_items:]]
        prompts.append(_relevance_prompt(liked, describe(int(ev.items[r]))))
    console.print(f"  {backend.model_id}: throughput, {len(prompts)} prompts logit then JSON")
    logit, js = LogitScorer(backend), JsonScorer(backend, max_tokens=json_tokens)
    t0 = time.perf_counter()
    logit_verdicts = [logit.p_yes(p) >= 0.5 for p in prompts]
    logit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    json_verdicts = [js.verdict(p) for p in prompts]
    json_s = time.perf_counter() - t0
    failures = sum(v.verdict is None for v in json_verdicts)
    agree = [lv == jv.verdict for lv, jv in zip(logit_verdicts, json_verdicts, strict=False) if jv.verdict is not None]
    rows.append(
        row(
            "teacher",
            DATASET,
            f"throughput: {len(prompts)} relevance prompts, logit scoring then JSON generation "
            f"(max {json_tokens} tokens, greedy), same prompts, same run, no response cache",
            {
                "judge": backend.model_id,
                "prompts": len(prompts),
                "logit_judgments_per_minute": round(60 * len(prompts) / logit_s, 1),
                "logit_parse_failure_rate": 0.0,
                "json_judgments_per_minute": round(60 * len(prompts) / json_s, 1),
                "json_parse_failure_rate": failures / len(prompts),
                "json_logit_agreement": float(np.mean(agree)) if agree else None,
                "load": _load(),
            },
        )
    )
    backend.close()
    return rows


def _judge_replayed_traces(
    data: Any, labels: Any, committee: Any, n: int, llm_traces: int, trace_llm: str, llama: Any, seed: int
) -> list[dict[str, Any]]:
    from coachrec.llm import LLMError, load_backend
    from coachrec.models import create
    from coachrec.serve.pipeline import Pipeline
    from coachrec.teacher import CatalogView, Judge, cases_from_store, failure_report, load_rubric, record
    from coachrec.teacher.traffic import replay_requests
    from coachrec.tracing import Tracer, TraceStore

    rows = []
    train = labels.train
    models = [create("itemknn").fit(train), create("pop").fit(train)]
    tmp = Path(tempfile.mkdtemp(prefix="coachrec-bench-teacher-"))
    store = TraceStore(tmp / "traces.duckdb")
    pipeline = Pipeline.from_models(models, data.catalog, tracer=Tracer(store))
    users = sorted({str(u) for u in train.users.decode(np.unique(labels.evaluation.users)).tolist()})
    t0 = time.perf_counter()
    for request in replay_requests(users, n, seed=seed):
        pipeline.recommend(request)
    store.flush()
    serve_s = time.perf_counter() - t0
    rubric = load_rubric()
    view = CatalogView(data.catalog)
    all_ids = store.traces(limit=None)["trace_id"].to_pylist()
    cases = cases_from_store(store, all_ids)
    t0 = time.perf_counter()
    base = Judge(rubric, view, relevance=committee)
    judgments = base.judge(cases)
    base_s = time.perf_counter() - t0
    llm_judgments = []
    llm_s, llm_id = 0.0, None
    if trace_llm != "none" and llm_traces > 0:
        try:
            backend = load_backend(trace_llm, llama=llama)
            llm_id = backend.model_id
            llm_judge = Judge(
                rubric, view, llm=backend, criteria=[c.name for c in rubric.criteria if c.member == "llm"]
            )
            rng = np.random.default_rng(seed)
            with_context = [c for c in cases if c.context]
            picked = list(rng.permutation(len(with_context))[:llm_traces])
            sub = [with_context[i] for i in sorted(picked)]
            console.print(f"  {llm_id}: LLM criteria on {len(sub)} traces with a free-text request")
            t0 = time.perf_counter()
            llm_judgments = llm_judge.judge(sub)
            llm_s = time.perf_counter() - t0
            backend.close()
        except LLMError as exc:
            console.print(f"[yellow]no LLM member for traces: {exc}[/yellow]")
    record(store, judgments + llm_judgments)
    report = failure_report(store)
    swap = [j.swap_consistent for j in llm_judgments if j.swap_consistent is not None]
    per_criterion: dict[str, dict[str, float]] = {}
    for j in judgments + llm_judgments:
        d = per_criterion.setdefault(j.criterion, {"judged": 0, "failed": 0})
        d["judged"] += 1
        d["failed"] += int(j.failed)
    proxy = _request_match_proxy(llm_judgments, cases, view)
    rows.append(
        row(
            "teacher",
            DATASET,
            f"{n} replayed requests (30% free-text request, 30% constraints) served by item-kNN+pop "
            f"fitted on the labels' training part; program + relevance criteria on all traces, LLM criteria "
            f"({llm_id}) on {len({j.trace_id for j in llm_judgments})} traces with a free-text request",
            {
                "traces": len(cases),
                "serve_seconds": round(serve_s, 1),
                "program_and_relevance_traces_per_minute": round(60 * len(cases) / base_s, 1),
                "llm_criteria_traces_per_minute": round(60 * len({j.trace_id for j in llm_judgments}) / llm_s, 2)
                if llm_s
                else None,
                "llm_swap_consistency": float(np.mean(swap)) if swap else None,
                "request_match_vs_genre_proxy": proxy,
                "per_criterion": per_criterion,
                "top_failure_modes": [
                    {
                        "mode": m.name,
                        "criterion": m.criterion,
                        "traces": m.count,
                        "rate": round(m.rate, 3),
                        "span": m.span,
                        "examples": list(m.examples),
                        "why": m.why,
                    }
                    for m in report.modes[:8]
                ],
                "load": _load(),
            },
        )
    )
    store.close()
    return rows


_PROXY_GENRES = {
    "something funny and light for tonight": ("Comedy",),
    "a scary horror movie": ("Horror",),
    "an animated film the kids can watch": ("Animation", "Children"),
    "no horror please, I want a romance": ("Romance",),
    "a recent sci-fi film": ("Sci-Fi",),
}


def _request_match_proxy(judgments: list[Any], cases: list[Any], view: Any) -> dict[str, Any] | None:
    """Agreement of the LLM's request_match with a genre-derived proxy label (NOT a human label):
    the slate matches when at least half its items carry a genre the request names."""
    from coachrec.teacher import measure

    by_trace = {c.trace_id: c for c in cases}
    judge_pass, proxy_pass = [], []
    for j in judgments:
        case = by_trace[j.trace_id]
        if j.criterion != "request_match" or case.context not in _PROXY_GENRES:
            continue
        wanted = set(_PROXY_GENRES[case.context])
        fits = [bool(wanted & set(view.genres(item))) for item in case.items]
        judge_pass.append(j.label == "pass")
        proxy_pass.append(bool(fits) and np.mean(fits) >= 0.5)
    if len(judge_pass) < 2:
        return None
    q = measure("request_match", "llm", judge_pass, proxy_pass, kappa_floor=0.4)
    return {"n": q.n, "kappa": q.kappa, "tpr": q.tpr, "tnr": q.tnr, "proxy_pass_rate": float(np.mean(proxy_pass))}


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _print(rows: list[dict[str, Any]]) -> None:
    quality = Table(title="Relevance judges vs held-out MovieLens ratings (evaluation users)")
    for col in (
        "judge",
        "pairs",
        "kappa",
        "TPR",
        "TNR",
        "AUC",
        "swap consistency",
        "may gate",
        "+committee kappa",
        "judgments/min",
    ):
        quality.add_column(col)
    speed = Table(title="Logit scoring vs free-text JSON generation (same prompts, same run)")
    for col in (
        "model",
        "prompts",
        "logit judgments/min",
        "JSON judgments/min",
        "JSON parse failures",
        "logit parse failures",
        "agreement",
    ):
        speed.add_column(col)
    modes = Table(title="Top failure modes on replayed traces of ml-latest-small")
    for col in ("mode", "criterion", "traces", "rate", "where (span)", "why", "examples"):
        modes.add_column(col, overflow="fold")
    for r in rows:
        m = r["metrics"]
        if "kappa" in m:
            blend = (m.get("blend_with_committee") or {}).get("kappa")
            quality.add_row(
                str(m["judge"]),
                _fmt(m["pairs"]),
                _fmt(m["kappa"]),
                _fmt(m["tpr"]),
                _fmt(m["tnr"]),
                _fmt(m["auc"]),
                _fmt(m.get("swap_consistency")),
                _fmt(m["may_gate"]),
                _fmt(blend),
                _fmt(m.get("judgments_per_minute")),
            )
        elif "logit_judgments_per_minute" in m:
            speed.add_row(
                str(m["judge"]),
                _fmt(m["prompts"]),
                _fmt(m["logit_judgments_per_minute"]),
                _fmt(m["json_judgments_per_minute"]),
                f"{m['json_parse_failure_rate']:.0%}",
                "0%",
                _fmt(m["json_logit_agreement"]),
            )
        elif "top_failure_modes" in m:
            for f in m["top_failure_modes"]:
                modes.add_row(
                    f["mode"],
                    f["criterion"],
                    str(f["traces"]),
                    f"{f['rate']:.1%}",
                    f["span"],
                    f["why"][:120],
                    f["examples"][0],
                )
    for table in (quality, speed, modes):
        console.print(table)
