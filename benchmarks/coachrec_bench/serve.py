"""`coachrec bench serve`: request latency of the serving pipeline, in process and over HTTP.

In process: the full pipeline (two retrievers, blend, constraints, MMR, guardrail, reasons; no
LLM), k=10 over the whole catalog, for random known users, with tracing to a DuckDB file and
without. Over HTTP: `coachrec serve` subprocesses on loopback driven by an open-loop generator
(`coachrec_bench.loadgen`) at fixed rates (100, 200, 400, 600 req/s by default) and at the highest
rate each sustains, traced (every request) and untraced (`--sample-rate 0`), each after the same
warm-up; latency runs from each request's *scheduled* send time, so a stalled server cannot hide
its queueing delay (no coordinated omission), and `/health` after each run gives the spans
written, dropped and failed. The machine's load average is recorded with every row: other
processes share these cores.

Closed loop (`--wrk`): Debian's `wrk` at 1, 4 and 16 connections against each server setting in
turn, every request traced: the code before this work (`--before-src`, a source tree such as
`git archive <commit> src | tar -x`), this code in one process, and with `--workers N` worker
processes over one store process; each server serves the same saved stack (`--model-path`),
and `/health` after the run says how many spans were written, dropped or failed.
"""

from __future__ import annotations

import asyncio
import functools
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

from coachrec_bench.loadgen import OpenLoopRun, open_loop, request_bytes
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


def model_cache_rows(users: int, seed: int) -> list[dict[str, Any]]:
    """Scoring one request's history with GRU4Rec and SASRec (as the server does, k irrelevant:
    all items scored) for the `users` longest ml-latest-small histories: without the state cache,
    the same history again (cached), and the history plus one new event (GRU4Rec continues
    from the cached prefix; SASRec's window moves, so it recomputes). Models fitted 1 epoch:
    latency depends on the architecture, not on the weights."""
    from coachrec import datasets
    from coachrec.models import create

    data = datasets.load(DATASET)
    rng = np.random.default_rng(seed)
    rows = []
    for name, extra in (("gru4rec", {"epochs": 1, "threads": 1}), ("sasrec", {"epochs": 1, "threads": 1})):
        model = create(name, dataset=DATASET, **extra).fit(data)
        lengths = np.diff(model._hist_indptr)
        longest = np.argsort(-lengths, kind="stable")[:users]
        histories = [model.user_history(int(u)) for u in longest]
        grown = [np.append(h, rng.integers(0, data.n_items)) for h in histories]
        cache = model.state_cache
        timings: dict[str, np.ndarray] = {}
        runs = (("uncached", histories, None), ("cold cache", histories, cache),
                ("same history, cached", histories, cache), ("one new event", grown, cache))  # fmt: skip
        for label, batch, use in runs:
            model.state_cache = use
            ms = np.empty(len(batch))
            for j, h in enumerate(batch):
                t0 = time.perf_counter_ns()
                model.score([h])
                ms[j] = (time.perf_counter_ns() - t0) / 1e6
            timings[label] = ms
        model.state_cache = cache
        load = _load()
        for label, ms in timings.items():
            metrics = _percentiles(ms) | {
                "requests": len(ms),
                "history_len_min": int(lengths[longest].min()),
                "history_len_max": int(lengths[longest].max()),
                "loadavg_1m": load,
            }
            protocol = (
                f"in-process {name} score of one history (all items), the {users} longest ml-latest-small "
                f"histories, {label}; model fitted 1 epoch (timing only), torch threads 1"
            )
            rows.append(row("serve", DATASET, protocol, metrics))
    return rows


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout: float = 180.0, log: Path | None = None) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            said = log.read_text(errors="replace")[-2000:] if log is not None and log.exists() else ""
            raise RuntimeError(f"coachrec serve exited with {proc.returncode} before becoming healthy\n{said}")
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
    """`coachrec serve ...` in its own process group; its stderr goes to a temporary file that a
    failed start-up quotes."""
    log = Path(tempfile.gettempdir()) / f"coachrec-bench-serve-{port}.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err, env=env, start_new_session=True)
    _wait_healthy(f"http://127.0.0.1:{port}", proc, log=log)
    return proc


