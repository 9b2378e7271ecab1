"""`coachrec traces list|show|export` (`coachrec bench tracing` lives in coachrec_bench)."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from coachrec.cli.console import console, show_table

if TYPE_CHECKING:  # the tracing package needs duckdb; import it only when a command runs
    from coachrec.tracing import SpanRecord, TraceStore

app = typer.Typer(help="Inspect and export recorded traces.", no_args_is_help=True)

DbOption = Annotated[
    Path | None, typer.Option("--db", help="Trace store (default: $COACHREC_DB or .coachrec/traces.duckdb).")
]
SinceOption = Annotated[
    str | None, typer.Option("--since", help="Only spans started within this long: 30s, 15m, 1h, 7d.")
]

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def _since(value: str | None) -> dt.timedelta | None:
    if value is None:
        return None
    match = _DURATION.match(value.strip())
    if not match:
        raise typer.BadParameter(f"--since takes a number and a unit (s, m, h, d), e.g. 1h; got {value!r}")
    return dt.timedelta(**{_UNITS[match.group(2)]: float(match.group(1))})


def _open(db: Path | None) -> TraceStore:
    from coachrec.tracing import TraceStore, TraceStoreError, default_db_path

    path = db or default_db_path()
    try:
        return TraceStore(path, read_only=True)
    except TraceStoreError as exc:
        console().print(Text(str(exc), style="red"))
        raise typer.Exit(1) from exc


def _ms(ns: int | None) -> str:
    return "" if ns is None else f"{ns / 1e6:,.2f} ms"


def _when(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns / 1e9).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


@app.command("list")
def list_traces(
    db: DbOption = None,
    since: SinceOption = None,
    kind: Annotated[list[str] | None, typer.Option("--kind", help="Span kind (repeatable).")] = None,
    status: Annotated[str | None, typer.Option("--status", help="OK, ERROR or UNSET.")] = None,
    user: Annotated[str | None, typer.Option("--user", help="User id.")] = None,
    request: Annotated[str | None, typer.Option("--request", help="Request id.")] = None,
    name: Annotated[str | None, typer.Option("--name", help="Span name.")] = None,
    spans: Annotated[bool, typer.Option("--spans", help="List matching spans instead of traces.")] = False,
    limit: Annotated[int, typer.Option("--limit", min=1)] = 50,
) -> None:
    """List traces (or spans, with --spans) that have a span matching every filter, newest first."""
    store = _open(db)
    filters = {
        "since": _since(since),
        "kind": kind or None,
        "status": status,
        "user_id": user,
        "request_id": request,
        "name": name,
    }
    try:
        if spans:
            rows = store.spans(**filters, limit=limit).to_pylist()  # type: ignore[arg-type]
            table = Table("trace", "span", "name", "kind", "start", "duration", "status", "error")
            for r in rows:
                table.add_row(
                    r["trace_id"],
                    r["span_id"],
                    Text(r["name"]),
                    r["kind"],
                    _when(r["start_ns"]),
                    _ms(r["end_ns"] - r["start_ns"]),
                    r["status"],
                    Text(r["error"] or ""),
                )
        else:
            rows = store.traces(**filters, limit=limit).to_pylist()  # type: ignore[arg-type]
            table = Table("trace", "request", "user", "root", "start", "duration", "spans", "errors", "tokens", "cost")
            for r in rows:
                tokens = (r["input_tokens"] or 0) + (r["output_tokens"] or 0)
                table.add_row(
                    r["trace_id"],
                    Text(r["request_id"] or ""),
                    Text(r["user_id"] or ""),
                    Text(r["root"] or ""),
                    _when(r["start_ns"]),
                    _ms(r["duration_ns"]),
                    str(r["spans"]),
                    str(r["errors"]) if r["errors"] else "",
                    str(tokens) if tokens else "",
                    f"{r['cost']:.4g}" if r["cost"] else "",
                )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    finally:
        store.close()
    con = console()
    show_table(table, con)
    con.print(f"{len(rows)} {'spans' if spans else 'traces'}" + (f" (limit {limit})" if len(rows) == limit else ""))


def _label(span: SpanRecord) -> str:
    colour = {"ERROR": "red", "OK": "green"}.get(span.status, "yellow")
    extra = []
    if span.input_tokens is not None or span.output_tokens is not None:
        extra.append(f"tokens {span.input_tokens or 0}→{span.output_tokens or 0}")
    if span.cost is not None:
        extra.append(f"cost {span.cost:.4g}")
    name, kind = escape(span.name), escape(span.kind)
    text = f"[bold]{name}[/bold] [dim]{kind}[/dim] {_ms(span.duration_ns)} [{colour}]{span.status}[/{colour}]"
    if extra:
        text += " [dim]" + ", ".join(extra) + "[/dim]"
    if span.error:
        text += f"\n[red]{escape(span.error)}[/red]"
    return text


@app.command("show")
def show(
    trace_id: Annotated[str, typer.Argument(help="Trace id or request id.")],
    db: DbOption = None,
    io: Annotated[bool, typer.Option("--io", help="Also print each span's input and output.")] = False,
) -> None:
    """Show one trace as a tree of spans with durations."""
    store = _open(db)
    try:
        spans = store.trace(trace_id)
        if not spans:
            resolved = store.trace_id_for_request(trace_id)
            spans = store.trace(resolved) if resolved else []
    finally:
        store.close()
    con = console()
    if not spans:
        con.print(Text(f"no trace or request with id {trace_id!r}", style="red"))
        raise typer.Exit(1)
    first = spans[0]
    tree = Tree(
        Text(
            f"trace {first.trace_id}  request {first.request_id or '-'}  user {first.user_id or '-'}  "
            f"{_when(first.start_ns)}"
        )
    )
    nodes: dict[str | None, Tree] = {}
    ids = {s.span_id for s in spans}
    for span in spans:  # start order: a parent starts before its children
        parent = nodes.get(span.parent_span_id) if span.parent_span_id in ids else tree
        node = (parent or tree).add(_label(span))
        if io:
            if span.input is not None:
                node.add(f"[cyan]in[/cyan]  {escape(span.input[:500])}")
            if span.output is not None:
                node.add(f"[cyan]out[/cyan] {escape(span.output[:500])}")
        nodes[span.span_id] = node
    con.print(tree)


@app.command("export")
def export(
    db: DbOption = None,
    out: Annotated[Path | None, typer.Option("--out", help="Parquet file to write.")] = None,
    otlp: Annotated[str | None, typer.Option("--otlp", help="OTLP/HTTP endpoint, e.g. http://127.0.0.1:6006.")] = None,
    since: SinceOption = None,
    table: Annotated[str, typer.Option("--table", help="spans, span_metrics or evaluations (Parquet only).")] = "spans",
    service_name: Annotated[
        str, typer.Option("--service-name", help="OTLP service / Phoenix project name.")
    ] = "coachrec",
) -> None:
    """Export traces to a Parquet file (--out) or an OTLP collector (--otlp)."""
    if (out is None) == (otlp is None):
        raise typer.BadParameter("give exactly one of --out PATH or --otlp ENDPOINT")
    store = _open(db)
    con = console()
    try:
        if out is not None:
            n = store.export_parquet(out, table=table, since=_since(since))
            con.print(Text(f"wrote {n} rows of {table} to {out}"))
        else:
            try:
                from coachrec.tracing.otlp import export_otlp
            except ImportError as exc:
                con.print(
                    Text(f"OTLP export needs the tracing extra: pip install 'coachrec[tracing]' ({exc})", style="red")
                )
                raise typer.Exit(1) from exc
            n = export_otlp(store, otlp, since=_since(since), service_name=service_name)  # type: ignore[arg-type]
            con.print(Text(f"sent {n} spans to {otlp}"))
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    finally:
        store.close()
