"""CLI output when stdout is not a terminal (CI logs, `| tee`, `> log.txt`): every table whole,
as a GitHub pipe table; no colour codes; bars as lines. In a terminal: Rich as before."""

import io
import os
import re
import subprocess
import sys
from types import SimpleNamespace

from rich.console import Console
from rich.table import Table

from coachrec.cli.console import RichProgress, console, markdown_table, print_rows, show_table
from coachrec.progress import SILENT, Progress, Silent

LONG = (
    "the slate has 3 of the 5 requested items because the genre filter removed "
    + "every candidate of the retriever " * 6
    + "END"
)
_CELL_SPLIT = re.compile(r"(?<!\\)\|")


def pipe_tables(text: str) -> list[list[list[str]]]:
    """Every block of consecutive `|` lines in `text`, as rows of cells; fails unless each block
    is a valid GitHub pipe table (a header, a separator row, the same cell count on every row)."""
    blocks, cur = [], []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            cur.append(line)
        elif cur:
            blocks.append(cur)
            cur = []
    tables = []
    for block in blocks:
        assert len(block) >= 2, block
        rows = []
        for line in block:
            assert line.endswith("|"), line
            rows.append([c.strip() for c in _CELL_SPLIT.split(line)[1:-1]])
        width = len(rows[0])
        assert all(len(r) == width for r in rows), block
        assert all(re.fullmatch(r":?-{3,}:?", c) for c in rows[1]), block[1]
        tables.append([rows[0], *rows[2:]])
    return tables


def fake_result(promoted=False):
    mode = SimpleNamespace(
        name="short_slate",
        criterion="slate_complete",
        count=12,
        rate=0.3,
        span="RETRIEVER:retrieve",
        why=LONG,
        examples=["0123456789abcdef0123456789abcdef"],
    )
    report = SimpleNamespace(judged_traces=40, modes=[mode])
    row = SimpleNamespace(
        section="held-out traffic",
        metric="short_slate failure rate",
        role="target",
        champion=0.3,
        candidate=0.1,
        delta=-0.2,
        ci="[-0.2812, -0.1190]",
        p_value=0.001,
        n=400,
        discordant=120,
        passed=True,
    )
    gate = SimpleNamespace(
        candidate="v0002",
        champion="v0001",
        target_mode="short_slate",
        rows=[row],
        protocol={"ci": "paired bootstrap, 2000 resamples", "ground_truth": "leave-one-out NDCG@10 " + "x" * 150},
        reasons=["v0002 loses ground truth"],
    )
    tried = SimpleNamespace(
        remedy="distilled-student", span="rank", note=LONG, candidate_id="v0002", gate=gate, promoted=promoted
    )
    return SimpleNamespace(
        observation=SimpleNamespace(report=report),
        target_mode="short_slate",
        tried=[tried],
        gate=gate,
        promoted=promoted,
        decision="refused: v0002 loses ground truth (NDCG@10 CI lower bound -0.0123 < -0.01)",
    )


def test_quickstart_tables_are_whole_pipe_tables_when_captured(capsys):
    """`print_result` (the tables of `coachrec quickstart` and `coachrec coach`) into a capture."""
    from coachrec.cli.coach import print_result

    print_result(fake_result())
    out = capsys.readouterr().out
    assert "…" not in out and "\x1b[" not in out
    failures, remedies, gate = pipe_tables(out)
    assert remedies[1][2] == LONG  # the remedy's note whole
    assert failures[0] == [
        "failure mode",
        "criterion",
        "traces",
        "rate",
        "where (span)",
        "why (teacher's rationale)",
        "example trace",
    ]
    assert failures[1][5] == LONG and failures[1][6] == "0123456789abcdef0123456789abcdef"
    assert gate[1][:2] == ["held-out traffic", "short_slate failure rate"] and gate[1][6] == "[-0.2812, -0.1190]"
    assert gate[1][-1] == "yes"  # the markup of the "ok" column is gone, its text kept
    assert "ground_truth" not in out and "x" * 150 in out  # the caption, whole
    assert "refused: v0002 loses ground truth (NDCG@10 CI lower bound -0.0123 < -0.01)" in out


