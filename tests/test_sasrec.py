"""SASRec learns a planted sequential pattern, round-trips through save/load, serves
anonymous histories."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from coachrec.data import Dataset, leave_one_out
from coachrec.metrics import evaluate, named
from coachrec.models import create, load

torch = pytest.importorskip("torch")


def planted(n_users: int = 160, n_items: int = 30, length: int = 10, seed: int = 0) -> Dataset:
    """Every user walks a cycle: item i is always followed by item (i + 1) % n_items, from a
    random start. Popularity is flat, so only the order predicts the next item."""
    rng = np.random.default_rng(seed)
    users, items, times = [], [], []
    for u in range(n_users):
        start = int(rng.integers(n_items))
        for t in range(length):
            users.append(f"u{u}")
            items.append(f"i{(start + t) % n_items}")
            times.append(t)
    return Dataset.from_frame(pl.DataFrame({"user": users, "item": items, "time": times}), name="planted")


@pytest.fixture(scope="module")
def split():
    return leave_one_out(planted())


@pytest.fixture(scope="module")
def fitted(split):
    return create("sasrec", epochs=15, dim=32, max_len=10, dropout=0.1, lr=5e-3, seed=1).fit(split.train)


def test_learns_planted_order_far_above_popularity(split, fitted):
    proto = named("loo-full")
    ours = evaluate(fitted, split, proto).metrics["ndcg@10"]
    pop = evaluate(create("pop").fit(split.train), split, proto).metrics["ndcg@10"]
    assert ours > 0.8 and ours > 3 * pop


def test_paper_and_sampled_losses_learn(split):
    for loss, negatives in (("bce", "batch"), ("sampled-ce", "batch"), ("sampled-ce", "sequence")):
        m = create(
            "sasrec",
            loss=loss,
            negatives=negatives,
            n_negatives=16,
            epochs=12,
            dim=32,
            max_len=10,
            dropout=0.1,
            lr=5e-3,
        ).fit(split.train)
        assert evaluate(m, split, named("loo-full")).metrics["recall@10"] > 0.6, (loss, negatives)
    with pytest.raises(ValueError, match="negatives"):
        create("sasrec", loss="sampled-ce", negatives="position").fit(split.train)


def test_save_load_identical_scores(tmp_path, fitted):
    hist = [fitted.user_history(u) for u in range(5)] + [np.zeros(0, dtype=np.int64)]
    again = load(fitted.save(tmp_path / "m"))
    np.testing.assert_array_equal(fitted.score(hist), again.score(hist))
    # padding does not change scores: one history alone or in a batch with longer ones
    np.testing.assert_allclose(fitted.score(hist[:1]), fitted.score(hist)[:1], rtol=1e-5, atol=1e-5)


def test_anonymous_history_recommends_next_in_cycle(fitted):
    rec = fitted.recommend(history=["i3", "i4", "i5", "unknown"], k=3)
    assert rec.items[0] == "i6"
    assert rec.ignored_history == ["unknown"]
    assert len(fitted.recommend(history=[], k=5)) == 5


def test_early_stopping_keeps_a_log(split):
    m = create("sasrec", epochs=2, eval_every=1, patience=1, dim=16, max_len=10).fit(
        split.train, valid=split.task("valid")
    )
    assert any("valid_ndcg@10" in e for e in m.train_log)


@pytest.mark.parametrize("name", ["sasrec", "rum-item"])
def test_on_epoch_reports_every_epoch(split, name):
    calls = []
    m = create(name, epochs=3, dim=16, max_len=10)
    m.on_epoch = lambda epoch, loss, seconds, rows: calls.append((epoch, loss, seconds, rows))
    m.fit(split.train)
    assert [c[0] for c in calls] == [1, 2, 3]
    assert all(np.isfinite(c[1]) and c[2] > 0 and c[3] > 0 for c in calls)
    assert [round(c[1], 5) for c in calls] == [e["loss"] for e in m.train_log]


def test_training_prints_nothing_and_logs_epochs(split, capsys, caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="coachrec.models.training"):
        m = create("sasrec", epochs=2, eval_every=1, patience=5, dim=16, max_len=10).fit(
            split.train, valid=split.task("valid")
        )
    assert capsys.readouterr().out == ""
    assert [r.getMessage().startswith("sasrec {'epoch': ") for r in caplog.records] == [True, True]
    assert [e["epoch"] for e in m.train_log] == [1, 2]


def test_config_is_typed_and_checked():
    m = create("sasrec", dim=32)
    assert m.get_params()["dim"] == 32 and set(m.get_params()) == set(m.settings())
    assert create("sasrec", **m.get_params()).config == m.config
    with pytest.raises(TypeError, match=r"sasrec: unknown setting\(s\) \['dimm'\]; valid settings are \[.*'dim'"):
        create("sasrec", dimm=32)
    # the tuned defaults of a dataset apply first, explicit settings win; a Dataset works as a name
    assert create("sasrec", dataset="ml-latest-small").config.batch_size == 32
    assert create("sasrec", dataset="beauty", dim=64).config.dim == 64
    assert create("sasrec", dataset="beauty").config.dim == 128
    assert create("sasrec", dataset=planted(n_users=5)).config == create("sasrec").config  # no defaults for "planted"


def test_saved_verbose_setting_still_loads(tmp_path, fitted):
    import json

    path = fitted.save(tmp_path / "m")
    meta = json.loads((path / "model.json").read_text())
    meta["config"]["verbose"] = True  # a setting of earlier versions
    (path / "model.json").write_text(json.dumps(meta))
    assert load(path).config == fitted.config


def test_per_sequence_negatives_loss_is_the_sampled_softmax_of_each_sequences_own_draw(split):
    import torch

    m = create("sasrec", loss="sampled-ce", negatives="sequence", n_negatives=8, dim=16, max_len=6, epochs=1)
    m.fit(split.train)
    n_items = split.train.n_items
    q = torch.full((n_items + 1,), 1.0 / n_items)
    q[0] = 0.0
    logq = torch.log(q.clamp(min=1e-30))
    torch.manual_seed(0)
    seq_h = torch.randn(3, 4, 16)
    target = torch.tensor([[0, 2, 3, 4], [5, 6, 7, 8], [0, 0, 1, 9]])
    got = m._loss(seq_h, target, n_items, torch.Generator().manual_seed(7), q, logq, [])
    draws = torch.multinomial(q, 8 * 3, replacement=True, generator=torch.Generator().manual_seed(7)).view(3, 8)
    emb = m.net.item.weight
    terms = []
    for b in range(3):
        for t in range(4):
            pos = int(target[b, t])
            if pos == 0:
                continue
            h = seq_h[b, t]
            neg = draws[b]
            neg_logit = (emb[neg] @ h).masked_fill(neg == pos, float("-inf")) - logq[neg]
            logits = torch.cat([(h @ emb[pos] - logq[pos])[None], neg_logit])
            terms.append(-torch.log_softmax(logits, 0)[0])
    torch.testing.assert_close(got, torch.stack(terms).mean())
