"""`GET /v1/monitor`: drift of a current window of served requests against a reference window,
as `coachrec monitor` prints it (read scope; `coachrec.app.create_app` mounts it).

    GET /v1/monitor?reference=14d..7d&current=7d..0d&test=&judge_version=

Per column: Evidently's default test (or `test`), its statistic, threshold, p-value and verdict;
the dataset verdict (>= 50% of columns); the alarm (hypothesis tests, Bonferroni over the
columns). Item popularity and age columns need the dataset and are left to the CLI
(`coachrec monitor --dataset`). A malformed window is 422; a window without requests 404.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query
from pydantic import BaseModel

from coachrec.monitor.drift import compare, system_drift
from coachrec.monitor.stattests import ColumnDrift
from coachrec.monitor.windows import FeedbackReader, column_group, parse_ago, read_window
from coachrec.serve.api import ERRORS
from coachrec.serve.auth import require
from coachrec.serve.schemas import ErrorOut
from coachrec.tracing import TraceStore

WINDOW = r"^\d+(\.\d+)?[smhd]?\.\.\d+(\.\d+)?[smhd]?$"
Test = Literal["ks", "chisquare", "z", "wasserstein", "jensenshannon", "psi"]


class WindowOut(BaseModel):
    since_ns: int
    until_ns: int
    requests: int


class ColumnOut(BaseModel):
    column: str
    group: str
    test: str
    statistic: float | None
    """None when not finite."""
    threshold: float
    p_value: float | None
    drifted: bool


class AlarmOut(BaseModel):
    drifted: bool
    alpha: float
    tests: int
    drifted_columns: list[str]


class MonitorOut(BaseModel):
    reference: WindowOut
    current: WindowOut
    dataset_drift: bool
    """Evidently's rule: at least half the columns drifted."""
    drifted_share: float
    columns: list[ColumnOut]
    alarm: AlarmOut
    skipped: dict[str, str]


def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def _column(c: ColumnDrift) -> ColumnOut:
    return ColumnOut(
        column=c.column,
        group=column_group(c.column),
        test=c.test,
        statistic=_finite(c.statistic),
        threshold=c.threshold,
        p_value=_finite(c.p_value),
        drifted=c.drifted,
    )


NO_REQUESTS: dict[int | str, dict[str, Any]] = {
    404: {"description": "a window holds no served requests", "model": ErrorOut}
}


def monitor_router(store: TraceStore, *, feedback: FeedbackReader | None = None) -> APIRouter:
    """The monitor route over `store` (outcome columns from `feedback`, the serving process's
    open feedback log, when given)."""
    router = APIRouter(tags=["monitor"], responses=ERRORS)

    @router.get(
        "/v1/monitor", response_model=MonitorOut, dependencies=[Depends(require("read"))], responses=NO_REQUESTS
    )
    def monitor(
        reference: str = Query("14d..7d", max_length=40, pattern=WINDOW, description="FROM..TO ago, e.g. 14d..7d"),
        current: str = Query("7d..0d", max_length=40, pattern=WINDOW, description="FROM..TO ago, e.g. 7d..0d"),
        test: Test | None = Query(None, description="one test for every column (default: Evidently's choice)"),
        judge_version: str | None = Query(None, min_length=1, max_length=200),
    ) -> MonitorOut:
        asked = {"reference": reference, "current": current}
        try:
            spans = {name: parse_ago(value) for name, value in asked.items()}
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from exc
        windows = {
            name: read_window(
                store, since, until, feedback=feedback if feedback is not None else False, judge_version=judge_version
            )
            for name, (since, until) in spans.items()
        }
        for name, window in windows.items():
            if window.n == 0:
                raise HTTPException(404, f"the {name} window ({asked[name]}) holds no served requests")
        ref, cur = windows["reference"], windows["current"]
        report = compare(ref, cur, test=test)
        alarm = system_drift(ref, cur, groups=("inputs", "scores", "outcomes", "quality"))
        return MonitorOut(
            reference=WindowOut(since_ns=spans["reference"][0], until_ns=spans["reference"][1], requests=ref.n),
            current=WindowOut(since_ns=spans["current"][0], until_ns=spans["current"][1], requests=cur.n),
            dataset_drift=report.dataset_drift(),
            drifted_share=report.share(),
            columns=[_column(c) for c in report.columns],
            alarm=AlarmOut(
                drifted=alarm.drifted, alpha=alarm.alpha, tests=len(alarm.tests), drifted_columns=alarm.drifted_columns
            ),
            skipped=report.skipped,
        )

    return router