def test_command_through_a_pipe_prints_a_long_cell_whole(ml_small, tmp_path):
    """A real command (`coachrec report failures`) in a subprocess whose stdout is a pipe, with
    an 80-column COLUMNS as CI runners set: no cell is cut."""
    from typer.testing import CliRunner

    from coachrec.cli import app
    from coachrec.models import create
    from coachrec.policy import Constraints
    from coachrec.serve.pipeline import Pipeline, RecommendRequest
    from coachrec.teacher import failure_report
    from coachrec.tracing import Tracer, TraceStore

    db = tmp_path / "traces.duckdb"
    store = TraceStore(db)
    pipeline = Pipeline.from_models([create("pop").fit(ml_small)], ml_small.catalog, tracer=Tracer(store))
    user = ml_small.users.ids[0]
    for _ in range(2):  # a constraint nothing satisfies: a short slate, with the teacher's rationale
        pipeline.recommend(
            RecommendRequest(
                user_id=user,
                k=5,
                constraints=Constraints(
                    require_genres=("Film-Noir",), exclude_genres=("Crime", "Drama", "Thriller", "Mystery")
                ),
            )
        )
    store.close()
    judged = CliRunner().invoke(
        app,
        [
            "judge",
            "--sample",
            "all",
            "--db",
            str(db),
            "--review-db",
            str(tmp_path / "review.duckdb"),
            "--llm",
            "none",
            "--no-relevance",
        ],
    )
    assert judged.exit_code == 0, judged.output
    store = TraceStore(db, read_only=True)
    modes = failure_report(store, judge_version=None).modes
    store.close()
    assert modes and max(len(m.why) for m in modes) > 60  # wider than an 80-column table leaves a column

    env = {k: v for k, v in os.environ.items() if k not in ("COACHREC_TABLES", "FORCE_COLOR")} | {
        "COLUMNS": "80",
        "TERM": "xterm-256color",
    }
    proc = subprocess.run(
        [sys.executable, "-c", "from coachrec.cli import main; main()", "report", "failures", "--db", str(db)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "…" not in out and "\x1b[" not in out
    (table,) = pipe_tables(out)
    assert table[0][:3] == ["failure mode", "criterion", "traces"]
    body = {r[0]: r for r in table[1:]}
    for m in modes:
        assert body[m.name][5] == m.why.replace("|", "\\|").strip()  # whole: a terminal shows 160 characters
        assert m.examples[0] in body[m.name][6]


def test_markdown_table_escapes_pipes_and_line_breaks():
    t = Table("a", "b | c", title="T [not markup]")
    t.add_column("n", justify="right")
    t.add_row("x|y", "one\ntwo", "3")
    md = markdown_table(t)
    (rows,) = pipe_tables(md)
    assert rows == [["a", "b \\| c", "n"], ["x\\|y", "one<br>two", "3"]]
    assert "|---|---|---:|" in md


def test_plain_tables_are_as_wide_as_they_need(capsys, monkeypatch):
    monkeypatch.setenv("COACHREC_TABLES", "plain")
    print_rows(["name", "why"], [["short_slate", LONG]], title="failures")
    out = capsys.readouterr().out
    assert LONG in out and "…" not in out and "\x1b[" not in out  # one line: the console is as wide as the table


def test_print_rows_and_console_without_a_terminal(capsys):
    con = console()
    assert not con.is_terminal and con.width >= 200
    con.print("[red]plain[/red] text")
    print_rows(["model", "ndcg@10"], [["sasrec", 0.0535], ["pop", None]], right=["ndcg@10"], con=con)
    out = capsys.readouterr().out
    assert out.startswith("plain text\n") and "\x1b[" not in out
    assert pipe_tables(out) == [[["model", "ndcg@10"], ["sasrec", "0.0535"], ["pop", ""]]]
    assert "|---|---:|" in out


def test_a_terminal_still_gets_rich_tables():
    buf = io.StringIO()
    con = Console(file=buf, force_terminal=True, width=100, color_system="standard")
    t = Table("name", "why")
    t.add_row("short_slate", "fine")
    show_table(t, con)
    out = buf.getvalue()
    assert "┃" in out or "│" in out
    assert not out.lstrip().startswith("|")


def test_progress_without_a_terminal_prints_steps_notes_and_tenths(capsys):
    p = RichProgress(min_interval=0)
    assert isinstance(p, Progress) and isinstance(SILENT, Progress) and isinstance(Silent(), Progress)
    p.step("replay 40 requests [through] the champion")
    p.note("relevance criterion does not apply: no ratings", level="warn")
    p.note("[dim]not targeted: too rare[/dim]")  # the coach loop's markup, until it passes levels
    p.note("data [1, 2] kept as it is")
    with p.bar("serving", 40) as advance:
        for i in range(1, 41):
            advance(i, 40)
    with p.bar("judging", 100) as advance:
        advance(5, 100)  # ends early: one closing line with where it stopped
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("== 1. replay 40 requests [through] the champion  (")
    assert lines[1:4] == [
        "warning: relevance criterion does not apply: no ratings",
        "not targeted: too rare",
        "data [1, 2] kept as it is",
    ]
    serving = [ln for ln in lines if ln.strip().startswith("serving:")]
    assert [ln.split()[1] for ln in serving] == [f"{4 * k}/40" for k in range(1, 11)]
    assert [ln.split()[1] for ln in lines if ln.strip().startswith("judging:")] == ["5/100"]


def test_silent_progress_does_nothing(capsys):
    s = Silent()
    s.step("x")
    s.note("y", level="warn")
    with s.bar("z", 3) as advance:
        advance(3, 3)
    assert capsys.readouterr().out == ""


def test_a_quick_bar_is_one_line_in_a_log(capsys):
    with RichProgress().bar("serving", 80) as advance:  # done well within a second
        for i in range(1, 81):
            advance(i, 80)
    assert [ln.split()[1] for ln in capsys.readouterr().out.splitlines()] == ["80/80"]
