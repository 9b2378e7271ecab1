"""GRU4Rec: learns a planted sequence, round-trips, recommends for anonymous users, and its
training machinery (session-parallel schedule, losses, indexed optimizer) behaves as defined."""

import itertools

import numpy as np
import pytest
import torch

from coachrec.data import Dataset, Event, leave_one_out
from coachrec.metrics import evaluate, named
from coachrec.models import create, load
from coachrec.models.defaults import defaults
from coachrec.models.gru4rec import IndexedAdagradM, session_parallel_schedule

SMALL = {
    "layers": [48],
    "batch_size": 32,
    "n_sample": 32,
    "sample_alpha": 0.5,
    "learning_rate": 0.1,
    "momentum": 0.2,
    "threads": 1,
}


@pytest.fixture(scope="module")
def chains():
    """Item i is always followed by item i + 1 (mod 40); some items are made far more popular
    by extra short users, so popularity points elsewhere."""
    rng = np.random.default_rng(0)
    evs = []
    for u in range(400):
        start = int(rng.integers(0, 40))
        for t in range(8):
            evs.append(Event(f"u{u}", f"i{(start + t) % 40}", t))
    for u in range(150):  # popular items 0..4, in no particular order
        for t, it in enumerate(rng.permutation(5)[:3]):
            evs.append(Event(f"p{u}", f"i{it}", t))
    return Dataset.from_events(evs, name="chains")


@pytest.fixture(scope="module")
def fitted(chains):
    split = leave_one_out(chains)
    return split, create("gru4rec", loss="bpr-max", final_act="elu-1", epochs=8, **SMALL).fit(split.train)


def test_learns_planted_sequence_far_above_popularity(fitted):
    split, m = fitted
    chain_users = [u for u in range(split.train.n_users) if str(split.train.users.ids[u]).startswith("u")]
    task = split.task("test")
    keep = np.isin(task.users, chain_users)
    from coachrec.data.splits import EvalTask

    sub = EvalTask(
        task.users[keep],
        [h for h, k in zip(task.histories, keep, strict=False) if k],
        [t for t, k in zip(task.targets, keep, strict=False) if k],
    )
    gru = evaluate(m, sub, named("loo-full"))
    pop = evaluate(create("pop").fit(split.train), sub, named("loo-full"))
    assert gru.metrics["hr@10"] > 0.9
    assert gru.metrics["ndcg@10"] > pop.metrics["ndcg@10"] + 0.5


def test_save_load_gives_identical_scores(fitted, tmp_path):
    split, m = fitted
    m.save(tmp_path / "g")
    m2 = load(tmp_path / "g")
    hist = split.task("test").histories[:20]
    assert m2.config == m.config
    np.testing.assert_array_equal(m.score(hist), m2.score(hist))


def test_batched_scoring_matches_one_by_one(fitted):
    split, m = fitted
    hist = [*split.task("test").histories[:30], np.zeros(0, np.int64)]
    batched = m.score(hist)
    single = np.vstack([m.score([h]) for h in hist])
    np.testing.assert_allclose(batched, single, rtol=1e-5, atol=1e-5)


def test_anonymous_history_recommendation(fitted):
    _, m = fitted
    rec = m.recommend(history=["i10", "i11", "i12", "not-an-item"], k=5)
    assert rec.items[0] == "i13"
    assert rec.ignored_history == ["not-an-item"]
    assert not {"i10", "i11", "i12"} & set(rec.items)


@pytest.mark.parametrize(
    "loss,act,logq", [("cross-entropy", "linear", 0.0), ("cross-entropy", "tanh", 1.0), ("bpr-max", "elu-0.5", 0.0)]
)
def test_losses_decrease(chains, loss, act, logq):
    m = create("gru4rec", loss=loss, final_act=act, logq=logq, epochs=4, **SMALL).fit(chains)
    assert m.epoch_losses[-1] < m.epoch_losses[0]


