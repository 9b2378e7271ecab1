"""`coachrec bench speed` times models and keeps the rows of earlier runs in its file."""

import json

from typer.testing import CliRunner

from coachrec.cli import app


def test_speed_rows_accumulate_across_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("COACHREC_BENCH_DIR", str(tmp_path))
    runner = CliRunner()
    for model in ("pop", "itemknn", "pop"):
        res = runner.invoke(
            app,
            ["bench", "speed", "--model", model, "--dataset", "ml-latest-small", "--requests", "5", "--threads", "1"],
        )
        assert res.exit_code == 0, res.output
    rows = json.loads((tmp_path / "speed.json").read_text())
    assert sorted(r["name"] for r in rows) == ["itemknn", "pop"]  # the second pop run replaced the first
    m = rows[0]["metrics"]
    assert m["seconds_per_epoch"] > 0 and m["recommend_p99_ms"] >= m["recommend_p50_ms"] > 0
    assert 0 < m["ndcg@10_loo-full"] < 1 and "full ranking" in rows[0]["protocol"]
