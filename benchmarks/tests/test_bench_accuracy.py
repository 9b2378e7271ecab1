"""`coachrec bench accuracy` writes every model's rows, keyed by data set, model and fit."""

import json

from typer.testing import CliRunner

from coachrec.cli import app


def test_rows_are_saved_per_model_and_fit(tmp_path, monkeypatch):
    monkeypatch.setenv("COACHREC_BENCH_DIR", str(tmp_path))
    runner = CliRunner()
    base = ["bench", "accuracy", "--dataset", "ml-latest-small", "--model", "pop"]
    for extra in ([], ["--fit-on", "train+valid"], []):
        res = runner.invoke(app, base + extra)
        assert res.exit_code == 0, res.output
    rows = json.loads((tmp_path / "accuracy.json").read_text())
    ran = [r for r in rows if not r.get("published")]
    assert sorted((r["protocol"], r["fit_on"]) for r in ran) == [
        ("loo-full", "train"),
        ("loo-full/train+valid", "train+valid"),
    ]
    assert any(r.get("published") for r in rows)
    refit = next(r for r in ran if r["fit_on"] == "train+valid")["metrics"]
    plain = next(r for r in ran if r["fit_on"] == "train")["metrics"]
    assert refit["ndcg@10"] != plain["ndcg@10"]  # popularity counts include the valid events
    res = runner.invoke(app, [*base, "--fit-on", "everything"])
    assert res.exit_code != 0
