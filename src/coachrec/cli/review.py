"""`coachrec review` (terminal annotation) and `coachrec golden ...` (versioned golden sets)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.prompt import Prompt
from rich.table import Table
from rich.text import Text

from coachrec.cli.console import console, show_panel, show_table

golden_app = typer.Typer(help="Golden sets: reviewed cases, versioned and immutable.", no_args_is_help=True)
ReviewDb = Annotated[
    Path | None,
    typer.Option(
        "--review-db",
        help="Review store (default: $COACHREC_REVIEW_DB, else DB.review.duckdb beside the default trace store).",
    ),
]


def _show(item: object, con: Console) -> None:
    from coachrec.review import ReviewItem

    assert isinstance(item, ReviewItem)
    case = item.case
    lines = [  # data is escaped: a rationale or context with [brackets] is not markup
        f"[bold]{escape(item.criterion)}[/bold]: judge says [bold]{escape(item.judge_label)}[/bold] (score "
        f"{item.judge_score:.2f}"
        + (f", orders {item.order_scores[0]:.2f}/{item.order_scores[1]:.2f}" if item.order_scores else "")
        + ")",
        escape(f"queued because: {', '.join(item.queued_because)}   trace {item.trace_id}   span {item.span_id}"),
        escape(f"why: {item.rationale}"),
        escape(f"request: user {case.get('user_id')}, k={case.get('k')}, context={case.get('context')!r}"),
        escape(f"constraints: {case.get('constraints')}"),
        escape(
            "shown: "
            + "; ".join(
                f"{i} ({r})" if r else str(i)
                for i, r in zip(case.get("items", []), case.get("reasons", []), strict=False)
            )
        ),
    ]
    if item.note:
        lines.append(escape(f"notes: {item.note}"))
    show_panel(con, "\n".join(lines), title=f"review item {item.item_id[:8]}")


def review(
    review_db: ReviewDb = None,
    criterion: Annotated[str | None, typer.Option("--criterion", help="Only items of this criterion.")] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="Review at most this many items.")] = None,
    reviewer: Annotated[
        str, typer.Option("--reviewer", help="Your name, kept in each case's provenance.")
    ] = "anonymous",
) -> None:
    """Annotate queued cases: (a)ccept the judge's label, (c)orrect it, add a (n)ote, (s)kip, (q)uit."""
    from coachrec.review import ReviewStore

    con = console()
    store = ReviewStore(review_db)
    items = store.items(criterion=criterion, limit=limit)
    if not items:
        con.print(Text(f"the review queue is empty ({store.counts()})"))
        return
    done = 0
    for item in items:
        _show(item, con)
        while True:
            action = Prompt.ask(
                "(a)ccept / (c)orrect / (n)ote / (s)kip / (q)uit",
                choices=["a", "c", "n", "s", "q"],
                default="a",
                console=con,
            )
            if action == "q":
                con.print(Text(f"reviewed {done}; queue: {store.counts()}"))
                return
            if action == "n":
                store.annotate(item.item_id, "note", note=Prompt.ask("note", console=con), reviewer=reviewer)
                continue
            if action == "a":
                store.annotate(item.item_id, "accept", reviewer=reviewer)
            elif action == "c":
                label = Prompt.ask("correct label", choices=["pass", "fail"], console=con)
                store.annotate(item.item_id, "correct", label=label, reviewer=reviewer)
            else:
                store.annotate(item.item_id, "skip", reviewer=reviewer)
            done += 1
            break
    con.print(Text(f"reviewed {done}; queue: {store.counts()}. `coachrec golden publish NAME` freezes reviewed cases."))


@golden_app.command("publish")
def golden_publish(
    name: str,
    review_db: ReviewDb = None,
    description: Annotated[str | None, typer.Option("--description")] = None,
) -> None:
    """Freeze every reviewed case into a new version of golden set NAME."""
    from coachrec.review import ReviewError, ReviewStore

    con = console()
    try:
        info = ReviewStore(review_db).publish(name, description=description)
    except ReviewError as exc:
        con.print(Text(str(exc), style="red"))
        raise typer.Exit(1) from exc
    con.print(Text(f"golden set {info.set_name} v{info.version}: {info.n_cases} cases"))


@golden_app.command("list")
def golden_list(review_db: ReviewDb = None) -> None:
    """Every golden set version."""
    import datetime as dt

    from coachrec.review import ReviewStore

    table = Table("set", "version", "cases", "created", "description")
    for s in ReviewStore(review_db).golden_sets():
        table.add_row(
            s.set_name,
            str(s.version),
            str(s.n_cases),
            dt.datetime.fromtimestamp(s.created_ns / 1e9).isoformat(timespec="seconds"),
            Text(s.description or ""),
        )
    show_table(table)


@golden_app.command("show")
def golden_show(
    name: str, version: Annotated[int | None, typer.Option("--version")] = None, review_db: ReviewDb = None
) -> None:
    """The cases of one version (latest by default) with their provenance."""
    from coachrec.review import ReviewError, ReviewStore

    try:
        cases = ReviewStore(review_db).golden_cases(name, version)
    except ReviewError as exc:
        console().print(Text(str(exc), style="red"))
        raise typer.Exit(1) from exc
    table = Table(
        "criterion",
        "label",
        "judge",
        "score",
        "trace",
        "reviewer",
        "judge version",
        title=Text(f"{name} v{cases[0].version}"),
    )
    for c in cases:
        table.add_row(
            c.criterion,
            c.label,
            c.judge_label,
            f"{c.judge_score:.2f}",
            c.trace_id,
            Text(str(c.provenance.get("reviewer"))),
            str(c.provenance.get("judge_version")),
        )
    show_table(table)


@golden_app.command("quality")
def golden_quality_cmd(
    name: str,
    version: Annotated[int | None, typer.Option("--version")] = None,
    rubric: Annotated[Path | None, typer.Option("--rubric")] = None,
    review_db: ReviewDb = None,
) -> None:
    """Judge quality per criterion on a golden set: kappa, TPR, TNR, swap consistency, may gate."""
    from coachrec.review import ReviewError, ReviewStore, golden_quality
    from coachrec.teacher import load_rubric

    try:
        cases = ReviewStore(review_db).golden_cases(name, version)
    except ReviewError as exc:
        console().print(Text(str(exc), style="red"))
        raise typer.Exit(1) from exc
    table = Table("criterion", "n", "kappa", "TPR", "TNR", "swap consistency", "may gate", "why")
    for q in golden_quality(cases, load_rubric(rubric)).values():
        swap = "" if q.swap_consistency is None else f"{q.swap_consistency:.2f}"
        table.add_row(
            q.criterion,
            str(q.n),
            f"{q.kappa:.3f}",
            f"{q.tpr:.2f}",
            f"{q.tnr:.2f}",
            swap,
            "yes" if q.may_gate else "no",
            Text(q.reason()),
        )
    show_table(table)
