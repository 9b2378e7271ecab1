"""`coachrec tune`: Optuna search over a model's config, on validation NDCG@10.

Each trial fits the model on the leave-one-out training events and scores the validation
task (second-to-last event per user; full ranking, seen items excluded, ties pessimistic).
The test events are never looked at. Every trial (params, value, seconds, state) goes to
`runs/tune/MODEL-DATASET.json` and `.csv`, rewritten after each trial.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.text import Text

from coachrec.cli.console import console

Space = Callable[[Any], dict[str, Any]]


def _sasrec(t: Any) -> dict[str, Any]:
    return {
        "dim": t.suggest_categorical("dim", [32, 64, 128]),
        "layers": t.suggest_int("layers", 1, 3),
        "dropout": t.suggest_float("dropout", 0.1, 0.6),
        "lr": t.suggest_float("lr", 3e-4, 3e-3, log=True),
        "max_len": t.suggest_categorical("max_len", [20, 50, 100, 200]),
    }


def _rum(t: Any) -> dict[str, Any]:
    return {
        "dim": t.suggest_categorical("dim", [32, 64, 128]),
        "slots": t.suggest_int("slots", 2, 20),
        "alpha": t.suggest_float("alpha", 0.1, 2.0, log=True),
        "dropout": t.suggest_float("dropout", 0.0, 0.5),
        "lr": t.suggest_float("lr", 3e-4, 1e-2, log=True),
    }


#: model -> search space (a function of an Optuna trial returning config overrides)
SPACES: dict[str, Space] = {
    "pop": lambda t: {},
    "itemknn": lambda t: {
        "neighbors": t.suggest_int("neighbors", 20, 500, log=True),
        "shrink": t.suggest_float("shrink", 0.0, 100.0),
        "alpha": t.suggest_float("alpha", 0.1, 0.9),
        "recency": t.suggest_float("recency", 0.5, 1.0),
    },
    "sasrec": _sasrec,
    "rum-item": _rum,
    "rum-feature": _rum,
    "content": lambda t: {"recency": t.suggest_float("recency", 0.3, 1.0)},
    "hybrid": lambda t: {"weight": t.suggest_float("weight", 0.0, 1.0)},
    "gru4rec": lambda t: {
        "learning_rate": t.suggest_float("learning_rate", 0.01, 0.3, log=True),
        "momentum": t.suggest_float("momentum", 0.0, 0.9),
        "dropout_p_embed": t.suggest_float("dropout_p_embed", 0.0, 0.5),
        "dropout_p_hidden": t.suggest_float("dropout_p_hidden", 0.0, 0.7),
        "n_sample": t.suggest_categorical("n_sample", [512, 1024, 2048]),
    },
}


def _write(out: Path, records: list[dict[str, Any]]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(records, indent=2) + "\n")
    keys = sorted({k for r in records for k in r["params"]})
    with out.with_suffix(".csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["trial", "state", "value", "seconds", *keys])
        for r in records:
            w.writerow([r["trial"], r["state"], r["value"], r["seconds"], *(r["params"].get(k, "") for k in keys)])


def tune(
    model: Annotated[str, typer.Option(help="Registered model name")],
    dataset: Annotated[str, typer.Option(help="ml-latest-small, beauty, or a path")] = "ml-latest-small",
    trials: Annotated[int, typer.Option(help="Number of trials")] = 20,
    timeout: Annotated[float | None, typer.Option(help="Stop starting trials after this many seconds")] = None,
    epochs: Annotated[
        int | None, typer.Option(help="Override epochs of neural models (max, with early stopping)")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Trial log path without suffix (default runs/tune/MODEL-DATASET)")
    ] = None,
    seed: Annotated[int, typer.Option(help="Sampler seed")] = 0,
) -> None:
    """Search a model's config with Optuna (TPE), maximizing validation NDCG@10 (leave-one-out,
    full ranking); records every trial and prints the best."""
    try:
        import optuna
    except ImportError as exc:
        raise typer.BadParameter("needs optuna: pip install 'coachrec[tune]'") from exc
    from coachrec import datasets
    from coachrec.data import leave_one_out
    from coachrec.metrics import evaluate, named
    from coachrec.models import MODELS, create, model_class

    if model not in MODELS:
        raise typer.BadParameter(f"unknown model {model!r}; choose from {sorted(MODELS)}", param_hint="--model")
    if model not in SPACES:
        raise typer.BadParameter(
            f"no search space for {model!r}; add one to coachrec.cli.tune.SPACES", param_hint="--model"
        )
    con = console()
    ds = datasets.load(dataset)
    split = leave_one_out(ds)
    valid = split.task("valid")
    base: dict[str, Any] = {}
    if epochs is not None:
        if "epochs" not in model_class(model).settings():
            raise typer.BadParameter(f"{model} does not train in epochs", param_hint="--epochs")
        base["epochs"] = epochs
    path = out or Path("runs/tune") / f"{model}-{ds.name}"
    records: list[dict[str, Any]] = []
    proto = named("loo-full")

    def objective(trial: Any) -> float:
        params = SPACES[model](trial)
        t0 = time.perf_counter()
        m = create(model, dataset=ds, **(base | params))  # the dataset's tuned defaults, then the trial's
        m.fit(split.train, valid=valid)  # models that stop early read it; the others ignore it
        value = evaluate(m, valid, proto, ks=(10,)).metrics["ndcg@10"]
        trial.set_user_attr("seconds", round(time.perf_counter() - t0, 2))
        return value

    def record(study: Any, trial: Any) -> None:
        records.append(
            {
                "trial": trial.number,
                "state": trial.state.name,
                "params": trial.params,
                "value": trial.value,
                "seconds": trial.user_attrs.get("seconds"),
                "metric": "valid ndcg@10 (loo-full: leave-one-out validation item, full ranking, seen excluded, "
                "ties pessimistic)",
            }
        )
        _write(path, records)
        con.print(f"trial {trial.number}: ndcg@10 = {trial.value} {trial.params} ({trial.user_attrs.get('seconds')} s)")

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed), study_name=f"{model}-{ds.name}"
    )
    study.optimize(objective, n_trials=trials, timeout=timeout, callbacks=[record])
    if not any(r["state"] == "COMPLETE" for r in records):
        raise typer.Exit(1)
    best = study.best_trial
    con.print(
        Text.assemble(
            ("best", "bold"),
            f" {model} on {ds.name}: valid NDCG@10 (loo-full) = {best.value:.4f} with {best.params} "
            f"(trial {best.number} of {len(records)}); trials in {path.with_suffix('.json')} and .csv",
        )
    )
