"""Every results row records the code it was measured with; older rows without it still render."""

import json
import re
import subprocess
from pathlib import Path

from coachrec_bench import results
from coachrec_bench.report import render


def test_row_records_the_commit_and_dirtiness():
    r = results.row("pop", "ml-latest-small", "loo-full", {"ndcg@10": 0.1})
    code = r["code"]
    assert set(code) >= {"commit", "dirty"}
    json.dumps(r)
    here = Path(results.__file__).parent
    root = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=here, capture_output=True, text=True)
    if root.returncode != 0:
        assert code["commit"] is None and code["reason"]
        return
    # a commit of this checkout (not compared with HEAD: others may commit while the suite runs)
    assert re.fullmatch(r"[0-9a-f]{40}", code["commit"]) and isinstance(code["dirty"], bool)
    known = subprocess.run(
        ["git", "-C", root.stdout.strip(), "cat-file", "-e", code["commit"] + "^{commit}"], capture_output=True
    )
    assert known.returncode == 0


def test_outside_a_checkout_the_code_is_none_with_a_reason(tmp_path):
    code = results.code_version(tmp_path)
    assert code["commit"] is None and code["dirty"] is None
    assert "not a git checkout" in code["reason"]


def test_a_checkout_reports_commit_and_dirty(tmp_path):
    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    git("add", "a.py")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "a")
    clean = results.code_version(tmp_path)
    assert re.fullmatch(r"[0-9a-f]{40}", clean["commit"]) and clean["dirty"] is False
    # the benchmarks' own output does not make the code dirty; a changed source file does
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    (tmp_path / "benchmarks" / "results" / "x.json").write_text("[]\n")
    assert results.code_version(tmp_path)["dirty"] is False
    (tmp_path / "a.py").write_text("x = 2\n")
    assert results.code_version(tmp_path) == {"commit": clean["commit"], "dirty": True}


def test_report_shows_the_short_commit_and_reads_rows_without_code(tmp_path):
    old = {
        "name": "old",
        "dataset": "d",
        "protocol": "p",
        "metrics": {"m": 1.0},
        "machine": "box",
        "date": "2024-01-01",
    }
    new = dict(old, name="new", code={"commit": "0123456789abcdef0123456789abcdef01234567", "dirty": True})
    none = dict(old, name="none", code={"commit": None, "dirty": None, "reason": "not a git checkout"})
    (tmp_path / "a.json").write_text(json.dumps([old, new, none]))
    (tmp_path / "b.json").write_text(json.dumps([old]))
    md = render(tmp_path)
    assert "Code: `0123456-dirty`" in md
    assert md.count("Code:") == 1  # b.json's rows record no code: no line


def test_the_command_is_recorded_as_it_can_be_typed_again(tmp_path):
    """`coachrec bench ...` as typed; a bench module run alone is `python -m module args`, not
    `coachrec ` with nothing after it (what conversational_stages.json once recorded)."""
    import sys

    root = Path(results.__file__).parents[1]
    code = "from coachrec_bench.results import command; print(command())"
    (tmp_path / "probe.py").write_text(code)
    by_module = subprocess.run(
        [sys.executable, "-m", "probe", "--turns", "3"], cwd=tmp_path, capture_output=True, text=True,
        env={"PYTHONPATH": f"{tmp_path}:{root}"},
    )  # fmt: skip
    assert by_module.stdout.strip() == "python -m probe --turns 3", by_module.stderr
    saved = sys.argv
    try:
        sys.argv = ["/venv/bin/coachrec", "bench", "serve", "--workers", "2"]
        assert results.command() == "coachrec bench serve --workers 2"
    finally:
        sys.argv = saved
