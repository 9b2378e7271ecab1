"""Progress of long work, as library code reports it: a step title, a note, a bar per batch job.

Library code (the coach loop, the teacher, training) takes a `Progress` and calls it; it never
prints, imports Rich or writes markup. What the calls look like is the caller's choice: the CLI
passes `coachrec.cli.console.RichProgress` (a live bar in a terminal, a line per ~10% in a log),
tests and library users get `Silent`, the default.

    def fit(data, progress: Progress = SILENT):
        progress.step("fit the ranker")
        with progress.bar("epochs", total=10) as advance:
            for epoch in range(10):
                ...
                advance(epoch + 1, 10)
        progress.note("early stop at epoch 7", level="warn")

A note's `level` replaces markup: "info" (plain), "warn" (something the reader should know:
a criterion that does not apply, a member not configured), "error", "dim" (a detail).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Literal, Protocol, runtime_checkable

__all__ = ["LEVELS", "SILENT", "Advance", "Level", "Progress", "Silent"]

Level = Literal["info", "warn", "error", "dim"]
LEVELS: tuple[str, ...] = ("info", "warn", "error", "dim")

Advance = Callable[[int, int], None]
"""`advance(done, total)`: `done` of `total` units finished so far (absolute, not a delta)."""


@runtime_checkable
class Progress(Protocol):
    def step(self, title: str) -> None:
        """A new stage of the work begins (numbered and timed by the implementation)."""

    def note(self, text: str, level: Level = "info") -> None:
        """One line of plain text (no markup) about the current stage."""

    def bar(self, label: str, total: int) -> AbstractContextManager[Advance]:
        """A bar for `total` units: `with progress.bar("judge", n) as advance: ... advance(i, n)`."""


class Silent:
    """Does nothing: the default for library calls and tests."""

    def step(self, title: str) -> None:
        pass

    def note(self, text: str, level: Level = "info") -> None:
        pass

    @contextmanager
    def bar(self, label: str, total: int) -> Iterator[Advance]:
        yield _ignore


def _ignore(done: int, total: int) -> None:
    pass


SILENT = Silent()
