"""`coachrec bench gru4rec-official`: coachrec's GRU4Rec against the official GRU4Rec PyTorch
code (github.com/hidasib/GRU4Rec_PyTorch_Official), in the same run on the same machine.

Both are trained with identical hyperparameters (coachrec's `defaults("gru4rec", dataset)`: the
official Diginetica BPR-max parameter file) on identical events: coachrec's leave-one-out
`split.train` (or train + valid with `--fit-on train+valid`), one session per user, sessions in
user order. Both are evaluated by coachrec's evaluator under the same protocols (loo-full and
loo-sampled100; the test task sees train + valid as history).

The official code is NOT shipped with coachrec: `--official-path` points at a checkout of it and
`gru4rec_pytorch.py` is imported from there; its file is not modified. It runs on the CPU
(`device=torch.device('cpu')`) with its default `compatibility_mode=True`. Under NumPy >= 2 one
method of its compatibility-mode initialisation is replaced in memory by one that gives
NumPy 1's numbers (see `numpy2_shim`; without it that mode crashes); the row records it.

- **Timing.** The official `fit` re-initialises the model, so it is called once with all
  epochs; its own per-epoch log lines (`Epoch1 --> loss: ... (Xs) ...`) are captured from
  stdout and parsed. coachrec's seconds come from `GRU4Rec.on_epoch`. Training events per second
  are counted identically for both: predicted events per epoch (sum over sessions of length - 1)
  / mean seconds per epoch.
- **Scoring the official model.** `OfficialScorer` maps coachrec item indices to the official
  ones (`data_iterator.itemidmap`), runs each history through the official modules
  (`model.embed` + `model.hidden_step`, training=False, H starting at zeros; history items the
  official model never saw are dropped, as its own `iter_data` does), scores every item as
  h @ Wy.T + By.T and returns them in coachrec's item order (items it never saw: -inf). Before
  evaluating, a few histories are checked against the official `forward` run step by step.
  coachrec's GRU4Rec keeps scoring never-trained items with their random initial vectors; with
  `--max-users` (a user subset) many catalog items are untrained and that alone lowers
  coachrec's figures; on all of Beauty (fit on train) it is 33 of 12,101 items
  (`items_not_in_training`).
- **Loss.** The official log weights each step's loss by its rows / batch_size, so it reads a
  little lower than coachrec's per-event mean; coachrec rows also carry their loss weighted
  the official way (`epoch_losses_official_weighting`).

Rows go to benchmarks/results/gru4rec_official.json; rows of other settings (data set,
`--fit-on`) already in the file are kept.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import inspect
import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from coachrec_bench.results import results_dir, row, write

console = Console(width=170)

OFFICIAL_REPO = "https://github.com/hidasib/GRU4Rec_PyTorch_Official"
#: the commit of the official code this benchmark was written against
OFFICIAL_COMMIT = "4e7d23674cc3f1ea2fdee78246de11fbf6d47087"
OFFICIAL_FILE = "gru4rec_pytorch.py"
PARAMFILE = "paramfiles/diginetica_bprmax_shared_best.py"
RESULTS = "gru4rec_official"
NAMES = {"official": "gru4rec-official", "coachrec": "gru4rec-coachrec", "ratio": "ratio coachrec/official"}
PROTOCOL = (
    "leave-one-out; loo-full (all items) and loo-sampled100 (100 uniform negatives, seed 0); seen items excluded, "
    "ties pessimistic"
)

#: coachrec GRU4Rec config fields that are the official constructor's arguments of the same name
_SHARED = (
    "loss",
    "layers",
    "batch_size",
    "dropout_p_embed",
    "dropout_p_hidden",
    "learning_rate",
    "momentum",
    "sample_alpha",
    "n_sample",
    "embedding",
    "constrained_embedding",
    "bpreg",
    "logq",
)

_EPOCH_LINE = re.compile(
    r"Epoch(?P<epoch>\d+) --> loss: (?P<loss>\S+)\s+\((?P<seconds>[\d.]+)s\)\s+"
    r"\[(?P<mbps>[\d.]+) mb/s \| (?P<eps>[\d.]+) e/s\]"
)


# ---------------------------------------------------------------------------- the official code
def missing_official_message(path: Path | None) -> str:
    where = "no --official-path given" if path is None else f"{path} does not contain {OFFICIAL_FILE}"
    return (
        f"the official GRU4Rec code is needed ({where}). It is not part of coachrec; get it with\n"
        f"  git clone {OFFICIAL_REPO}\n"
        f"(this benchmark was written against commit {OFFICIAL_COMMIT}) and pass the checkout as "
        f"--official-path, e.g. --official-path GRU4Rec_PyTorch_Official"
    )


def load_official(path: Path | str | None) -> ModuleType:
    """Import `gru4rec_pytorch` from a checkout of the official repository (file unmodified;
    see `numpy2_shim` for the one in-memory replacement under NumPy >= 2)."""
    p = None if path is None else Path(path).expanduser()
    if p is None or not (p / OFFICIAL_FILE).is_file():
        raise FileNotFoundError(missing_official_message(p))
    spec = importlib.util.spec_from_file_location("gru4rec_pytorch", p / OFFICIAL_FILE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.COACHREC_SHIMS = numpy2_shim(module)  # type: ignore[attr-defined]
    return module


def numpy2_shim(module: ModuleType) -> list[str]:
    """Make the official compatibility-mode initialisation run under NumPy >= 2, with the values
    NumPy 1 gives; returns what was shimmed (recorded with the results).

    `GRU4RecModel._init_numpy_weights` computes `rand(...).astype('float32') * 2 * sigma - sigma`
    with `sigma = np.sqrt(...)`, a NumPy float64 scalar. NumPy 1's value-based casting kept the
    result float32; NumPy 2 (NEP 50) promotes it to float64, and `Parameter.set_` then fails
    ("Could not set tensor of type double to a tensor of type float"). The replacement casts
    sigma to float32 first: the same float32 arithmetic, the same numbers, as under NumPy 1. It
    runs once, before training; nothing that is timed is touched."""
    if int(np.__version__.split(".")[0]) < 2:
        return []
    model_cls = module.GRU4RecModel

    def _init_numpy_weights(self: Any, shape: tuple[int, ...]) -> np.ndarray:
        sigma = np.float32(np.sqrt(6.0 / (shape[0] + shape[1])))
        return np.random.rand(*shape).astype("float32") * 2 * sigma - sigma

    model_cls._init_numpy_weights = _init_numpy_weights
    return [
        f"GRU4RecModel._init_numpy_weights: sigma cast to float32 (NumPy {np.__version__} promotes float32 * float64 "
        "scalar to float64)"
    ]


def official_source_info(path: Path) -> dict[str, Any]:
    """Which official code ran: its git commit (when `path` is a git checkout) and file hash."""
    commit = None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if out.returncode == 0:
            commit = out.stdout.strip()
    data = (path / OFFICIAL_FILE).read_bytes()
    return {
        "official_commit_expected": OFFICIAL_COMMIT,
        "official_commit_checkout": commit,  # None: not a git checkout (e.g. a copy of the file)
        "official_file_sha1": hashlib.sha1(data).hexdigest(),
        "official_file_chars": len(data.decode("utf-8", errors="replace")),
    }


def official_params(config: dict[str, Any]) -> dict[str, Any]:
    """The official `GRU4Rec(...)` arguments equivalent to a coachrec GRU4Rec config.

    coachrec's `final_act="elu-a"` is the official `elu_param=a` (BPR-max only); "linear" is
    `elu_param=0`. Under cross-entropy the official code applies no activation."""
    from coachrec.models.gru4rec import GRU4RecConfig

    cfg = GRU4RecConfig(**{k: v for k, v in config.items() if k not in ("threads", "score_batch")})
    out = {k: getattr(cfg, k) for k in _SHARED}
    out["n_epochs"] = cfg.epochs  # the official name of the setting
    out["layers"] = list(cfg.layers)
    name, _, arg = cfg.final_act.partition("-")
    if cfg.loss == "bpr-max" and name == "elu":
        out["elu_param"] = float(arg) if arg else 1.0
    elif name == "linear":
        out["elu_param"] = 0.0
    else:
        raise ValueError(
            f"final_act {cfg.final_act!r} with loss {cfg.loss!r} has no equivalent in the official code (elu-<a> "
            "under bpr-max, or linear)"
        )
    return out


def check_paramfile(path: Path, params: dict[str, Any]) -> dict[str, Any]:
    """Differences between `params` and the official Diginetica parameter file, when the
    checkout has it (n_epochs is the benchmark's choice and not compared)."""
    file = path / PARAMFILE
    if not file.is_file():
        return {"paramfile": None}
    import runpy

    ref = dict(runpy.run_path(str(file))["gru4rec_params"])
    diff = {
        k: {"official": v, "bench": params.get(k)} for k, v in ref.items() if k != "n_epochs" and params.get(k) != v
    }
    return {"paramfile": PARAMFILE, "paramfile_differences": diff}


def to_official_frame(data: Any) -> Any:
    """Events as the official `fit` reads them: SessionId = user index, ItemId = coachrec item
    index, Time = the event's position in the user-sorted event array. Time is a per-user start
    plus the position within the sequence, so ordering sessions by first time (the official
    `session_order='time'`, a non-stable argsort) gives the user order coachrec's GRU4Rec uses on
    order-only data. Data with timestamps keeps its times (both order sessions by start time)."""
    import pandas as pd

    indptr, items = data.sequences()
    lengths = np.diff(indptr)
    users = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
    if data.timestamps:
        t = data.events["time"].to_numpy().astype(np.int64)
    else:
        t = np.arange(len(items), dtype=np.int64)
    return pd.DataFrame({"SessionId": users, "ItemId": items.astype(np.int64), "Time": t})


def predicted_events(data: Any) -> int:
    """Events predicted in one training epoch: every event of a session but its first."""
    lengths = np.diff(data.sequences()[0])
    return int(np.maximum(lengths - 1, 0).sum())


def official_loss_factor(data: Any, batch_size: int) -> float:
    """How the official epoch loss relates to coachrec's on the same schedule.

    coachrec reports the mean loss per predicted event. The official log line averages the
    per-step `loss / batch_size` weighted by the step's rows n, i.e. sum(loss_t * n_t / B) /
    sum(n_t): steps with fewer than B rows (the tail of an epoch) count less. If every step had
    the same per-event loss, official = coachrec x this factor = sum(n_t^2 / B) / sum(n_t)."""
    from coachrec.models.gru4rec import session_parallel_schedule

    lengths = np.diff(data.sequences()[0])
    lengths = lengths[lengths > 0]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    _, _, ptr, _ = session_parallel_schedule(offsets, np.arange(len(lengths)), batch_size, 1)
    n = np.diff(np.asarray(ptr, dtype=np.float64))
    return float((n * n / batch_size).sum() / n.sum()) if n.sum() else 1.0


def parse_epoch_lines(text: str) -> list[dict[str, float]]:
    """The official per-epoch log lines: epoch, loss, seconds, minibatches/s, events/s."""
    out = []
    for m in _EPOCH_LINE.finditer(text):
        out.append(
            {
                "epoch": int(m["epoch"]),
                "loss": float(m["loss"]),
                "seconds": float(m["seconds"]),
                "mb_per_s": float(m["mbps"]),
                "events_per_s": float(m["eps"]),
            }
        )
    return out


class _Tee(io.TextIOBase):
    """Captures what the official code prints, optionally echoing it."""

    def __init__(self, echo: Any | None):
        self.buf = io.StringIO()
        self.echo = echo

    def write(self, s: str) -> int:
        self.buf.write(s)
        if self.echo is not None:
            self.echo.write(s)
            self.echo.flush()
        return len(s)

    def flush(self) -> None:
        if self.echo is not None:
            self.echo.flush()


class OfficialScorer:
    """coachrec's `score(histories)` contract over a fitted official `GRU4Rec`.

    `official`: the fitted official object (needs `.model` and `.data_iterator.itemidmap`);
    `n_items`: coachrec's catalog size. Scores come back in coachrec's item order; items the
    official model never saw score -inf, and history items it never saw are skipped."""

    name = "gru4rec-official"

    def __init__(self, official: Any, n_items: int, batch: int = 512):
        self.model = official.model
        idmap = official.data_iterator.itemidmap
        self.n_items = int(n_items)
        self.batch = batch
        self.to_official = np.full(self.n_items, -1, dtype=np.int64)
        self.to_official[np.asarray(idmap.index.to_numpy(), dtype=np.int64)] = np.asarray(
            idmap.to_numpy(), dtype=np.int64
        )
        self.known = np.nonzero(self.to_official >= 0)[0]  # coachrec indices, ascending

    def map_history(self, history: np.ndarray) -> np.ndarray:
        ids = self.to_official[np.asarray(history, dtype=np.int64)]
        return ids[ids >= 0]

    def final_hidden(self, histories: list[np.ndarray]) -> Any:
        """The official model's top hidden state after each (already mapped) history: batched
        by length like `GRU4Rec.final_hidden`; at step t only the still-running rows advance."""
        import torch

        model = self.model
        layers = list(model.layers)
        device = model.Wy.weight.device
        out = torch.zeros(len(histories), layers[-1], device=device)
        lengths = np.array([len(h) for h in histories], dtype=np.int64)
        order = np.argsort(-lengths, kind="stable")
        with torch.no_grad():
            for lo in range(0, len(histories), self.batch):
                idx = order[lo : lo + self.batch]
                lens = lengths[idx]
                if len(lens) == 0 or lens[0] == 0:
                    break
                pad = np.zeros((len(idx), int(lens[0])), dtype=np.int64)
                for r, i in enumerate(idx):
                    pad[r, : lens[r]] = histories[i]
                seq = torch.from_numpy(pad).to(device)
                active = np.searchsorted(-lens, -np.arange(int(lens[0])), side="left")
                H = [torch.zeros(len(idx), d, device=device) for d in layers]
                # embed() takes `training` at commit 4e7d236, not in earlier versions (dropout then lives in forward)
                embed_kw = {"training": False} if "training" in inspect.signature(model.embed).parameters else {}
                for t in range(int(lens[0])):
                    k = int(active[t])
                    Hk = [h[:k] for h in H]
                    E, _, _ = model.embed(seq[:k, t], Hk, None, **embed_kw)
                    model.hidden_step(E, Hk, training=False)
                    for h, hk in zip(H, Hk, strict=False):
                        h[:k] = hk
                out[torch.from_numpy(idx).to(device)] = H[-1]
        return out

    def official_scores(self, histories: list[np.ndarray]) -> np.ndarray:
        """Scores over the official item indices, (len(histories), official n_items)."""
        import torch

        mapped = [self.map_history(h) for h in histories]
        h = self.final_hidden(mapped)
        with torch.no_grad():
            s = torch.mm(h, self.model.Wy.weight.T) + self.model.By.weight.T
        return s.cpu().numpy().astype(np.float32, copy=False)

    def score(self, histories: list[np.ndarray]) -> np.ndarray:
        s = self.official_scores(list(histories))
        out = np.full((len(s), self.n_items), -np.inf, dtype=np.float32)
        out[:, self.known] = s[:, self.to_official[self.known]]
        return out


def check_scorer(scorer: OfficialScorer, histories: list[np.ndarray]) -> float:
    """Max |difference| between the scorer and the official `forward` run step by step (one
    history at a time, H from zeros, training=False) on the last step's full-catalog scores."""
    import torch

    model = scorer.model
    batch = scorer.official_scores(histories)
    worst = 0.0
    with torch.no_grad():
        for row_, hist in enumerate(histories):
            ids = scorer.map_history(hist)
            if len(ids) == 0:
                continue
            H = [torch.zeros(1, d, device=model.Wy.weight.device) for d in model.layers]
            for item in ids:
                R = model.forward(torch.tensor([int(item)], device=model.Wy.weight.device), H, None, training=False)
            worst = max(worst, float(np.abs(R.cpu().numpy()[0] - batch[row_]).max()))
    return worst


# ---------------------------------------------------------------------------- the two runs
def _accuracy(model: Any, split: Any, name: str) -> dict[str, float]:
    from coachrec.metrics import evaluate, named

    full = evaluate(model, split, named("loo-full"), ks=(10,), model_name=name)
    samp = evaluate(model, split, named("loo-sampled100"), ks=(10,), model_name=name)
    return {
        "ndcg@10_loo-full": round(full.metrics["ndcg@10"], 5),
        "recall@10_loo-full": round(full.metrics["recall@10"], 5),
        "ndcg@10_loo-sampled100": round(samp.metrics["ndcg@10"], 5),
        "hr@10_loo-sampled100": round(samp.metrics["hr@10"], 5),
        "eval_users": full.n_users,
        "eval_seconds": round(full.seconds + samp.seconds, 2),
    }


def _epoch_summary(seconds: list[float], losses: list[float], events: int) -> dict[str, Any]:
    per_epoch = float(np.mean(seconds))
    return {
        "seconds_per_epoch": round(per_epoch, 3),
        "train_events_per_s": round(events / per_epoch, 1),
        "epoch_seconds": [round(s, 3) for s in seconds],
        "epoch_losses": [round(x, 6) for x in losses],
        "epochs_timed": len(seconds),
        "predicted_events_per_epoch": events,
    }


def run_official(
    module: ModuleType, params: dict[str, Any], train: Any, split: Any, *, threads: int, seed: int, echo: bool
) -> dict[str, Any]:
    """Fit the official GRU4Rec on `train` (all epochs in one `fit`), time it from its own
    epoch lines, evaluate it through `OfficialScorer`."""
    import torch

    frame = to_official_frame(train)
    events = predicted_events(train)
    before_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(seed)  # the official code draws samples and dropout from torch's global RNG
        gru = module.GRU4Rec(device=torch.device("cpu"), **params)
        tee = _Tee(sys.stdout if echo else None)
        load_before = os.getloadavg()[0]
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(tee):
            gru.fit(frame)  # compatibility_mode=True: the official default
        fit_s = time.perf_counter() - t0
        load_after = os.getloadavg()[0]
        log = tee.buf.getvalue()
        if getattr(gru, "error_during_train", False):
            raise RuntimeError(f"the official GRU4Rec stopped with a NaN loss:\n{log}")
        epochs = parse_epoch_lines(log)
        if len(epochs) != params["n_epochs"]:
            raise RuntimeError(
                f"expected {params['n_epochs']} epoch lines from the official code, parsed {len(epochs)}:\n{log}"
            )
        scorer = OfficialScorer(gru, train.n_items)
        rng = np.random.default_rng(seed)
        task = split.task("test")
        probe = [
            task.histories[i] for i in rng.choice(len(task.histories), size=min(4, len(task.histories)), replace=False)
        ]
        adapter_diff = check_scorer(scorer, probe)
        if not adapter_diff < 1e-3:
            raise RuntimeError(f"OfficialScorer disagrees with the official forward() by {adapter_diff:g}")
        acc = _accuracy(scorer, split, NAMES["official"])
    finally:
        torch.set_num_threads(before_threads)
    metrics = _epoch_summary([e["seconds"] for e in epochs], [e["loss"] for e in epochs], events)
    return (
        metrics
        | acc
        | {
            "fit_seconds": round(fit_s, 3),
            "official_reported_events_per_s": [e["events_per_s"] for e in epochs],
            "official_items": len(scorer.known),
            "official_shims": list(getattr(module, "COACHREC_SHIMS", [])),
            "adapter_check_max_abs_diff": adapter_diff,
            "loadavg_1m_before": round(load_before, 2),
            "loadavg_1m_after": round(load_after, 2),
        }
    )


def run_coachrec(config: dict[str, Any], train: Any, split: Any, *, threads: int, seed: int) -> dict[str, Any]:
    from coachrec.models import create

    events = predicted_events(train)
    model = create("gru4rec", **(config | {"threads": threads, "seed": seed}))
    seconds: list[float] = []
    counted: list[int] = []
    model.on_epoch = lambda e, loss, s, n: (seconds.append(s), counted.append(n))
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    model.fit(train)
    fit_s = time.perf_counter() - t0
    load_after = os.getloadavg()[0]
    if counted and counted[0] != events:
        raise RuntimeError(f"coachrec GRU4Rec predicted {counted[0]} events per epoch, expected {events}")
    acc = _accuracy(model, split, NAMES["coachrec"])
    factor = official_loss_factor(train, int(config.get("batch_size", 64)))
    return (
        _epoch_summary(seconds, list(model.epoch_losses), events)
        | acc
        | {
            "epoch_losses_official_weighting": [round(x * factor, 6) for x in model.epoch_losses],
            "official_loss_factor": round(factor, 6),
            "fit_seconds": round(fit_s, 3),
            "loadavg_1m_before": round(load_before, 2),
            "loadavg_1m_after": round(load_after, 2),
        }
    )


# ---------------------------------------------------------------------------- results
RATIO_KEYS = (
    "seconds_per_epoch",
    "train_events_per_s",
    "ndcg@10_loo-full",
    "recall@10_loo-full",
    "ndcg@10_loo-sampled100",
    "hr@10_loo-sampled100",
    "fit_seconds",
)


def ratios(coach: dict[str, Any], official: dict[str, Any]) -> dict[str, float | None]:
    """coachrec / official for timing and accuracy (None where the official value is 0)."""
    return {k: (round(coach[k] / official[k], 4) if official[k] else None) for k in RATIO_KEYS}


def _key(r: dict[str, Any]) -> tuple[Any, ...]:
    return (r.get("name"), r.get("dataset"), r.get("metrics", {}).get("fit_on"))


def merge_rows(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Old rows of other settings, then the new rows (same name, data set and --fit-on replaced)."""
    keys = {_key(r) for r in new}
    return [r for r in old if _key(r) not in keys] + new


def table(rows: list[dict[str, Any]], title: str) -> Table:
    t = Table(
        title=title,
        title_justify="left",
        caption="ratio = coachrec / official (s/epoch and fit s: < 1 is faster; the rest: > 1 is better). "
        "Loss: coachrec's is the mean per predicted event; (~x) is it weighted the way the official log "
        "weights steps (partial tail steps count n/batch_size), comparable to the official figure. "
        "fit s includes set-up (the official sample cache is built before epoch 1, coachrec's inside it).",
        caption_justify="left",
    )
    cols = (
        "impl",
        "s/epoch",
        "train ev/s",
        "fit s",
        "last loss",
        "NDCG@10 full",
        "R@10 full",
        "NDCG@10 s100",
        "HR@10 s100",
        "load 1m",
    )
    for c in cols:
        t.add_column(c, justify="left" if c == "impl" else "right")
    for r in rows:
        m = r["metrics"]
        if r["name"] == NAMES["ratio"]:
            v = m["ratios"]
            f = {k: ("" if v.get(k) is None else f"{v[k]:.3f}") for k in RATIO_KEYS}
            t.add_row(
                "coachrec / official",
                f["seconds_per_epoch"],
                f["train_events_per_s"],
                f["fit_seconds"],
                "",
                *(f[k] for k in RATIO_KEYS[2:6]),
                "",
            )
            continue
        loss = f"{m['epoch_losses'][-1]:.4f}" if m["epoch_losses"] else ""
        if m.get("epoch_losses_official_weighting"):
            loss += f" (~{m['epoch_losses_official_weighting'][-1]:.4f})"
        t.add_row(
            r["name"],
            f"{m['seconds_per_epoch']:.2f}",
            f"{m['train_events_per_s']:,.0f}",
            f"{m['fit_seconds']:.1f}",
            loss,
            f"{m['ndcg@10_loo-full']:.4f}",
            f"{m['recall@10_loo-full']:.4f}",
            f"{m['ndcg@10_loo-sampled100']:.4f}",
            f"{m['hr@10_loo-sampled100']:.4f}",
            f"{m['loadavg_1m_before']:.1f}→{m['loadavg_1m_after']:.1f}",
        )
    return t


# ---------------------------------------------------------------------------- the command
def bench_gru4rec_official(
    official_path: Annotated[
        Path | None,
        typer.Option(
            "--official-path", help=f"A checkout of {OFFICIAL_REPO} (git clone it; not shipped with coachrec)"
        ),
    ] = None,
    dataset: Annotated[str, typer.Option(help="beauty, ml-latest-small, or a path")] = "beauty",
    epochs: Annotated[int, typer.Option(help="Training epochs of both implementations")] = 10,
    threads: Annotated[int, typer.Option(help="torch CPU threads for both")] = 2,
    fit_on: Annotated[
        str, typer.Option("--fit-on", help="train, or train+valid (the test task always sees train + valid)")
    ] = "train",
    impl: Annotated[str, typer.Option(help="both, official or coachrec")] = "both",
    max_users: Annotated[int, typer.Option("--max-users", help="Only the first N users (quick checks; 0 = all)")] = 0,
    seed: Annotated[
        int,
        typer.Option(help="torch seed of both runs (the official compatibility-mode init always uses numpy seed 42)"),
    ] = 0,
    echo: Annotated[bool, typer.Option(help="Show the official code's own output while it trains")] = True,
) -> None:
    """coachrec's GRU4Rec against the official GRU4Rec PyTorch code: same hyperparameters, same
    training events, same evaluator; seconds per epoch, training events/s, NDCG@10 and recall@10
    (loo-full, loo-sampled100) and their coachrec/official ratios. Writes
    benchmarks/results/gru4rec_official.json."""
    import polars as pl
    import torch

    from coachrec import datasets
    from coachrec.data import leave_one_out
    from coachrec.models.defaults import defaults

    if impl not in ("both", "official", "coachrec"):
        raise typer.BadParameter(f"{impl!r}; choose both, official or coachrec", param_hint="--impl")
    if fit_on not in ("train", "train+valid"):
        raise typer.BadParameter(f"{fit_on!r}; choose train or train+valid", param_hint="--fit-on")
    if epochs < 1 or threads < 1 or max_users < 0:
        raise typer.BadParameter("--epochs and --threads must be >= 1, --max-users >= 0")
    module = path = None
    if impl in ("both", "official"):
        module = load_official(official_path)  # fails first, with how to get the code
        path = Path(official_path).expanduser()  # type: ignore[arg-type]

    with console.status(f"loading {dataset}"):
        ds = datasets.load(dataset)
    label = ds.name
    if max_users:
        ds = ds.with_events(ds.events.filter(pl.col("user") < max_users))
        label = f"{ds.name} (first {max_users} users)"
    split = leave_one_out(ds)
    train = split.train if fit_on == "train" else split.train.concat(split.valid)

    config = defaults("gru4rec", ds.name) | {"epochs": epochs}
    params = official_params(config)
    common: dict[str, Any] = {
        "fit_on": fit_on,
        "epochs": epochs,
        "threads": threads,
        "seed": seed,
        "train_events": len(train),
        "sessions": int((np.diff(train.sequences()[0]) > 0).sum()),
        "catalog": train.n_items,
        # the official model does not know these (they score -inf through OfficialScorer);
        # coachrec's GRU4Rec keeps their random initial vectors
        "items_not_in_training": int((train.item_popularity() == 0).sum()),
        "hyperparameters": params | {"final_act": config.get("final_act", "linear")},
        "torch": torch.__version__,
        "cores": os.cpu_count(),
    }
    if path is not None:
        common |= official_source_info(path) | check_paramfile(path, params)
        if common["official_commit_checkout"] not in (None, OFFICIAL_COMMIT):
            console.print(
                f"[yellow]the official checkout is at {common['official_commit_checkout']}, not {OFFICIAL_COMMIT}"
            )
        if common.get("paramfile_differences"):
            console.print(
                f"[yellow]hyperparameters differ from the official {PARAMFILE}: {common['paramfile_differences']}"
            )
    else:
        common["official_commit_expected"] = OFFICIAL_COMMIT
    console.print(
        f"{label}: fit on {fit_on} ({len(train):,} events, {predicted_events(train):,} predicted per epoch), "
        f"{epochs} epochs, {threads} threads; {params}"
    )

    results: dict[str, dict[str, Any]] = {}
    if module is not None:
        console.print("[bold]official GRU4Rec")
        results["official"] = run_official(module, params, train, split, threads=threads, seed=seed, echo=echo) | common
        console.print(f"official: {_brief(results['official'])}")
    if impl in ("both", "coachrec"):
        console.print("[bold]coachrec GRU4Rec")
        results["coachrec"] = run_coachrec(config, train, split, threads=threads, seed=seed) | common
        console.print(f"coachrec: {_brief(results['coachrec'])}")

    rows = [row(NAMES[k], label, PROTOCOL, results[k]) for k in ("official", "coachrec") if k in results]
    if len(results) == 2:
        rows.append(
            row(NAMES["ratio"], label, PROTOCOL, {"ratios": ratios(results["coachrec"], results["official"]), **common})
        )
    title = (
        f"GRU4Rec, coachrec vs official — {label}, fit on {fit_on}, {epochs} epochs, {threads} torch threads; "
        f"{PROTOCOL}"
    )
    console.print(table(rows, title))
    path_out = results_dir() / f"{RESULTS}.json"
    old = json.loads(path_out.read_text()) if path_out.exists() else []
    console.print(f"wrote {write(RESULTS, merge_rows(old, rows))}")


def _brief(m: dict[str, Any]) -> str:
    return (
        f"{m['seconds_per_epoch']:.2f} s/epoch, {m['train_events_per_s']:,.0f} ev/s, losses {m['epoch_losses']}, "
        f"NDCG@10 full {m['ndcg@10_loo-full']:.4f}, sampled100 {m['ndcg@10_loo-sampled100']:.4f}"
    )