@pytest.mark.parametrize(
    "variant", [{"constrained_embedding": False, "embedding": 16}, {"constrained_embedding": False, "embedding": 0}]
)
def test_embedding_variants_train_and_score(chains, variant):
    m = create(
        "gru4rec", epochs=2, dropout_p_embed=0.2, dropout_p_hidden=0.1, **(SMALL | {"layers": [24, 16]}), **variant
    ).fit(chains)
    s = m.score([np.array([1, 2, 3])])
    assert s.shape == (1, chains.n_items) and np.isfinite(s).all()


def test_optimizer_updates_only_touched_rows():
    table = torch.randn(10, 4)
    before = table.clone()
    opt = IndexedAdagradM(lr=0.1, momentum=0.5)
    rows = torch.tensor([2, 7])
    opt.step_rows(table, rows, torch.ones(2, 4))
    opt.step_rows(table, torch.tensor([7]), torch.zeros(1, 4))  # momentum still moves row 7
    changed = (table != before).any(1)
    assert changed.tolist() == [i in (2, 7) for i in range(10)]
    # the first step is -lr * g / sqrt(g^2 + eps); row 2 saw only that step
    torch.testing.assert_close(table[2] - before[2], torch.full((4,), -0.1 / (1 + 1e-6) ** 0.5))


def test_schedule_is_session_parallel():
    # three sessions of lengths 3, 2, 4 with two slots
    offsets = np.array([0, 3, 5, 9])
    ins, outs, ptr, remaps = session_parallel_schedule(offsets, np.arange(3), 2)
    steps = [list(zip(ins[a:b], outs[a:b], strict=False)) for a, b in itertools.pairwise(ptr)]
    assert steps[0] == [(0, 1), (3, 4)]
    assert steps[1] == [(1, 2), (5, 6)]  # slot 1 moved on to session 2, slot 0 continues
    assert remaps[1].tolist() == [0, 2]  # ... so its hidden state is reset (index 2 = zeros)
    assert steps[2] == [(6, 7)] and steps[3] == [(7, 8)]  # session 0 done, none left: batch shrinks
    assert sorted(p for s in steps for p in s) == [(0, 1), (1, 2), (3, 4), (5, 6), (6, 7), (7, 8)]


def test_defaults_follow_the_official_parameter_file():
    d = defaults("gru4rec", "beauty")
    assert d == defaults("gru4rec", "/some/path/beauty")
    assert d["loss"] == "bpr-max" and d["layers"] == [512] and d["n_sample"] == 2048 and d["epochs"] == 10
    assert defaults("no-such-model", "beauty") == {}
    # create(..., dataset=...) applies them, then the caller's settings
    m = create("gru4rec", dataset="/some/path/beauty", layers=[64])
    assert m.config.loss == "bpr-max" and m.config.layers == [64] and m.config.n_sample == 2048
    assert create("gru4rec").config.loss == "cross-entropy"  # no dataset: the class defaults


def test_old_checkpoint_with_n_epochs_loads(fitted, tmp_path):
    """Checkpoints saved before the rename have `n_epochs` in their config."""
    import json

    _, m = fitted
    path = m.save(tmp_path / "old")
    meta = json.loads((path / "model.json").read_text())
    meta["config"]["n_epochs"] = meta["config"].pop("epochs")
    (path / "model.json").write_text(json.dumps(meta))
    old = load(path)
    assert old.config.epochs == 8 and old.config == m.config
    with pytest.raises(TypeError, match=r"unknown setting.*n_epochs.*valid settings are"):
        create("gru4rec", n_epochs=3)


