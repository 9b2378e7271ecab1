"""`coachrec train` fits, reports, saves; `coachrec evaluate --model-path` reads the result."""

import json

import pytest
import typer
from typer.testing import CliRunner

from coachrec.cli import app
from coachrec.cli.train import parse_sets
from coachrec.models import load


def _flat(output: str) -> str:
    """CLI output without rich's panel borders and line wrapping."""
    return " ".join(output.replace("│", " ").split())


def test_parse_sets():
    assert parse_sets(["layers=[64]", "loss=bpr-max", "momentum=0.3", "constrained_embedding=false", "n_sample=0"]) == {
        "layers": [64],
        "loss": "bpr-max",
        "momentum": 0.3,
        "constrained_embedding": False,
        "n_sample": 0,
    }
    with pytest.raises(typer.BadParameter):
        parse_sets(["novalue"])


def test_train_then_evaluate_saved_model(tmp_path):
    runner = CliRunner()
    out = tmp_path / "g"
    args = [
        "train",
        "--model",
        "gru4rec",
        "--dataset",
        "ml-latest-small",
        "--out",
        str(out),
        "--epochs",
        "1",
        "--threads",
        "1",
        "--seed",
        "3",
    ]
    args += ["--set", "layers=[16]", "--set", "n_sample=32", "--set", "batch_size=64", "--valid", "--checkpoint"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "epoch 1/1: loss" in res.output and "valid (leave-one-out" in res.output
    m = load(out)
    assert m.config.layers == [16] and m.config.seed == 3 and m.config.loss == "bpr-max"  # defaults + overrides
    assert m.fit_info["fit_on"] == "train"
    res = runner.invoke(
        app, ["evaluate", "--model-path", str(out), "--dataset", "ml-latest-small", "--json", str(tmp_path / "r.json")]
    )
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "r.json").read_text())["protocol"] == "loo-full"
    # a model fitted on train only is not evaluated under the refit protocol, and vice versa
    res = runner.invoke(
        app,
        ["evaluate", "--model-path", str(out), "--dataset", "ml-latest-small", "--protocol", "loo-full/train+valid"],
    )
    assert res.exit_code != 0 and "use --protocol loo-full" in _flat(res.output)


def test_refit_on_train_and_valid(tmp_path):
    runner = CliRunner()
    out = tmp_path / "pop"
    res = runner.invoke(
        app, ["train", "--model", "pop", "--dataset", "ml-latest-small", "--out", str(out), "--fit-on", "train+valid"]
    )
    assert res.exit_code == 0, res.output
    assert load(out).fit_info["fit_on"] == "train+valid"
    res = runner.invoke(
        app,
        [
            "evaluate",
            "--model-path",
            str(out),
            "--dataset",
            "ml-latest-small",
            "--protocol",
            "loo-full/train+valid",
            "--json",
            str(tmp_path / "r.json"),
        ],
    )
    assert res.exit_code == 0, res.output
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["protocol"] == "loo-full/train+valid" and "train + validation" in r["protocol_detail"]["description"]
    res = runner.invoke(app, ["train", "--model", "pop", "--out", str(out), "--fit-on", "train+valid", "--valid"])
    assert res.exit_code != 0 and "--valid needs --fit-on train" in _flat(res.output)


def test_train_rejects_unknown_setting(tmp_path):
    res = CliRunner().invoke(app, ["train", "--model", "gru4rec", "--out", str(tmp_path / "x"), "--set", "hidden=3"])
    assert res.exit_code != 0
    assert "no setting" in res.output


def test_evaluate_needs_to_know_what_a_saved_model_was_fitted_on(tmp_path):
    runner = CliRunner()
    out = tmp_path / "pop"
    assert runner.invoke(app, ["train", "--model", "pop", "--out", str(out)]).exit_code == 0
    meta_path = out / "model.json"
    meta = json.loads(meta_path.read_text())
    assert meta["fit_info"]["fit_on"] == "train" and meta["fit_info"]["split"] == "leave-one-out"
    # fitted on a leave-one-out part: a temporal test split may be in its training events
    res = runner.invoke(app, ["evaluate", "--model-path", str(out), "--protocol", "temporal-full"])
    assert res.exit_code != 0 and "leave-one-out split" in _flat(res.output)
    # a model that does not say what it was fitted on is not scored as if it were "train"
    del meta["fit_info"]["fit_on"]
    meta_path.write_text(json.dumps(meta))
    res = runner.invoke(app, ["evaluate", "--model-path", str(out)])
    squashed = "".join(_flat(res.output).split())  # rich may wrap a long temporary path anywhere
    assert res.exit_code != 0 and "model.json" in squashed and "doesnotrecordwhatthemodelwasfittedon" in squashed


def test_checkpoints_record_fit_on(tmp_path):
    """`--checkpoint` saves after every epoch; each save says what it was fitted on."""
    out = tmp_path / "g"
    args = [
        "train",
        "--model",
        "gru4rec",
        "--out",
        str(out),
        "--epochs",
        "2",
        "--threads",
        "1",
        "--fit-on",
        "train+valid",
        "--checkpoint",
    ]
    args += ["--set", "layers=[16]", "--set", "n_sample=32", "--set", "batch_size=64"]
    seen = []
    import coachrec.models.base as base

    real = base.BaseRecommender.save

    def spy(self, path):
        p = real(self, path)
        seen.append(json.loads((p / "model.json").read_text())["fit_info"])
        return p

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(base.BaseRecommender, "save", spy)
        res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert [f.get("epochs_done") for f in seen] == [1, 2, None]  # two checkpoints, then the final save
    assert all(f["fit_on"] == "train+valid" for f in seen)
    res = CliRunner().invoke(app, ["evaluate", "--model-path", str(out)])
    assert res.exit_code != 0 and "use --protocol loo-full/train+valid" in _flat(res.output)
