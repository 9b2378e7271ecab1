"""A batching background writer with a bounded queue.

Callers `submit` finished-span records; one daemon thread hands them to a sink function in
batches. When the queue is full the writer either makes the caller wait for room, at most
`max_wait` seconds (backpressure, the default), or drops the record at once; a record still
without room after the wait is dropped. A caller is never blocked forever. Nothing is dropped
silently: drops and failed records are counted in `stats()` (with the time of the latest) and
logged.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

OnFull = Literal["block", "drop"]


class WriterClosedError(RuntimeError):
    """Raised when a record is submitted to a writer that has been closed."""


@dataclass(frozen=True)
class WriterStats:
    """Counters of a writer. `submitted == written + dropped + failed + queued` at any moment."""

    submitted: int
    written: int
    dropped: int
    failed: int
    queued: int
    blocked: int  # how many submits had to wait for room (backpressure events)
    last_error: str | None
    last_failure_ns: int | None = None
    """When a record last failed to be written (time.time_ns), or None."""
    last_drop_ns: int | None = None
    """When a record was last dropped for want of room, or None."""

    def troubled_since(self, window_s: float) -> bool:
        """Whether a record failed or was dropped in the last `window_s` seconds."""
        since = time.time_ns() - int(window_s * 1e9)
        return any(t is not None and t >= since for t in (self.last_failure_ns, self.last_drop_ns))


class BatchWriter(Generic[T]):
    """Buffer records and write them from a background thread in batches.

    `max_queue` bounds the records held in memory; a batch is written as soon as `batch_size`
    records are waiting or `flush_interval` seconds have passed, whichever is first. `warmup` runs
    first on the writer thread (one-off import costs stay off the first batch's critical path).
    """

    def __init__(
        self,
        sink: Callable[[Sequence[T]], None],
        *,
        max_queue: int = 100_000,
        batch_size: int = 10_000,
        flush_interval: float = 0.5,
        on_full: OnFull = "block",
        max_wait: float = 0.5,
        name: str = "coachrec-writer",
        warmup: Callable[[], object] | None = None,
    ) -> None:
        if on_full not in ("block", "drop"):
            raise ValueError(f"on_full must be 'block' or 'drop', got {on_full!r}")
        if max_queue < 1 or batch_size < 1:
            raise ValueError(f"max_queue and batch_size must be >= 1, got {max_queue}, {batch_size}")
        if flush_interval <= 0:
            raise ValueError(f"flush_interval must be > 0 seconds, got {flush_interval}")
        if not 0 <= max_wait < float("inf"):
            raise ValueError(f"max_wait must be a finite number of seconds >= 0, got {max_wait}")
        self._max_wait = max_wait
        self._sink = sink
        self._max = max_queue
        self._batch = min(batch_size, max_queue)
        self._interval = flush_interval
        self._drop = on_full == "drop"
        self._buf: list[T] = []
        self._lock = threading.Lock()
        self._has_work = threading.Condition(self._lock)
        self._has_room = threading.Condition(self._lock)
        self._progress = threading.Condition(self._lock)
        self._submitted = 0
        self._written = 0
        self._dropped = 0
        self._failed = 0
        self._blocked = 0
        self._taken = 0  # records handed to the sink (written or failed)
        self._flush_wanted = 0
        self._last_error: str | None = None
        self._last_failure_ns: int | None = None
        self._last_drop_ns: int | None = None
        self._closed = False
        self._warmup = warmup
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # -- caller side -------------------------------------------------------------------------

    def submit(self, record: T) -> bool:
        """Queue one record; returns False only when it was dropped (and counted): at once with
        `on_full='drop'`, after waiting `max_wait` seconds for room otherwise."""
        with self._lock:
            if self._closed:
                raise WriterClosedError("the span writer is closed; no more spans can be recorded")
            buf = self._buf
            if len(buf) >= self._max:
                if not self._drop:
                    self._blocked += 1
                    self._has_work.notify()
                    deadline = time.monotonic() + self._max_wait
                    while len(self._buf) >= self._max and not self._closed:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            break
                        self._has_room.wait(remaining)
                    if self._closed:
                        raise WriterClosedError("the span writer closed while waiting for room")
                    buf = self._buf
                if len(buf) >= self._max:
                    self._submitted += 1
                    self._dropped += 1
                    self._last_drop_ns = time.time_ns()
                    if self._dropped == 1 or self._dropped % 10_000 == 0:
                        log.warning("span writer queue full (%d); %d spans dropped so far", self._max, self._dropped)
                    return False
            buf.append(record)
            self._submitted += 1
            if len(buf) == self._batch:
                self._has_work.notify()
        return True

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every record submitted before this call is written (or failed).

        Returns False if `timeout` seconds passed first.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            target = self._submitted - self._dropped
            self._flush_wanted += 1
            self._has_work.notify()
            try:
                while self._taken < target and self._thread.is_alive():
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return False
                    self._progress.wait(remaining)
            finally:
                self._flush_wanted -= 1
            return self._taken >= target

    def close(self, timeout: float | None = 30.0) -> None:
        """Write everything queued, then stop the thread. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._has_work.notify()
            self._has_room.notify_all()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("span writer did not finish within %.1f s; %d spans still queued", timeout, len(self._buf))

    def stats(self) -> WriterStats:
        with self._lock:
            return WriterStats(
                submitted=self._submitted,
                written=self._written,
                dropped=self._dropped,
                failed=self._failed,
                queued=self._submitted - self._dropped - self._taken,
                blocked=self._blocked,
                last_error=self._last_error,
                last_failure_ns=self._last_failure_ns,
                last_drop_ns=self._last_drop_ns,
            )

    @property
    def closed(self) -> bool:
        return self._closed

    # -- writer thread -----------------------------------------------------------------------

    def _run(self) -> None:
        if self._warmup is not None:
            try:
                self._warmup()
            except Exception:  # a failed warm-up only costs time; the first batch reports errors
                log.debug("span writer warm-up failed", exc_info=True)
        while True:
            with self._lock:
                if len(self._buf) < self._batch and not self._closed and not self._flush_wanted:
                    # Less than a batch waiting: give it up to one interval to fill.
                    self._has_work.wait(self._interval)
                batch, self._buf = self._buf, []
                self._has_room.notify_all()
                done = self._closed and not batch
            if batch:
                self._write(batch)
            if done:
                with self._lock:
                    self._progress.notify_all()
                return

    def _write(self, batch: list[T]) -> None:
        """Hand `batch` to the sink; if it fails, each half again, down to single records, so a
        record that cannot be written (a poison record) fails alone and the rest of its batch lands."""
        failed, error = self._sink_all(batch)
        with self._lock:
            self._taken += len(batch)
            self._written += len(batch) - failed
            if failed:
                self._failed += failed
                self._last_error = error
                self._last_failure_ns = time.time_ns()
            self._progress.notify_all()

    def _sink_all(self, batch: list[T]) -> tuple[int, str | None]:
        try:
            self._sink(batch)
            return 0, None
        except Exception as exc:  # the writer thread must survive a failed batch
            if len(batch) == 1:
                error = f"{type(exc).__name__}: {exc}"
                log.error("span writer failed to write a span: %s", error)
                return 1, error
        half = len(batch) // 2
        failed_a, error_a = self._sink_all(batch[:half])
        failed_b, error_b = self._sink_all(batch[half:])
        return failed_a + failed_b, error_b or error_a
