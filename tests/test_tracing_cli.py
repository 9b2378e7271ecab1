"""`coachrec traces list|show|export` against a real store file."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
from typer.testing import CliRunner

from coachrec.cli.traces import app
from coachrec.tracing import SpanKind, Tracer, TraceStore


def test_list_show_export(tmp_path: Path) -> None:
    db = tmp_path / "traces.duckdb"
    store = TraceStore(db)
    tracer = Tracer(store=store)
    with tracer.trace_request("recommend", user_id="u1", request_id="req-7") as root:
        with tracer.span("retrieve", kind=SpanKind.RETRIEVER) as s:
            s.set_output([1, 2])
    store.close()
    runner = CliRunner()
    env = {"COACHREC_DB": str(db), "COLUMNS": "200"}

    listed = runner.invoke(app, ["list", "--since", "1h"], env=env)
    assert listed.exit_code == 0, listed.output
    assert root.trace_id in listed.output and "req-7" in listed.output

    shown = runner.invoke(app, ["show", "req-7"], env=env)
    assert shown.exit_code == 0 and "retrieve" in shown.output and "RETRIEVER" in shown.output

    missing = runner.invoke(app, ["show", "nope"], env=env)
    assert missing.exit_code == 1 and "no trace or request" in missing.output

    out = tmp_path / "spans.parquet"
    exported = runner.invoke(app, ["export", "--out", str(out)], env=env)
    assert exported.exit_code == 0 and pq.read_table(out).num_rows == 2

    bad = runner.invoke(app, ["list", "--db", str(tmp_path / "absent.duckdb")])
    assert bad.exit_code == 1 and "no trace store" in bad.output
