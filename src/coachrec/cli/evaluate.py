"""`coachrec evaluate` (`coachrec quickstart` lives in `cli/quickstart.py`)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from coachrec.cli.console import RichProgress, console, show_table, status
from coachrec.metrics import EvalResult

SHOWN = {"recall": "R", "ndcg": "NDCG", "mrr": "MRR"}


def results_table(results: list[EvalResult], title: str, ks: tuple[int, ...]) -> Table:
    """One row per result; the protocol is in the title."""
    table = Table(
        title=title,
        title_justify="left",
        caption="R = Recall (= HR with one target), Cov = catalog coverage",
        caption_justify="left",
    )
    table.add_column("model")
    cols = [f"{m}@{k}" for k in ks for m in SHOWN]
    extra = [c for c in ("coverage@10",) if any(c in r.metrics for r in results)]
    for c in cols:
        m, _, k = c.partition("@")
        table.add_column(f"{SHOWN[m]}@{k}", justify="right")
    if extra:
        table.add_column("Cov@10", justify="right")
    table.add_column("users", justify="right")
    table.add_column("s", justify="right")
    for r in results:
        vals = [f"{r.metrics[c]:.4f}" if c in r.metrics else "" for c in cols + extra]
        table.add_row(r.model, *vals, f"{r.n_users:,}", f"{r.seconds:.1f}")
    return table


def evaluate(
    model: Annotated[str, typer.Option(help="Model name (pop, itemknn, ...)")] = "pop",
    dataset: Annotated[str, typer.Option(help="ml-latest-small, beauty, or a path")] = "ml-latest-small",
    protocol: Annotated[
        str,
        typer.Option(
            help=(
                "loo-full, loo-sampled100, loo-sampledpop100, temporal-full, session-full; add /train+valid to fit "
                "on train + valid"
            )
        ),
    ] = "loo-full",
    k: Annotated[list[int], typer.Option(help="Cut-offs (repeatable)")] = [10, 20],  # noqa: B006
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the result as JSON here")] = None,
    model_path: Annotated[Path | None, typer.Option(help="Evaluate a saved model instead of fitting one")] = None,
    seed: Annotated[int, typer.Option(help="Seed for sampled negatives")] = 0,
) -> None:
    """Fit (or load) a model and evaluate it on a split under an explicit protocol."""
    from dataclasses import replace

    from coachrec import datasets
    from coachrec.data import Dataset, Split, by_session, leave_one_out, temporal
    from coachrec.metrics import evaluate as run_eval
    from coachrec.metrics import named
    from coachrec.models import create, load

    proto = replace(named(protocol), seed=seed)
    con = console()
    with status(con, f"loading {dataset}"):
        ds = datasets.load(dataset)
    splitters: dict[str, Callable[[Dataset], Split]] = {
        "leave-one-out": leave_one_out,
        "temporal": temporal,
        "by-session": by_session,
    }
    split = splitters[proto.split](ds)
    if model_path is not None:
        m = load(model_path)
        if (
            m.items is None
            or len(m.items) != split.train.n_items
            or list(m.items.ids[:5]) != list(split.train.items.ids[:5])
        ):
            raise typer.BadParameter(
                f"{model_path} was fitted on other items than {dataset}", param_hint="--model-path"
            )
        fitted_on = m.fit_info.get("fit_on")
        if fitted_on is None:
            raise typer.BadParameter(
                f"{model_path / 'model.json'} does not record what the model was fitted on (fit_info.fit_on; saved "
                "by an "
                "older coachrec or by hand), so test events may have been in training; refit and save it with "
                "`coachrec train` "
                'or `model.save()` (both record it), or, if you know, add "fit_on": "train" (or "train+valid") to '
                "its fit_info",
                param_hint="--model-path",
            )
        fitted_split = m.fit_info.get("split")
        if fitted_split is not None and fitted_split != proto.split:
            raise typer.BadParameter(
                f"{model_path} was fitted on a part of a {fitted_split} split, but the protocol splits "
                f"{proto.split}: its training "
                "events may hold this protocol's test events; use a protocol with the same split or refit",
                param_hint="--protocol",
            )
        if fitted_on == "all":
            raise typer.BadParameter(
                f"{model_path} was fitted on every event, test events included; it cannot be evaluated",
                param_hint="--model-path",
            )
        if fitted_on != proto.fit_on:
            base = proto.short.partition("/")[0]
            fix = base if fitted_on == "train" else f"{base}/{fitted_on}"
            raise typer.BadParameter(
                f"{model_path} was fitted on {fitted_on!r} events but the protocol says {proto.fit_on!r}; use "
                f"--protocol {fix}",
                param_hint="--protocol",
            )
    else:
        data = split.fit_data(proto.fit_on)
        with status(con, f"fitting {model} on {len(data):,} events ({proto.fit_on})"):
            m = create(model, dataset=ds).fit(data)
    ks = tuple(sorted(set(k)))

    with RichProgress(con).bar("evaluate", 0) as advance:  # the library reports, the CLI draws
        res = run_eval(m, split, proto, ks=ks, model_name=model, dataset=ds.name, progress=advance)
    res.extra["fit_seconds"] = m.fit_info.get("seconds")
    show_table(results_table([res], f"{ds.name} — {proto.describe()}", ks), con)
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(res.to_dict(), indent=2) + "\n")
        con.print(f"wrote {json_out}")
