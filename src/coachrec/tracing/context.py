"""The current span, carried in a `contextvars.ContextVar`.

asyncio tasks copy the context when created, so spans nest across `await` and `create_task` with
no help. A thread starts with an empty context: run its work through `contextvars.copy_context().run`
or wrap the callable with `in_current_context` before handing it to an executor.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from typing import TYPE_CHECKING, ParamSpec, TypeVar

if TYPE_CHECKING:
    from coachrec.tracing.span import NoopSpan, Span

P = ParamSpec("P")
R = TypeVar("R")

current: contextvars.ContextVar[Span | NoopSpan | None] = contextvars.ContextVar("coachrec_span", default=None)


def current_span() -> Span | None:
    """The innermost recording span of this context, or None (no trace, or sampled out)."""
    from coachrec.tracing.span import Span

    span = current.get()
    return span if isinstance(span, Span) else None


def in_current_context(fn: Callable[P, R]) -> Callable[P, R]:
    """Bind `fn` to a copy of the caller's context, so spans it opens in another thread nest
    under the caller's current span: `pool.submit(in_current_context(work), x)`.

    Call it once per submission: one copied context cannot be entered by two threads at once.
    """
    ctx = contextvars.copy_context()

    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        return ctx.run(fn, *args, **kwargs)

    return run


__all__ = ["current", "current_span", "in_current_context"]
