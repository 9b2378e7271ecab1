"""Named datasets: the bundled MovieLens latest-small and the shared benchmark data."""

from __future__ import annotations

import os
from pathlib import Path

from coachrec.data import Dataset, DataError, load as load_path, load_sequences

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
