"""`coachrec bench accuracy`: every registered model on Beauty and ml-latest-small, one table.

Protocol: leave-one-out (last event per user = test, second-to-last = validation, users
with < 3 events train only); the model sees train + validation events as history; items
in the history are excluded from the ranking (the target always competes); ties are broken
pessimistically. "loo-full" ranks against all items, "loo-sampled100" against 100 uniformly
sampled unseen items (seed 0). Neural models stop early on validation NDCG@10.

Published reference rows come from `shared/datasets/README.md`; the SASRec paper's Beauty
preprocessing (its own 5-core filter of the 2014 review dump) differs from the P5 5-core
file used here, so its sampled figures are a reference, not an identical setting.
"""

from __future__ import annotations

import inspect
import json
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from coachrec.metrics.protocol import FIT_ON
from coachrec_bench.results import results_dir, row, write

console = Console(width=170)

PROTOCOLS: dict[str, tuple[str, ...]] = {"beauty": ("loo-full", "loo-sampled100"), "ml-latest-small": ("loo-full",)}

PUBLISHED: list[dict[str, Any]] = [
    {
        "name": "published: SASRec (Kang & McAuley 2018)",
        "dataset": "beauty",
        "protocol": "loo-sampled100",
        "metrics": {"recall@10": 0.4854, "ndcg@10": 0.3219},
        "note": "paper's own Beauty preprocessing (differs from the P5 5-core file); 100 sampled negatives",
    },
    {
        "name": "published: SASRec (LlamaRec paper)",
        "dataset": "beauty",
        "protocol": "loo-full",
        "metrics": {"recall@10": 0.0844, "ndcg@10": 0.0481},
        "note": "Yue et al. 2023, full ranking",
    },
    {
        "name": "published: LRURec (LlamaRec paper)",
        "dataset": "beauty",
        "protocol": "loo-full",
        "metrics": {"recall@10": 0.0916, "ndcg@10": 0.0533},
        "note": "Yue et al. 2023, full ranking",
    },
    {
        "name": "published: LlamaRec",
        "dataset": "beauty",
        "protocol": "loo-full",
        "metrics": {"recall@10": 0.0971, "ndcg@10": 0.0554},
        "note": "Yue et al. 2023, full ranking",
    },
]

#: Fewer epochs, and SASRec's sampled softmax (1,024 shared popularity-sampled negatives,
#: logQ-corrected) instead of the full one.
QUICK: dict[str, dict[str, Any]] = {
    "sasrec": {"loss": "sampled-ce", "n_negatives": 1024, "epochs": 40, "eval_every": 4, "patience": 2},
    "rum-item": {"epochs": 24, "eval_every": 4, "patience": 2},
    "rum-feature": {"epochs": 24, "eval_every": 4, "patience": 2},
    "gru4rec": {"epochs": 5},
}

ORDER = ("pop", "itemknn", "gru4rec", "sasrec", "rum-item", "rum-feature", "content", "hybrid")
SHOWN = ("recall@10", "ndcg@10", "recall@20", "ndcg@20", "mrr@10")


def _fit(name: str, config: dict[str, Any], split: Any, fit_on: str) -> Any:
    """Fit on the train part with early stopping on validation, or on train + valid with the
    epochs the model's config names (validation is in the training data then)."""
    from coachrec.models import create

    model = create(name, **config)
    model.on_epoch = lambda epoch, loss, seconds, rows: console.print(
        f"  {name} epoch {epoch}: loss {loss:.4f}, {seconds:.1f}s"
    )
    if fit_on == "train" and "valid" in inspect.signature(model.fit).parameters:
        return model.fit(split.train, valid=split.task("valid"))
    return model.fit(split.fit_data(fit_on))


def run(
    datasets: list[str],
    models: list[str],
    quick: bool,
    threads: int = 0,
    fit_on: str = "train",
    save: Callable[[list[dict[str, Any]]], Any] | None = None,
) -> list[dict[str, Any]]:
    """Fit and evaluate; `save(rows)` is called after every model (a long run that is cut
    short keeps what it measured)."""
    from coachrec import datasets as named_data
    from coachrec.data import leave_one_out
    from coachrec.metrics import evaluate, named
    from coachrec.models import config_fields
    from coachrec.models.defaults import defaults
    from coachrec.models.hybrid import Hybrid

    rows: list[dict[str, Any]] = []
    for dname in datasets:
        ds = named_data.load(dname)
        split = leave_one_out(ds)
        fitted: dict[str, Any] = {}
        for name in models:
            if name in ("content", "hybrid") and ds.catalog is None:
                console.print(f"[yellow]{dname}: skipping {name} (the data set has no item text)")
                continue
            config = defaults(name, ds.name) | (QUICK.get(name, {}) if quick else {})
            if threads > 0 and "threads" in config_fields(name):
                config["threads"] = threads
            t0 = time.perf_counter()
            if name == "hybrid":
                if "sasrec" not in fitted or "content" not in fitted:
                    raise typer.BadParameter(
                        "hybrid in the benchmark reuses the fitted sasrec and content models; include both"
                    )
                model = Hybrid.from_parts(
                    fitted["sasrec"], fitted["content"], split.fit_data(fit_on), weight=Hybrid.Config().weight
                )
            else:
                try:
                    model = _fit(name, config, split, fit_on)
                except Exception as exc:  # one broken model must not sink the whole table
                    console.print(f"[red]{dname}: {name} failed to fit: {type(exc).__name__}: {exc}")
                    continue
            fit_s = time.perf_counter() - t0
            fitted[name] = model
            epochs = len(getattr(model, "train_log", [])) or None
            for pname in PROTOCOLS[dname]:
                proto = replace(named(pname), fit_on=fit_on)
                res = evaluate(model, split, proto, ks=(10, 20), model_name=name, dataset=ds.name)
                metrics = {k: round(res.metrics[k], 5) for k in SHOWN} | {
                    "coverage@10": round(res.metrics.get("coverage@10", float("nan")), 4),
                    "fit_seconds": round(fit_s, 1),
                    "eval_seconds": round(res.seconds, 1),
                    "users": res.n_users,
                }
                if epochs:
                    metrics["epochs"] = epochs
                r = row(name, ds.name, proto.short, metrics)
                r["fit_on"] = fit_on
                r["config"] = "quick" if quick else "default"
                rows.append(r)
                shown = ", ".join(f"{k} {metrics[k]}" for k in ("recall@10", "ndcg@10", "fit_seconds"))
                console.print(f"{ds.name} {pname} {name}: {shown}")
            if save is not None:
                save(rows)
    return rows


