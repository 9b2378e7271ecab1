"""`coachrec serve`: the HTTP API over a traced pipeline."""

from __future__ import annotations

from pathlib import Path

import typer


def serve(
    host: str = typer.Option("127.0.0.1", help="interface to listen on"),
    port: int = typer.Option(8000, help="TCP port"),
    model_path: Path | None = typer.Option(
        None, "--model-path", help="a saved model folder, or a folder of them; default: fit item-kNN + popularity on the bundled MovieLens"
    ),
    db: Path | None = typer.Option(None, "--db", help="trace and feedback DuckDB file (default: $COACHREC_DB or .coachrec/traces.duckdb)"),
    dataset: str = typer.Option("ml-latest-small", help="dataset whose catalog (titles, genres, attributes) is served"),
    diversity: float = typer.Option(0.8, min=0.0, max=1.0, help="MMR lambda: 1 = no diversity re-ranking"),
    epsilon: float = typer.Option(0.0, min=0.0, max=1.0, help="epsilon-greedy exploration rate"),
    seed: int = typer.Option(0, help="exploration seed"),
    sample_rate: float = typer.Option(1.0, min=0.0, max=1.0, help="fraction of requests traced"),
) -> None:
    """Serve recommendations, feedback and traces over HTTP (API key: $COACHREC_API_KEY)."""
    import uvicorn

    from coachrec.serve.api import create_app
    from coachrec.serve.pipeline import PipelineConfig
    from coachrec.serve.service import Service

    typer.echo("coachrec serve: loading models ...", err=True)
    service = Service.open(
        db, model_path=model_path, dataset=dataset, sample_rate=sample_rate,
        config=PipelineConfig(diversity=diversity, epsilon=epsilon, seed=seed),
    )
    typer.echo(f"coachrec serve: {service.source}; store {service.store.path}", err=True)
    try:
        uvicorn.run(create_app(service), host=host, port=port, log_level="warning", access_log=False)
    finally:
        service.close()
