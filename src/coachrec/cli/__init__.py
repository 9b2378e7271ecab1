"""The `coachrec` command line. Each topic lives in its own module as a typer app."""

from __future__ import annotations

import typer

from coachrec.bench import serve as _bench_serve
from coachrec.bench import accuracy as _bench_accuracy
from coachrec.bench import speed as _bench_speed
from coachrec.bench import gru4rec_official as _bench_gru4rec_official
from coachrec.bench import recbole_ref as _bench_recbole
from coachrec.bench import report as _bench_report
from coachrec.cli import evaluate as _evaluate
from coachrec.cli import train as _train
from coachrec.cli import tune as _tune
from coachrec.cli import llm_models as _llm_models
from coachrec.cli import serve as _serve
from coachrec.cli import traces as _traces
from coachrec.bench import teacher as _bench_teacher
from coachrec.cli import review as _review
from coachrec.cli import teacher as _teacher
from coachrec.cli import report_cost as _report_cost
from coachrec.bench import llm as _bench_llm
from coachrec.bench import coach as _bench_coach
from coachrec.cli import coach as _coach
from coachrec.cli import quickstart as _quickstart

app = typer.Typer(
    name="coachrec",
    help="Coachable recommender systems: train, serve, trace, judge, coach.",
    no_args_is_help=True,
    add_completion=False,
)
bench_app = typer.Typer(help="Benchmarks: print a table and write benchmarks/results/NAME.json.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")
app.add_typer(_llm_models.app, name="models")
app.add_typer(_traces.app, name="traces")
bench_app.command("tracing")(_traces.bench_tracing)
bench_app.command("serve")(_bench_serve.bench_serve)

bench_app.command("accuracy")(_bench_accuracy.bench_accuracy)
bench_app.command("speed")(_bench_speed.bench_speed)
bench_app.command("gru4rec-official")(_bench_gru4rec_official.bench_gru4rec_official)
bench_app.command("recbole")(_bench_recbole.bench_recbole)
bench_app.command("report")(_bench_report.bench_report)
app.command("evaluate")(_evaluate.evaluate)
app.command("train")(_train.train)
app.command("tune")(_tune.tune)
app.command("quickstart")(_quickstart.quickstart)
app.command("serve")(_serve.serve)
app.command("judge")(_teacher.judge)
app.add_typer(_teacher.report_app, name="report")
_teacher.report_app.command("cost")(_report_cost.report_cost)
bench_app.command("llm")(_bench_llm.bench_llm)
app.command("review")(_review.review)
app.add_typer(_review.golden_app, name="golden")
bench_app.command("teacher")(_bench_teacher.bench_teacher)
app.command("coach")(_coach.coach)
app.command("gate")(_coach.gate)
bench_app.command("coach")(_bench_coach.bench_coach)


def main() -> None:
    """Run the CLI; bad input (unknown names, unreadable data, invalid values) ends with its
    message and exit code 2 instead of a traceback. Bugs still show the traceback."""
    from coachrec.data import DataError

    try:
        app()
    except (DataError, KeyError, ValueError, FileNotFoundError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
        raise SystemExit(2) from None
