"""coachrec: coachable recommender systems. The whole public face on one page:

    import coachrec as cr

    data = cr.load_dataset("ml-latest-small")            # bundled; cr.load_data(path), cr.load_csv(...)
    split = cr.leave_one_out(data)                       # last event test, second-to-last validation
    model = cr.create_model("sasrec", dataset=data).fit(split.train)   # tuned defaults for the data
    cr.evaluate(model, split, cr.protocol("loo-full")).metrics["ndcg@10"]

    stack = cr.Stack.fit(split.train)                    # retrievers, ranker, policy (+ LLM tiers)
    service = cr.Service.open(stack, db="traces.duckdb") # every request traced, feedback durable
    service.recommend(cr.RecommendRequest(user_id="1", k=10))
    app = cr.create_app(service)                         # the FastAPI app `coachrec serve` runs

    tracer = cr.Tracer(cr.TraceStore("traces.duckdb"))   # trace your own code: `with tracer.span(...)`
    judge = cr.Judge(cr.load_rubric(), ...)              # the teacher over stored traces
    review = cr.ReviewStore("review.duckdb")             # human review queue, golden sets
    cr.run_loop(cr.LoopConfig(), cr.Registry(), out=Path("runs/coach"))   # observe, distil, gate

The loop: data -> models -> serve (Stack, Pipeline) -> tracing -> teacher -> review -> coach,
with `coachrec.app` composing them. Names load lazily, so `import coachrec` costs nothing and
each package is imported only when one of its names is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "load_dataset": "coachrec.datasets:load",
    "load_data": "coachrec.data:load",
    "load_csv": "coachrec.data:load_csv",
    "Dataset": "coachrec.data:Dataset",
    "leave_one_out": "coachrec.data:leave_one_out",
    "create_model": "coachrec.models:create",
    "load_model": "coachrec.models:load",
    "evaluate": "coachrec.metrics:evaluate",
    "protocol": "coachrec.metrics:named",
    "Stack": "coachrec.serve:Stack",
    "Service": "coachrec.serve:Service",
    "RecommendRequest": "coachrec.serve:RecommendRequest",
    "create_app": "coachrec.app:create_app",
    "Tracer": "coachrec.tracing:Tracer",
    "TraceStore": "coachrec.tracing:TraceStore",
    "Judge": "coachrec.teacher:Judge",
    "load_rubric": "coachrec.teacher:load_rubric",
    "ReviewStore": "coachrec.review:ReviewStore",
    "LoopConfig": "coachrec.coach:LoopConfig",
    "Registry": "coachrec.coach:Registry",
    "run_loop": "coachrec.coach:run_loop",
}

__all__ = [
    "Dataset",
    "Judge",
    "LoopConfig",
    "RecommendRequest",
    "Registry",
    "ReviewStore",
    "Service",
    "Stack",
    "TraceStore",
    "Tracer",
    "__version__",
    "create_app",
    "create_model",
    "evaluate",
    "leave_one_out",
    "load_csv",
    "load_data",
    "load_dataset",
    "load_model",
    "load_rubric",
    "protocol",
    "run_loop",
]

if TYPE_CHECKING:
    from coachrec.app import create_app
    from coachrec.coach import LoopConfig, Registry, run_loop
    from coachrec.data import Dataset, leave_one_out, load_csv
    from coachrec.data import load as load_data
    from coachrec.datasets import load as load_dataset
    from coachrec.metrics import evaluate
    from coachrec.metrics import named as protocol
    from coachrec.models import create as create_model
    from coachrec.models import load as load_model
    from coachrec.review import ReviewStore
    from coachrec.serve import RecommendRequest, Service, Stack
    from coachrec.teacher import Judge, load_rubric
    from coachrec.tracing import Tracer, TraceStore


def __getattr__(name: str) -> Any:
    target = _EXPORTS.get(name)
    if target is None:
        raise AttributeError(f"module 'coachrec' has no attribute {name!r}")
    module, _, attr = target.partition(":")
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
