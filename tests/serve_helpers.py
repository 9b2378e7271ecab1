"""A real uvicorn server on loopback, in a thread, over a small synthetic stack (for the serve tests)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn

from coachrec.app import create_app
from coachrec.models import create
from coachrec.review import ReviewStore
from coachrec.serve import FeedbackLog, Pipeline, Service
from coachrec.serve.auth import Authenticator
from coachrec.serve.feedback import feedback_path_for
from coachrec.tracing import Tracer, TraceStore
from test_serve_pipeline import synthetic

KEYS = {
    "ops": (["*"], "ops-key-0123456789abcdef"),
    "frontend": (["recommend"], "frontend-key-0123456789ab"),
    "collector": (["ingest"], "collector-key-0123456789"),
    "alice": (["read", "review"], "alice-key-0123456789abcd"),
}


def headers(name: str) -> dict[str, str]:
    return {"X-API-Key": KEYS[name][1]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def synthetic_service(folder: Path, **store_options: Any) -> Service:
    data = synthetic()
    store = TraceStore(folder / "t.duckdb", flush_interval=0.05, **store_options)
    pipeline = Pipeline.from_models(
        [create("itemknn").fit(data), create("pop").fit(data)], data.catalog, tracer=Tracer(store)
    )
    return Service(pipeline, store, FeedbackLog(feedback_path_for(store.path)))


@contextmanager
def running(app: Any) -> Iterator[str]:
    """Serve `app` with uvicorn on a free loopback port; yields the base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start within 30 s")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@contextmanager
def synthetic_server(folder: Path, **app_options: Any) -> Iterator[tuple[str, Service]]:
    service = synthetic_service(folder)
    review = ReviewStore(folder / "review.duckdb")
    app = create_app(
        service,
        review=review,
        auth=app_options.pop("auth", Authenticator.of(KEYS)),
        allowed_hosts=app_options.pop("allowed_hosts", ["localhost", "127.0.0.1", "[::1]"]),
        **app_options,
    )
    try:
        with running(app) as url:
            yield url, service
    finally:
        review.close()
        service.close()
