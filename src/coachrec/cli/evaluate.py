"""`coachrec evaluate` and `coachrec quickstart`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from coachrec.metrics import EvalResult

console = Console()

SHOWN = {"recall": "R", "ndcg": "NDCG", "mrr": "MRR"}


def results_table(results: list[EvalResult], title: str, ks: tuple[int, ...]) -> Table:
    """One row per result; the protocol is in the title."""
    table = Table(title=title, title_justify="left", caption="R = Recall (= HR with one target), Cov = catalog coverage", caption_justify="left")
    table.add_column("model")
    cols = [f"{m}@{k}" for k in ks for m in SHOWN]
    extra = [c for c in ("coverage@10",) if any(c in r.metrics for r in results)]
    for c in cols:
        m, _, k = c.partition("@")
        table.add_column(f"{SHOWN[m]}@{k}", justify="right")
    for c in extra:
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
    protocol: Annotated[str, typer.Option(help="loo-full, loo-sampled100, loo-sampledpop100, temporal-full, session-full")] = "loo-full",
    k: Annotated[list[int], typer.Option(help="Cut-offs (repeatable)")] = [10, 20],  # noqa: B006
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the result as JSON here")] = None,
    model_path: Annotated[Path | None, typer.Option(help="Evaluate a saved model instead of fitting one")] = None,
    seed: Annotated[int, typer.Option(help="Seed for sampled negatives")] = 0,
) -> None:
    """Fit (or load) a model and evaluate it on a split under an explicit protocol."""
    from dataclasses import replace

    from coachrec import datasets
    from coachrec.data import by_session, leave_one_out, temporal
    from coachrec.metrics import evaluate as run_eval
    from coachrec.metrics import named
    from coachrec.models import create, load
    from coachrec.models.defaults import defaults

    proto = replace(named(protocol), seed=seed)
    with console.status(f"loading {dataset}"):
        ds = datasets.load(dataset)
    split = {"leave-one-out": leave_one_out, "temporal": temporal, "by-session": by_session}[proto.split](ds)
    if model_path is not None:
        m = load(model_path)
        if len(m.items) != split.train.n_items or list(m.items.ids[:5]) != list(split.train.items.ids[:5]):
            raise typer.BadParameter(f"{model_path} was fitted on other items than {dataset}", param_hint="--model-path")
    else:
        with console.status(f"fitting {model} on {len(split.train):,} events"):
            m = create(model, **defaults(model, ds.name)).fit(split.train)
    ks = tuple(sorted(set(k)))
    res = run_eval(m, split, proto, ks=ks, model_name=model, dataset=ds.name, progress=True)
    res.extra["fit_seconds"] = m.fit_info.get("seconds")
    console.print(results_table([res], f"{ds.name} — {proto.describe()}", ks))
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(res.to_dict(), indent=2) + "\n")
        console.print(f"wrote {json_out}")


def quickstart(
    out: Annotated[Path, typer.Option(help="Folder for the report")] = Path("runs/quickstart"),
    fast: Annotated[bool, typer.Option(help="A smaller run, for tests")] = False,
) -> None:
    """The main job on the bundled MovieLens latest-small: fit the baselines, evaluate them
    under full ranking and sampled negatives, compare them with paired confidence intervals,
    and write a Markdown report. (Later stages of the loop join as they land.)"""
    from coachrec import datasets
    from coachrec.data import leave_one_out
    from coachrec.metrics import compare, evaluate as run_eval, named
    from coachrec.models import create

    console.rule("[bold]coachrec quickstart")
    with console.status("loading ml-latest-small"):
        ds = datasets.load("ml-latest-small")
    console.print(ds)
    split = leave_one_out(ds)
    models = {}
    for name in ("pop", "itemknn"):
        with console.status(f"fitting {name}"):
            models[name] = create(name).fit(split.train)
        console.print(f"fitted [bold]{name}[/] in {models[name].fit_info['seconds']:.1f}s")
    protocols = ["loo-full"] if fast else ["loo-full", "loo-sampled100"]
    report = [f"# coachrec quickstart — {ds.name}", "", f"{ds}", ""]
    for pname in protocols:
        proto = named(pname)
        results = [run_eval(m, split, proto, model_name=n, dataset=ds.name, progress=True) for n, m in models.items()]
        console.print(results_table(results, f"{ds.name} — {proto.describe()}", (10, 20)))
        cmp = compare(results[0].per_user["ndcg@10"], results[1].per_user["ndcg@10"], n_boot=500 if fast else 2000)
        line = (
            f"itemknn vs pop, NDCG@10 ({proto.short}): {cmp.delta:+.4f} "
            f"[{cmp.ci_low:+.4f}, {cmp.ci_high:+.4f}] 95% paired bootstrap CI, permutation p={cmp.p_value:.4f}, n={cmp.n}"
        )
        console.print(line)
        report += [f"## {proto.describe()}", "", _markdown(results), "", line, ""]
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text("\n".join(report))
    console.print(f"report written to [bold]{out / 'report.md'}[/]")


def _markdown(results: list[EvalResult]) -> str:
    cols = ["recall@10", "ndcg@10", "mrr@10", "recall@20", "ndcg@20", "coverage@10", "novelty@10"]
    lines = ["| model | " + " | ".join(cols) + " | users |", "|---" * (len(cols) + 2) + "|"]
    for r in results:
        lines.append(f"| {r.model} | " + " | ".join(f"{r.metrics.get(c, float('nan')):.4f}" for c in cols) + f" | {r.n_users} |")
    return "\n".join(lines)
