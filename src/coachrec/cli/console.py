"""Output of the CLI: one place decides how commands print, so logs stay readable.

In a terminal (stdout is a TTY) commands print Rich: colour, tables sized to the terminal, live
bars. Anywhere else (CI logs, `| tee`, `> log.txt`, a notebook) nothing may be cut or animated:

- `console()` is wide (`WIDE` columns, soft-wrapped text), without colour codes;
- `show_table(table)` prints a GitHub Markdown pipe table (every cell whole: `|` escaped, line
  breaks as `<br>`), or with `COACHREC_TABLES=plain` an ASCII box as wide as the table needs,
  its columns folding rather than ending in "…";
- `RichProgress` (the CLI's `coachrec.progress.Progress`) prints a step as a `==` line and a bar
  as a line per ~10% (at most one a second) and one on completion, instead of a live bar;
- `status(con, text)` prints its text once instead of a spinner; `heading` and `show_panel`
  print plain lines instead of a full-width rule or box.

`COACHREC_TABLES=rich|markdown|plain` overrides the automatic table format. Commands that a
program reads keep their `--json` option; these helpers are for people.

    from coachrec.cli.console import console, show_table, print_rows
    con = console()
    print_rows(["model", "ndcg@10"], [["sasrec", "0.0535"]], title="accuracy", con=con)
"""

from __future__ import annotations

import io
import os
import re
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import IO, Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.measure import Measurement
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from coachrec.progress import Advance, Level

__all__ = [
    "WIDE",
    "RichProgress",
    "console",
    "heading",
    "interactive",
    "markdown_table",
    "print_rows",
    "show_panel",
    "show_table",
    "status",
    "table_format",
]

WIDE = 200
"""Width of a console whose stdout is not a terminal (wider tables get a console of their own)."""
TABLES_ENV = "COACHREC_TABLES"
_STYLES: dict[str, str] = {"info": "", "warn": "yellow", "error": "bold red", "dim": "dim"}
_PREFIX: dict[str, str] = {"info": "", "warn": "warning: ", "error": "error: ", "dim": ""}


def interactive(stream: IO[str] | None = None) -> bool:
    """Whether `stream` (default: the current stdout) is a terminal."""
    stream = sys.stdout if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or odd streams are not terminals
        return False


def console(*, stderr: bool = False, file: IO[str] | None = None) -> Console:
    """The console a command prints with; call it when the command runs (stdout may have been
    redirected since import). A terminal gets Rich's defaults; anything else a wide console
    without colour codes, live displays or wrapping of long lines."""
    stream = file if file is not None else (sys.stderr if stderr else sys.stdout)
    if interactive(stream):
        return Console(stderr=stderr, file=file)
    return Console(
        stderr=stderr,
        file=file,
        width=WIDE,
        color_system=None,
        no_color=True,
        force_terminal=False,
        force_interactive=False,
        force_jupyter=False,
        soft_wrap=True,
        highlight=False,
        emoji=False,
    )


def _live(con: Console) -> bool:
    return con.is_terminal and con.is_interactive


def table_format(con: Console) -> str:
    """'rich' in a terminal, else 'markdown'; `$COACHREC_TABLES` (rich|markdown|plain) overrides."""
    fmt = os.environ.get(TABLES_ENV, "").strip().lower()
    if fmt in ("rich", "markdown", "plain"):
        return fmt
    return "rich" if con.is_terminal else "markdown"


# ----------------------------------------------------------------------------------- tables
def _plain(cell: Any) -> str:
    """A cell's text without markup or styles."""
    if cell is None:
        return ""
    if isinstance(cell, Text):
        return cell.plain
    if isinstance(cell, str):
        try:
            return Text.from_markup(cell).plain
        except Exception:  # not valid markup (an unmatched closing tag): the text as it is
            return cell
    out = Console(width=10_000, color_system=None, no_color=True, force_terminal=False, file=io.StringIO())
    with out.capture() as cap:
        out.print(cell, soft_wrap=True)
    return cap.get().rstrip("\n")


def _md_cell(cell: Any) -> str:
    text = _plain(cell).strip()
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\r\n", "\n").replace("\n", "<br>")


def markdown_table(table: Table) -> str:
    """`table` as a GitHub pipe table (title above, caption below), every cell whole."""
    cols = table.columns
    lines: list[str] = []
    if table.title:
        lines += [_plain(table.title).strip(), ""]
    header = [_md_cell(c.header) or " " for c in cols]
    rule = {"right": "---:", "center": ":---:"}
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join(rule.get(str(c.justify), "---") for c in cols) + "|")
    cells = [list(c.cells) for c in cols]
    for i in range(table.row_count):
        lines.append("| " + " | ".join(_md_cell(col[i]) if i < len(col) else "" for col in cells) + " |")
    if table.caption:
        lines += ["", _plain(table.caption).strip()]
    return "\n".join(lines) + "\n"


def _full_width(table: Table, con: Console) -> Console:
    """A console exactly as wide as `table` needs, writing where `con` writes."""
    probe = Console(width=100_000, color_system=None, force_terminal=False, file=io.StringIO())
    need = Measurement.get(probe, probe.options, table).maximum
    return Console(
        file=con.file,
        width=max(need, 20),
        color_system=None,
        no_color=True,
        force_terminal=False,
        force_interactive=False,
        force_jupyter=False,
        highlight=False,
        emoji=False,
    )


