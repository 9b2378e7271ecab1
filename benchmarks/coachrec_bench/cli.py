"""`coachrec bench ...`: the typer app registered under the `coachrec.cli` entry-point group.

`coachrec` loads this module only when a `coachrec bench` command runs (see
`coachrec.cli._plugin_command`), so the rest of the CLI never imports a benchmark.
"""

from __future__ import annotations

import typer

from coachrec_bench import accuracy as _accuracy
from coachrec_bench import coach as _coach
from coachrec_bench import conversational as _conversational
from coachrec_bench import conversational_goal as _conversational_goal
from coachrec_bench import conversational_llm as _conversational_llm
from coachrec_bench import dashboard as _dashboard
from coachrec_bench import feedback as _feedback
from coachrec_bench import gru4rec_official as _gru4rec_official
from coachrec_bench import llm as _llm
from coachrec_bench import monitor as _monitor
from coachrec_bench import recbole_ref as _recbole
from coachrec_bench import rectools_ref as _rectools
from coachrec_bench import report as _report
from coachrec_bench import request_match as _request_match
from coachrec_bench import scale as _scale
from coachrec_bench import serve as _serve
from coachrec_bench import speed as _speed
from coachrec_bench import teacher as _teacher

app = typer.Typer(
    name="bench",
    help="Benchmarks: print a table and write benchmarks/results/NAME.json.",
    no_args_is_help=True,
    add_completion=False,
)


def bench_tracing() -> None:
    """Tracing overhead vs the OpenTelemetry SDK, drops under a burst, store ingest and queries."""
    from coachrec_bench import tracing  # needs duckdb and the OpenTelemetry SDK

    tracing.main()


app.command("accuracy")(_accuracy.bench_accuracy)
app.command("speed")(_speed.bench_speed)
app.command("gru4rec-official")(_gru4rec_official.bench_gru4rec_official)
app.command("recbole")(_recbole.bench_recbole)
app.command("rectools")(_rectools.bench_rectools)
app.command("report")(_report.bench_report)
app.command("llm")(_llm.bench_llm)
app.command("teacher")(_teacher.bench_teacher)
app.command("coach")(_coach.bench_coach)
app.command("serve")(_serve.bench_serve)
app.command("dashboard")(_dashboard.bench_dashboard)
app.command("tracing")(bench_tracing)
app.command("conversational")(_conversational.bench_conversational)
app.command("conversational-goal")(_conversational_goal.bench_conversational_goal)
app.command("conversational-llm")(_conversational_llm.bench_conversational_llm)
app.command("request-match")(_request_match.bench_request_match)
app.command("feedback")(_feedback.bench_feedback)
app.command("monitor")(_monitor.bench_monitor)
app.command("scale")(_scale.bench_scale)