def table(rows: list[dict[str, Any]]) -> Table:
    t = Table(
        title="Accuracy — leave-one-out (last item test), seen items excluded, ties pessimistic; "
        "loo-full = full ranking over all items, loo-sampled100 = 100 uniform sampled negatives",
        title_justify="left",
        caption="R = Recall (= HR, one target per user). '/train+valid' = model refit on train + valid events "
        "(default: fitted on train, early stopping on valid). 'published' rows are reported figures, not runs here.",
        caption_justify="left",
    )
    for col in ("dataset", "protocol", "model", "R@10", "NDCG@10", "R@20", "NDCG@20", "MRR@10", "fit s"):
        t.add_column(col, justify="left" if col in ("dataset", "protocol", "model") else "right")
    key = {"beauty": 0, "ml-latest-small": 1}
    for r in sorted(rows, key=lambda r: (key.get(r["dataset"], 9), r["protocol"], r["name"].startswith("published"))):
        m = r["metrics"]
        vals = [f"{m[k]:.4f}" if k in m else "" for k in SHOWN]
        t.add_row(r["dataset"], r["protocol"], r["name"], *vals, str(m.get("fit_seconds", "")))
    return t


def bench_accuracy(
    quick: Annotated[bool, typer.Option(help="Fewer epochs; SASRec with sampled softmax (1,024 negatives)")] = False,
    dataset: Annotated[list[str], typer.Option(help="beauty and/or ml-latest-small (repeatable; default both)")] = [],  # noqa: B006
    model: Annotated[list[str], typer.Option(help="Models (repeatable; default every registered model)")] = [],  # noqa: B006
    threads: Annotated[
        int,
        typer.Option(help="torch CPU threads of models that have the setting (0 = their default); 1 on a busy machine"),
    ] = 0,
    fit_on: Annotated[
        str, typer.Option(help="train (early stopping on valid), or train+valid (refit; fixed epochs)")
    ] = "train",
) -> None:
    """Accuracy of every model on Beauty (loo-full, loo-sampled100) and ml-latest-small
    (loo-full), with the published figures as reference rows; writes benchmarks/results/accuracy.json
    (rows of other models and data sets already in the file are kept, so runs can be split)."""
    from coachrec.models import MODELS

    names = model or [m for m in ORDER if m in MODELS] + [m for m in MODELS if m not in ORDER]
    unknown = [m for m in names if m not in MODELS]
    if unknown:
        raise typer.BadParameter(f"unknown model(s) {unknown}; choose from {sorted(MODELS)}", param_hint="--model")
    dsets = dataset or list(PROTOCOLS)
    for d in dsets:
        if d not in PROTOCOLS:
            raise typer.BadParameter(f"unknown data set {d!r}; choose from {list(PROTOCOLS)}", param_hint="--dataset")
    if fit_on not in FIT_ON:
        raise typer.BadParameter(f"choose from {FIT_ON}", param_hint="--fit-on")
    all_rows = save(run(dsets, names, quick, threads, fit_on, save=save))
    console.print(table(all_rows))
    console.print(f"wrote {results_dir() / 'accuracy.json'}")


def save(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Merge `rows` into accuracy.json (replacing rows of the same data set, model and fit)
    with the published reference rows at the end; returns everything written."""
    path = results_dir() / "accuracy.json"
    ran = {(r["dataset"], r["name"], r["fit_on"]) for r in rows}
    old = json.loads(path.read_text()) if path.exists() else []
    kept = [r for r in old if (r["dataset"], r["name"], r.get("fit_on", "train")) not in ran and not r.get("published")]
    marks = {"machine": "published figure (not run here)", "published": True}
    published = [
        row(p["name"], p["dataset"], p["protocol"], p["metrics"]) | marks | {"note": p["note"]} for p in PUBLISHED
    ]
    all_rows = kept + rows + published
    write("accuracy", all_rows)
    return all_rows