def _stop(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def server_settings(
    workers: int, before_src: list[Path], *, untraced: bool = False
) -> list[tuple[str, list[str], dict[str, str]]]:
    """(label, extra `coachrec serve` arguments, environment) of each server to measure: the code
    in each older source tree (`before_src`, every request traced), this code in one process and with
    `workers` worker processes; with `untraced`, this code's settings also with tracing off."""
    base_env = os.environ | {"OMP_NUM_THREADS": "1", "COACHREC_API_KEYS": f"bench:*:{BENCH_KEY}"}
    settings: list[tuple[str, list[str], dict[str, str]]] = []
    for src in before_src:
        before_env = os.environ | {
            "OMP_NUM_THREADS": "1",
            "PYTHONPATH": str(src),
            "COACHREC_API_KEYS": f"bench:*:{BENCH_KEY}",
        }
        settings.append((f"older code ({src}), 1 process, traced", [], before_env))
    ours = [("this code, 1 process", [])]
    if workers > 1:
        ours.append((f"this code, {workers} workers + store process", ["--workers", str(workers)]))
    for label, extra in ours:
        settings.append((f"{label}, traced", extra, base_env))
        if untraced:
            settings.append((f"{label}, untraced", [*extra, "--sample-rate", "0"], base_env))
    return settings


def _drive(pgid: int, port: int, bodies: list[bytes], connections: int, rate: float, seconds: float) -> OpenLoopRun:
    """One open-loop run, with the server's CPU milliseconds per answered request during it."""
    cpu, own = group_cpu_seconds(pgid), time.process_time()
    run = asyncio.run(open_loop("127.0.0.1", port, bodies, rate=rate, duration=seconds, connections=connections))
    run.server_cpu_ms_per_ok = (group_cpu_seconds(pgid) - cpu) * 1e3 / max(1, run.ok)
    run.generator_cpu_ms_per_request = (time.process_time() - own) * 1e3 / max(1, run.due)
    return run


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU seconds of every live process in process group `pgid` (the server, its
    workers and store process), from /proc: the server's own cost, whatever else loads the machine."""
    total = 0
    tick = os.sysconf("SC_CLK_TCK")
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # fields after the name: state ppid pgrp ... utime(11) stime(12)
            total += int(fields[11]) + int(fields[12])
    return total / tick


def _spans(url: str) -> dict[str, Any]:
    import httpx

    spans: dict[str, Any] = httpx.get(f"{url}/health", timeout=30).json().get("spans", {})
    return spans


def _open_loop_row(label: str, run: OpenLoopRun, spans: dict[str, Any], load_before: float, what: str,
                   duration: float, connections: int) -> dict[str, Any]:  # fmt: skip
    ms = run.latency_ms
    metrics = (_percentiles(ms) if len(ms) else {"p50_ms": None, "p99_ms": None, "mean_ms": None}) | {
        "rate_target_rps": run.rate,
        "throughput_rps": round(run.throughput, 1),
        "requests_due": run.due,
        "requests_ok": run.ok,
        "errors": run.errors,
        "error_rate": round(run.errors / run.due, 4),
        "failures": run.failures,
        "generator_late_p99_ms": round(run.send_late_ms_p99, 2),
        "server_cpu_ms_per_request": None if run.server_cpu_ms_per_ok is None else round(run.server_cpu_ms_per_ok, 3),
        "generator_cpu_ms_per_request": None
        if run.generator_cpu_ms_per_request is None
        else round(run.generator_cpu_ms_per_request, 3),
        "connections_opened": run.connections_opened,
        "spans_written": spans.get("written"),
        "spans_dropped": spans.get("dropped"),
        "spans_failed": spans.get("failed"),
        "target_p99_ms": 25.0,
        "meets_target": bool(len(ms) and np.percentile(ms, 99) < 25.0 and not run.errors),
        "loadavg_1m_before": load_before,
        "loadavg_1m_after": _load(),
    }
    protocol = (
        f"open loop {what}, {duration:g} s per rate, <= {connections} keep-alive connections (coachrec_bench.loadgen), "
        "latency from the scheduled send time, HTTP POST /v1/recommend k=10 for 500 known users in turn on loopback; "
        f"server: {label}, same saved stack (the default: item-kNN + popularity, text blend); machine shared with "
        "other jobs (see the load average)"
    )
    return row("serve", DATASET, protocol, metrics)


def sustained(run: OpenLoopRun) -> bool:
    """The server kept up with `run`'s rate: every request answered 2xx, at >= 97% of the rate,
    with p99 under 250 ms (a queue that grows through the run pushes p99 far past that)."""
    return (
        run.errors == 0
        and run.throughput >= 0.97 * run.rate
        and bool(len(run.latency_ms) and np.percentile(run.latency_ms, 99) < 250.0)
    )


def open_loop_rows(
    rates: list[float], duration: float, connections: int, workers: int, before_src: list[Path], seed: int,
    max_rate: bool,
) -> list[dict[str, Any]]:  # fmt: skip
    """Per server setting (traced and untraced): a row per fixed rate, and the highest sustained
    rate (doubling from the highest fixed rate that held, then bisecting 3 times; 5 s runs)."""
    from coachrec import datasets
    from coachrec.app import resolve_stack

    users = datasets.load(DATASET).users.ids
    picks = [str(users[i]) for i in np.random.default_rng(seed).choice(len(users), size=500)]
    cli = str(Path(sys.executable).with_name("coachrec"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        stack_dir = resolve_stack(dataset=DATASET).save(Path(tmp) / "stack")
        for label, extra, env in server_settings(workers, before_src, untraced=True):
            port = _free_port()
            db = Path(tmp) / f"db-{port}" / "t.duckdb"
            proc = _start([cli, "serve", "--port", str(port), "--model-path", str(stack_dir), "--db", str(db), *extra],
                          env, port)  # fmt: skip
            url = f"http://127.0.0.1:{port}"
            bodies = [
                request_bytes("127.0.0.1", port, "/v1/recommend", json.dumps({"user_id": u, "k": 10}).encode(),
                              {"X-API-Key": BENCH_KEY})
                for u in picks
            ]  # fmt: skip

            drive = functools.partial(_drive, proc.pid, port, bodies, connections)
            try:
                drive(50.0, 2.0)  # warm-up, not measured
                best = 0.0
                for rate in rates:
                    load_before = _load()
                    run = drive(rate, duration)
                    rows.append(_open_loop_row(label, run, _spans(url), load_before, f"at {rate:g} req/s", duration,
                                               connections))  # fmt: skip
                    typer.echo(f"{label}: {rate:g} req/s -> {run.throughput:.0f} ok/s, {run.errors} errors")
                    if sustained(run):
                        best = max(best, rate)
                if max_rate:
                    rows.append(_max_rate_row(label, drive, best, url, connections))
            finally:
                _stop(proc)
    return rows


def _max_rate_row(label: str, drive: Any, held: float, url: str, connections: int) -> dict[str, Any]:
    """The highest rate the server sustains (see `sustained`), from `held` (a fixed rate it held)."""
    lo, hi, runs = (held, None, {})
    rate = max(held, 50.0) * 2
    while hi is None and rate <= 4000:
        runs[rate] = drive(rate, 5.0)
        if sustained(runs[rate]):
            lo, rate = rate, rate * 2
        else:
            hi = rate
    if hi is not None and lo > 0:
        for _ in range(3):
            mid = round((lo + hi) / 2)
            runs[mid] = drive(mid, 5.0)
            lo, hi = (mid, hi) if sustained(runs[mid]) else (lo, mid)
    load_before = _load()
    best = drive(lo, 5.0) if lo > 0 else runs[min(runs)]
    what = f"at the highest sustained rate ({lo:g} req/s; tried {sorted(runs)})" if lo else "no rate sustained"
    return _open_loop_row(label, best, _spans(url), load_before, what, 5.0, connections)


def closed_loop(
    connections: list[int], duration: float, workers: int, before_src: list[Path], seed: int
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
        for label, extra, env in server_settings(workers, before_src):
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
    rates: str = typer.Option("100,200,400,600", help="open-loop rates (requests per second), comma-separated"),
    duration: float = typer.Option(8.0, min=1.0, max=120.0, help="seconds of open-loop load per rate"),
    connections: int = typer.Option(64, min=1, max=1024, help="the open-loop generator's keep-alive connections"),
    max_rate: bool = typer.Option(True, help="also search the highest sustained open-loop rate per server"),
    http: bool = typer.Option(True, help="also benchmark over HTTP (open loop)"),
    model_cache: bool = typer.Option(
        True, help="also GRU4Rec/SASRec one-history scoring with and without the state cache"
    ),
    seed: int = typer.Option(0, help="seed of the user sample"),
    understanding: bool = typer.Option(
        True, help="also the request-understanding stages, with and without context (serve_understanding)"
    ),
    wrk: bool = typer.Option(False, "--wrk", help="closed-loop wrk rows at 1/4/16 connections per server setting"),
    http_only: bool = typer.Option(
        False, "--http-only", help="only the HTTP rows (open loop, and wrk with --wrk); the file's other rows are kept"
    ),
    wrk_duration: float = typer.Option(8.0, "--wrk-duration", min=1.0, max=120.0, help="seconds per wrk run"),
    workers: int = typer.Option(2, "--workers", min=1, help="worker processes of the multi-process setting"),
    before_src: list[Path] = typer.Option(
        [], "--before-src", help="an older coachrec source tree (its src/) to measure in the same run (repeatable)"
    ),
) -> None:
    """Pipeline latency in process (p50/p99); over HTTP, open-loop rows at fixed rates and the
    highest sustained rate per server setting, traced and untraced; with --wrk, closed-loop rows."""
    fixed = [float(r) for r in rates.split(",") if r.strip()]
    rows = [] if http_only else in_process(requests, seed)
    if understanding and not http_only:
        from coachrec_bench.serve_understanding import understanding_rows

        rows += understanding_rows(min(requests, 300), seed)
    if model_cache and not http_only:
        rows += model_cache_rows(100, seed)
    if http:
        rows += open_loop_rows(fixed, duration, connections, workers, before_src, seed, max_rate)
    if wrk:
        rows += closed_loop([1, 4, 16], wrk_duration, workers, before_src, seed)
    if http_only:  # keep the file's other rows
        replaced = (("open loop", "HTTP POST") if http else ()) + (("wrk closed loop",) if wrk else ())
        rows = [r for r in _existing_rows() if not r["protocol"].startswith(replaced)] + rows
    for r in rows:
        typer.echo(f"{r['protocol']}\n    {r['metrics']}")
    typer.echo(f"wrote {write('serve', rows)}")
