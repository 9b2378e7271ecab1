"""Deprecated: progress moved to `coachrec.progress` (the `Progress` protocol and `Silent`, for
library code) and `coachrec.cli.console` (`RichProgress`, the CLI's Rich implementation).

Kept importable until `coach/loop.py` and `benchmarks/coachrec_bench/coach.py` switch:
`SilentUI` is `coachrec.progress.Silent`; `RichUI` is `coachrec.cli.console.RichProgress`
(imported on first use, so library imports of this module do not load the CLI or Rich)."""

from __future__ import annotations

from typing import Any

from coachrec.progress import Advance, Silent

SilentUI = Silent

__all__ = ["Advance", "RichUI", "SilentUI"]


def __getattr__(name: str) -> Any:
    if name == "RichUI":
        from coachrec.cli.console import RichProgress

        return RichProgress
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
