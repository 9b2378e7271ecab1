"""`coachrec serve`: the HTTP API over a traced pipeline."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from coachrec.review import ReviewStore
    from coachrec.serve import Service
    from coachrec.serve.auth import ApiKey
    from coachrec.serve.limits import RateLimit
    from coachrec.serve.workers import Remote


@dataclass(frozen=True)
class WorkerApp:
    """What a `--workers` process needs to build the app (picklable: spawned processes get it)."""

    keys: tuple[ApiKey, ...]
    insecure_no_auth: bool
    rate_limit: RateLimit | None
    hosts: tuple[str, ...]
    max_body: int


REVIEW_CALLS = frozenset({"items", "get", "counts", "annotate", "publish", "golden_sets", "golden_cases", "enqueue"})
"""What the review routes and the dashboard call on a ReviewStore."""


def open_review(review_db: str | None, store_path: str) -> Any:
    """The review store the store process of `--workers` opens (module level: pickled by name)."""
    from coachrec.review import ReviewStore, review_path_for

    return ReviewStore(review_db or review_path_for(store_path))


def remote_review(remote: Remote) -> ReviewStore:
    """A ReviewStore whose calls run in the store process (DuckDB lets one process hold the file)."""
    from coachrec.review import ReviewStore

    class RemoteReviewStore(ReviewStore):
        def __init__(self) -> None:  # nothing is opened here
            self.path = "(the store process's review store)"

        def close(self) -> None:
            pass

    store = RemoteReviewStore()
    for name in REVIEW_CALLS:
        setattr(store, name, functools.partial(remote.call, name))
    return store


def worker_app(settings: WorkerApp, service: Service, remotes: dict[str, Remote]) -> Any:
    """The app one worker process serves (module level: pickled by name)."""
    from coachrec.app import create_app
    from coachrec.serve.auth import Authenticator

    auth = Authenticator(settings.keys, insecure_no_auth=settings.insecure_no_auth, rate_limit=settings.rate_limit)
    review = remote_review(remotes["review"]) if "review" in remotes else None
    return create_app(service, review=review, auth=auth, allowed_hosts=list(settings.hosts), max_body=settings.max_body)


def url_of(host: str, port: int) -> str:
    """The URL a local client reaches a server listening on `host` at (a wildcard host: loopback)."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else "[::1]" if host == "::" else host
    if ":" in shown and not shown.startswith("["):
        shown = f"[{shown}]"
    return f"http://{shown}:{port}"


