"""Named datasets: the bundled MovieLens latest-small and the shared benchmark data."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path
from typing import Any

from coachrec.data import DataError, Dataset, load_sequences
from coachrec.data import load as load_path

BUNDLED = Path(__file__).parent
NAMES = ("ml-latest-small", "beauty")


def shared_dir() -> Path:
    """`$COACHREC_SHARED`, else the nearest `shared/` folder beside a parent of the cwd or package."""
    env = os.environ.get("COACHREC_SHARED")
    if env:
        return Path(env)
    for start in (Path.cwd(), Path(__file__).resolve()):
        for parent in (start, *start.parents):
            cand = parent / "shared" / "datasets"
            if cand.is_dir():
                return parent / "shared"
            cand = parent.parent / "shared" / "datasets"
            if cand.is_dir():
                return parent.parent / "shared"
    raise DataError("cannot find the shared data folder: set COACHREC_SHARED to the folder holding datasets/")


def load(name: str) -> Dataset:
    """`ml-latest-small` (bundled), `beauty` (from the shared folder), or a path."""
    if name == "ml-latest-small":
        return load_path(BUNDLED / "ml-latest-small", name="ml-latest-small")
    if name == "beauty":
        path = shared_dir() / "datasets" / "amazon-beauty" / "user_sequence.txt"
        if not path.exists():
            raise DataError(f"{path}: Amazon Beauty sequences not found (set COACHREC_SHARED)")
        return load_sequences(path, name="beauty")
    if Path(name).exists():
        return load_path(name)
    raise DataError(f"unknown dataset {name!r}: use one of {NAMES} or a path to a folder or file")


def requests(name: str = "redial-ml") -> list[dict[str, Any]]:
    """Bundled conversational requests: `redial-ml`, ReDial test turns linked to ml-latest-small
    (CC BY 4.0; see `datasets/redial-ml/README.md`). Each: `dialog_id`, `turn`, `context` (list of
    `{"speaker", "text"}`), `mentions` and `targets` (ml-latest-small movieIds), `keys` (what the
    context's words ask for, read by the served intent parser: `serve.understanding.text_keys`)."""
    if name != "redial-ml":
        raise DataError(f"unknown request set {name!r}: the bundled one is 'redial-ml'")
    path = BUNDLED / "redial-ml" / "requests.jsonl.gz"
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
