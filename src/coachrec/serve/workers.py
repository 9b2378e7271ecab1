"""Several HTTP worker processes, one store process: throughput with every request traced.

DuckDB lets one process write a file, so the traces and the feedback of N workers go to one
**store process** that owns both files (`TraceStore` and `FeedbackLog`, as a single-process server
would) and answers over a private Unix socket (`multiprocessing.connection`, with a random
authkey, in a 0700 folder):

- spans: each worker queues finished spans in its own bounded `BatchWriter` and ships them in
  batches (one message per batch: the request path never waits on the socket); the store process
  writes them through its own writer, batching across workers;
- feedback: `append` is a round trip that returns once the store process committed, so an
  acknowledged event is on disk exactly as with one process;
- queries (traces, span metrics, the dashboard's SQL) are calls answered by the store process,
  so users see one store with the schema and queries as before;
- other single-writer files (the review queue and golden sets) are `Shared` objects the store
  process opens too; a worker reaches each through a `Remote` proxy of its allowed calls.

The parent loads the stack once and starts the store process and the workers with `spawn`
(polars' thread pool does not survive a fork): each worker receives the stack pickled, builds its
pipeline, and serves the one listening socket the parent opened. Every child dies with the parent
(PR_SET_PDEATHSIG). `coachrec serve --workers N` runs this.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Client, Connection, Listener
from pathlib import Path
from typing import Any

from coachrec.serve.feedback import FeedbackEvent, FeedbackLog, feedback_path_for
from coachrec.serve.service import DEFAULT_RETENTION, Service
from coachrec.serve.stack import Stack
from coachrec.tracing import Tracer, TraceStore
from coachrec.tracing.model import SpanRecord
from coachrec.tracing.store import Retention
from coachrec.tracing.writer import BatchWriter, WriterStats

log = logging.getLogger(__name__)

_STORE_CALLS = frozenset(
    {
        "flush", "stats", "trace", "trace_id_for_request", "spans", "traces", "count", "span_metrics",
        "add_span_metrics", "evaluations", "add_evaluation", "export_parquet", "apply_retention",
    }
)  # fmt: skip
_FEEDBACK_CALLS = frozenset({"append", "append_once", "events", "engaged_items", "count"})


@dataclass(frozen=True)
class Shared:
    """An object the store process opens beside the trace store, and the calls workers may make.

    `opener(trace store path)` builds it (a module-level function or a partial of one: it is
    pickled into the store process); it is closed with the store process if it has `close`."""

    opener: Callable[[str], Any]
    calls: frozenset[str]


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM this process when its parent dies (no orphan keeps the DuckDB lock)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:  # not Linux: the parent's signal handlers still stop the children
        log.debug("prctl(PR_SET_PDEATHSIG) unavailable")


# -- the store process -----------------------------------------------------------------------


class StoreServer:
    """Owns the trace store and the feedback log; serves worker calls, one thread per connection."""

    def __init__(
        self,
        store: TraceStore,
        feedback: FeedbackLog,
        shared: dict[str, tuple[Any, frozenset[str]]] | None = None,
    ) -> None:
        self.store = store
        self.feedback = feedback
        self.shared = shared or {}
        """name -> (object, the calls allowed on it)."""

    def handle(self, conn: Connection) -> None:
        while True:
            try:
                target, name, args, kwargs = conn.recv()
            except (EOFError, OSError):
                return
            try:
                result: Any = ("ok", self._call(target, name, args, kwargs))
            except Exception as exc:  # the worker re-raises it; the store process carries on
                result = ("error", exc)
            try:
                conn.send(result)
            except Exception as exc:  # an exception that does not pickle
                conn.send(("error", RuntimeError(f"{type(result[1]).__name__}: {result[1]} ({exc})")))

    def _call(self, target: str, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if target == "spans":
            return sum(bool(self.store.submit(record)) for record in args[0])
        if target == "sql":  # the dashboard's read queries on the store's cursor
            return self.store._cursor().execute(args[0], list(args[1])).fetchall()
        if target == "attr":
            attrs = {"store.path": self.store.path, "feedback.path": self.feedback.path}
            if name == "store.deleted":
                return self.store.deleted
            if name in attrs:
                return attrs[name]
        if target == "store" and name in _STORE_CALLS:
            return getattr(self.store, name)(*args, **kwargs)
        if target == "feedback" and name in _FEEDBACK_CALLS:
            return getattr(self.feedback, name)(*args, **kwargs)
        if target in self.shared and name in self.shared[target][1]:
            return getattr(self.shared[target][0], name)(*args, **kwargs)
        raise ValueError(f"the store process has no call {target}.{name}")


def _store_main(
    db: str | None,
    retention: Retention | None,
    max_wait: float,
    address: str,
    authkey: bytes,
    ready: Any,
    shared: dict[str, Shared],
) -> None:
    _die_with_parent()
    store = TraceStore(db, flush_interval=0.2, retention=retention, max_wait=max_wait)
    feedback = FeedbackLog(feedback_path_for(store.path))
    opened = {name: (s.opener(store.path), s.calls) for name, s in shared.items()}
    server = StoreServer(store, feedback, opened)
    listener = Listener(address, family="AF_UNIX", authkey=authkey)

    def stop(*_: object) -> None:
        store.close()  # queued spans reach disk; feedback already is
        feedback.close()
        for obj, _calls in opened.values():
            close = getattr(obj, "close", None)
            if close is not None:
                close()
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    ready.set()
    while True:
        try:
            conn = listener.accept()
        except Exception:  # a client that failed the authkey handshake
            log.warning("store process refused a connection", exc_info=True)
            continue
        threading.Thread(target=server.handle, args=(conn,), daemon=True).start()


# -- the worker side -------------------------------------------------------------------------


class _Rpc:
    """Calls to the store process, one connection per thread."""

    def __init__(self, address: str, authkey: bytes) -> None:
        self.address = address
        self.authkey = authkey
        self._local = threading.local()

    def call(self, target: str, name: str, *args: Any, **kwargs: Any) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = Client(self.address, family="AF_UNIX", authkey=self.authkey)
        conn.send((target, name, args, kwargs))
        status, value = conn.recv()
        if status == "error":
            raise value
        return value


class Remote:
    """A worker's handle on a `Shared` object of the store process: `remote.call(name, ...)`
    runs `obj.name(...)` there and returns its result (or raises its exception here)."""

    def __init__(self, rpc: _Rpc, target: str) -> None:
        self._rpc = rpc
        self.target = target

    def call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        return self._rpc.call(self.target, name, *args, **kwargs)


class _RemoteResult:
    def __init__(self, rows: list[tuple[Any, ...]]) -> None:
        self._rows = rows

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self._rows

    def fetchone(self) -> tuple[Any, ...] | None:
        return self._rows[0] if self._rows else None


class _RemoteCursor:
    def __init__(self, rpc: _Rpc) -> None:
        self._rpc = rpc

    def execute(self, sql: str, params: Sequence[Any] = ()) -> _RemoteResult:
        return _RemoteResult(self._rpc.call("sql", "", sql, list(params)))


def _forward(name: str) -> Callable[..., Any]:
    def call(self: RemoteTraceStore, *args: Any, **kwargs: Any) -> Any:
        return self._rpc.call("store", name, *args, **kwargs)

    call.__name__ = name
    return call


class RemoteTraceStore(TraceStore):
    """A worker's view of the store process's `TraceStore`: spans shipped in batches, every
    query answered there. Nothing is opened locally."""

    def __init__(self, rpc: _Rpc, *, max_queue: int = 100_000, max_wait: float = 0.5) -> None:
        self._rpc = rpc
        self.path = str(rpc.call("attr", "store.path"))
        self.read_only = False
        self.retention = None
        self._closed = False
        self._shipper: BatchWriter[SpanRecord] = BatchWriter(
            self._ship, max_queue=max_queue, batch_size=2_000, flush_interval=0.05, max_wait=max_wait,
            name="coachrec-span-shipper",
        )  # fmt: skip
        self.submit = self._shipper.submit  # type: ignore[method-assign]

    def _ship(self, batch: Sequence[SpanRecord]) -> None:
        self._rpc.call("spans", "", list(batch))

    def flush(self, timeout: float | None = None) -> bool:
        shipped = self._shipper.flush(timeout)
        return bool(self._rpc.call("store", "flush", timeout)) and shipped

    def stats(self) -> WriterStats:
        """The store process's counters with this worker's shipping folded in."""
        local, remote = self._shipper.stats(), self._rpc.call("store", "stats")
        latest = [t for t in (local.last_failure_ns, remote.last_failure_ns) if t is not None]
        dropped = [t for t in (local.last_drop_ns, remote.last_drop_ns) if t is not None]
        return WriterStats(
            submitted=remote.submitted + local.queued + local.dropped + local.failed,
            written=remote.written,
            dropped=remote.dropped + local.dropped,
            failed=remote.failed + local.failed,
            queued=remote.queued + local.queued,
            blocked=remote.blocked + local.blocked,
            last_error=local.last_error or remote.last_error,
            last_failure_ns=max(latest) if latest else None,
            last_drop_ns=max(dropped) if dropped else None,
        )

    @property
    def deleted(self) -> int:
        return int(self._rpc.call("attr", "store.deleted"))

    def _cursor(self) -> Any:
        return _RemoteCursor(self._rpc)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._shipper.close()

    trace = _forward("trace")
    trace_id_for_request = _forward("trace_id_for_request")
    spans = _forward("spans")
    traces = _forward("traces")
    count = _forward("count")
    span_metrics = _forward("span_metrics")
    add_span_metrics = _forward("add_span_metrics")
    evaluations = _forward("evaluations")
    add_evaluation = _forward("add_evaluation")
    export_parquet = _forward("export_parquet")
    apply_retention = _forward("apply_retention")


class RemoteFeedbackLog(FeedbackLog):
    """A worker's view of the store process's `FeedbackLog`: `append` returns after its commit there."""

    def __init__(self, rpc: _Rpc) -> None:
        self._rpc = rpc
        self.path = str(rpc.call("attr", "feedback.path"))

    def append(self, events: Sequence[FeedbackEvent]) -> list[str]:
        return list(self._rpc.call("feedback", "append", list(events)))

    def append_once(self, events: Sequence[FeedbackEvent], idempotency_key: str | None) -> tuple[list[str], bool]:
        ids, replayed = self._rpc.call("feedback", "append_once", list(events), idempotency_key)
        return list(ids), bool(replayed)

    def events(self, request_id: str | None = None) -> Any:
        return self._rpc.call("feedback", "events", request_id)

    def engaged_items(self, request_id: str, relevance: Any) -> list[str]:
        return list(self._rpc.call("feedback", "engaged_items", request_id, relevance))

    def count(self) -> int:
        return int(self._rpc.call("feedback", "count"))

    def close(self) -> None:
        pass  # the store process owns the file


def _worker_main(
    sock: socket.socket,
    stack: Stack,
    app_factory: Callable[[Service, dict[str, Remote]], Any],
    address: str,
    authkey: bytes,
    sample_rate: float,
    max_wait: float,
    shared: Sequence[str],
) -> None:
    import uvicorn

    _die_with_parent()
    rpc = _Rpc(address, authkey)
    store = RemoteTraceStore(rpc, max_wait=max_wait)
    feedback = RemoteFeedbackLog(rpc)
    pipeline = stack.pipeline(Tracer(store, sample_rate=sample_rate))
    service = Service(pipeline, store, feedback, source=stack.source or stack.describe())
    service.closers.append(pipeline.close)
    pipeline.warm()
    remotes = {name: Remote(rpc, name) for name in shared}
    config = uvicorn.Config(app_factory(service, remotes), log_level="warning", access_log=False)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        service.close()


def serve_workers(
    stack: Stack,
    app_factory: Callable[[Service, dict[str, Remote]], Any],
    *,
    host: str,
    port: int,
    workers: int,
    db: str | Path | None = None,
    sample_rate: float = 1.0,
    retention: Retention | None = DEFAULT_RETENTION,
    max_wait: float = 0.5,
    shared: dict[str, Shared] | None = None,
) -> None:
    """Serve `stack` with `workers` HTTP processes over one store process until SIGTERM/SIGINT.
    `app_factory(service, remotes)` builds each worker's app from its `Service` and a `Remote` per
    `shared` object; it is pickled, so a module-level function (or a `functools.partial` of one)."""
    shared = dict(shared or {})
    reserved = {"spans", "sql", "attr", "store", "feedback"} & set(shared)
    if reserved:
        raise ValueError(f"shared object names {sorted(reserved)} are reserved")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    stopping = threading.Event()  # handlers first: a SIGTERM during start-up still cleans up

    def stop(*_: object) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    ctx = multiprocessing.get_context("spawn")
    folder = tempfile.mkdtemp(prefix="coachrec-store-")  # 0700: only this user reaches the socket
    address = str(Path(folder) / "store.sock")
    authkey = os.urandom(32)
    ready = ctx.Event()
    store_proc = ctx.Process(
        target=_store_main,
        args=(None if db is None else str(db), retention, max_wait, address, authkey, ready, shared),
        name="coachrec-store",
    )  # fmt: skip
    store_proc.start()
    if not ready.wait(60):
        store_proc.terminate()
        shutil.rmtree(folder, ignore_errors=True)
        raise RuntimeError("the store process did not start within 60 s (is another process holding the file?)")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on accepted sockets whose proto says
    # TCP (checked: with proto 0 the accepted sockets keep Nagle on), as uvicorn's own binding has
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    procs = [
        ctx.Process(
            target=_worker_main,
            args=(sock, stack, app_factory, address, authkey, sample_rate, max_wait, tuple(shared)),
            name=f"coachrec-worker-{n}",
        )
        for n in range(workers)
    ]  # fmt: skip
    for p in procs:
        p.start()
    try:
        while not stopping.wait(0.5):
            dead = [p for p in procs if not p.is_alive()]
            if dead or not store_proc.is_alive():
                log.error("a serving process exited (%s); stopping", [p.name for p in dead] or "store")
                break
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()  # uvicorn finishes in-flight requests and ships queued spans
        for p in procs:
            p.join(30)
        store_proc.terminate()  # writes queued spans, closes both files
        store_proc.join(30)
        sock.close()
        shutil.rmtree(folder, ignore_errors=True)  # the socket file and its folder
