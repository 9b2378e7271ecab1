"""`coachrec bench serve`: request latency of the serving pipeline, in process and over HTTP.

In process: the full pipeline (two retrievers, blend, constraints, MMR, guardrail, reasons; no
LLM), k=10 over the whole catalog, for random known users, with tracing to a DuckDB file and
without. Over HTTP: a `coachrec serve` subprocess on loopback driven by an open-loop generator at
a fixed rate; latency runs from each request's *scheduled* send time, so a stalled server cannot
hide its queueing delay (no coordinated omission). The machine's load average is recorded with
every row: other processes share these cores.

Closed loop (`--wrk`): Debian's `wrk` at 1, 4 and 16 connections against each server setting in
turn, every request traced: the code before this work (`--before-src`, a source tree such as
`git archive <commit> src | tar -x`), this code in one process, and with `--workers N` worker
processes over one store process; each server serves the same saved stack (`--model-path`),
and `/health` after the run says how many spans were written, dropped or failed.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
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


WRK_SCRIPT = """
local n = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-API-Key"] = os.getenv("COACHREC_BENCH_KEY") or ""
local users = {%s}
request = function()
  n = n + 1
  return wrk.format(nil, "/v1/recommend", nil, '{"user_id":"' .. users[n %% #users + 1] .. '","k":10}')
end
"""
BENCH_KEY = "bench-serve-key-0123456789"
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text.strip())
    if m is None:
        raise ValueError(f"cannot read a wrk latency from {text!r}")
    return round(float(m.group(1)) * _UNITS[m.group(2)], 3)


def parse_wrk(out: str) -> dict[str, Any]:
    """Requests/s, p50/p90/p99 (ms), requests, non-2xx and socket errors from `wrk --latency` output."""
    metrics: dict[str, Any] = {}
    for q in ("50", "90", "99"):
        m = re.search(rf"^\s+{q}%\s+(\S+)", out, re.M)
        if m:
            metrics[f"p{q}_ms"] = _ms(m.group(1))
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    metrics["throughput_rps"] = float(m.group(1)) if m else 0.0
    m = re.search(r"(\d+) requests in", out)
    metrics["requests"] = int(m.group(1)) if m else 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    metrics["non_2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    metrics["socket_errors"] = sum(int(g) for g in m.groups()) if m else 0
    return metrics


def _start(args: list[str], env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    _wait_healthy(f"http://127.0.0.1:{port}", proc)
    return proc


def _stop(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def closed_loop(
    connections: list[int], duration: float, workers: int, before_src: Path | None, seed: int
) -> list[dict[str, Any]]:
    """wrk rows for each server setting x connection count (see the module docstring)."""
    import httpx

    from coachrec.app import resolve_stack

    wrk = shutil.which("wrk")
    if wrk is None:
        raise RuntimeError("wrk is not installed: apt-get install -y wrk (Debian's package)")
    from coachrec import datasets

    users = datasets.load(DATASET).users.ids
    picks = [str(users[i]) for i in np.random.default_rng(seed).choice(len(users), size=500)]
    cli = str(Path(sys.executable).with_name("coachrec"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        stack_dir = resolve_stack(dataset=DATASET).save(Path(tmp) / "stack")
        script = Path(tmp) / "recommend.lua"
        script.write_text(WRK_SCRIPT % ", ".join(json.dumps(u) for u in picks))
        settings: list[tuple[str, list[str], dict[str, str]]] = []
        base_env = os.environ | {"OMP_NUM_THREADS": "1", "COACHREC_API_KEYS": f"bench:*:{BENCH_KEY}"}
        if before_src is not None:
            before_env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(before_src)}
            settings.append((f"before ({before_src}), 1 process", [], before_env))
        settings.append(("this code, 1 process", [], base_env))
        if workers > 1:
            settings.append((f"this code, {workers} workers + store process", ["--workers", str(workers)], base_env))
        for label, extra, env in settings:
            port = _free_port()
            db = Path(tmp) / f"db-{port}" / "t.duckdb"
            args = [cli, "serve", "--port", str(port), "--model-path", str(stack_dir), "--db", str(db), *extra]
            proc = _start(args, env, port)
            try:
                url = f"http://127.0.0.1:{port}"
                for u in picks[:50]:  # warm-up, not measured
                    httpx.post(f"{url}/v1/recommend", json={"user_id": u, "k": 10}, headers={"X-API-Key": BENCH_KEY})
                for c in connections:
                    load_before = _load()
                    command = [wrk, "-t1", f"-c{c}", f"-d{duration:g}s", "--latency", "--timeout", "5s"]
                    done = subprocess.run(
                        [*command, "-s", str(script), url],
                        capture_output=True,
                        text=True,
                        timeout=duration + 60,
                        env=env | {"COACHREC_BENCH_KEY": BENCH_KEY},
                    )
                    health = httpx.get(f"{url}/health", timeout=30).json()
                    spans = health.get("spans", {})
                    metrics = parse_wrk(done.stdout) | {
                        "connections": c,
                        "spans_written": spans.get("written"),
                        "spans_dropped": spans.get("dropped"),
                        "spans_failed": spans.get("failed"),
                        "spans_queued": spans.get("queued"),
                        "loadavg_1m_before": load_before,
                        "loadavg_1m_after": _load(),
                    }
                    rows.append(
                        row(
                            "serve",
                            DATASET,
                            f"wrk closed loop, {c} connection(s), {duration:g} s, 1 thread, HTTP POST /v1/recommend "
                            f"k=10 for 500 known users in turn, every request traced; server: {label}, "
                            "same saved stack (the default: item-kNN + popularity, text blend)",
                            metrics,
                        )
                    )
            finally:
                _stop(proc)
    return rows


def _existing_rows() -> list[dict[str, Any]]:
    from coachrec_bench.results import results_dir

    path = results_dir() / "serve.json"
    return list(json.loads(path.read_text())) if path.exists() else []


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
    wrk: bool = typer.Option(False, "--wrk", help="closed-loop wrk rows at 1/4/16 connections per server setting"),
    wrk_only: bool = typer.Option(
        False, "--wrk-only", help="only the wrk rows; the file's other rows are kept as they are"
    ),
    wrk_duration: float = typer.Option(8.0, "--wrk-duration", min=1.0, max=120.0, help="seconds per wrk run"),
    workers: int = typer.Option(2, "--workers", min=1, help="worker processes of the multi-process setting"),
    before_src: Path | None = typer.Option(
        None, "--before-src", help="an older coachrec source tree (its src/) to measure in the same run"
    ),
) -> None:
    """Pipeline latency in process (p50/p99) and over HTTP at a fixed rate (throughput, p50/p99);
    with --wrk, closed-loop rows per server setting."""
    rows = [] if wrk_only else in_process(requests, seed)
    if understanding and not wrk_only:
        from coachrec_bench.serve_understanding import understanding_rows

        rows += understanding_rows(min(requests, 300), seed)
    if http and not wrk_only:
        rows.append(over_http(rate, duration, seed, max_in_flight))
    if wrk or wrk_only:
        rows += closed_loop([1, 4, 16], wrk_duration, workers, before_src, seed)
    if wrk_only:  # keep the file's other rows
        rows = [r for r in _existing_rows() if not r["protocol"].startswith("wrk closed loop")] + rows
    for r in rows:
        typer.echo(f"{r['protocol']}\n    {r['metrics']}")
    typer.echo(f"wrote {write('serve', rows)}")
