"""`coachrec bench accuracy` writes every model's rows, keyed by data set, model and fit."""

import json

import pytest
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


def test_blend_rows_carry_weights_and_the_paired_difference(tmp_path, monkeypatch):
    monkeypatch.setenv("COACHREC_BENCH_DIR", str(tmp_path))
    runner = CliRunner()
    base = ["bench", "accuracy", "--dataset", "ml-latest-small", "--model", "pop", "--model", "itemknn"]
    res = runner.invoke(app, [*base, "--blend", "itemknn+pop"])
    assert res.exit_code == 0, res.output
    rows = {r["name"]: r for r in json.loads((tmp_path / "accuracy.json").read_text())}
    blend = rows["blend(itemknn+pop)"]["metrics"]
    assert blend["vs"] == "itemknn"
    assert blend["valid_ndcg@10"] >= 0
    assert blend["weights"].startswith("itemknn=")
    delta = blend["ndcg@10"] - rows["itemknn"]["metrics"]["ndcg@10"]
    assert blend["ndcg@10_delta"] == pytest.approx(delta, abs=1e-4)
    assert blend["ndcg@10_delta_ci_low"] <= blend["ndcg@10_delta"] <= blend["ndcg@10_delta_ci_high"]
    assert [p["vs"] for p in blend["paired_vs_parts"]] == ["itemknn", "pop"]
    assert blend["paired_vs_parts"][0]["recall@10_delta"] == blend["recall@10_delta"]
    bad = runner.invoke(app, [*base, "--blend", "itemknn+sasrec"])
    assert bad.exit_code != 0


def test_cache_reuses_fitted_models(tmp_path, monkeypatch):
    monkeypatch.setenv("COACHREC_BENCH_DIR", str(tmp_path))
    runner = CliRunner()
    cmd = ["bench", "accuracy", "--dataset", "ml-latest-small", "--model", "pop", "--cache", str(tmp_path / "c")]
    first = runner.invoke(app, cmd)
    assert first.exit_code == 0, first.output
    saved = list((tmp_path / "c").iterdir())
    assert len(saved) == 1 and (saved[0] / "bench.json").exists()
    before = next(r for r in json.loads((tmp_path / "accuracy.json").read_text()) if r["name"] == "pop")
    again = runner.invoke(app, cmd)
    assert again.exit_code == 0, again.output
    assert "loaded from" in again.output
    after = next(r for r in json.loads((tmp_path / "accuracy.json").read_text()) if r["name"] == "pop")
    assert after["metrics"]["ndcg@10"] == before["metrics"]["ndcg@10"]
    assert after["metrics"]["fit_seconds"] == before["metrics"]["fit_seconds"]


def test_fine_blend_rows_name_their_norm_and_pair_with_the_reference(tmp_path, monkeypatch):
    monkeypatch.setenv("COACHREC_BENCH_DIR", str(tmp_path))
    runner = CliRunner()
    base = ["bench", "accuracy", "--dataset", "ml-latest-small", "--model", "pop", "--model", "itemknn"]
    ref = "blend(itemknn+pop)"
    res = runner.invoke(app, [*base, "--blend", "itemknn+pop", "--blend-fine", "itemknn+pop", "--vs", ref])
    assert res.exit_code == 0, res.output
    rows = {r["name"]: r for r in json.loads((tmp_path / "accuracy.json").read_text())}
    fine = rows["blend-fine(itemknn+pop)"]["metrics"]
    assert fine["norm"] in ("z", "rank")
    assert fine["valid_ndcg@10"] == max(fine["valid_ndcg@10_by_norm"].values())
    assert fine["valid_ndcg@10"] >= rows[ref]["metrics"]["valid_ndcg@10"] - 1e-4  # a finer search, same data
    assert fine["vs"] == ref
    delta = fine["ndcg@10"] - rows[ref]["metrics"]["ndcg@10"]
    assert fine["ndcg@10_delta"] == pytest.approx(delta, abs=1e-4)
    assert [p["vs"] for p in fine["paired_vs_parts"]] == ["itemknn", "pop"]
    assert rows[ref]["metrics"]["vs"] == "itemknn"  # a blend is never paired with itself
