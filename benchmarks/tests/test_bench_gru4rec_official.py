"""`coachrec bench gru4rec-official` pieces that do not need the official code: the clear error
when it is missing, the epoch-line parser, the session frame, event counting, the scorer's item
mapping (on a small stand-in with the official model's interface) and the results merge."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from coachrec.data import Dataset, Event, leave_one_out
from coachrec.models.gru4rec import session_parallel_schedule
from coachrec_bench import gru4rec_official as bench

# what the official fit prints (its format string has tab characters before "(" and "[")
LOG = (
    "The dataframe is already sorted by SessionId, Time\n"
    "Created sample store with 4882 batches of samples (type=GPU)\n"
    "Epoch1 --> loss: 0.665477 \t(7.79s) \t[21.30 mb/s | 1408 e/s]\n"
    "Epoch2 --> loss: 0.512300 \t(12.05s) \t[13.78 mb/s | 910 e/s]\n"
)


def test_missing_official_code_says_how_to_get_it(tmp_path):
    for path in (None, tmp_path / "nope", tmp_path):  # no option, no directory, no gru4rec_pytorch.py
        with pytest.raises(FileNotFoundError) as err:
            bench.load_official(path)
        msg = str(err.value)
        assert "git clone https://github.com/hidasib/GRU4Rec_PyTorch_Official" in msg
        assert "--official-path" in msg


def test_command_fails_on_missing_path_before_loading_data(tmp_path, monkeypatch):
    import coachrec.datasets

    def no_data(name):  # the error must come first, not after minutes of loading and fitting
        raise AssertionError("data loaded before the official path was checked")

    monkeypatch.setattr(coachrec.datasets, "load", no_data)
    with pytest.raises(FileNotFoundError, match="git clone https://github.com/hidasib/GRU4Rec_PyTorch_Official"):
        bench.bench_gru4rec_official(official_path=tmp_path / "missing", impl="both")
    with pytest.raises(FileNotFoundError, match="--official-path"):
        bench.bench_gru4rec_official(official_path=None, impl="official")


def test_cli_main_turns_the_missing_path_into_a_message(tmp_path, monkeypatch, capsys):
    """The CLI's `main` ends FileNotFoundError with its message and exit code 2."""
    import sys

    import typer

    from coachrec import cli

    app = typer.Typer()
    app.command("gru4rec-official")(bench.bench_gru4rec_official)
    app.command("noop")(lambda: None)
    monkeypatch.setattr(cli, "app", app)
    monkeypatch.setattr(sys, "argv", ["coachrec", "gru4rec-official", "--official-path", str(tmp_path / "missing")])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    assert exit_.value.code == 2
    assert "git clone https://github.com/hidasib/GRU4Rec_PyTorch_Official" in capsys.readouterr().err


def test_parse_epoch_lines():
    epochs = bench.parse_epoch_lines(LOG)
    assert [e["epoch"] for e in epochs] == [1, 2]
    assert epochs[0] == {"epoch": 1, "loss": 0.665477, "seconds": 7.79, "mb_per_s": 21.30, "events_per_s": 1408.0}
    assert epochs[1]["seconds"] == 12.05
    assert bench.parse_epoch_lines("Created sample store\n") == []


def test_official_params_translate_final_act():
    from coachrec.models.defaults import defaults

    p = bench.official_params(defaults("gru4rec", "beauty") | {"epochs": 3})
    assert p["elu_param"] == 1.0 and p["loss"] == "bpr-max" and p["layers"] == [512] and p["n_epochs"] == 3
    assert "final_act" not in p
    assert bench.official_params({"loss": "cross-entropy"})["elu_param"] == 0.0
    with pytest.raises(ValueError, match="no equivalent"):
        bench.official_params({"loss": "bpr-max", "final_act": "tanh"})


@pytest.fixture(scope="module")
def tiny():
    rng = np.random.default_rng(0)
    evs = [Event(f"u{u}", f"i{int(rng.integers(0, 30))}", t) for u in range(40) for t in range(int(rng.integers(3, 9)))]
    return Dataset.from_events(evs, name="tiny")


def test_frame_keeps_user_order_and_counts_events(tiny):
    train = leave_one_out(tiny).train
    frame = bench.to_official_frame(train)
    assert len(frame) == len(train)
    # the official iterator: data sorted by (SessionId, Time), sessions ordered by first Time
    assert (frame.sort_values(["SessionId", "Time"]).index == frame.index).all()
    order = np.argsort(frame.groupby("SessionId")["Time"].min().values)  # non-stable, as the official code
    assert (frame.groupby("SessionId").size().index.values[order] == np.unique(frame["SessionId"])).all()
    indptr, items = train.sequences()
    for u in (0, 7, 39):
        np.testing.assert_array_equal(
            frame.loc[frame.SessionId == u, "ItemId"].to_numpy(), items[indptr[u] : indptr[u + 1]]
        )
    # predicted events: what coachrec's session-parallel schedule walks
    lengths = np.diff(indptr)
    offsets = np.concatenate([[0], np.cumsum(lengths[lengths > 0])])
    # one-event users predict nothing and stay out of the schedule, as in GRU4Rec.fit
    trainable = np.flatnonzero(lengths[lengths > 0] >= 2)
    assert len(trainable) < int((lengths > 0).sum())  # the fixture has such users
    ins, _, _, _ = session_parallel_schedule(offsets, trainable, 8, 1)
    assert bench.predicted_events(train) == len(ins) == len(train) - int((lengths > 0).sum())


