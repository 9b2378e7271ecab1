"""`coachrec bench recbole` without RecBole: the export reproduces coachrec's split exactly, the
driver's ranks give coachrec's metrics, and a venv that cannot be built fails clearly."""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import typer
from typer.testing import CliRunner

from coachrec.data import Dataset, leave_one_out
from coachrec.metrics import evaluate, named
from coachrec_bench import _recbole_driver as driver
from coachrec_bench import recbole_ref
from coachrec_bench.recbole_ref import RecBoleEnvError, ensure_venv, export_recbole, parse_sets, rank_metrics

#: events per user: 1 and 2 train only, 3 is the case RecBole's own LS split gets wrong,
#: 9 and 12 run past max_len
LENGTHS = [1, 2, 3, 4, 5, 9, 12, 6]


def tiny(lengths=LENGTHS, n_items: int = 40, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    users, items, times = [], [], []
    for u, n in enumerate(lengths):
        seq = rng.choice(n_items - 1, size=n, replace=n > n_items - 1)
        for t, i in enumerate(seq):
            users.append(f"u{u}")
            items.append(f"i{i}")
            times.append(100 * u + t)
    # an item seen only by the 1-event user: in no RecBole row, so only the .item file names it
    items[0] = f"i{n_items - 1}"
    return Dataset.from_frame(pl.DataFrame({"user": users, "item": items, "time": times}), name="tiny")


def read_inter(path: Path) -> list[tuple[int, list[int], int]]:
    lines = path.read_text().splitlines()
    assert lines[0] == "user_id:token\titem_id_list:token_seq\titem_id:token"
    out = []
    for line in lines[1:]:
        u, seq, i = line.split("\t")
        out.append((int(u), [int(x) for x in seq.split(" ")], int(i)))
    return out


def recbole_augment_and_ls(seqs: dict[int, list[int]], max_len: int) -> dict[str, list[tuple[int, list[int], int]]]:
    """What RecBole 1.2.1 itself does with a time-ordered .inter (SequentialDataset.data_augmentation,
    then Dataset.leave_one_out(valid_and_test)), transcribed: every prefix predicts the next item,
    then per user the last row is test, the one before valid, when there are enough rows."""
    parts: dict[str, list[tuple[int, list[int], int]]] = {"train": [], "valid": [], "test": []}
    for u, s in seqs.items():
        rows = [(u, s[max(0, j - max_len) : j], s[j]) for j in range(1, len(s))]
        legal = min(2, len(rows) - 1)
        pr = len(rows) - legal
        parts["train"] += rows[:pr]
        for k in range(legal):
            parts[["valid", "test"][2 - legal + k]].append(rows[pr + k])
    return parts


def test_export_reproduces_the_split_exactly(tmp_path):
    ds = tiny()
    split = leave_one_out(ds)
    max_len = 3
    info = export_recbole(split, tmp_path, max_len=max_len, sampled=None)
    d = tmp_path / "coachrec"
    train, valid, test = (read_inter(d / f"coachrec.{p}.inter") for p in ("train", "valid", "test"))
    assert info["rows"] == {"train": len(train), "valid": len(valid), "test": len(test)}

    tr_ptr, tr_items = split.train.sequences()
    seq = {u: tr_items[tr_ptr[u] : tr_ptr[u + 1]].tolist() for u in range(ds.n_users)}
    # train rows: every prefix (at most max_len items) of each training sequence -> next item
    want_train = [(u, s[max(0, j - max_len) : j], s[j]) for u, s in seq.items() for j in range(1, len(s))]
    assert train == want_train
    # rebuilding the training events from the rows gives split.train back (users with >= 2 events)
    rebuilt: dict[int, list[int]] = {}
    for u, prefix, target in train:
        rebuilt.setdefault(u, list(prefix))
        rebuilt[u].append(target)
    assert rebuilt == {u: s for u, s in seq.items() if len(s) >= 2}
    # valid: prefix = the training sequence, target = the validation event
    v_ev = split.valid.events
    assert [(u, i) for u, _, i in valid] == list(zip(v_ev["user"].to_list(), v_ev["item"].to_list(), strict=True))
    assert all(p == seq[u][-max_len:] for u, p, _ in valid)
    # test: prefix = train + valid, target = the test event; one per user with >= 3 events
    task = split.task("test")
    assert [u for u, _, _ in test] == task.users.tolist()
    assert [i for _, _, i in test] == [int(t[0]) for t in task.targets]
    assert all(p == h[-max_len:].tolist() for (_, p, _), h in zip(test, task.histories, strict=True))
    assert sorted(u for u, _, _ in test) == [u for u, n in enumerate(LENGTHS) if n >= 3]

    # every item is in the .item file, also the one no RecBole row mentions
    item_lines = (d / "coachrec.item").read_text().splitlines()
    assert item_lines[0] == "item_id:token" and item_lines[1:] == [str(i) for i in range(ds.n_items)]
    mentioned = {i for rows in (train, valid, test) for _, p, t in rows for i in [*p, t]}
    assert len(mentioned) < ds.n_items

    # eval.npz: full (untruncated) train + valid histories, one target per test user
    with np.load(tmp_path / "eval.npz") as z:
        assert z["users"].tolist() == task.users.tolist()
        assert int(z["n_items"]) == ds.n_items
        for r, h in enumerate(task.histories):
            assert z["items"][z["indptr"][r] : z["indptr"][r + 1]].tolist() == h.tolist()
        assert z["negatives"].size == 0

    # RecBole's own augmentation + LS split agrees for every user except those with 3 events
    full_ptr, full_items = ds.sequences()
    whole = {u: full_items[full_ptr[u] : full_ptr[u + 1]].tolist() for u in range(ds.n_users)}
    theirs = recbole_augment_and_ls(whole, max_len)
    three = {u for u, n in enumerate(LENGTHS) if n == 3}
    ours = {"train": train, "valid": valid, "test": test}
    for part in ours:
        assert [r for r in theirs[part] if r[0] not in three] == [r for r in ours[part] if r[0] not in three]
    assert [r for r in theirs["valid"] if r[0] in three] == []  # RecBole would train on their valid event


def test_driver_ranks_give_coachrecs_metrics(tmp_path):
    """Ranks computed the driver's way from exported files == coachrec's evaluate, full and sampled."""
    rng = np.random.default_rng(3)
    n_items = 150
    lengths = rng.integers(1, 15, size=60).tolist()
    ds = tiny(lengths, n_items=n_items, seed=1)
    split = leave_one_out(ds)
    export_recbole(split, tmp_path, max_len=5, sampled="loo-sampled100")
    # scores depend on the last history item only, with many ties (pessimistic ranks matter)
    table = rng.integers(0, 4, size=(ds.n_items, ds.n_items)).astype(np.float32)

    class Fake:
        n_items = ds.n_items

        def score(self, histories):
            return table[[int(h[-1]) for h in histories]]

    with np.load(tmp_path / "eval.npz") as z:
        ev = {k: z[k] for k in z.files}
    rows = np.arange(len(ev["users"]))
    last = ev["items"][ev["indptr"][1:] - 1]
    scores = table[last].copy()
    driver.exclude_history(scores, ev["indptr"], ev["items"], rows, ev["targets"])
    full, sampled = driver.rank_rows(scores, ev["targets"], ev["negatives"])
    assert sampled is not None and ev["negatives"].shape == (len(rows), 100)
    for proto, ranks in (("loo-full", full), ("loo-sampled100", sampled)):
        want = evaluate(Fake(), split, named(proto), ks=(10, 20)).metrics
        got = rank_metrics(ranks, ks=(10, 20))
        for k in ("recall@10", "ndcg@10", "recall@20", "ndcg@20", "mrr@10", "hr@10"):
            assert got[k] == pytest.approx(want[k], abs=1e-12), (proto, k)


def test_pessimistic_ranks_and_missing_ranks():
    s = np.array([[3.0, 1.0, 3.0, 3.0, 0.0], [0.0, 5.0, 1.0, 1.0, 2.0]])
    assert driver.pessimistic_ranks(s, np.array([0, 4])).tolist() == [2, 1]
    m = rank_metrics(np.array([0, 9, 10]), ks=(10,))
    assert m["recall@10"] == pytest.approx(2 / 3)
    assert m["ndcg@10"] == pytest.approx((1 + 1 / np.log2(11)) / 3)
    with pytest.raises(ValueError, match="missing"):
        rank_metrics(np.array([0, -1]))


def _script(path: Path, body: str) -> Path:
    path.write_text(body)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


def test_venv_that_cannot_be_built_fails_clearly(tmp_path):
    broken = _script(tmp_path / "python", "#!/bin/sh\necho 'No module named venv' >&2\nexit 3\n")
    with pytest.raises(RecBoleEnvError) as err:
        ensure_venv(tmp_path / "venv-recbole", python=str(broken), quiet=True)
    msg = str(err.value)
    assert "creating the virtualenv failed (exit 3)" in msg and "No module named venv" in msg and "--python" in msg
    with pytest.raises(RecBoleEnvError, match="cannot run"):
        ensure_venv(tmp_path / "v2", python=str(tmp_path / "no-such-python"), quiet=True)


def test_command_reports_the_broken_venv(tmp_path, monkeypatch):
    broken = _script(tmp_path / "python", "#!/bin/sh\necho 'pip: no space left on device' >&2\nexit 1\n")
    monkeypatch.setattr(sys, "executable", str(broken))
    app = typer.Typer()
    app.command()(recbole_ref.bench_recbole)
    res = CliRunner().invoke(app, ["--venv", str(tmp_path / "venv-recbole")])
    assert res.exit_code == 1
    assert "could not build the RecBole virtualenv" in res.output and "no space left" in res.output


def test_ready_venv_is_reused(tmp_path):
    venv = tmp_path / "venv-recbole"
    py = _script(
        recbole_ref.venv_python(venv).parent.mkdir(parents=True) or recbole_ref.venv_python(venv), "#!/bin/sh\nexit 1\n"
    )
    (venv / recbole_ref.READY).write_text(json.dumps({"requirements": recbole_ref.REQUIREMENTS}))
    assert ensure_venv(venv, python="/no/such/python", quiet=True) == py


def test_parse_sets():
    assert parse_sets(["gru4rec.train_batch_size=2048", "SASRec.hidden_act=relu"]) == {
        "GRU4Rec": {"train_batch_size": 2048},
        "SASRec": {"hidden_act": "relu"},
    }
    with pytest.raises(typer.BadParameter):
        parse_sets(["bert4rec.x=1"])


def test_command_end_to_end_with_a_stand_in_driver(tmp_path, monkeypatch):
    """The glue: export, driver protocol, rows with ratios, results file. The stand-in 'RecBole'
    ranks every target first; coachrec's SASRec trains one epoch on a tiny data set."""
    fake = _script(
        tmp_path / "fake-python",
        f"""#!{sys.executable}
import json, sys, numpy as np
a = sys.argv[2:]
data, out, models = a[a.index("--data") + 1], a[a.index("--out") + 1], a[a.index("--models") + 1].split(",")
z = np.load(data + "/eval.npz")
rows = {{p: sum(1 for _ in open(f"{{data}}/coachrec/coachrec.{{p}}.inter")) - 1 for p in ("train", "valid", "test")}}
n = len(z["users"])
res = {{m: {{"model": m, "config": {{"x": 1}}, "epochs": [{{"epoch": 1, "seconds": 2.0}}], "epochs_run": 1,
        "stopped_by": "max_epochs",
        "train_seconds": 2.0, "seconds_per_epoch": 2.0, "rows": rows, "full_ranks": [0] * n, "sampled_ranks": [0] * n,
        "recbole_own_eval": {{}}}} for m in models}}
json.dump({{"versions": {{"recbole": "1.2.1", "torch": "x"}}, "models": res}}, open(out, "w"))
print("[fake] epoch 1")
""",
    )
    ds = tiny(np.random.default_rng(0).integers(3, 12, size=60).tolist(), n_items=200)
    monkeypatch.setattr("coachrec.datasets.load", lambda name: ds)
    monkeypatch.setenv("COACHREC_BENCH_DIR", str(tmp_path / "results"))
    app = typer.Typer()
    app.command()(recbole_ref.bench_recbole)
    keep = tmp_path / "keep"
    res = CliRunner().invoke(
        app, ["--python", str(fake), "--threads", "1", "--model", "sasrec", "--keep", str(keep)], catch_exceptions=False
    )
    assert res.exit_code == 0, res.output
    rows = json.loads((tmp_path / "results" / "recbole.json").read_text())
    names = sorted({r["name"] for r in rows})
    assert names == ["coachrec sasrec", "coachrec sasrec (default epochs)", "recbole SASRec"]
    own = next(r for r in rows if r["name"] == "coachrec sasrec (default epochs)")
    assert own["metrics"]["epochs_run"] == recbole_ref.default_epochs("sasrec", ds.name) > 1
    assert {r["protocol"] for r in rows} == {"loo-full", "loo-sampled100"}
    rb = next(r for r in rows if r["name"] == "recbole SASRec" and r["protocol"] == "loo-full")
    assert rb["metrics"]["ndcg@10"] == 1.0 and rb["metrics"]["epochs_run"] == 1 and rb["versions"]["recbole"] == "1.2.1"
    cr = next(r for r in rows if r["name"] == "coachrec sasrec" and r["protocol"] == "loo-full")
    assert cr["metrics"]["epochs_run"] == 1
    assert cr["metrics"]["ndcg@10_ratio_vs_recbole"] == pytest.approx(cr["metrics"]["ndcg@10"], abs=1e-4)
    assert cr["metrics"]["seconds_per_epoch_ratio_vs_recbole"] == pytest.approx(
        cr["metrics"]["seconds_per_epoch"] / 2.0, abs=1e-3
    )
    assert "loadavg_1m_before" in cr["metrics"] and "RecBole vs coachrec" in res.output


def test_reuse_takes_recbole_results_from_a_kept_folder(tmp_path, monkeypatch):
    """--reuse-recbole never starts the driver; a kept run with other settings is refused."""
    ds = tiny(np.random.default_rng(0).integers(3, 12, size=60).tolist(), n_items=200)
    split = leave_one_out(ds)
    exported = recbole_ref.export_recbole(split, tmp_path / "x", max_len=50)
    n = len(split.task("test").users)
    res = {
        "model": "SASRec",
        "config": recbole_ref.RECBOLE_CONFIG["SASRec"] | {"train_neg_sample_args": {"distribution": "none"}},
        "epochs": [{"epoch": 1, "seconds": 2.0}],
        "epochs_run": 1,
        "stopped_by": "max_epochs",
        "train_seconds": 2.0,
        "seconds_per_epoch": 2.0,
        "rows": exported["rows"],
        "full_ranks": [0] * n,
        "sampled_ranks": [0] * n,
        "recbole_own_eval": {},
    }
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "recbole_out.json").write_text(
        json.dumps({"versions": {"recbole": "1.2.1"}, "threads": 1, "budget": 9.0, "models": {"SASRec": res}})
    )
    never = _script(tmp_path / "never-python", "#!/bin/sh\necho driver started; exit 3\n")
    monkeypatch.setattr("coachrec.datasets.load", lambda name: ds)
    monkeypatch.setenv("COACHREC_BENCH_DIR", str(tmp_path / "results"))
    app = typer.Typer()
    app.command()(recbole_ref.bench_recbole)
    args = [
        "--python",
        str(never),
        "--threads",
        "1",
        "--model",
        "sasrec",
        "--reuse-recbole",
        str(keep),
        "--no-coachrec-defaults",
        "--coachrec-epochs",
        "1",
    ]
    out = CliRunner().invoke(app, args, catch_exceptions=False)
    assert out.exit_code == 0, out.output
    rows = json.loads((tmp_path / "results" / "recbole.json").read_text())
    rb = next(r for r in rows if r["name"] == "recbole SASRec" and r["protocol"] == "loo-full")
    assert rb["metrics"]["ndcg@10"] == 1.0 and "reused" in rb["recbole_results"]
    res["config"]["hidden_size"] = 128
    (keep / "recbole_out.json").write_text(json.dumps({"versions": {"recbole": "1.2.1"}, "models": {"SASRec": res}}))
    out = CliRunner().invoke(app, args, catch_exceptions=False)
    assert out.exit_code == 1 and "other settings" in out.output
