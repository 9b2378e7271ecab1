"""The tracer: opens spans, decides sampling, and hands finished spans to its sinks.

    store = TraceStore("traces.duckdb")
    tracer = Tracer(store=store, sample_rate=0.1)
    with tracer.trace_request(user_id="u1", request_id="r1"):
        with tracer.span("retrieve", kind=SpanKind.RETRIEVER, input={"k": 100}) as s:
            s.set_output(candidates)

Sampling is decided once per trace, at its root; every span below a sampled-out root is a no-op.
"""

from __future__ import annotations

import functools
import inspect
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar, overload

from coachrec.tracing.context import current
from coachrec.tracing.model import SpanKind, SpanRecord, new_trace_id
from coachrec.tracing.span import NOOP_SPAN, NoopSpan, SampledOutSpan, Span, TraceState, kind_value

F = TypeVar("F", bound=Callable[..., Any])


class SpanSink(Protocol):
    """Where finished spans go: a `TraceStore`, an `OTLPSink`, or anything with these methods."""

    def submit(self, record: SpanRecord) -> bool: ...

    def flush(self, timeout: float | None = None) -> bool: ...


class Tracer:
    """Creates spans. With no store and no sinks, or `enabled=False`, every span is a no-op."""

    def __init__(
        self,
        store: SpanSink | None = None,
        *,
        sample_rate: float = 1.0,
        sinks: Sequence[SpanSink] = (),
        enabled: bool = True,
        seed: int | None = None,
    ) -> None:
        if not 0.0 <= sample_rate <= 1.0:
            raise ValueError(f"sample_rate must be between 0 and 1, got {sample_rate}")
        self.store = store
        self.sample_rate = sample_rate
        self.sinks: tuple[SpanSink, ...] = ((store,) if store is not None else ()) + tuple(sinks)
        self.enabled = enabled and bool(self.sinks)
        self._random = random.Random(seed).random
        submits = tuple(sink.submit for sink in self.sinks)
        if len(submits) == 1:
            self._emit: Callable[[SpanRecord], Any] = submits[0]
        else:

            def emit(record: SpanRecord) -> None:
                for submit in submits:
                    submit(record)

            self._emit = emit

    # -- spans -------------------------------------------------------------------------------

    def span(
        self,
        name: str,
        kind: SpanKind | str = SpanKind.CHAIN,
        *,
        input: Any = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> Span | NoopSpan:
        """A span under the current one; without a current span it starts a new trace."""
        if not self.enabled:
            return NOOP_SPAN
        parent = current.get()
        if parent is None:
            return self._root(name, kind, input, attributes, None, None)
        if parent.__class__ is not Span:
            return NOOP_SPAN  # inside a sampled-out trace
        return Span(self._emit, parent._trace, parent.span_id, name, kind_value(kind), input, attributes)

    def trace_request(
        self,
        name: str = "request",
        *,
        user_id: str | None = None,
        request_id: str | None = None,
        input: Any = None,
        attributes: Mapping[str, Any] | None = None,
        kind: SpanKind | str = SpanKind.CHAIN,
    ) -> Span | SampledOutSpan | NoopSpan:
        """The root span of a new trace for one request, whatever span is current.

        Every span of the trace carries `user_id` and `request_id`; a missing request id is
        generated, and is available as `.request_id` even when the trace is sampled out.
        """
        request_id = request_id if request_id is not None else new_trace_id()
        if not self.enabled:
            return SampledOutSpan(user_id, request_id)
        return self._root(name, kind, input, attributes, user_id, request_id)

    def _root(
        self,
        name: str,
        kind: SpanKind | str,
        input: Any,
        attributes: Mapping[str, Any] | None,
        user_id: str | None,
        request_id: str | None,
    ) -> Span | SampledOutSpan:
        if self.sample_rate < 1.0 and self._random() >= self.sample_rate:
            return SampledOutSpan(user_id, request_id)
        trace = TraceState(new_trace_id(), user_id, request_id)
        return Span(self._emit, trace, None, name, kind_value(kind), input, attributes)

    # -- decorator ---------------------------------------------------------------------------

    @overload
    def trace(self, fn: F, /) -> F: ...

    @overload
    def trace(
        self,
        fn: None = None,
        /,
        *,
        name: str | None = None,
        kind: SpanKind | str = SpanKind.CHAIN,
        capture_input: bool = True,
        capture_output: bool = True,
    ) -> Callable[[F], F]: ...

    def trace(
        self,
        fn: F | None = None,
        /,
        *,
        name: str | None = None,
        kind: SpanKind | str = SpanKind.CHAIN,
        capture_input: bool = True,
        capture_output: bool = True,
    ) -> F | Callable[[F], F]:
        """Decorate a function (sync or async) so each call is a span named after it.

        The input is the call's arguments by parameter name (`self` and `cls` left out); the
        output is the return value.
        """
        kind = kind_value(kind)

        def decorate(func: F) -> F:
            span_name = name or func.__qualname__
            signature = inspect.signature(func)

            def arguments(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any] | None:
                if not capture_input:
                    return None
                bound = signature.bind_partial(*args, **kwargs).arguments
                return {k: v for k, v in bound.items() if k not in ("self", "cls")}

            if inspect.iscoroutinefunction(func):

                @functools.wraps(func)
                async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                    with self.span(span_name, kind) as span:
                        if span.recording:
                            span.set_input(arguments(args, kwargs))
                        result = await func(*args, **kwargs)
                        if capture_output and span.recording:
                            span.set_output(result)
                        return result

                return async_wrapper  # type: ignore[return-value]

            @functools.wraps(func)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                with self.span(span_name, kind) as span:
                    if span.recording:
                        span.set_input(arguments(args, kwargs))
                    result = func(*args, **kwargs)
                    if capture_output and span.recording:
                        span.set_output(result)
                    return result

            return wrapper  # type: ignore[return-value]

        return decorate(fn) if fn is not None else decorate

    # -- lifecycle ---------------------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> bool:
        """Flush every sink; False if any did not finish within `timeout`."""
        return all(sink.flush(timeout) for sink in self.sinks)
