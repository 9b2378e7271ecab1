"""`coachrec bench conversational` on the shipped ReDial sample: one row per configuration and
per published model, paired differences with GPT-4 on the same targets, latency; the cost plot
waits for rows with a cost."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from coachrec.cli import app

SAMPLE = Path(__file__).resolve().parents[2] / "tests" / "data" / "redial"


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    mp = pytest.MonkeyPatch()
    mp.setenv("COACHREC_BENCH_DIR", str(out))
    try:
        args = [
            "bench",
            "conversational",
            "--data",
            str(SAMPLE),
            "--no-tune",
            "--latency-turns",
            "10",
            "--n-boot",
            "200",
            "--n-perm",
            "500",
        ]
        res = CliRunner().invoke(app, args)
    finally:
        mp.undo()
    assert res.exit_code == 0, res.output
    assert "popularity + co-mention" in res.output and "R@10" in res.output
    return json.loads((out / "conversational.json").read_text())


def test_a_row_per_configuration_and_published_model(rows):
    names = [r["name"] for r in rows]
    assert names == [
        "popularity (MovieLens)",
        "mention-kNN (MovieLens)",
        "popularity",
        "popularity + mention→target",
        "popularity + co-mention",
        "GPT-4",
        "GPT-3.5-turbo",
        "Vicuna-13B",
        "BAIZE-V2-13B",
    ]
    for r in rows:
        m = r["metrics"]
        assert r["protocol"].startswith("conv-full") and r["dataset"] == "redial-test"
        assert m["targets"] == 202
        assert all(0 <= m[k] <= 1 for k in ("recall@1", "recall@5", "recall@10", "recall@20", "ndcg@10", "mrr@10"))
        assert m["recall@1"] <= m["recall@5"] <= m["recall@10"] <= m["recall@20"]
        assert isinstance(m["zero_shot"], bool) and m["signals"]


def test_differences_with_gpt4_latency_and_linking(rows):
    by = {r["name"]: r["metrics"] for r in rows}
    gpt4 = by["GPT-4"]
    assert "vs_gpt-4" not in gpt4 and "latency_p50_ms" not in gpt4
    for name, m in by.items():
        if name == "GPT-4":
            continue
        d = m["vs_gpt-4"]["recall@10"]
        assert d["delta"] == pytest.approx(m["recall@10"] - gpt4["recall@10"], abs=2e-4)
        assert d["ci_low"] <= d["delta"] <= d["ci_high"] and 0 < d["p"] <= 1 and d["n"] == 202
    for name in ("popularity", "popularity + co-mention", "mention-kNN (MovieLens)"):
        m = by[name]
        assert 0 < m["latency_p50_ms"] <= m["latency_p99_ms"] and m["latency_turns"] == 10
        assert "recall@10_by_id" in m
    assert by["popularity + co-mention"]["folds"] == 2 and not by["popularity"]["zero_shot"]
    link = by["mention-kNN (MovieLens)"]["linker"]
    assert link["candidates"] == 6281 and 0.6 < link["candidate_coverage"] < 0.7


def test_cost_plot_waits_for_costs(rows, tmp_path):
    from coachrec_bench.conversational import plot_cost

    assert plot_cost(rows, tmp_path / "c.png") is None
    priced = [
        dict(r, metrics=dict(r["metrics"], cost_per_1k_requests=c)) for r, c in zip(rows[4:6], (0.0, 30.0), strict=True)
    ]
    assert plot_cost(priced, tmp_path / "c.png") == tmp_path / "c.png"
    assert (tmp_path / "c.png").stat().st_size > 1000


def test_goal_ranker_rows_and_linked_only():
    import numpy as np

    from coachrec.serve.candidates import Candidates
    from coachrec_bench.conversational_goal import linked_only, ranker_matrix

    src = np.array([[3.0, np.nan], [1.0, 0.5], [2.0, 0.9]], np.float32)
    c = Candidates(np.array([4, 7, 9]), np.zeros(3), src, ("a", "b"))
    x = ranker_matrix(c, (2.0, 5.0))
    assert x.shape == (3, 2 * 3 + 2)
    assert np.isnan(x[0, 1]) and x[1, 1] == 0.5  # raw, NaN kept where a signal is absent
    assert x[:, 2].tolist() == [1.0, 0.0, 0.5]  # scaled to [0, 1] over the set
    assert np.allclose(x[:, 4], np.log1p([0, 2, 1])) and np.isnan(x[0, 5])  # log(1 + rank) within the set
    assert x[:, 6:].tolist() == [[2.0, 5.0]] * 3  # the turn's shape
    linked = np.zeros(10, bool)
    linked[[4, 9]] = True
    ((idx, s),) = linked_only([(c.idx, np.array([0.1, 0.2, 0.3]))], linked)
    assert idx.tolist() == [4, 9] and s.tolist() == [0.1, 0.3]
