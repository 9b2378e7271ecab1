"""The benchmarks are their own distribution (coachrec-bench), reached through the
`coachrec.cli` entry point: the CLI starts without them and `coachrec bench` still works."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import coachrec_bench
from coachrec import cli

SUBCOMMANDS = [
    "accuracy",
    "speed",
    "gru4rec-official",
    "recbole",
    "report",
    "llm",
    "teacher",
    "coach",
    "serve",
    "tracing",
    "request-match",
]


def test_importing_the_cli_imports_no_benchmark():
    code = (
        "import sys, coachrec.cli; "
        "print([m for m in sys.modules if m.startswith(('coachrec_bench', 'coachrec.bench'))])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_top_level_help_lists_bench_without_loading_it():
    code = (
        "import sys\nfrom typer.testing import CliRunner\nfrom coachrec.cli import app\n"
        "res = CliRunner().invoke(app, ['--help'])\nassert res.exit_code == 0, res.output\n"
        "assert ' bench ' in res.output, res.output\n"
        "print([m for m in sys.modules if m.startswith('coachrec_bench')])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_bench_help_lists_every_subcommand():
    res = CliRunner().invoke(cli.app, ["bench", "--help"])
    assert res.exit_code == 0, res.output
    assert "Usage: " in res.output and "bench [OPTIONS] COMMAND" in res.output
    for name in SUBCOMMANDS:
        assert f" {name} " in res.output, (name, res.output)


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_each_bench_subcommand_has_help(name):
    res = CliRunner().invoke(cli.app, ["bench", name, "--help"])
    assert res.exit_code == 0, res.output
    assert f"bench {name} [OPTIONS]" in res.output


def test_bad_option_is_a_usage_error_of_the_subcommand():
    res = CliRunner().invoke(cli.app, ["bench", "report", "--no-such-option"])
    assert res.exit_code == 2
    assert "--no-such-option" in res.output


def test_console_script_runs_bench_help():
    script = Path(sys.executable).with_name("coachrec")
    if not script.exists():
        pytest.skip(f"no console script beside {sys.executable}")
    out = subprocess.run([str(script), "bench", "--help"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "gru4rec-official" in out.stdout


def test_missing_bench_package_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(cli, "plugin_entry_points", dict)
    res = CliRunner().invoke(cli.app, ["bench", "speed"])
    assert res.exit_code == 2
    assert "coachrec-bench" in res.output and "pip install -e benchmarks/" in res.output


def test_recbole_driver_does_not_import_coachrec():
    """The driver runs in RecBole's own virtualenv, where neither coachrec nor coachrec_bench exists."""
    driver = Path(coachrec_bench.__file__).with_name("_recbole_driver.py")
    imported = set()
    for node in ast.walk(ast.parse(driver.read_text())):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0] if node.level == 0 else ".")
    assert imported and not imported & {"coachrec", "coachrec_bench", "."}, imported
