"""Live spans: the object a `with tracer.span(...)` block works with.

`Span` records; `NoopSpan` is what callers get when tracing is off or the trace was sampled out,
so instrumented code runs unchanged at the cost of a method call. A sampled-out root is a
`SampledOutSpan`: it still enters the context, so its children know the trace is not recorded
(instead of each starting a trace of its own) and it still carries the request id.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

from coachrec.tracing.context import current
from coachrec.tracing.jsonenc import to_json
from coachrec.tracing.model import SpanKind, SpanRecord, SpanStatus, new_span_id

_time_ns = time.time_ns
_perf_ns = time.perf_counter_ns
_new_record = tuple.__new__
_OK = SpanStatus.OK.value
_ERROR = SpanStatus.ERROR.value
_UNSET = SpanStatus.UNSET.value


class TraceState:
    """What every span of one trace shares."""

    __slots__ = ("request_id", "trace_id", "user_id")

    def __init__(self, trace_id: str, user_id: str | None, request_id: str | None) -> None:
        self.trace_id = trace_id
        self.user_id = user_id
        self.request_id = request_id


class Span:
    """A recording span. Use it as a context manager; it is recorded when the block exits.

    An exception leaving the block sets status ERROR with the exception as the error, and is
    re-raised. Without an exception the status is OK unless `set_status` said otherwise.
    """

    __slots__ = (
        "_attributes",
        "_cost",
        "_emit",
        "_ended",
        "_error",
        "_input",
        "_input_tokens",
        "_output",
        "_output_tokens",
        "_status",
        "_t0",
        "_token",
        "_trace",
        "kind",
        "name",
        "parent_span_id",
        "span_id",
        "start_ns",
    )

    def __init__(
        self,
        emit: Callable[[SpanRecord], None],
        trace: TraceState,
        parent_span_id: str | None,
        name: str,
        kind: str,
        input: Any,
        attributes: Mapping[str, Any] | None,
    ) -> None:
        self._emit = emit
        self._trace = trace
        self.span_id = new_span_id()
        self.parent_span_id = parent_span_id
        self.name = name
        self.kind = kind
        self._input = None if input is None else to_json(input)
        self._output: str | None = None
        self._attributes = dict(attributes) if attributes else None
        self._status = _UNSET
        self._error: str | None = None
        self._input_tokens: int | None = None
        self._output_tokens: int | None = None
        self._cost: float | None = None
        self._token: Any = None
        self._ended = False
        self.start_ns = 0
        self._t0 = 0

    # -- identity ----------------------------------------------------------------------------

    @property
    def trace_id(self) -> str:
        return self._trace.trace_id

    @property
    def user_id(self) -> str | None:
        return self._trace.user_id

    @property
    def request_id(self) -> str | None:
        return self._trace.request_id

    @property
    def recording(self) -> bool:
        return True

    # -- recording ---------------------------------------------------------------------------

    def set_input(self, value: Any) -> None:
        """Record what went in; serialized now, so later mutation of `value` does not leak in."""
        self._input = to_json(value)

    def set_output(self, value: Any) -> None:
        """Record what came out; serialized now."""
        self._output = to_json(value)

    def set_attribute(self, key: str, value: Any) -> None:
        attributes = self._attributes
        if attributes is None:
            self._attributes = {key: value}
        else:
            attributes[key] = value

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        if self._attributes is None:
            self._attributes = dict(attributes)
        else:
            self._attributes.update(attributes)

    def set_tokens(self, input: int | None = None, output: int | None = None) -> None:
        """Token usage of an LLM step (adds to what was recorded before)."""
        if input is not None:
            self._input_tokens = (self._input_tokens or 0) + int(input)
        if output is not None:
            self._output_tokens = (self._output_tokens or 0) + int(output)

    def set_cost(self, cost: float) -> None:
        """Money spent by this step, in the deployment's currency unit (adds up)."""
        self._cost = (self._cost or 0.0) + float(cost)

    def set_status(self, status: SpanStatus | str, error: str | None = None) -> None:
        """Mark the step OK or ERROR explicitly, e.g. a guardrail that rejected an item."""
        self._status = SpanStatus(status).value
        if error is not None:
            self._error = error

    def record_exception(self, exc: BaseException) -> None:
        """Mark the span failed by `exc` without raising it (for handled failures)."""
        self._status = _ERROR
        self._error = f"{type(exc).__name__}: {exc}"

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> Span:
        self._token = current.set(self)
        self.start_ns = _time_ns()
        self._t0 = _perf_ns()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # Wall-clock start plus a monotonic duration: NTP steps cannot make a span negative.
        end_ns = self.start_ns + (_perf_ns() - self._t0)
        current.reset(self._token)
        if exc_type is not None:
            self._status = _ERROR
            self._error = f"{exc_type.__name__}: {exc}"
        elif self._status == _UNSET:
            self._status = _OK
        self._finish(end_ns)

    def _finish(self, end_ns: int) -> None:
        if self._ended:
            raise RuntimeError(f"span {self.name!r} ({self.span_id}) ended twice")
        self._ended = True
        trace = self._trace
        attributes = self._attributes
        self._emit(
            _new_record(
                SpanRecord,
                (
                    trace.trace_id,
                    self.span_id,
                    self.parent_span_id,
                    self.name,
                    self.kind,
                    self.start_ns,
                    end_ns,
                    self._status,
                    self._error,
                    self._input,
                    self._output,
                    None if attributes is None else to_json(attributes),
                    self._input_tokens,
                    self._output_tokens,
                    self._cost,
                    trace.user_id,
                    trace.request_id,
                ),
            )
        )

    def __repr__(self) -> str:
        return f"Span({self.name!r}, kind={self.kind}, trace_id={self.trace_id}, span_id={self.span_id})"


class NoopSpan:
    """Accepts the whole `Span` API and records nothing."""

    __slots__ = ()

    trace_id: str | None = None
    span_id: str | None = None
    parent_span_id: str | None = None
    user_id: str | None = None
    request_id: str | None = None
    recording = False

    def set_input(self, value: Any) -> None:
        pass

    def set_output(self, value: Any) -> None:
        pass

    def set_attribute(self, key: str, value: Any) -> None:
        pass

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        pass

    def set_tokens(self, input: int | None = None, output: int | None = None) -> None:
        pass

    def set_cost(self, cost: float) -> None:
        pass

    def set_status(self, status: SpanStatus | str, error: str | None = None) -> None:
        pass

    def record_exception(self, exc: BaseException) -> None:
        pass

    def __enter__(self) -> NoopSpan:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


NOOP_SPAN = NoopSpan()


class SampledOutSpan(NoopSpan):
    """The root of a trace the sampler skipped: marks the context so children are skipped too."""

    __slots__ = ("_token", "request_id", "user_id")

    def __init__(self, user_id: str | None, request_id: str | None) -> None:
        self.user_id = user_id
        self.request_id = request_id
        self._token: Any = None

    def __enter__(self) -> SampledOutSpan:
        self._token = current.set(self)
        return self

    def __exit__(self, *exc: object) -> None:
        current.reset(self._token)


def kind_value(kind: SpanKind | str) -> str:
    """The stored string of a kind, with a clear error for an unknown one."""
    if kind.__class__ is SpanKind:
        return kind.value
    try:
        return SpanKind(kind).value
    except ValueError:
        raise ValueError(f"unknown span kind {kind!r}; use one of {[k.value for k in SpanKind]}") from None
