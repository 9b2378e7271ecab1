"""Ray, optional: `pip install coachrec[ray]` (run.sh installs it with the dev extra).

`ray_runtime()` joins the cluster named by `$RAY_ADDRESS` (or `address=`) when given, else
starts a local Ray with `num_cpus` workers' worth of CPUs; without Ray installed every entry
point raises `RayMissingError` saying how to install it.
"""

from __future__ import annotations

import os
from types import ModuleType
from typing import Any


class RayMissingError(RuntimeError):
    """Ray is not installed."""


def require_ray() -> ModuleType:
    try:
        import ray
    except ImportError as exc:
        raise RayMissingError(
            "Ray is not installed: `pip install 'coachrec[ray]'` (or `pip install 'ray[data]'`) to run judging, "
            "labelling and evaluation as Ray Data pipelines"
        ) from exc
    return ray


def ray_runtime(*, num_cpus: int | None = None, address: str | None = None) -> Any:
    """The running Ray (started here if needed: local, or the cluster at `address`/`$RAY_ADDRESS`),
    with Ray Data's progress bars off (coachrec reports progress itself)."""
    ray = require_ray()
    if not ray.is_initialized():
        target = address or os.environ.get("RAY_ADDRESS")
        if target:
            ray.init(address=target, log_to_driver=False)
        else:
            ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
    import ray.data

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    return ray
