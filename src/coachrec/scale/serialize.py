"""Judge cases and judgments as JSON text: what travels between the driver and Ray workers
(a Parquet column of cases in, a column of judgments out)."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from coachrec.teacher import JudgeCase, Judgment
from coachrec.teacher.cases import SpanRef


def case_to_json(case: JudgeCase) -> str:
    return json.dumps(asdict(case))


def case_from_json(text: str) -> JudgeCase:
    d: dict[str, Any] = json.loads(text)
    d["spans"] = [SpanRef(**s) for s in d["spans"]]
    return JudgeCase(**d)


def judgment_to_json(j: Judgment) -> str:
    return json.dumps(asdict(j), allow_nan=True)


def judgment_from_json(text: str) -> Judgment:
    d: dict[str, Any] = json.loads(text)
    d["failure_modes"] = tuple(d["failure_modes"])
    if d.get("order_scores") is not None:
        d["order_scores"] = tuple(d["order_scores"])
    return Judgment(**d)
