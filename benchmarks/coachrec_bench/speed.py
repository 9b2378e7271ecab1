"""`coachrec bench speed`: how fast each registered model trains, serves and evaluates.

Per model, on a leave-one-out split (Beauty by default), with its per-dataset defaults:
- training: seconds per epoch and training events per second (events of the training part per
  epoch; epoch-less models report their fit time as one epoch),
- serving: `recommend` latency for one request scoring the whole catalog (p50/p99 over
  `--requests` known users, after a few warm-up calls),
- evaluation: wall time of a full-ranking leave-one-out evaluation of every user.

Other processes may share the CPU; every row records the load average before and after.
"""

from __future__ import annotations

import json
import os
import time
from typing import Annotated, Any

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from coachrec_bench.results import results_dir, row, write

console = Console(width=150)


def epochs_owner(name: str, config: dict[str, Any]) -> str | None:
    """The model whose epochs a fit of `name` runs: `name` itself, the hybrid's sequential
    part, or None for a model that does not train in epochs."""
    from coachrec.models import config_fields

    if "epochs" in config_fields(name):
        return name
    if name == "hybrid":
        from coachrec.models.hybrid import HybridConfig

        part = config.get("sequential", HybridConfig.sequential)
        return part if "epochs" in config_fields(part) else None
    return None


def timed_fit(name: str, data: Any, *, epochs: int, threads: int) -> tuple[Any, float, float]:
    """Fit model `name` (its per-dataset defaults, `epochs` epochs, `threads` torch threads)
    on `data`; returns (model, fit seconds, seconds per epoch). Per-epoch time comes from the
    model's epoch callback or training log when it has one, else fit time / epochs."""
    import torch

    from coachrec.models import config_fields, create
    from coachrec.models.defaults import defaults

    config = defaults(name, data.name)
    owner = epochs_owner(name, config)
    if owner == name:
        config["epochs"] = epochs
    elif owner:  # the hybrid: epochs and threads go to its sequential part
        part = dict(config.get("sequential_config", {})) | {"epochs": epochs}
        if "threads" in config_fields(owner):
            part["threads"] = threads
        config["sequential_config"] = part
    if "threads" in config_fields(name):
        config["threads"] = threads
    torch.set_num_threads(threads)  # for models that do not set their own
    model = create(name, **config)
    epoch_seconds: list[float] = []
    if hasattr(model, "on_epoch"):
        model.on_epoch = lambda e, loss, seconds, n: epoch_seconds.append(seconds)
    t0 = time.perf_counter()
    model.fit(data)
    fit_s = time.perf_counter() - t0
    log = getattr(model, "train_log", None) or []
    if epoch_seconds:
        per_epoch = float(np.mean(epoch_seconds))
    elif log and log[-1].get("seconds"):  # cumulative training seconds (no validation here)
        per_epoch = float(log[-1]["seconds"]) / len(log)
    else:
        per_epoch = fit_s / (epochs if owner else 1)
    return model, fit_s, per_epoch


def measure(name: str, split: Any, *, epochs: int, threads: int, requests: int, seed: int = 0) -> dict[str, Any]:
    """Speed metrics of one model on `split` (a leave-one-out `Split`)."""
    from coachrec.metrics import evaluate, named
    from coachrec.models.defaults import defaults

    load_before = os.getloadavg()[0]
    model, fit_s, per_epoch = timed_fit(name, split.train, epochs=epochs, threads=threads)
    n_epochs = epochs if epochs_owner(name, defaults(name, split.train.name)) else 1

    rng = np.random.default_rng(seed)
    users = model.users.ids[
        rng.choice(split.train.n_users, size=requests + 10, replace=split.train.n_users < requests + 10)
    ]
    lat = []
    for i, u in enumerate(users):
        t = time.perf_counter()
        model.recommend(str(u), k=10)
        if i >= 10:  # warm-up
            lat.append(time.perf_counter() - t)
    res = evaluate(model, split, named("loo-full"), ks=(10,))
    return {
        "seconds_per_epoch": round(per_epoch, 3),
        "train_events_per_s": round(len(split.train) / per_epoch, 1),
        "epochs_timed": n_epochs,
        "fit_seconds": round(fit_s, 3),
        "recommend_p50_ms": round(float(np.percentile(lat, 50)) * 1e3, 3),
        "recommend_p99_ms": round(float(np.percentile(lat, 99)) * 1e3, 3),
        "recommend_requests": len(lat),
        "eval_full_seconds": round(res.seconds, 3),
        "eval_users": res.n_users,
        "ndcg@10_loo-full": round(res.metrics["ndcg@10"], 5),
        "threads": threads,
        "catalog": split.train.n_items,
        "loadavg_1m_before": round(load_before, 2),
        "loadavg_1m_after": round(os.getloadavg()[0], 2),
    }


def bench_speed(
    models: Annotated[
        list[str] | None, typer.Option("--model", help="Models to time (repeatable; default: all registered)")
    ] = None,
    dataset: Annotated[str, typer.Option(help="ml-latest-small, beauty, or a path")] = "beauty",
    epochs: Annotated[int, typer.Option(help="Epochs timed per model (models with epochs)")] = 1,
    threads: Annotated[int, typer.Option(help="torch CPU threads")] = 2,
    requests: Annotated[int, typer.Option(help="recommend() calls timed per model")] = 200,
) -> None:
    """Training, serving and evaluation speed of every model; writes benchmarks/results/speed.json
    (rows of other models and data sets already in the file are kept)."""
    from coachrec import datasets
    from coachrec.data import leave_one_out
    from coachrec.models import MODELS

    names = models or list(MODELS)
    with console.status(f"loading {dataset}"):
        ds = datasets.load(dataset)
    split = leave_one_out(ds)
    protocol = "leave-one-out; eval = full ranking, seen items excluded, ties pessimistic"
    rows, skipped = [], []
    for name in names:
        with console.status(f"timing {name}"):
            try:
                metrics = measure(name, split, epochs=epochs, threads=threads, requests=requests)
            except Exception as exc:  # a model that cannot run here (e.g. no item text) is reported, not fatal
                skipped.append((name, f"{type(exc).__name__}: {exc}"))
                console.print(f"[yellow]{name}: skipped ({type(exc).__name__}: {exc})")
                continue
        rows.append(row(name, ds.name, protocol, metrics))
        console.print(f"{name}: {metrics}")
    table = Table(title=f"Speed — {ds.name}, {protocol}, {threads} torch threads", title_justify="left")
    for col in ("model", "s/epoch", "train ev/s", "rec p50 ms", "rec p99 ms", "eval s", "NDCG@10", "load 1m"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for r in rows:
        m = r["metrics"]
        table.add_row(
            r["name"],
            f"{m['seconds_per_epoch']:.2f}",
            f"{m['train_events_per_s']:,.0f}",
            f"{m['recommend_p50_ms']:.2f}",
            f"{m['recommend_p99_ms']:.2f}",
            f"{m['eval_full_seconds']:.1f}",
            f"{m['ndcg@10_loo-full']:.4f}",
            f"{m['loadavg_1m_before']:.1f}→{m['loadavg_1m_after']:.1f}",
        )
    console.print(table)
    for name, why in skipped:
        console.print(f"skipped {name}: {why}")
    if rows:
        # keep the rows of other models and data sets, so runs can be split
        path = results_dir() / "speed.json"
        ran = {(r["name"], r["dataset"]) for r in rows}
        old = json.loads(path.read_text()) if path.exists() else []
        kept = [r for r in old if (r["name"], r["dataset"]) not in ran]
        console.print(f"wrote {write('speed', kept + rows)}")