def serve(
    host: str = typer.Option("127.0.0.1", help="interface to listen on"),
    port: int = typer.Option(8000, help="TCP port"),
    model_path: Path | None = typer.Option(
        None,
        "--model-path",
        help="a saved stack or model folder, or a folder of models; default: the registry's champion, "
        "else item-kNN + popularity fitted on the bundled MovieLens",
    ),
    db: Path | None = typer.Option(
        None, "--db", help="trace and feedback DuckDB file (default: $COACHREC_DB or .coachrec/traces.duckdb)"
    ),
    review_db: Path | None = typer.Option(
        None, "--review-db", help="review queue and golden sets (default: DB.review.duckdb beside --db)"
    ),
    dataset: str = typer.Option("ml-latest-small", help="dataset whose catalog (titles, genres, attributes) is served"),
    diversity: float | None = typer.Option(
        None, min=0.0, max=1.0, help="MMR lambda, 1 = no diversity re-ranking (default: the stack's)"
    ),
    epsilon: float | None = typer.Option(
        None, min=0.0, max=1.0, help="epsilon-greedy exploration rate (default: the stack's)"
    ),
    seed: int | None = typer.Option(None, help="exploration seed (default: the stack's)"),
    sample_rate: float = typer.Option(1.0, min=0.0, max=1.0, help="fraction of requests traced"),
    llm: str | None = typer.Option(
        None,
        "--llm",
        help=(
            "turn on the LLM reranker/explainer with this small model (role, registry name, GGUF path or URL), e.g. "
            "small"
        ),
    ),
    llm_escalate: str | None = typer.Option(
        None, "--llm-escalate", help="larger model the router escalates to, e.g. medium"
    ),
    llm_cache: Path | None = typer.Option(
        None, "--llm-cache", help="sqlite file of the LLM response cache (default: in memory)"
    ),
    llm_explain: bool = typer.Option(
        False, "--llm-explain", help="let the small model phrase the (fact-checked) reasons; slow on CPU"
    ),
    no_auth: bool = typer.Option(
        False,
        "--no-auth",
        "--insecure-no-auth",
        help="serve without API keys, every route open (local demos; prints a warning). Without it and without "
        "configured keys, a key is generated for the run and printed",
    ),
    allowed_host: list[str] = typer.Option(
        [],
        "--allowed-host",
        help="a Host header to accept (repeatable); a loopback server accepts localhost, 127.0.0.1 and [::1]",
    ),
    rate_limit: float | None = typer.Option(
        None,
        "--rate-limit",
        min=0.001,
        help="requests per second per API key (429 past it, bursts of 2 s); default none",
    ),
    max_body: int = typer.Option(2 * 1024 * 1024, "--max-body", min=1024, help="largest request body in bytes (413)"),
    trace_days: float = typer.Option(
        30.0, "--trace-retention-days", min=0.0001, help="delete spans older than this many days"
    ),
    trace_max_spans: int = typer.Option(10_000_000, "--trace-max-spans", min=1, help="keep at most this many spans"),
    workers: int = typer.Option(
        1,
        "--workers",
        min=1,
        max=64,
        help="HTTP worker processes; above 1, one store process writes every worker's traces, feedback and "
        "review annotations",
    ),
    trace_wait: float = typer.Option(
        0.5,
        "--trace-max-wait",
        min=0.0,
        max=60.0,
        help="seconds a request waits for room in a full span queue before its span is dropped (counted)",
    ),
) -> None:
    """Serve recommendations, feedback and traces over HTTP.

    API keys with scopes (recommend, ingest, read, review, publish, admin) come from
    $COACHREC_API_KEYS (`name:scope1,scope2:key;...`) or $COACHREC_API_KEYS_FILE (JSON/TOML).
    Without keys it generates one for the run (every scope) and prints it, as Jupyter prints its
    token; `--no-auth` serves open instead, with a warning.
    """
    from dataclasses import replace
    from datetime import timedelta

    import uvicorn

    from coachrec.app import create_app, resolve_stack
    from coachrec.review import ReviewStore, review_path_for
    from coachrec.serve import Service
    from coachrec.serve.auth import AuthConfigError, allowed_hosts_for, for_server, generated_key_notice
    from coachrec.serve.limits import RateLimit
    from coachrec.serve.llm_stages import LLMServeConfig
    from coachrec.tracing.store import Retention

    try:
        limit = RateLimit(rate_limit, max(1, int(2 * rate_limit))) if rate_limit else None
        started = for_server(host, no_auth=no_auth, rate_limit=limit)
    except AuthConfigError as exc:
        typer.echo(f"coachrec serve: {exc}", err=True)
        raise typer.Exit(2) from None
    auth = started.auth
    if started.warning:
        bar = "!" * min(100, len(started.warning))
        typer.echo(f"{bar}\n{started.warning}\n{bar}", err=True)
    if started.generated_key:
        typer.echo(generated_key_notice(started.generated_key, url_of(host, port)), err=True)

    llm_config = None
    if llm is not None:
        llm_config = LLMServeConfig(
            small=llm, escalate=llm_escalate, cache=str(llm_cache) if llm_cache else None, explain_with_llm=llm_explain
        )
    typer.echo("coachrec serve: loading models ...", err=True)
    stack = resolve_stack(model_path, dataset, llm=llm_config)
    overrides: dict[str, Any] = {
        k: v for k, v in {"diversity": diversity, "epsilon": epsilon, "seed": seed}.items() if v is not None
    }
    if overrides:
        stack.config = replace(stack.config, **overrides)
        stack.source += f" (pipeline settings overridden: {overrides})"
    hosts = allowed_hosts_for(host, allowed_host)
    retention = Retention(max_age=timedelta(days=trace_days), max_spans=trace_max_spans)
    if workers > 1:
        from coachrec.serve.workers import Shared, serve_workers

        settings = WorkerApp(auth.keys, auth.insecure_no_auth, limit, tuple(hosts), max_body)
        app_for = functools.partial(worker_app, settings)
        review_shared = Shared(
            functools.partial(open_review, None if review_db is None else str(review_db)), REVIEW_CALLS
        )

        typer.echo(
            f"coachrec serve: {stack.source or stack.describe()}; {workers} workers, one store process "
            "(traces, feedback and the review queue)",
            err=True,
        )
        serve_workers(
            stack, app_for, host=host, port=port, workers=workers, db=db, sample_rate=sample_rate,
            retention=retention, max_wait=trace_wait, shared={"review": review_shared},
        )  # fmt: skip
        return
    service = Service.open(stack, db, sample_rate=sample_rate, retention=retention, max_wait=trace_wait)
    typer.echo(
        f"coachrec serve: {service.source}; traces {service.store.path}, feedback {service.feedback.path}", err=True
    )
    review = ReviewStore(review_db or review_path_for(service.store.path))
    try:
        app = create_app(service, review=review, auth=auth, allowed_hosts=hosts, max_body=max_body)
        uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
    finally:
        review.close()
        service.close()
