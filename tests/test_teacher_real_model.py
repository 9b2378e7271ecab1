"""The teacher's LLM criteria on real traces with the real smallest local model (SmolLM2-135M).

CI runs `coachrec models pull small` first; the test skips (saying why) when the model or
llama-cpp-python is not installed.
"""

import pytest

from coachrec.models import create
from coachrec.serve.pipeline import Pipeline
from coachrec.teacher import CatalogView, Judge, cases_from_store, load_rubric, record
from coachrec.teacher.traffic import replay_requests
from coachrec.tracing import Tracer, TraceStore


@pytest.fixture(scope="module")
def small_llm():
    from coachrec.llm import LlamaCppConfig, LLMError, load_backend

    try:  # one thread: on a busy 2-core box two threads contend and run slower
        backend = load_backend("small", llama=LlamaCppConfig(n_threads=1, n_ctx=1024))
    except LLMError as exc:
        pytest.skip(f"small model unavailable: {exc}")
    yield backend
    backend.close()


def test_small_model_judges_real_traces(ml_small, small_llm, tmp_path):
    store = TraceStore(tmp_path / "traces.duckdb")
    pipeline = Pipeline.from_models([create("pop").fit(ml_small)], ml_small.catalog, tracer=Tracer(store))
    results = [
        pipeline.recommend(r)
        for r in replay_requests(ml_small.users.ids[:5].tolist(), 2, k=3, context_rate=1.0, seed=2)
    ]
    store.flush()
    rubric = load_rubric()
    judge = Judge(
        rubric, CatalogView(ml_small.catalog), llm=small_llm, criteria=["slate_variety", "no_duplicates"]
    )  # the shortest LLM prompt keeps the test quick
    cases = cases_from_store(store, [r.trace_id for r in results])
    judgments = judge.judge(cases)
    llm = [j for j in judgments if j.evaluator == small_llm.model_id]
    assert [j.criterion for j in llm] == ["slate_variety", "slate_variety"]
    for j in llm:
        assert 0.0 <= j.score <= 1.0 and j.order_scores is not None and j.label in ("pass", "fail")
        assert j.failed == bool(j.failure_modes)
    record(store, judgments)
    assert store.evaluations().num_rows == len(judgments)
    store.close()
