"""`coachrec bench serve`: request latency of the serving pipeline, in process and over HTTP.

In process: the full pipeline (two retrievers, blend, constraints, MMR, guardrail, reasons; no
LLM), k=10 over the whole catalog, for random known users, with tracing to a DuckDB file and
without. Over HTTP: a `coachrec serve` subprocess on loopback driven by an open-loop generator at
a fixed rate; latency runs from each request's *scheduled* send time, so a stalled server cannot
hide its queueing delay (no coordinated omission). The machine's load average is recorded with
every row: other processes share these cores.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import typer

from coachrec_bench.results import row, write

DATASET = "ml-latest-small"


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def _percentiles(ms: np.ndarray) -> dict[str, float]:
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "mean_ms": round(float(ms.mean()), 3),
    }


def in_process(requests: int, seed: int) -> list[dict[str, Any]]:
    from coachrec import datasets
    from coachrec.serve import RecommendRequest, Stack
    from coachrec.tracing import Tracer, TraceStore

    stack = Stack.fit(datasets.load(DATASET))
    users = stack.models[0].users
    assert users is not None
    picks = np.random.default_rng(seed).choice(len(users), size=requests)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        store = TraceStore(Path(tmp) / "bench.duckdb")
        for label, tracer in (("traced", Tracer(store)), ("untraced", Tracer())):
            pipeline = stack.pipeline(tracer)
            for u in picks[:50]:  # warm caches and lazy imports
                pipeline.recommend(RecommendRequest(user_id=str(users.ids[u]), k=10))
            load_before = _load()
            ms = np.empty(requests)
            for j, u in enumerate(picks):
                t0 = time.perf_counter_ns()
                pipeline.recommend(RecommendRequest(user_id=str(users.ids[u]), k=10))
                ms[j] = (time.perf_counter_ns() - t0) / 1e6
            metrics = _percentiles(ms) | {
                "requests": requests,
                "target_p99_ms": 10.0,
                "meets_target": bool(np.percentile(ms, 99) < 10.0),
                "loadavg_1m_before": load_before,
                "loadavg_1m_after": _load(),
            }
            rows.append(
                row("serve", DATASET, f"in-process pipeline, {label}, k=10, full catalog, itemknn+pop, no LLM", metrics)
            )
        store.close()
    return rows


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _drive(url: str, users: list[str], rate: float, duration: float, max_in_flight: int) -> dict[str, Any]:
    import httpx

    n = int(rate * duration)
    latencies = np.full(n, np.nan)
    errors = 0
    skipped = 0
    in_flight = 0
    limits = httpx.Limits(max_connections=max_in_flight, max_keepalive_connections=max_in_flight)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=10.0) as client:
        for u in users[:100]:  # warm-up, not measured
            await client.post("/v1/recommend", json={"user_id": u, "k": 10})

        async def one(j: int, scheduled: float) -> None:
            nonlocal errors, in_flight
            try:
                r = await client.post("/v1/recommend", json={"user_id": users[j % len(users)], "k": 10})
                if r.status_code == 200:
                    latencies[j] = (time.perf_counter() - scheduled) * 1e3
                else:
                    errors += 1
            except Exception:
                errors += 1
            finally:
                in_flight -= 1

        start = time.perf_counter()
        tasks = []
        for j in range(n):
            scheduled = start + j / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if in_flight >= max_in_flight:  # bounded: count what the generator could not send
                skipped += 1
                continue
            in_flight += 1
            tasks.append(asyncio.create_task(one(j, scheduled)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    ok = latencies[~np.isnan(latencies)]
    return {"sent": n - skipped, "ok": len(ok), "errors": errors, "skipped": skipped, "elapsed": elapsed, "ms": ok}


def over_http(rate: float, duration: float, seed: int, max_in_flight: int) -> dict[str, Any]:
    from coachrec import datasets

    users = datasets.load(DATASET).users.ids
    picks = [str(users[i]) for i in np.random.default_rng(seed).choice(len(users), size=1000)]
    port = _free_port()
    with tempfile.TemporaryDirectory() as tmp:
        cli = Path(sys.executable).with_name("coachrec")
        proc = subprocess.Popen(
            [str(cli), "serve", "--port", str(port), "--db", str(Path(tmp) / "bench.duckdb")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            _wait_healthy(f"http://127.0.0.1:{port}", proc)
            load_before = _load()
            res = asyncio.run(_drive(f"http://127.0.0.1:{port}", picks, rate, duration, max_in_flight))
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    ms = res.pop("ms")
    metrics = _percentiles(ms) | {
        "rate_target_rps": rate,
        "throughput_rps": round(res["ok"] / res["elapsed"], 1),
        "requests_ok": res["ok"],
        "errors": res["errors"],
        "not_sent_in_flight_cap": res["skipped"],
        "target_p99_ms": 25.0,
        "meets_target": bool(len(ms) and np.percentile(ms, 99) < 25.0 and not res["errors"]),
        "loadavg_1m_before": load_before,
        "loadavg_1m_after": _load(),
    }
    return row(
        "serve",
        DATASET,
        (
            f"HTTP POST /v1/recommend on loopback, k=10, traced, open loop at {rate:g} req/s for {duration:g} s "
            f"(httpx async, <= {max_in_flight} in flight), latency from scheduled send time"
        ),
        metrics,
    )


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout: float = 180.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"coachrec serve exited with {proc.returncode} before becoming healthy")
        try:
            if httpx.get(f"{url}/health", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"coachrec serve not healthy after {timeout:.0f} s")


def bench_serve(
    requests: int = typer.Option(2000, help="in-process requests per configuration"),
    rate: float = typer.Option(200.0, help="HTTP request rate (requests per second)"),
    duration: float = typer.Option(10.0, help="HTTP load duration in seconds"),
    max_in_flight: int = typer.Option(256, help="load generator's bound on concurrent requests"),
    http: bool = typer.Option(True, help="also benchmark over HTTP"),
    seed: int = typer.Option(0, help="seed of the user sample"),
    understanding: bool = typer.Option(
        True, help="also the request-understanding stages, with and without context (serve_understanding)"
    ),
) -> None:
    """Pipeline latency in process (p50/p99) and over HTTP at a fixed rate (throughput, p50/p99)."""
    rows = in_process(requests, seed)
    if understanding:
        from coachrec_bench.serve_understanding import understanding_rows

        rows += understanding_rows(min(requests, 300), seed)
    if http:
        rows.append(over_http(rate, duration, seed, max_in_flight))
    for r in rows:
        typer.echo(f"{r['protocol']}\n    {r['metrics']}")
    typer.echo(f"wrote {write('serve', rows)}")
