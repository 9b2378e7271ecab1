import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
BEAUTY_SAMPLE = DATA / "amazon-beauty" / "user_sequence.txt"

# The suite must pass in a fresh clone with nothing beside it, so it never reads `../shared`
# (the benchmark data; benchmarks keep reading it). What the tests need ships in tests/data/
# with its provenance. `COACHREC_SHARED` points at a folder that does not exist for the whole
# session (and the processes it starts), overriding any value set outside and stopping
# `coachrec.datasets.shared_dir()` from finding `../shared` by itself, so a test that still
# reaches for it (`datasets.load("beauty")`, `--dataset beauty`) fails loudly here too.
NO_SHARED = ROOT / "tests" / "data" / "no-shared-folder-in-tests"
assert not NO_SHARED.exists(), f"{NO_SHARED} must not exist"
os.environ["COACHREC_SHARED"] = str(NO_SHARED)


@pytest.fixture(scope="session")
def ml_small():
    from coachrec import datasets

    return datasets.load("ml-latest-small")


@pytest.fixture(scope="session")
def beauty():
    """A real sample of Amazon Beauty (the first 2,000 users of the P5 5-core file; see
    tests/data/amazon-beauty/README.md), through the loader `datasets.load("beauty")` uses."""
    from coachrec.data import load_sequences

    return load_sequences(BEAUTY_SAMPLE, name="beauty")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under `COACHREC_STRICT_SKIPS=1` (set by `run.sh test`, which installs every model and
    receiver the suite needs) a skipped test is a failure: a test that cannot run is not a pass."""
    outcome = yield
    rep = outcome.get_result()
    if os.environ.get("COACHREC_STRICT_SKIPS") == "1" and rep.skipped and not hasattr(rep, "wasxfail"):
        rep.outcome = "failed"
        reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
        rep.longrepr = f"skipped, but COACHREC_STRICT_SKIPS=1 requires every test to run: {reason}"
