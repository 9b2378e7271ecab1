"""`coachrec dashboard`: the web dashboard over a trace store, without a serving stack."""

from __future__ import annotations

from pathlib import Path

import typer


def dashboard(
    db: Path | None = typer.Option(
        None, "--db", help="trace store to show (default: $COACHREC_DB or .coachrec/traces.duckdb)"
    ),
    review_db: Path | None = typer.Option(
        None, "--review-db", help="review queue and golden sets (default: DB.review.duckdb beside --db)"
    ),
    registry: Path | None = typer.Option(
        None, "--registry", help="model registry folder (default: $COACHREC_REGISTRY or .coachrec/registry)"
    ),
    dataset: str | None = typer.Option(
        None, "--dataset", help="dataset whose catalog gives item titles (default: ids only)"
    ),
    host: str = typer.Option("127.0.0.1", help="interface to listen on"),
    port: int = typer.Option(8080, help="TCP port"),
    no_auth: bool = typer.Option(
        False,
        "--no-auth",
        "--insecure-no-auth",
        help="serve without API keys, every page and action open (local demos; prints a warning). Without it and "
        "without configured keys, a key is generated for the run and printed",
    ),
    allowed_host: list[str] = typer.Option(
        [], "--allowed-host", help="a Host header to accept (repeatable); a loopback server accepts loopback names"
    ),
) -> None:
    """Serve the dashboard (traces, failure modes, review, golden sets, gates, cost) under /ui.

    Keys and scopes as for `coachrec serve` ($COACHREC_API_KEYS): `read` to look, `review` to
    annotate, `publish` for golden sets, `admin` to roll back. The trace store must not be held
    by another process (DuckDB allows one writer per file): run the dashboard of a live server
    through `coachrec serve`, which mounts it at /ui.
    """
    import uvicorn

    from coachrec.cli.serve import url_of
    from coachrec.coach.registry import Registry
    from coachrec.dashboard import dashboard_app, titles_of
    from coachrec.review import ReviewStore, review_path_for
    from coachrec.serve.auth import AuthConfigError, allowed_hosts_for, for_server, generated_key_notice
    from coachrec.serve.feedback import FeedbackLog, feedback_path_for
    from coachrec.tracing import TraceStore, TraceStoreError, default_db_path

    try:
        started = for_server(host, no_auth=no_auth)
    except AuthConfigError as exc:
        typer.echo(f"coachrec dashboard: {exc}", err=True)
        raise typer.Exit(2) from None
    auth = started.auth
    if started.warning:
        typer.echo(started.warning, err=True)
    if started.generated_key:
        typer.echo(generated_key_notice(started.generated_key, url_of(host, port)), err=True)
    path = db or default_db_path()
    if not path.exists():
        typer.echo(f"coachrec dashboard: no trace store at {path}", err=True)
        raise typer.Exit(2)
    titles = None
    if dataset is not None:
        from coachrec import datasets

        data = datasets.load(dataset)
        if data.catalog is not None:
            titles = titles_of(list(data.catalog.items.ids), data.catalog.titles())
    try:
        store = TraceStore(path)
    except TraceStoreError as exc:
        typer.echo(f"coachrec dashboard: {exc}", err=True)
        raise typer.Exit(2) from None
    feedback = FeedbackLog(feedback_path_for(store.path))
    review = ReviewStore(review_db or review_path_for(store.path))
    try:
        app = dashboard_app(
            store,
            auth=auth,
            feedback=feedback,
            review=review,
            registry=Registry(registry),
            titles=titles,
            allowed_hosts=allowed_hosts_for(host, allowed_host),
        )
        typer.echo(f"coachrec dashboard: http://{host}:{port}/ui over {store.path}", err=True)
        uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
    finally:
        review.close()
        feedback.close()
        store.close()
