"""Progress for long coach runs: a step title, a bar per batch job, notes. `RichUI` prints to
the terminal; `SilentUI` swallows everything (library use, tests)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

Advance = Callable[[int, int], None]


class SilentUI:
    def step(self, title: str) -> None:
        pass

    def note(self, text: str) -> None:
        pass

    @contextmanager
    def bar(self, label: str, total: int) -> Iterator[Advance]:
        yield lambda n, total: None


class RichUI(SilentUI):
    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console()
        self.t0 = time.perf_counter()
        self.steps = 0

    def step(self, title: str) -> None:
        self.steps += 1
        self.console.rule(f"[bold]{self.steps}. {title}[/bold]  [dim]{time.perf_counter() - self.t0:.0f}s[/dim]", align="left")

    def note(self, text: str) -> None:
        self.console.print(text)

    @contextmanager
    def bar(self, label: str, total: int) -> Iterator[Advance]:
        with Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=self.console,
                      transient=False) as progress:
            task = progress.add_task(label, total=total)
            yield lambda n, total: progress.update(task, completed=n, total=total)
