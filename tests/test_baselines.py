"""Popularity and item-kNN end to end: fit, evaluate, recommend, save, load."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from coachrec.cli import app
from coachrec.data import Dataset, Event, leave_one_out
from coachrec.metrics import evaluate, named
from coachrec.models import create, load


@pytest.fixture(scope="module")
def planted():
    """Users walk chains a -> b -> c; item-kNN should find the next link, pop cannot."""
    rng = np.random.default_rng(0)
    evs = []
    for u in range(300):
        start = rng.integers(0, 40)
        for t in range(6):
            evs.append(Event(f"u{u}", f"i{(start + t) % 40}", t))
    return Dataset.from_events(evs, name="chains")


def test_itemknn_beats_pop_on_planted(planted):
    split = leave_one_out(planted)
    models = {"pop": create("pop"), "itemknn": create("itemknn", recency=0.5)}
    res = {n: evaluate(m.fit(split.train), split, named("loo-full")) for n, m in models.items()}
    assert res["itemknn"].metrics["hr@10"] > 0.9
    assert res["itemknn"].metrics["hr@10"] > res["pop"].metrics["hr@10"] + 0.5


@pytest.mark.parametrize("name", ["pop", "itemknn"])
def test_save_load_round_trip(name, ml_small, tmp_path):
    m = create(name).fit(ml_small)
    m.save(tmp_path / name)
    m2 = load(tmp_path / name)
    assert type(m2) is type(m) and m2.config == m.config
    h = ml_small.histories([0, 5, 9])
    np.testing.assert_array_equal(m.score(h), m2.score(h))
    assert m.recommend("1", k=5).items == m2.recommend("1", k=5).items
    meta = json.loads((tmp_path / name / "model.json").read_text())
    assert meta["model"] == name and "coachrec_version" in meta and "config" in meta


def test_recommend_known_anonymous_and_errors(ml_small):
    m = create("itemknn").fit(ml_small)
    seen = set(ml_small.items.decode(m.user_history(ml_small.users.index("1"))))
    rec = m.recommend("1", k=10)
    assert len(rec) == 10 and not seen & set(rec.items)
    anon = m.recommend(history=["1", "2", "not-an-item"], k=5)
    assert len(anon) == 5 and "1" not in anon.items and anon.ignored_history == ["not-an-item"]
    assert list(anon.scores) == sorted(anon.scores, reverse=True)
    with pytest.raises(KeyError, match="unknown user"):
        m.recommend("no-such-user")
    with pytest.raises(RuntimeError, match="not fitted"):
        create("pop").recommend(history=["1"])


def test_sampled_protocol_draws_unseen_negatives(ml_small):
    split = leave_one_out(ml_small)
    m = create("pop").fit(split.train)
    a = evaluate(m, split, named("loo-sampled100"))
    b = evaluate(m, split, named("loo-sampled100"))
    assert a.metrics == b.metrics  # seeded
    full = evaluate(m, split, named("loo-full"))
    assert a.metrics["ndcg@10"] > full.metrics["ndcg@10"]  # 101 candidates are easier than all items


def test_cli_evaluate_json_contract(tmp_path):
    out = tmp_path / "r.json"
    r = CliRunner().invoke(
        app,
        [
            "evaluate",
            "--model",
            "itemknn",
            "--dataset",
            "ml-latest-small",
            "--protocol",
            "loo-full",
            "--json",
            str(out),
        ],
    )
    assert r.exit_code == 0, r.output
    assert "leave-one-out, full ranking" in r.output
    d = json.loads(out.read_text())
    assert {"model", "dataset", "protocol", "metrics", "users", "seconds"} <= set(d)
    assert d["protocol"] == "loo-full" and d["users"] == 610 and d["model"] == "itemknn"
    assert 0 < d["metrics"]["ndcg@10"] <= d["metrics"]["recall@10"] <= 1


def test_cli_evaluate_bad_input():
    r = CliRunner().invoke(app, ["evaluate", "--dataset", "no-such-data"])
    assert r.exit_code != 0 and "unknown dataset 'no-such-data'" in str(r.exception)
    r = CliRunner().invoke(app, ["evaluate", "--protocol", "loo-whatever"])
    assert r.exit_code != 0 and "unknown protocol" in str(r.exception)


def test_console_script_reports_bad_input_without_traceback():
    import subprocess
    import sys
    from pathlib import Path

    exe = Path(sys.executable).with_name("coachrec")
    r = subprocess.run([str(exe), "evaluate", "--model", "nope"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "error: unknown model 'nope'" in r.stderr and "Traceback" not in r.stderr + r.stdout
