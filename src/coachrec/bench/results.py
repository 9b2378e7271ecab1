"""The results-file contract shared by every benchmark.

`coachrec bench NAME` writes `benchmarks/results/NAME.json`: a list of rows, each
`{"name", "dataset", "protocol", "metrics": {...}, "machine", "date", "command"}`.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
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


def row(name: str, dataset: str, protocol: str, metrics: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "dataset": dataset,
        "protocol": protocol,
        "metrics": metrics,
        "machine": machine(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": "coachrec " + " ".join(sys.argv[1:]) if sys.argv else "",
    }


def results_dir() -> Path:
    return Path(os.environ.get("COACHREC_BENCH_DIR", "benchmarks/results"))


def write(name: str, rows: list[dict[str, Any]]) -> Path:
    """Write the rows of benchmark `name`; returns the file path."""
    out = results_dir() / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=2) + "\n")
    return out
