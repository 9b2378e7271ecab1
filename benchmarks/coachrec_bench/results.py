"""The results-file contract shared by every benchmark.

`coachrec bench NAME` writes `benchmarks/results/NAME.json`: a list of rows, each
`{"name", "dataset", "protocol", "metrics": {...}, "machine", "date", "command", "code"}`,
`code` being `{"commit": HEAD sha, "dirty": bool}` of the checkout the benchmarks run from
(`{"commit": None, "dirty": None, "reason": ...}` outside a git checkout). Rows written before
`code` existed have no such key; readers must not require it.
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any


def machine() -> str:
    """A short description of the machine the figures were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {cpu}, Python {platform.python_version()}"


# Written by the benchmarks themselves: changing them does not make the code dirty.
_NOT_CODE = (":(exclude)benchmarks/results", ":(exclude)benchmarks/RESULTS.md")


def _git(root: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip() or f"git {' '.join(args)} exited with {done.returncode}")
    return done.stdout


def code_version(where: Path | None = None) -> dict[str, Any]:
    """`{"commit": HEAD sha, "dirty": bool}` of the git checkout holding `where` (default: this
    package's folder, i.e. the repository with an editable install); uncommitted changes to
    tracked or untracked files count as dirty, except the results files. Outside a checkout, or
    without git: `{"commit": None, "dirty": None, "reason": why}`."""
    start = Path(where) if where is not None else Path(__file__).resolve().parent
    try:
        root = Path(_git(start, "rev-parse", "--show-toplevel").strip())
        commit = _git(root, "rev-parse", "HEAD").strip()
        status = _git(root, "status", "--porcelain", "--", ".", *_NOT_CODE)
    except FileNotFoundError:
        return {"commit": None, "dirty": None, "reason": "git is not installed"}
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        return {"commit": None, "dirty": None, "reason": f"not a git checkout ({start}): {exc}"}
    return {"commit": commit, "dirty": bool(status.strip())}


@functools.lru_cache(maxsize=1)
def _this_code() -> dict[str, Any]:
    return code_version()


def command() -> str:
    """The command line that is running, as a user would type it again: `coachrec ...`, or
    `python -m module ...` for a bench module run on its own (its argv[0] is a file path)."""
    args = " ".join(sys.argv[1:])
    if not sys.argv or Path(sys.argv[0]).name.startswith("coachrec"):
        return f"coachrec {args}".rstrip()
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    program = f"python -m {spec.name}" if spec is not None else f"python {sys.argv[0]}"
    return f"{program} {args}".rstrip()


def row(name: str, dataset: str, protocol: str, metrics: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "dataset": dataset,
        "protocol": protocol,
        "metrics": metrics,
        "machine": machine(),
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "command": command(),
        "code": dict(_this_code()),
    }


def results_dir() -> Path:
    return Path(os.environ.get("COACHREC_BENCH_DIR", "benchmarks/results"))


def write(name: str, rows: list[dict[str, Any]]) -> Path:
    """Write the rows of benchmark `name`; returns the file path."""
    out = results_dir() / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=2) + "\n")
    return out
