"""`coachrec monitor`: drift of a current window of the trace store against a reference window,
per column (Evidently's default tests, or PSI), with a Markdown/HTML report and plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from coachrec.cli.console import console, print_rows


def parse_window(value: str, option: str) -> tuple[int, int]:
    """`14d..7d` (from 14 days ago until 7 days ago; `..0` is now) as [since, until) in ns."""
    from coachrec.monitor.windows import parse_ago

    try:
        return parse_ago(value)
    except ValueError as exc:
        raise typer.BadParameter(f"{option}: {exc}") from exc


def monitor(
    db: Annotated[
        Path | None, typer.Option("--db", help="Trace store (default: $COACHREC_DB or .coachrec/traces.duckdb).")
    ] = None,
    reference: Annotated[str, typer.Option("--reference", help="Reference window, FROM..TO ago: 14d..7d.")] = "14d..7d",
    current: Annotated[str, typer.Option("--current", help="Current window, FROM..TO ago: 7d..0d.")] = "7d..0d",
    dataset: Annotated[
        str | None,
        typer.Option("--dataset", help="Dataset whose item popularity and years the input monitors read."),
    ] = None,
    test: Annotated[
        str | None, typer.Option("--test", help="One test for every column (e.g. psi); default: Evidently's choice.")
    ] = None,
    judge_version: Annotated[
        str | None, typer.Option("--judge-version", help="Judged quality from this judge version only.")
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="Folder of report.md, report.html and the plots.")] = Path(
        "runs/monitor"
    ),
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the drift report as JSON.")] = None,
    coach: Annotated[
        bool,
        typer.Option("--coach", help="On an alarm, run a coach iteration on --dataset (its report in --coach-out)."),
    ] = False,
    coach_out: Annotated[Path, typer.Option("--coach-out", help="Folder of the triggered coach iteration.")] = Path(
        "runs/coach-on-drift"
    ),
) -> None:
    """Compare a current window of served requests with a reference window: inputs, stage
    scores, outcomes and judged quality. Exit code 1 on an alarm: a column whose hypothesis test
    is significant after Bonferroni (at most 5% false alarms on a drift-free stream)."""
    from coachrec.monitor import ItemStats, compare, read_window, system_drift
    from coachrec.monitor.report import write_report
    from coachrec.monitor.stattests import TESTS
    from coachrec.tracing import TraceStore, TraceStoreError, default_db_path

    con = console()
    if test is not None and test not in TESTS:
        raise typer.BadParameter(f"--test must be one of {sorted(TESTS)}, got {test!r}")
    if coach and dataset is None:
        raise typer.BadParameter("--coach needs --dataset (the data the coach iteration replays)", param_hint="--coach")
    ref_since, ref_until = parse_window(reference, "--reference")
    cur_since, cur_until = parse_window(current, "--current")
    items = None
    if dataset is not None:
        from coachrec import datasets

        items = ItemStats.from_dataset(datasets.load(dataset))
    try:
        store = TraceStore(db or default_db_path(), read_only=True)
    except TraceStoreError as exc:
        con.print(str(exc), style="red", markup=False)
        raise typer.Exit(2) from exc
    try:
        ref = read_window(store, ref_since, ref_until, items=items, judge_version=judge_version)
        cur = read_window(store, cur_since, cur_until, items=items, judge_version=judge_version)
    finally:
        store.close()
    for label, window in (("reference", ref), ("current", cur)):
        if window.n == 0:
            con.print(f"the {label} window holds no served requests; nothing to compare", style="red", markup=False)
            raise typer.Exit(2)
    report = compare(ref, cur, test=test)
    print_rows(
        ["column", "test", "statistic", "threshold", "p-value", "drifted"],
        [
            [
                c.column,
                c.test,
                f"{c.statistic:.4g}",
                f"{c.threshold:g}",
                "" if c.p_value is None else f"{c.p_value:.3g}",
                "yes" if c.drifted else "no",
            ]
            for c in report.columns
        ],
        title=f"drift: reference {ref.n} requests, current {cur.n}",
        con=con,
    )
    md = write_report(out, ref, cur, report=report, title=f"Drift report: {reference} vs {current}")
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(report.to_dict(), indent=2, default=str))
    alarm = system_drift(ref, cur, groups=("inputs", "scores", "outcomes", "quality"))
    verdict = "DRIFT" if report.dataset_drift() else "no drift"
    con.print(
        f"dataset (Evidently's rule, >= 50% of columns): {verdict} ({report.share():.0%} of {len(report.columns)} "
        f"columns drifted)",
        markup=False,
    )
    con.print(
        f"alarm (hypothesis tests, Bonferroni over {len(alarm.tests)} columns at {alarm.alpha}): "
        f"{'DRIFT in ' + ', '.join(alarm.drifted_columns) if alarm.drifted else 'no drift'}; report: {md}",
        markup=False,
    )
    if coach:
        from coachrec.cli.console import RichProgress
        from coachrec.coach import LoopConfig, Registry
        from coachrec.monitor.alerts import coach_iteration, coach_on_drift

        run = coach_iteration(LoopConfig(dataset=str(dataset)), Registry(), coach_out, RichProgress(con))
        trigger = coach_on_drift(alarm, run)
        con.print(
            f"coach: {trigger.reason}"
            + (f"; iteration: {trigger.decision} (report in {coach_out})" if trigger.triggered else ""),
            markup=False,
        )
    if alarm.drifted:
        raise typer.Exit(1)
