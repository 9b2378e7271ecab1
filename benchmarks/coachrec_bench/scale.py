"""`coachrec bench scale`: judging and evaluation in one process vs Ray Data with 1 and 2 workers.

Protocol. ml-latest-small; an item-kNN + popularity stack serves `--traces` replayed requests
(30% free text, 30% constraints) through the traced pipeline; the cases are read back from the
trace store. Program + committee criteria: the rubric's program checks and the relevance
committee (calibrated on later ratings). LLM criteria: `slate_variety` and `request_match` by
the smallest pulled GGUF model (llama.cpp, 1 thread per worker, both slate orders) on
`--llm-cases` cases. Ray: a local runtime with 2 CPUs; `map_batches` over a pool of 1 or 2
actors, each building its judge (and loading its model) once; wall time includes the actors'
start-up, and the steady rate excludes it (the extra traces of a run over `--ray-repeat` copies
over its extra time). Single process: the judge is built first (its build time is recorded
apart, as the actors' start-up is), `gc.collect()` runs before each timed run (the set-up's
garbage is not the judge's), and `--rounds` fresh judges each judge the traces once; rates are
the median over rounds. With `--before-src`, an older source tree judges the same traces the
same way in a subprocess, and its verdicts are checked equal to this code's. Evaluation: item-kNN,
leave-one-out, full ranking, accuracy metrics. Results are checked equal to the single process.
The machine has 2 cores, so 2 workers is the ceiling here, and the driver shares them; the
machine is shared (the 1-minute load average is recorded), so per-core rates are also given per
CPU second of the judging process, which contention does not inflate.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from coachrec_bench.results import row, write

DATASET = "ml-latest-small"
JUDGELM_PER_S = 5000 / 180
"""JudgeLM-7B: 5,000 samples in 3 minutes on 8 x A100."""


def _same(a: list[Any], b: list[Any]) -> bool:
    import math

    return len(a) == len(b) and all(
        (x.trace_id, x.criterion, x.label) == (y.trace_id, y.criterion, y.label)
        and (x.score == y.score or (math.isnan(x.score) and math.isnan(y.score)))
        for x, y in zip(a, b, strict=True)
    )


def _digest(judged: list[list[Any]]) -> str:
    """A fingerprint of every verdict, by case position (trace and span ids are random per run):
    criterion, label, exact score, rationale, details, blamed span name."""
    import hashlib

    h = hashlib.sha256()
    for n, case in enumerate(judged):
        for j in case:
            h.update(repr((n, j.criterion, j.label, repr(j.score), j.rationale, repr(j.details), j.span_name)).encode())
    return h.hexdigest()


def bench_setup(traces: int) -> dict[str, Any]:
    """The data, the served cases (read back from the trace store) and the calibrated committee."""
    from coachrec import datasets
    from coachrec.coach.traffic import serve
    from coachrec.serve import Stack
    from coachrec.serve.pipeline import PipelineConfig
    from coachrec.teacher.relevance import calibrated_committee
    from coachrec.teacher.traffic import replay_requests
    from coachrec.tracing import TraceStore

    data = datasets.load(DATASET)
    stack = Stack.fit(data, ("itemknn", "pop"), PipelineConfig(candidates=100))
    store = TraceStore(":memory:")
    cases = serve(stack, replay_requests([str(u) for u in data.users.ids], traces, seed=7), store).cases
    store.close()
    return {"data": data, "cases": cases, "committee": calibrated_committee(data)}


def single_process_rates(setup: dict[str, Any], rounds: int) -> dict[str, Any]:
    """Program + committee criteria in this process: `rounds` fresh judges, each built (its CPU
    time recorded apart), then timed (wall and CPU) on every case after `gc.collect()`; medians
    over rounds, and the CPU rate with the build counted in."""
    import gc
    import statistics

    from coachrec.teacher import CatalogView, Judge, load_rubric

    rubric = load_rubric()
    names = [c.name for c in rubric.criteria if c.member in ("program", "recommender")]
    cases = setup["cases"]
    walls, cpus, builds, digests, n_judgments = [], [], [], set(), 0
    for _ in range(rounds):
        cpu = time.process_time()
        judge = Judge(rubric, CatalogView(setup["data"].catalog), relevance=setup["committee"], criteria=names)
        builds.append(time.process_time() - cpu)
        gc.collect()
        t, cpu = time.perf_counter(), time.process_time()
        judged = judge.judge_each(cases)
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - cpu)
        digests.add(_digest(judged))
        n_judgments = sum(len(j) for j in judged)
    per_cpu = sorted(len(cases) / c for c in cpus)
    wall = statistics.median(walls)
    return {
        "traces": len(cases),
        "judgments": n_judgments,
        "single_process_traces_per_s": len(cases) / wall,
        "single_process_ms_per_trace": wall / len(cases) * 1000,
        "single_process_traces_per_cpu_s": statistics.median(per_cpu),
        "single_process_traces_per_cpu_s_min": per_cpu[0],
        "single_process_traces_per_cpu_s_max": per_cpu[-1],
        "single_process_rounds": rounds,
        "judge_build_cpu_s": statistics.median(builds),
        "single_process_traces_per_cpu_s_with_build": len(cases)
        / statistics.median([c + b for c, b in zip(cpus, builds, strict=True)]),
        "verdicts_digest": digests.pop() if len(digests) == 1 else f"rounds disagree: {sorted(digests)}",
    }


def _rates_json(traces: int, rounds: int) -> None:
    """`single_process_rates` of the code on `sys.path` as one JSON line (for `--before-src`)."""
    import json
    import subprocess

    import coachrec

    out = single_process_rates(bench_setup(traces), rounds)
    here = os.path.dirname(coachrec.__file__)
    done = subprocess.run(["git", "-C", here, "rev-parse", "HEAD"], capture_output=True, text=True, check=False)
    out["code"] = done.stdout.strip() or None
    out["load_average_1m"] = os.getloadavg()[0]
    print(json.dumps(out))


def before_rates(src: str, traces: int, rounds: int) -> dict[str, Any]:
    """`single_process_rates` of the coachrec source tree `src` (its `src/` folder), in a
    subprocess that builds the same set-up with that code."""
    import json
    import subprocess
    import sys

    env = os.environ | {"PYTHONPATH": src, "OMP_NUM_THREADS": "1"}
    code = f"from coachrec_bench.scale import _rates_json; _rates_json({traces}, {rounds})"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _ray_rates(factory: Any, cases: list[Any], local: list[Any], batch_size: int, repeat: int) -> dict[str, Any]:
    """Cold: `cases` once (actor start-up included). Steady: the extra cases of a run over
    `repeat` copies, over its extra time (start-up cancels; None when the machine's load made
    the longer run no slower)."""
    from coachrec.scale import judge_with_ray

    out: dict[str, Any] = {}
    for workers in (1, 2):
        t = time.perf_counter()
        first = judge_with_ray(factory, cases, workers=workers, batch_size=batch_size)
        cold = time.perf_counter() - t
        t = time.perf_counter()
        more = judge_with_ray(factory, cases * repeat, workers=workers, batch_size=batch_size)
        longer = time.perf_counter() - t
        extra = longer - cold
        out[f"ray_{workers}_wall_s"] = cold
        out[f"ray_{workers}_traces_per_s_wall"] = len(cases) / cold
        out[f"ray_{workers}_repeat_{repeat}_wall_s"] = longer
        out[f"ray_{workers}_traces_per_s_steady"] = (repeat - 1) * len(cases) / extra if extra > 0 else None
        out[f"ray_{workers}_equal_to_single_process"] = _same(first, local) and _same(more[: len(local)], local)
    one, two = out["ray_1_traces_per_s_steady"], out["ray_2_traces_per_s_steady"]
    out["scaling_efficiency_1_to_2_steady"] = two / (2 * one) if one and two else None
    out["scaling_efficiency_1_to_2_wall"] = out["ray_2_traces_per_s_wall"] / (2 * out["ray_1_traces_per_s_wall"])
    return out


def _slot_metrics(
    server: str | None, llm: str, llm_cases: int, cases: list[Any], rubric: Any, catalog: Any, threads: int = 2
) -> dict[str, Any]:
    """The llama-server slots row (`coachrec_bench.llama_server`): the LLM criteria's cases judged
    through llama.cpp's server at 1, 2 and 4 slots; `server` is its path or `build`."""
    if server is None:
        return {"measured": False, "reason": "not measured in this run: pass --llama-server build (or a path)"}
    from coachrec.llm import ModelRegistry, OpenAICompatBackend
    from coachrec.teacher import CatalogView, Judge
    from coachrec_bench.llama_server import ensure_llama_server, slot_rows

    entry = ModelRegistry().resolve(llm)
    if entry is None or not entry.exists:
        raise typer.BadParameter(f"model {llm!r} is not pulled: coachrec models pull {llm}")
    binary = ensure_llama_server() if server == "build" else Path(server)
    picked = sorted(cases, key=lambda c: (not c.context, c.trace_id))[: llm_cases * 4]

    def make_judge(url: str) -> Judge:
        llm_backend = OpenAICompatBackend(url)
        return Judge(rubric, CatalogView(catalog), llm=llm_backend, criteria=["slate_variety", "request_match"])

    metrics = slot_rows(binary, Path(entry.path), make_judge, picked, threads=threads)
    return metrics | {"load_average_1m": os.getloadavg()[0]}


