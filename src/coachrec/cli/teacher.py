"""`coachrec judge` and `coachrec report failures`: the teacher over stored traces."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table
from rich.text import Text

from coachrec.cli.console import RichProgress, console, show_table, status

if TYPE_CHECKING:
    from rich.console import Console

    from coachrec.llm import LLMBackend
    from coachrec.teacher import FailureReport, SamplingPolicy
    from coachrec.tracing import TraceStore

report_app = typer.Typer(help="Reports over judged traces.", no_args_is_help=True)

DbOption = Annotated[
    Path | None, typer.Option("--db", help="Trace store (default: $COACHREC_DB or .coachrec/traces.duckdb).")
]

SAMPLE_HELP = (
    "Sampling policy, repeatable (union): rate:0.1 | negative-feedback | latency:0.95 | new-items | by-mode:5 | all"
)


def parse_policies(specs: list[str], store: TraceStore, dataset: str, seed: int) -> list[SamplingPolicy]:
    """Sampling policies from `--sample` strings; an unknown one is an error naming the choices."""
    from coachrec.teacher import ByFailureMode, LatencyOutliers, NegativeFeedback, NewItems, Rate

    policies: list[SamplingPolicy] = []
    for spec in specs:
        name, _, arg = spec.partition(":")
        try:
            if name == "all":
                policies.append(Rate(1.0, seed))
            elif name == "rate":
                policies.append(Rate(float(arg or 0.1), seed))
            elif name == "latency":
                policies.append(LatencyOutliers(float(arg or 0.95)))
            elif name == "by-mode":
                policies.append(ByFailureMode(int(arg or 5), seed))
            elif name == "negative-feedback":
                from coachrec.serve.feedback import FeedbackLog, feedback_path_for

                policies.append(NegativeFeedback(FeedbackLog(feedback_path_for(store.path))))
            elif name == "new-items":
                from coachrec import datasets

                data = datasets.load(dataset)
                used = set(data.items.decode(data.events["item"].unique().to_numpy()).tolist())
                policies.append(NewItems(frozenset(str(i) for i in used)))
            else:
                raise typer.BadParameter(f"unknown sampling policy {spec!r}; {SAMPLE_HELP}")
        except ValueError as exc:
            raise typer.BadParameter(f"--sample {spec!r}: {exc}") from exc
    return policies


def failure_modes_table(
    report: FailureReport, con: Console, title: str, *, top: int, examples: int | None, cut: int
) -> Table:
    """The top failure modes: criterion, count, rate, blamed span, the teacher's rationale (cut
    to `cut` characters in a terminal, whole in a log) and `examples` example traces (None: all)."""
    table = Table(title=Text(title), title_justify="left")
    cols = ("failure mode", "criterion", "traces", "rate", "where (span)", "why (teacher's rationale)")
    for col in (*cols, "example trace" if examples == 1 else "example traces"):
        table.add_column(col, overflow="fold")
    for m in report.modes[:top]:
        why = m.why[:cut] if con.is_terminal else m.why
        shown = "\n".join(m.examples[:examples] if examples is not None else m.examples)
        table.add_row(m.name, m.criterion, str(m.count), f"{m.rate:.1%}", m.span, Text(why), shown)
    return table


def judge(
    sample: Annotated[list[str], typer.Option("--sample", help=SAMPLE_HELP)] = ["rate:0.1"],  # noqa: B006
    db: DbOption = None,
    since: Annotated[
        str | None, typer.Option("--since", help="Only traces started within this long: 30m, 1h, 7d.")
    ] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="Judge at most this many traces.")] = None,
    llm: Annotated[str, typer.Option("--llm", help="LLM member: teacher|medium|small|path|URL|none.")] = "teacher",
    relevance: Annotated[
        bool, typer.Option("--relevance/--no-relevance", help="Judge relevance with the recommender committee.")
    ] = True,
    dataset: Annotated[
        str, typer.Option("--dataset", help="Catalog and rating history the teacher uses.")
    ] = "ml-latest-small",
    rubric: Annotated[Path | None, typer.Option("--rubric", help="Rubric YAML (default: the built-in one).")] = None,
    criteria: Annotated[
        list[str] | None, typer.Option("--criterion", help="Judge only these criteria (repeatable).")
    ] = None,
    review_db: Annotated[
        Path | None,
        typer.Option("--review-db", help="Review store (default: DB.review.duckdb beside the trace store DB.duckdb)."),
    ] = None,
    audit_rate: Annotated[
        float, typer.Option("--audit-rate", help="Share of all judgments also queued for review.")
    ] = 0.05,
    rejudge: Annotated[bool, typer.Option("--rejudge", help="Judge traces this judge version already judged.")] = False,
    swap: Annotated[bool, typer.Option("--swap/--no-swap", help="Judge LLM criteria in both slate orders.")] = True,
    ray: Annotated[
        int,
        typer.Option(
            "--ray",
            min=0,
            help="Judge on a pool of this many Ray actors, each loading the LLM once (0: in this process; "
            "$RAY_ADDRESS: a cluster). Needs coachrec[ray].",
        ),
    ] = 0,
    seed: int = 0,
) -> None:
    """Run the teacher over a sample of stored traces; store judgments, queue doubtful ones."""
    from coachrec import datasets
    from coachrec.cli.traces import _since
    from coachrec.llm import LLMError, ResponseCache, coachrec_home, load_backend
    from coachrec.review import ReviewStore, review_path_for
    from coachrec.teacher import (
        CatalogView,
        Judge,
        JudgeConfig,
        calibrated_committee,
        cases_from_store,
        judged_traces,
        load_rubric,
        record,
        sample_traces,
    )
    from coachrec.tracing import TraceStore, TraceStoreError, default_db_path

    con = console()
    spec = load_rubric(rubric)
    try:
        store = TraceStore(db or default_db_path())
    except TraceStoreError as exc:
        con.print(Text(str(exc), style="red"))
        raise typer.Exit(1) from exc
    try:
        data = datasets.load(dataset)
        if data.catalog is None:
            raise typer.BadParameter(f"dataset {dataset!r} has no catalog; the teacher needs titles and attributes")
        backend = None
        if llm != "none":
            try:
                backend = load_backend(llm, cache=ResponseCache(coachrec_home() / "judge_cache.sqlite"))
            except LLMError as exc:
                con.print(Text.assemble((str(exc), "red"), " (use --llm none to judge without LLM criteria)"))
                raise typer.Exit(1) from exc
        committee = None
        if relevance:
            with status(con, "fitting the relevance committee (calibrated on held-out later ratings)"):
                committee = calibrated_committee(data)
        teacher = Judge(
            spec,
            CatalogView(data.catalog),
            llm=backend,
            relevance=committee,
            criteria=criteria,
            config=JudgeConfig(swap=swap),
        )
        progress = RichProgress(con)
        if teacher.skipped:
            progress.note(f"not judged (member not configured): {', '.join(teacher.skipped)}", level="warn")
        skip = () if rejudge else judged_traces(store, teacher.version)
        picked = sample_traces(
            store, parse_policies(sample, store, dataset, seed), since=_since(since), limit=limit, skip=skip
        )
        progress.note(f"judge {teacher.version}: {len(picked.trace_ids)} of {picked.candidates} traces sampled")
        cases = cases_from_store(store, picked.trace_ids)
        with progress.bar("judging", len(cases)) as advance, _executor(ray, llm if backend else None):
            judgments = teacher.judge(cases, progress=advance)
        record(store, judgments)
        review = ReviewStore(review_db or review_path_for(store.path))
        queued = review.enqueue(judgments, cases, review_below=spec.review_below, audit_rate=audit_rate, seed=seed)
        review.close()
        failed = sum(j.failed for j in judgments)
        progress.note(
            f"{len(judgments)} judgments on {len(cases)} traces, {failed} failed; {queued} queued for review in "
            f"{review.path}"
        )
    finally:
        store.close()  # also on errors: a second open in this process must not clash
    print_failures(db, judge_version=teacher.version, top=10)


def _executor(workers: int, llm: str | None) -> AbstractContextManager[None]:
    """Judging on `workers` Ray actors (`teacher.judge.judging_with`), or in this process."""
    if workers == 0:
        return nullcontext()
    from coachrec.scale import RayMissingError, ray_executor, require_ray
    from coachrec.teacher.judge import judging_with

    try:
        require_ray()
    except RayMissingError as exc:
        raise typer.BadParameter(str(exc), param_hint="--ray") from exc

    def load() -> LLMBackend:
        from coachrec.llm import load_backend

        return load_backend(str(llm))

    return judging_with(ray_executor(workers, llm=load if llm is not None else None))


def print_failures(
    db: Path | None, *, judge_version: str | None, top: int, examples: int = 3, bucket: str | None = None
) -> None:
    import datetime as dt

    from coachrec.cli.traces import _open, _since
    from coachrec.teacher import failure_report

    width = _since(bucket) if bucket else None
    store = _open(db)
    try:
        report = failure_report(
            store,
            judge_version=judge_version,
            examples=examples,
            **({"bucket_ns": int(width.total_seconds() * 1e9)} if width else {}),
        )
    finally:
        store.close()
    con = console()
    if not report.modes:
        con.print(Text(f"no failures among {report.judged_traces} judged traces"))
        return
    title = f"Top failure modes ({report.judged_traces} judged traces; judge {', '.join(report.judge_versions)})"
    show_table(failure_modes_table(report, con, title, top=top, examples=None, cut=160), con)
    if bucket:
        trend = Table(title=f"Failure rate per {bucket} (by trace start)", title_justify="left")
        trend.add_column("failure mode")
        trend.add_column("failed / judged per bucket", overflow="fold")
        for m in report.modes[:top]:
            cells = [
                f"{dt.datetime.fromtimestamp(b / 1e9):%m-%d %H:%M} {f}/{j}"
                for b, f, j in report.over_time.get(m.name, [])
            ]
            trend.add_row(m.name, "  ".join(cells))
        show_table(trend, con)


@report_app.command("failures")
def report_failures(
    db: DbOption = None,
    judge_version: Annotated[
        str | None, typer.Option("--judge-version", help="Only this judge version's verdicts.")
    ] = None,
    top: Annotated[int, typer.Option("--top", help="How many modes to show.")] = 10,
    examples: Annotated[int, typer.Option("--examples", help="Example trace ids per mode.")] = 3,
    over_time: Annotated[
        str | None, typer.Option("--over-time", help="Also show rates per time bucket: 1h, 1d, ...")
    ] = None,
) -> None:
    """The most frequent failure modes: what, where (the blamed span), why, example traces."""
    print_failures(db, judge_version=judge_version, top=top, examples=examples, bucket=over_time)
