"""`coachrec train`: fit a model on a dataset's leave-one-out training part and save it.

What it trains on: by default the leave-one-out *train* part (every user's events except the
last two), the same data `coachrec evaluate` fits on, so `coachrec evaluate --model-path DIR`
measures the test protocol honestly (the test task still sees train + valid as history).
`--valid` reports full-ranking NDCG@10/Recall@10 on the held-out second-to-last events after
training, for model selection. `--fit-on train+valid` refits on train + valid once the config is
chosen (evaluate it with `--protocol loo-full/train+valid`). `--checkpoint` saves after every
epoch, so a long run can be evaluated part-way (every save, checkpoints included, records `fit_on`, which `coachrec
evaluate` checks). `--all-events` fits on every event instead (for serving; the result must
not be evaluated on this dataset's test split).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.text import Text

from coachrec.cli.console import RichProgress, console, status


def parse_sets(items: list[str]) -> dict[str, Any]:
    """`key=value` pairs; values are read as JSON when they parse (numbers, booleans, lists),
    else kept as strings (`--set loss=bpr-max --set layers=[256] --set momentum=0.3`)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"expected key=value, got {item!r}", param_hint="--set")
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = {"true": True, "false": False}.get(raw.lower(), raw)
        out[key.strip()] = value
    return out


def train(
    model: Annotated[str, typer.Option(help="Model name (gru4rec, pop, itemknn, ...)")] = "gru4rec",
    dataset: Annotated[str, typer.Option(help="ml-latest-small, beauty, or a path")] = "ml-latest-small",
    out: Annotated[Path, typer.Option(help="Folder to save the fitted model in")] = Path("runs/model"),
    epochs: Annotated[int | None, typer.Option(help="Training epochs (models that have them)")] = None,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads (torch models)")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed (stochastic models)")] = None,
    set_: Annotated[list[str], typer.Option("--set", help="Config override key=value (repeatable)")] = [],  # noqa: B006
    valid: Annotated[bool, typer.Option(help="Report validation NDCG@10/Recall@10 (loo-full) after training")] = False,
    fit_on: Annotated[
        str,
        typer.Option(
            help="train, or train+valid (refit after model selection; evaluate with --protocol loo-full/train+valid)"
        ),
    ] = "train",
    all_events: Annotated[bool, typer.Option(help="Fit on every event (for serving, not for evaluation)")] = False,
    checkpoint: Annotated[bool, typer.Option(help="Save to --out after every epoch (epoch-based models)")] = False,
) -> None:
    """Fit a model (per-dataset defaults, then your overrides) and save it to --out."""
    from coachrec import datasets
    from coachrec.data import leave_one_out
    from coachrec.models import config_fields, create

    fields = config_fields(model)
    config: dict[str, Any] = {}
    for key, value, option in (
        ("epochs", epochs, "--epochs"),
        ("threads", threads, "--threads"),
        ("seed", seed, "--seed"),
    ):
        if value is not None:
            if key not in fields:
                raise typer.BadParameter(f"{model} has no such setting", param_hint=option)
            config[key] = value
    overrides = parse_sets(set_)
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise typer.BadParameter(
            f"{model} has no setting(s) {unknown}; choose from {sorted(fields)}", param_hint="--set"
        )
    config.update(overrides)

    if valid and fit_on != "train":
        raise typer.BadParameter(
            "validation events would be in training; --valid needs --fit-on train", param_hint="--valid"
        )
    con = console()
    with status(con, f"loading {dataset}"):
        ds = datasets.load(dataset)
    split = leave_one_out(ds)
    data = ds if all_events else split.fit_data(fit_on)
    m = create(model, dataset=ds, **config)
    con.print(Text.assemble((model, "bold"), f" on {data!r}"))
    con.print(Text(f"config: {m.get_params()}"))
    n_epochs = int(m.get_params().get("epochs", 0) or 0)
    progress = RichProgress(con)
    with progress.bar("train (epochs)", n_epochs) as advance:

        def on_epoch(epoch: int, loss: float, seconds: float, events: int) -> None:
            info = f"loss {loss:.4f}  {seconds:.1f}s  {events / max(seconds, 1e-9):,.0f} events/s"
            progress.note(f"epoch {epoch}/{n_epochs}: {info}" + ("  (checkpoint saved)" if checkpoint else ""))
            advance(epoch, n_epochs)

        m.on_epoch = on_epoch
        m.checkpoint = out if checkpoint else None  # saved with fit_on after every epoch
        t0 = time.perf_counter()
        m.fit(data)
        m.checkpoint = None
    con.print(f"fitted in {time.perf_counter() - t0:.1f}s")
    if valid and not all_events:
        from coachrec.metrics import evaluate as run_eval
        from coachrec.metrics import named

        res = run_eval(m, split.task("valid"), named("loo-full"), ks=(10,), model_name=model, dataset=ds.name)
        con.print(
            f"valid (leave-one-out second-to-last event, full ranking, seen items excluded): "
            f"NDCG@10 {res.metrics['ndcg@10']:.4f}  Recall@10 {res.metrics['recall@10']:.4f}"
        )
        m.fit_info["valid"] = {
            "protocol": "loo-full (valid stage)",
            "ndcg@10": res.metrics["ndcg@10"],
            "recall@10": res.metrics["recall@10"],
        }
    path = m.save(out)
    con.print(Text.assemble("saved to ", (str(path), "bold"), f" (fitted on {m.fit_info['fit_on']})"))