def show_table(table: Table, con: Console | None = None, *, fmt: str | None = None) -> None:
    """Print `table`: Rich in a terminal; else Markdown (or plain ASCII with
    `COACHREC_TABLES=plain`), with nothing truncated."""
    con = con or console()
    fmt = fmt or table_format(con)
    if fmt == "rich":
        con.print(table)
        return
    for col in table.columns:  # never "…": a long cell folds onto the next line
        col.overflow = "fold"
        col.no_wrap = False
    if fmt == "markdown":
        con.out(markdown_table(table), highlight=False)
    else:
        table.box = box.ASCII
        table.expand = False
        _full_width(table, con).print(table)


def print_rows(
    headers: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    title: str | None = None,
    caption: str | None = None,
    right: Sequence[str] = (),
    con: Console | None = None,
) -> Table:
    """A table of `rows` under `headers` (columns named in `right` right-aligned), shown with
    `show_table`; returns the Table."""
    table = Table(title=title, caption=caption, title_justify="left", caption_justify="left")
    for h in headers:
        table.add_column(h, justify="right" if h in right else "left", overflow="fold")
    for row in rows:
        table.add_row(*("" if v is None else v if isinstance(v, (str, Text)) else str(v) for v in row))
    show_table(table, con)
    return table


# ---------------------------------------------------------------------- other renderables
def heading(con: Console, text: str) -> None:
    """A section title: a rule in a terminal, a `==` line elsewhere (`text` is plain, not markup)."""
    if con.is_terminal:
        con.rule(Text(text, style="bold"), align="left")
    else:
        con.out(f"== {text}", highlight=False)


def show_panel(con: Console, body: str, title: str) -> None:
    """A boxed text in a terminal; a title line and the text elsewhere (`body` may hold markup)."""
    if con.is_terminal:
        con.print(Panel(body, title=escape(title)))
    else:
        con.out(f"-- {title}", highlight=False)
        con.print(body, soft_wrap=True)


@contextmanager
def status(con: Console, text: str) -> Iterator[None]:
    """A spinner with `text` while the block runs, in a terminal; elsewhere the text, once."""
    if _live(con):
        with con.status(escape(text)):
            yield
    else:
        con.out(f"{text} ...", highlight=False)
        yield


# ------------------------------------------------------------------------------- progress
_LEGACY = re.compile(r"^\[(yellow|red|green|dim|bold)\](.*)\[/\1\]$", re.DOTALL)
_LEGACY_LEVEL: dict[str, Level] = {"yellow": "warn", "red": "error", "dim": "dim", "green": "info", "bold": "info"}


class RichProgress:
    """`coachrec.progress.Progress` for the CLI: numbered, timed steps, notes styled by level,
    a live Rich bar in a terminal; elsewhere a line per ~10% (at most one per `min_interval`
    seconds, so a bar done in a blink is a single line) and one on completion."""

    def __init__(self, con: Console | None = None, *, min_interval: float = 1.0) -> None:
        self.console = con or console()
        self.min_interval = min_interval
        self.t0 = time.perf_counter()
        self.steps = 0

    def step(self, title: str) -> None:
        self.steps += 1
        elapsed = f"{time.perf_counter() - self.t0:.0f}s"
        if self.console.is_terminal:
            self.console.rule(Text.assemble((f"{self.steps}. {title}", "bold"), "  ", (elapsed, "dim")), align="left")
        else:
            self.console.out(f"== {self.steps}. {title}  ({elapsed})", highlight=False)

    def note(self, text: str, level: Level = "info") -> None:
        # transitional: library code that still wraps a whole note in "[yellow]...[/yellow]" (the
        # coach loop until it passes levels) gets the level; other text is printed as it is
        m = _LEGACY.match(text) if level == "info" else None
        if m:
            level, text = _LEGACY_LEVEL[m.group(1)], m.group(2)
        style = _STYLES.get(level, "")
        if self.console.is_terminal:
            self.console.print(Text(text, style=style), soft_wrap=True)
        else:
            self.console.out(_PREFIX.get(level, "") + text, highlight=False)

    @contextmanager
    def bar(self, label: str, total: int) -> Iterator[Advance]:
        if _live(self.console):
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            with Progress(
                TextColumn(escape(label)),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=self.console,
                transient=False,
            ) as progress:
                task = progress.add_task(label, total=total)
                yield lambda n, total: progress.update(task, completed=n, total=total)
            return
        line = _LineBar(self.console, label, total, self.min_interval)
        yield line.advance
        line.close()


class _LineBar:
    """A bar for logs: a line each time another tenth is done (if `min_interval` seconds have
    passed since the last line), and one on completion."""

    def __init__(self, con: Console, label: str, total: int, min_interval: float = 1.0) -> None:
        self.con, self.label, self.total = con, label, max(0, int(total))
        self.min_interval = min_interval
        self.t0 = self.last = time.perf_counter()
        self.tenth = 0
        self.done = 0
        self.finished = False
        self.lock = threading.Lock()

    def _print(self, n: int) -> None:
        self.last = time.perf_counter()
        pct = f" ({100 * n / self.total:.0f}%)" if self.total else ""
        self.con.out(f"  {self.label}: {n}/{self.total}{pct}  {self.last - self.t0:.0f}s", highlight=False)

    def advance(self, n: int, total: int) -> None:
        with self.lock:
            self.total, self.done = max(0, int(total)), int(n)
            if self.finished:
                return
            if self.total and self.done >= self.total:
                self.finished = True
                self._print(self.done)
                return
            tenth = 10 * self.done // self.total if self.total else 0
            if tenth > self.tenth:
                self.tenth = tenth
                if time.perf_counter() - self.last >= self.min_interval:
                    self._print(self.done)

    def close(self) -> None:
        with self.lock:
            if not self.finished:
                self.finished = True
                self._print(self.done)