def bench_scale(
    traces: Annotated[int, typer.Option("--traces", help="Replayed requests judged by program + committee.")] = 600,
    llm_cases: Annotated[int, typer.Option("--llm-cases", help="Cases the LLM criteria judge (bounded).")] = 12,
    llm: Annotated[str, typer.Option("--llm", help="LLM role for the LLM criteria (none to skip).")] = "small",
    ray_repeat: Annotated[
        int, typer.Option("--ray-repeat", help="Copies of the traces in Ray's steady-rate run (start-up amortised).")
    ] = 40,
    rounds: Annotated[int, typer.Option("--rounds", help="Fresh judges timed in one process (median).")] = 5,
    llama_server: Annotated[
        str | None,
        typer.Option(
            "--llama-server", help="llama.cpp's llama-server binary for the slots row, or `build` to build it."
        ),
    ] = None,
    llama_threads: Annotated[int, typer.Option("--llama-threads", min=1, help="llama-server's threads.")] = 2,
    slots_only: Annotated[
        bool, typer.Option("--slots-only", help="Only the llama-server slots row; the file's other rows are kept.")
    ] = False,
    before_src: Annotated[
        str | None,
        typer.Option(
            "--before-src", help="An older coachrec source tree (its src/) timed the same way, for comparison."
        ),
    ] = None,
) -> None:
    """Judged traces per second, one process vs Ray 1 and 2 workers; full-ranking evaluation time."""
    from coachrec.cli.console import console, print_rows
    from coachrec.data import leave_one_out
    from coachrec.metrics import evaluate, named
    from coachrec.models import create
    from coachrec.scale import evaluate_with_ray, ray_runtime
    from coachrec.teacher import CatalogView, Judge, load_rubric

    con = console()
    slots_name = "scale: llama.cpp server with 1, 2, 4 parallel slots"
    protocol = (__doc__ or "").split("Protocol. ", 1)[-1].replace("\n", " ").strip()
    if slots_only:
        import json

        from coachrec_bench.results import results_dir

        setup = bench_setup(traces)
        slots = _slot_metrics(
            llama_server, llm, llm_cases, setup["cases"], load_rubric(), setup["data"].catalog, llama_threads
        )
        kept = [r for r in json.loads((results_dir() / "scale.json").read_text()) if r["name"] != slots_name]
        con.print(f"llama-server slots: {slots}", markup=False)
        con.print(f"wrote {write('scale', [*kept, row(slots_name, DATASET, protocol, slots)])}", markup=False)
        return
    before = before_rates(before_src, traces, rounds) if before_src else None
    setup = bench_setup(traces)
    data, cases, committee = setup["data"], setup["cases"], setup["committee"]
    rubric = load_rubric()
    catalog = data.catalog
    names = [c.name for c in rubric.criteria if c.member in ("program", "recommender")]
    program = [c.name for c in rubric.criteria if c.member == "program"]

    def make_judge() -> Judge:
        return Judge(rubric, CatalogView(catalog), relevance=committee, criteria=names)

    rows = []
    load_start = os.getloadavg()[0]
    single = single_process_rates(setup, rounds)
    local = make_judge().judge(cases)
    t = time.perf_counter()
    Judge(rubric, CatalogView(catalog), criteria=program).judge(cases)
    program_s = time.perf_counter() - t
    ray_runtime(num_cpus=2)
    metrics: dict[str, Any] = {
        **single,
        "load_average_1m_at_start": load_start,
        "program_only_traces_per_s": len(cases) / program_s,
    }
    if before is not None:
        metrics["before_code"] = before.get("code")
        metrics["before_traces_per_cpu_s"] = before["single_process_traces_per_cpu_s"]
        metrics["before_traces_per_s"] = before["single_process_traces_per_s"]
        metrics["before_load_average_1m"] = before.get("load_average_1m")
        metrics["speedup_per_cpu_s"] = (
            single["single_process_traces_per_cpu_s"] / before["single_process_traces_per_cpu_s"]
        )
        metrics["verdicts_equal_to_before"] = before["verdicts_digest"] == single["verdicts_digest"]
    metrics.update(_ray_rates(make_judge, cases, local, batch_size=200, repeat=ray_repeat))
    metrics["load_average_1m_at_end"] = os.getloadavg()[0]
    metrics["traces_per_day_one_core"] = metrics["single_process_traces_per_cpu_s"] * 86400
    metrics["goal_2000_per_s_per_core"] = metrics["single_process_traces_per_cpu_s"] >= 2000
    rows.append(row("scale: program + committee criteria", DATASET, protocol, metrics))
    con.print(f"program + committee: {metrics}", markup=False)
    if llm != "none" and llm_cases > 0:
        from coachrec.llm import LlamaCppConfig, load_backend

        picked = sorted(cases, key=lambda c: (not c.context, c.trace_id))[:llm_cases]

        def make_llm_judge() -> Judge:
            backend = load_backend(llm, llama=LlamaCppConfig(n_threads=1, n_ctx=2048))
            return Judge(rubric, CatalogView(catalog), llm=backend, criteria=["slate_variety", "request_match"])

        t = time.perf_counter()
        llm_judge = make_llm_judge()
        load_s = time.perf_counter() - t
        t, cpu = time.perf_counter(), time.process_time()
        llm_local = llm_judge.judge(picked)
        llm_single, llm_cpu = time.perf_counter() - t, time.process_time() - cpu
        if llm_judge.llm is not None:
            llm_judge.llm.close()
        model_name = llm_local[0].evaluator if llm_local else llm
        llm_metrics: dict[str, Any] = {
            "model": model_name,
            "cases": len(picked),
            "judgments": len(llm_local),
            "model_load_s": load_s,
            "single_process_judgments_per_s": len(llm_local) / llm_single,
            "single_process_judgments_per_cpu_s": len(llm_local) / llm_cpu,
            "load_average_1m": os.getloadavg()[0],
            **{
                k.replace("traces", "cases"): v
                for k, v in _ray_rates(
                    make_llm_judge, picked, llm_local, batch_size=max(1, len(picked) // 4), repeat=2
                ).items()
            },
        }
        llm_metrics["per_core_judgments_per_s"] = llm_metrics["single_process_judgments_per_cpu_s"]
        llm_metrics["cores_to_match_judgelm_28_per_s"] = JUDGELM_PER_S / llm_metrics["per_core_judgments_per_s"]
        rows.append(row("scale: LLM criteria (smallest GGUF, llama.cpp)", DATASET, protocol, llm_metrics))
        con.print(f"LLM criteria: {llm_metrics}", markup=False)
    split = leave_one_out(data)
    model = create("itemknn", dataset=data).fit(split.train)
    t = time.perf_counter()
    one = evaluate(model, split, named("loo-full"))
    eval_single = time.perf_counter() - t
    eval_metrics: dict[str, Any] = {
        "users": one.n_users,
        "single_process_s": eval_single,
        "ndcg@10": one.metrics["ndcg@10"],
    }
    for workers in (1, 2):
        t = time.perf_counter()
        res = evaluate_with_ray(model, split, named("loo-full"), workers=workers)
        eval_metrics[f"ray_{workers}_s"] = time.perf_counter() - t
        eval_metrics[f"ray_{workers}_equal_to_single_process"] = all(
            (res.per_user[k] == one.per_user[k]).all() for k in res.per_user
        )
    rows.append(row("scale: full-ranking leave-one-out evaluation (item-kNN)", DATASET, protocol, eval_metrics))
    rows.append(
        row(
            slots_name,
            DATASET,
            protocol,
            _slot_metrics(llama_server, llm, llm_cases, cases, rubric, catalog, llama_threads),
        )
    )
    path = write("scale", rows)
    print_rows(
        ["row", "metrics"],
        [
            [
                r["name"],
                ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in r["metrics"].items()),
            ]
            for r in rows
        ],
        title="scale",
        con=con,
    )
    con.print(f"wrote {path}", markup=False)