def test_loss_factor_is_one_without_partial_steps_and_below_one_with():
    class Fixed:
        def __init__(self, lengths):
            self.lengths = np.asarray(lengths)

        def sequences(self):
            return np.concatenate([[0], np.cumsum(self.lengths)]), None

    assert bench.official_loss_factor(Fixed([4] * 8), batch_size=8) == pytest.approx(1.0)
    # 4 sessions: a batch of 2 rows runs full, then the last rows drain as a partial step
    f = bench.official_loss_factor(Fixed([3, 3, 3, 5]), batch_size=2)
    assert 0.5 < f < 1.0


class _FakeOfficialModel(nn.Module):
    """The official GRU4RecModel's interface in constrained-embedding mode: `embed`,
    `hidden_step`, `forward`, `Wy`, `By`, `layers`."""

    def __init__(self, n_items: int, hidden: int = 6):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.layers = [hidden]
        self.Wy = nn.Embedding(n_items, hidden)
        self.By = nn.Embedding(n_items, 1)
        self.G = nn.ModuleList([nn.GRUCell(hidden, hidden)])
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)

    def embed(self, X, H, Y=None, training=False):
        return self.Wy(X), self.Wy.weight, self.By.weight

    def hidden_step(self, X, H, training=False):
        X = self.G[0](X, H[0])
        H[0] = X
        return X

    def forward(self, X, H, Y, training=False):
        E, O, B = self.embed(X, H, Y, training)
        return torch.mm(self.hidden_step(E, H, training), O.T) + B.T


class _FakeOlderOfficialModel(_FakeOfficialModel):
    """Before commit 4e7d236 `embed` took no `training` argument (dropout lived in `forward`)."""

    def embed(self, X, H, Y=None):
        return self.Wy(X), self.Wy.weight, self.By.weight

    def forward(self, X, H, Y, training=False):
        E, O, B = self.embed(X, H, Y)
        return torch.mm(self.hidden_step(E, H, training), O.T) + B.T


def _fake_official(known_coachrec_ids: list[int], model_class: type = _FakeOfficialModel):
    """A fitted-official stand-in whose item indices are a shuffle of `known_coachrec_ids`."""
    model = model_class(len(known_coachrec_ids))
    itemidmap = pd.Series(data=np.arange(len(known_coachrec_ids)), index=known_coachrec_ids, name="ItemIdx")
    return SimpleNamespace(model=model, data_iterator=SimpleNamespace(itemidmap=itemidmap))


def _step_by_step(model, ids):
    H = [torch.zeros(1, model.layers[0])]
    R = None
    with torch.no_grad():
        for i in ids:
            R = model.forward(torch.tensor([int(i)]), H, None)
    return R[0].numpy()


@pytest.mark.parametrize("model_class", [_FakeOfficialModel, _FakeOlderOfficialModel])
def test_scorer_maps_items_and_matches_step_by_step_forward(model_class):
    n_items = 12  # coachrec catalog; the official model knows 8 of them, in its own order
    known = [7, 2, 11, 0, 5, 9, 3, 1]
    fake = _fake_official(known, model_class)
    scorer = bench.OfficialScorer(fake, n_items, batch=2)  # several length-sorted batches
    histories = [
        np.array([2, 7, 0]),
        np.array([5]),
        np.array([], dtype=np.int64),
        np.array([4, 9, 6, 3, 1, 11, 2]),
        np.array([8, 10]),
        np.array([3, 4, 3]),
    ]
    s = scorer.score(histories)
    assert s.shape == (len(histories), n_items) and s.dtype == np.float32
    unknown = [4, 6, 8, 10]
    assert np.isneginf(s[:, unknown]).all()
    assert np.isfinite(s[:, known]).all()
    off = {c: o for o, c in enumerate(known)}
    bias = fake.model.By.weight.detach().numpy()[:, 0]
    for hist, row in zip(histories, s, strict=False):
        ids = [off[i] for i in hist if i in off]  # unknown history items are skipped
        want = _step_by_step(fake.model, ids) if ids else bias  # empty: H stays zero
        np.testing.assert_allclose(row[known], want[[off[c] for c in known]], rtol=1e-5, atol=1e-6)
    assert bench.check_scorer(scorer, histories) < 1e-5


def test_merge_rows_replaces_same_setting_only():
    def r(name, dataset, fit_on, v):
        return {"name": name, "dataset": dataset, "metrics": {"fit_on": fit_on, "v": v}}

    old = [
        r("gru4rec-official", "beauty", "train", 1),
        r("gru4rec-official", "beauty", "train+valid", 2),
        r("gru4rec-coachrec", "beauty", "train", 3),
    ]
    new = [r("gru4rec-official", "beauty", "train", 10), r("gru4rec-coachrec", "beauty", "train", 30)]
    merged = bench.merge_rows(old, new)
    assert [(m["name"], m["metrics"]["fit_on"], m["metrics"]["v"]) for m in merged] == [
        ("gru4rec-official", "train+valid", 2),
        ("gru4rec-official", "train", 10),
        ("gru4rec-coachrec", "train", 30),
    ]
    assert (
        bench.ratios(
            dict.fromkeys(bench.RATIO_KEYS, 2.0), {k: (4.0 if k != "fit_seconds" else 0) for k in bench.RATIO_KEYS}
        )["ndcg@10_loo-full"]
        == 0.5
    )
