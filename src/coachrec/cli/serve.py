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
    llm: str | None = typer.Option(None, "--llm", help="turn on the LLM reranker/explainer with this small model (role, registry name, GGUF path or URL), e.g. small"),
    llm_escalate: str | None = typer.Option(None, "--llm-escalate", help="larger model the router escalates to, e.g. medium"),
    llm_cache: Path | None = typer.Option(None, "--llm-cache", help="sqlite file of the LLM response cache (default: in memory)"),
    llm_explain: bool = typer.Option(False, "--llm-explain", help="let the small model phrase the (fact-checked) reasons; slow on CPU"),
) -> None:
    """Serve recommendations, feedback and traces over HTTP (API key: $COACHREC_API_KEY)."""
    import uvicorn

    from coachrec.review import ReviewStore
    from coachrec.serve.api import create_app
    from coachrec.serve.llm_stages import LLMServeConfig
    from coachrec.serve.pipeline import PipelineConfig
    from coachrec.serve.service import Service

    llm_config = None
    if llm is not None:
        llm_config = LLMServeConfig(small=llm, escalate=llm_escalate, cache=str(llm_cache) if llm_cache else None, explain_with_llm=llm_explain)
    typer.echo("coachrec serve: loading models ...", err=True)
    service = Service.open(
        db, model_path=model_path, dataset=dataset, sample_rate=sample_rate,
        config=PipelineConfig(diversity=diversity, epsilon=epsilon, seed=seed), llm=llm_config,
    )
    typer.echo(f"coachrec serve: {service.source}; store {service.store.path}", err=True)
    review = ReviewStore(Path(service.store.path).parent / "review.duckdb")
    try:
        uvicorn.run(create_app(service, review=review), host=host, port=port, log_level="warning", access_log=False)
    finally:
        review.close()
        service.close()
