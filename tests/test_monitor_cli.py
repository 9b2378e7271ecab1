"""`coachrec monitor` over a trace store holding two weeks of served requests: the second week's
request mix changed, the command says so (exit code 1), names the column and writes the report."""

import json

from typer.testing import CliRunner

from coachrec.cli import app
from coachrec.cli.monitor import parse_window
from coachrec.models import create
from coachrec.serve import Stack
from coachrec.serve.pipeline import PipelineConfig
from coachrec.teacher.traffic import replay_requests
from coachrec.tracing import Tracer, TraceStore

DAY_NS = 86_400 * 10**9


def _served_days_ago(stack, requests, store, days):
    """Serve into memory, then store the spans as if served `days` ago."""
    scratch = TraceStore(":memory:")
    pipeline = stack.pipeline(Tracer(scratch))
    traces = [pipeline.recommend(r).trace_id for r in requests]
    scratch.flush()
    shift = days * DAY_NS
    store.write(
        [s._replace(start_ns=s.start_ns - shift, end_ns=s.end_ns - shift) for t in traces for s in scratch.trace(t)]
    )
    scratch.close()


def test_monitor_flags_a_changed_request_mix_and_writes_the_report(ml_small, tmp_path):
    db = tmp_path / "traces.duckdb"
    stack = Stack([create("pop").fit(ml_small)], ml_small.catalog, PipelineConfig(candidates=30))
    users = ml_small.users.ids[:100].tolist()
    store = TraceStore(db)
    _served_days_ago(stack, replay_requests(users, 80, context_rate=0.0, constraint_rate=0.1, seed=1), store, 10)
    _served_days_ago(stack, replay_requests(users, 80, context_rate=0.8, constraint_rate=0.1, seed=2), store, 2)
    store.close()
    out = tmp_path / "report"
    result = CliRunner().invoke(
        app,
        ["monitor", "--db", str(db), "--reference", "14d..7d", "--current", "7d..0d", "--out", str(out),
         "--json", str(tmp_path / "drift.json")],
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    assert "alarm (hypothesis tests" in result.output and "DRIFT in has_context" in result.output
    report = json.loads((tmp_path / "drift.json").read_text())
    assert report["reference_n"] == 80 and report["current_n"] == 80
    ctx = next(c for c in report["columns"] if c["column"] == "has_context")
    assert ctx["drifted"] and ctx["test"] == "z"
    assert (out / "report.md").exists() and (out / "has_context.png").exists()
    bad = CliRunner().invoke(app, ["monitor", "--db", str(db), "--reference", "last week"])
    assert bad.exit_code == 2 and "FROM..TO ago" in bad.output


def test_window_arguments_read_as_time_ago():
    since, until = parse_window("14d..7d", "--reference")
    assert until - since == 7 * DAY_NS
    since, until = parse_window("2h..0", "--current")
    assert until - since == 2 * 3600 * 10**9
    since, until = parse_window("7d..14d", "--reference")  # the span between two ages, either order
    assert until - since == 7 * DAY_NS
    since, until = parse_window("3d..3d", "--reference")
    assert until == since


def test_monitor_coach_needs_the_dataset_it_would_replay(tmp_path):
    result = CliRunner().invoke(app, ["monitor", "--db", str(tmp_path / "none.duckdb"), "--coach"])
    assert result.exit_code == 2 and "--coach needs --dataset" in result.output
