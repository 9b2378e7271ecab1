"""`coachrec report cost`: LLM tokens, latency and cost per router tier, from the trace store."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import typer
from rich.table import Table
from rich.text import Text

from coachrec.cli.console import console, show_table


def report_cost(
    db: Path | None = typer.Option(None, "--db", help="trace store (default: $COACHREC_DB or .coachrec/traces.duckdb)"),
    hours: float | None = typer.Option(None, "--hours", min=0.0, help="only spans started in the last N hours"),
    as_json: bool = typer.Option(False, "--json", help="print JSON rows instead of a table"),
) -> None:
    """Sum LLM tokens, latency and cost per tier (none / small / escalate) over stored traces."""
    from coachrec.llm.cost import cost_report
    from coachrec.tracing import TraceStore

    store = TraceStore(db, read_only=True)
    try:
        rows = cost_report(store, since=timedelta(hours=hours) if hours is not None else None)
    finally:
        store.close()
    if as_json:
        typer.echo(json.dumps([r.as_dict() for r in rows], indent=2))
        return
    con = console()
    if not rows:
        con.print(Text(f"no routed LLM requests in {db or 'the default trace store'}"))
        return
    table = Table(title="LLM cost per tier")
    for column in (
        "tier",
        "requests",
        "calls",
        "cache hits",
        "input tok",
        "output tok",
        "latency s",
        "p50 ms",
        "p95 ms",
        "cost USD",
    ):
        table.add_column(column, justify="left" if column == "tier" else "right")
    for r in rows:
        table.add_row(
            r.tier,
            str(r.requests),
            str(r.calls),
            str(r.cache_hits),
            str(r.input_tokens),
            str(r.output_tokens),
            f"{r.latency_s:.2f}",
            f"{r.latency_p50_ms:.0f}",
            f"{r.latency_p95_ms:.0f}",
            f"{r.cost_usd:.6f}",
        )
    show_table(table, con)
