import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("COACHREC_SHARED", str(ROOT.parent / "shared"))


@pytest.fixture(scope="session")
def ml_small():
    from coachrec import datasets

    return datasets.load("ml-latest-small")


@pytest.fixture(scope="session")
def beauty():
    from coachrec import datasets

    return datasets.load("beauty")
