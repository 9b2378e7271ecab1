"""Latency of the request-understanding stages, for `coachrec bench serve`.

In process, tracing off, no LLM, k=10 over ml-latest-small: the default text stack
(`Stack.fit`: item-kNN + popularity, understand, intent, semantic, mentioned) with the
co-mention retriever learned from the bundled ReDial requests (`Stack.learn_conversations`),
served (a) known users without `context`, (b) anonymous requests whose `context` is a ReDial
conversation (the bundled turns, a few utterances to a few dozen) and (c) one-line messages.
Each row gives the whole request's p50/p99 and each understanding stage's own p50/p99 (the
`understand` stage and the `intent`, `semantic`, `mentioned` and `co-mention` retrievers, timed
around their calls). Start-up: the first request with text in a fresh process that loaded the
saved stack, without `warm()` and after it (`Service.open` warms).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from coachrec_bench.results import row

DATASET = "ml-latest-small"
TIMED = ("understand", "intent", "semantic", "mentioned", "co-mention")
MESSAGES = (
    "no horror please, I want a romance",
    "a classic from before 1980",
    "something funny like Super Troopers",
    "I loved The Matrix but didn't like the sequels",
    "a feel-good animated movie for the kids",
)


def _pct(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms, dtype=np.float64)
    return {"p50_ms": round(float(np.percentile(a, 50)), 3), "p99_ms": round(float(np.percentile(a, 99)), 3)}


def _timers(pipeline: Any, times: dict[str, list[float]]) -> None:
    """Wrap the understand stage and the text retrievers so each call's time is recorded."""

    def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter_ns()
            try:
                return fn(*args, **kwargs)
            finally:
                times.setdefault(name, []).append((time.perf_counter_ns() - t0) / 1e6)

        return call

    from coachrec.serve.stages import Retrieve

    for i, stage in enumerate(pipeline.stages):
        if stage.name == "understand":
            pipeline.stages[i] = _Timed(stage, timed("understand", stage.__call__))
        if isinstance(stage, Retrieve):
            for r in stage.retrievers:
                if r.name in TIMED:
                    r.retrieve = timed(r.name, r.retrieve)


class _Timed:
    """A stage with its call timed (keeps the stage's name, kind and attributes)."""

    def __init__(self, stage: Any, call: Callable[..., Any]) -> None:
        self._stage, self._call = stage, call

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stage, name)

    def __call__(self, *args: Any) -> Any:
        return self._call(*args)


def _first_request(stack_dir: str, warm: bool) -> dict[str, float]:
    code = f"""
import json, time
from coachrec.serve import RecommendRequest, Stack
from coachrec.tracing import Tracer
t0 = time.perf_counter(); stack = Stack.load({stack_dir!r}); p = stack.pipeline(Tracer(enabled=False))
load = time.perf_counter() - t0
t0 = time.perf_counter()
if {warm!r}:
    p.warm()
w = time.perf_counter() - t0
t0 = time.perf_counter(); p.recommend(RecommendRequest(context="something funny like Super Troopers", k=10))
first = time.perf_counter() - t0
t0 = time.perf_counter(); p.recommend(RecommendRequest(context="a classic from before 1980", k=10))
second = time.perf_counter() - t0
print(json.dumps({{"load_s": load, "warm_s": w, "first_ms": first * 1000, "second_ms": second * 1000}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=900)
    return {k: round(v, 3) for k, v in json.loads(out.stdout.strip().splitlines()[-1]).items()}


def understanding_rows(requests: int = 300, seed: int = 0) -> list[dict[str, Any]]:
    from coachrec import datasets
    from coachrec.serve import RecommendRequest, Stack
    from coachrec.tracing import Tracer

    data = datasets.load(DATASET)
    reqs = datasets.requests("redial-ml")
    stack = Stack.fit(data, seed=seed).learn_conversations(reqs, seed=seed)
    users = stack.models[0].users
    assert users is not None
    rng = np.random.default_rng(seed)
    talk = [r["context"] for r in reqs if r["context"]]  # a turn the recommender opens has no words yet
    pipeline = stack.pipeline(Tracer(enabled=False))
    pipeline.warm()
    times: dict[str, list[float]] = {}
    _timers(pipeline, times)
    kinds: dict[str, list[RecommendRequest]] = {
        "no context (known users)": [
            RecommendRequest(user_id=str(users.ids[u]), k=10) for u in rng.choice(len(users), requests)
        ],
        "context: a ReDial conversation": [
            RecommendRequest(context=talk[i], k=10) for i in rng.choice(len(talk), requests)
        ],
        "context: a one-line message": [
            RecommendRequest(context=MESSAGES[i % len(MESSAGES)], k=10) for i in range(requests)
        ],
    }
    rows = []
    for kind, batch in kinds.items():
        for r in batch[:20]:  # warm caches
            pipeline.recommend(r)
        times.clear()
        load_before = round(os.getloadavg()[0], 2)
        total = []
        for r in batch:
            t0 = time.perf_counter_ns()
            pipeline.recommend(r)
            total.append((time.perf_counter_ns() - t0) / 1e6)
        turns = [len(r.context) if isinstance(r.context, list) else 1 for r in batch if r.context is not None]
        stages = {f"{name}_{k}": v for name, ms in times.items() if ms for k, v in _pct(ms).items()}
        understanding = [sum(v) for v in zip(*(times[n] for n in TIMED if times.get(n)), strict=False)]
        metrics: dict[str, Any] = _pct(total) | {
            "requests": len(batch),
            **stages,
            "understanding_p99_ms": _pct(understanding)["p99_ms"] if understanding else 0.0,
            "target_understanding_p99_ms": 25.0,
            "turns_mean": round(float(np.mean(turns)), 1) if turns else 0.0,
            "loadavg_1m_before": load_before,
            "loadavg_1m_after": round(os.getloadavg()[0], 2),
        }
        metrics["meets_target"] = bool(metrics["understanding_p99_ms"] < 25.0)
        rows.append(row("serve: understanding stages", DATASET,
                        f"in-process pipeline, untraced, k=10, {kind}; {stack.describe()}", metrics))  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        stack.save(Path(tmp) / "stack")
        cold, warm = _first_request(str(Path(tmp) / "stack"), False), _first_request(str(Path(tmp) / "stack"), True)
    rows.append(row("serve: first request with text", DATASET,
                    "fresh process, saved stack loaded, first and second request with context, without and "
                    "after Pipeline.warm() (what Service.open does at start-up)",
                    {**{f"{k}_without_warm": v for k, v in cold.items() if k != "warm_s"},
                     **{f"{k}_with_warm": v for k, v in warm.items()},
                     "loadavg_1m": round(os.getloadavg()[0], 2)}))  # fmt: skip
    return rows


if __name__ == "__main__":
    from coachrec_bench.results import write

    rows = understanding_rows(int(sys.argv[1]) if len(sys.argv) > 1 else 300)
    for r in rows:
        print(r["protocol"], json.dumps(r["metrics"]))
    print(write("serve_understanding", rows))
