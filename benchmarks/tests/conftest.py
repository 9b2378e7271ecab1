"""The benchmark tests run under the same rules as tests/: tests/conftest.py is loaded from
here too (its fixtures, the strict-skips hook, COACHREC_SHARED pointed at a missing folder so
no test reads ../shared), whether pytest runs both folders or only benchmarks/tests."""

import importlib.util
import sys
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _main_conftest():
    name = "_coachrec_tests_conftest"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "tests" / "conftest.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


_shared = _main_conftest()
# Fixtures and hooks pytest finds in this conftest: every public name of tests/conftest.py.
globals().update(
    {
        k: v
        for k, v in vars(_shared).items()
        if not k.startswith("_") and callable(v) and not isinstance(v, (types.ModuleType, type))
    }
)
