"""An open-loop HTTP/1.1 load generator on raw asyncio streams, for loopback benchmarks.

Request j is due at `start + j / rate` whatever happened to the earlier ones (open loop, as
wrk2 or `oha --qps`); its latency runs from that *scheduled* time to the last byte of the
answer, so time a request spent waiting for the server, or for a free connection, is counted
(no coordinated omission). Requests go over at most `connections` keep-alive connections; a
request with none free waits for one, its clock running. The run is bounded: `rate x duration`
requests, and whatever has not answered `timeout` seconds after the last one was due counts as
an error. The generator is a few hundred lines of Python on one core, far cheaper per request
than an HTTP client library (it writes pre-built requests and reads `Content-Length` bodies);
its own send lateness is reported, so a generator that cannot keep up is visible.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass
class OpenLoopRun:
    rate: float
    due: int
    """Requests scheduled (rate x duration)."""
    ok: int
    errors: int
    """Non-2xx answers, broken connections and requests unanswered by the deadline."""
    elapsed_s: float
    latency_ms: np.ndarray
    """Of the 2xx answers, from the scheduled send time."""
    send_late_ms_p99: float
    """How late the generator itself started requests (p99), before any wait for a connection:
    near 0 unless the generator is starved of CPU."""
    connections_opened: int
    failures: dict[str, int]
    """Errors by kind: an HTTP status, `connect`, `broken` (connection error mid-request), `timeout`."""
    server_cpu_ms_per_ok: float | None = None
    """Set by a caller that can see the server's processes: their CPU time per 2xx answer."""
    generator_cpu_ms_per_request: float | None = None
    """Set by a caller that times this process: the generator's own CPU per scheduled request,
    taken from the same cores as the server's on a one-machine benchmark."""

    @property
    def throughput(self) -> float:
        return self.ok / self.elapsed_s if self.elapsed_s > 0 else 0.0


def request_bytes(host: str, port: int, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    head = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", "Content-Type: application/json",
            f"Content-Length: {len(body)}", *(f"{k}: {v}" for k, v in headers.items())]  # fmt: skip
    return ("\r\n".join(head) + "\r\n\r\n").encode("ascii") + body


async def _answer(reader: asyncio.StreamReader) -> int:
    """Read one response (status line, headers, Content-Length body); its status code."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    if length:
        await reader.readexactly(length)
    return status


async def open_loop(
    host: str,
    port: int,
    requests: Sequence[bytes],
    *,
    rate: float,
    duration: float,
    connections: int = 64,
    timeout: float = 10.0,
) -> OpenLoopRun:
    """Send `requests` (cycled) at `rate` per second for `duration` seconds; see the module docstring."""
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise ValueError(f"the load generator drives loopback servers only, got {host!r}")
    n = max(1, int(rate * duration))
    latency = np.full(n, np.nan)
    late = np.zeros(n)
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    room = asyncio.Semaphore(connections)
    errors = 0
    opened = 0
    failures: Counter[str] = Counter()

    async def one(j: int, due: float) -> None:
        nonlocal errors, opened
        late[j] = (time.perf_counter() - due) * 1e3
        async with room:
            if idle:
                reader, writer = idle.pop()
            else:
                opened += 1
                try:
                    reader, writer = await asyncio.open_connection(host, port)
                except OSError:
                    errors += 1
                    failures["connect"] += 1
                    return
            try:
                writer.write(requests[j % len(requests)])
                status = await _answer(reader)
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
                errors += 1
                failures["broken"] += 1
                writer.close()
                return
            idle.append((reader, writer))
        if 200 <= status < 300:
            latency[j] = (time.perf_counter() - due) * 1e3
        else:
            errors += 1
            failures[str(status)] += 1

    start = time.perf_counter()
    tasks = []
    for j in range(n):
        due = start + j / rate
        wait = due - time.perf_counter()
        if wait > 0:
            await asyncio.sleep(wait)
        tasks.append(asyncio.create_task(one(j, due)))
    deadline = start + n / rate + timeout
    _, pending = await asyncio.wait(tasks, timeout=max(0.0, deadline - time.perf_counter()))
    for task in pending:
        task.cancel()
    errors += len(pending)
    if pending:
        failures["timeout"] += len(pending)
    elapsed = time.perf_counter() - start
    for _, writer in idle:
        writer.close()
    ok = latency[~np.isnan(latency)]
    return OpenLoopRun(
        rate=rate,
        due=n,
        ok=len(ok),
        errors=errors,
        elapsed_s=elapsed,
        latency_ms=ok,
        send_late_ms_p99=float(np.percentile(late, 99)),
        connections_opened=opened,
        failures=dict(failures),
    )