def test_checkpoint_after_every_epoch_records_fit_on(chains, tmp_path):
    split = leave_one_out(chains)
    m = create("gru4rec", epochs=2, **SMALL)
    m.checkpoint = tmp_path / "ckpt"
    saved = []
    m.on_epoch = lambda epoch, *_: saved.append(load(tmp_path / "ckpt").fit_info)
    m.fit(split.fit_data("train+valid"))
    assert [(f["epochs_done"], f["fit_on"], f["checkpoint"]) for f in saved] == [
        (1, "train+valid", True),
        (2, "train+valid", True),
    ]
    assert m.fit_info["fit_on"] == "train+valid" and "checkpoint" not in m.fit_info
    assert [e["epoch"] for e in m.train_log] == [1, 2] and len(m.epoch_losses) == 2
    # the last checkpoint holds the final weights (untrained items silenced there too)
    hist = split.task("test").histories[:10]
    np.testing.assert_array_equal(load(tmp_path / "ckpt").score(hist), m.score(hist))


def test_fused_optimizer_matches_the_authors_update():
    """Three steps with momentum, dense and row-wise, against the formula written in torch."""
    gen = torch.Generator().manual_seed(0)
    lr, mu, eps = 0.05, 0.3, 1e-6
    dense, table = torch.randn(6, 5, generator=gen), torch.randn(8, 3, generator=gen)
    ref_dense, ref_table = dense.clone(), table.clone()
    acc_d, mom_d = torch.zeros_like(dense), torch.zeros_like(dense)
    acc_t, mom_t = torch.zeros_like(table), torch.zeros_like(table)
    opt = IndexedAdagradM(lr=lr, momentum=mu, eps=eps)
    for rows in ([1, 4], [4, 6, 0], [1]):
        g = torch.randn(6, 5, generator=gen)
        dense.grad = g
        opt.step([dense])
        acc_d += g * g
        mom_d = mu * mom_d - lr * g / torch.sqrt(acc_d + eps)
        ref_dense += mom_d
        r = torch.tensor(rows)
        gr = torch.randn(len(rows), 3, generator=gen)
        opt.step_rows(table, r, gr)
        acc_t[r] += gr * gr
        mom_t[r] = mu * mom_t[r] - lr * gr / torch.sqrt(acc_t[r] + eps)
        ref_table[r] += mom_t[r]
    torch.testing.assert_close(dense, ref_dense)
    torch.testing.assert_close(table, ref_table)
    assert torch.equal(table[[2, 3, 5, 7]], ref_table[[2, 3, 5, 7]])  # untouched rows never move


def test_dropout_keeps_the_expected_share_and_scale():
    torch.manual_seed(0)
    from coachrec.models.gru4rec import dropout

    x = torch.ones(400, 500)
    y = dropout(x, 0.3)
    assert abs(float((y == 0).float().mean()) - 0.3) < 0.01
    assert torch.allclose(y[y != 0], torch.full_like(y[y != 0], 1 / 0.7))
    assert dropout(x, 0.0) is x


def test_items_without_training_events_rank_last_and_are_skipped_in_histories(chains):
    # a catalog item that never occurs in training: the official code does not know it at all
    sub = chains.with_events(chains.events.filter(chains.events["item"] != 5))
    assert sub.n_items == chains.n_items and sub.item_popularity()[5] == 0
    m = create("gru4rec", epochs=1, **SMALL).fit(sub)
    s = m.score([np.array([1, 2, 3]), np.array([])])
    assert (s[:, 5] < np.delete(s, 5, axis=1).min(axis=1)).all()
    np.testing.assert_allclose(m.score([np.array([1, 5, 2])]), m.score([np.array([1, 2])]))


def test_one_event_users_are_left_out_of_training():
    # a one-event session has no target; walking it would pair events across sessions
    with pytest.raises(ValueError, match=">= 2 events"):
        session_parallel_schedule(np.array([0, 3, 4, 9]), np.arange(3), 2)
    evs = [Event(f"u{u}", f"i{(u + t) % 30}", t) for u in range(60) for t in range(1 if u % 7 == 0 else 6)]
    m = create("gru4rec", epochs=1, **(SMALL | {"batch_size": 8})).fit(Dataset.from_events(evs))
    assert np.isfinite(m.score([np.array([1, 2])])).all()
