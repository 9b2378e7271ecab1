"""`coachrec bench rectools`: RecTools' SASRec (the backbone of the eSASRec paper's code) beside
coachrec's SASRec at the same settings, same split, same evaluator, in the same session.

Settings (the eSASRec paper's for SASRec on Beauty): dimension 64, 1 block, 1 head, dropout 0.2,
max length 50, sampled softmax with 256 uniform negatives, Adam lr 0.001, batch 128; both
check validation NDCG@10 after every epoch on the same 5,000 validation users (coachrec's
`subsample_task`, seed 0; full ranking, history excluded, ties pessimistic), stop after
`--patience` epochs without improvement and keep the best weights. The two implementations
differ where the libraries do: RecTools draws 256 negatives per position, coachrec 256 shared by
the mini-batch (accidental hits masked); with uniform negatives coachrec's logQ term is a
constant and changes nothing.

RecTools (PyPI `rectools[torch]`, never vendored) runs in its own virtualenv (`--venv`, default
`.venv-rectools`, built on first use with the CPU torch this project uses) through
`_rectools_driver.py`, at the same time as coachrec's fit in this process (one torch thread
each), so both see the same machine load. The driver writes the 0-based pessimistic rank of each
test target; metrics come from `coachrec.metrics.ranking` for both, differences are paired by
user (bootstrap 95% CI).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.console import Console

from coachrec_bench.results import row, write

console = Console(width=170)

RECTOOLS_VERSION = "0.19.0"
TORCH_VERSION = "2.13.0"
#: torch first and pinned: `pip install torch==2.13.0` takes the CPU build from the machine's
#: disk; an unpinned torch (asked for by rectools[torch]) would pull a CUDA build.
REQUIREMENTS: list[list[str]] = [
    [f"torch=={TORCH_VERSION}"],
    [f"rectools[torch]=={RECTOOLS_VERSION}", f"torch=={TORCH_VERSION}"],
]
DRIVER = Path(__file__).with_name("_rectools_driver.py")
READY = "coachrec-rectools.json"

#: the eSASRec paper's Beauty settings, in both libraries' words
SETTINGS: dict[str, Any] = {
    "dim": 64,
    "blocks": 1,
    "heads": 1,
    "dropout": 0.2,
    "max_len": 50,
    "negatives": 256,
    "lr": 1e-3,
    "batch_size": 128,
}


class RecToolsEnvError(RuntimeError):
    """The RecTools virtualenv could not be built or run."""


def ensure_venv(venv: Path) -> Path:
    """The python of `venv` with RecTools, built on first use and reused while its recorded
    requirements match `REQUIREMENTS`."""
    py = venv / "bin" / "python"
    marker = venv / READY
    if marker.exists() and py.exists() and json.loads(marker.read_text()).get("requirements") == REQUIREMENTS:
        return py
    venv.mkdir(parents=True, exist_ok=True)
    log = venv / "coachrec-install.log"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    steps = [[sys.executable, "-m", "venv", str(venv)]] + [[str(py), "-m", "pip", "install", *r] for r in REQUIREMENTS]
    with log.open("w") as f:
        for cmd in steps:
            console.print(f"[cyan]RecTools venv:[/] {' '.join(cmd)} (log: {log})")
            if subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, check=False).returncode != 0:
                raise RecToolsEnvError(f"building {venv} failed at `{' '.join(cmd)}`; see {log}")
    marker.write_text(json.dumps({"requirements": REQUIREMENTS}) + "\n")
    return py


def export(split: Any, valid: Any, test: Any, out: Path) -> None:
    """Training events (time-ordered per user) and the validation and test tasks as CSR arrays."""
    indptr, items = split.train.sequences()
    users = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
    arrays: dict[str, np.ndarray] = {
        "train_users": users,
        "train_items": items,
        "n_items": np.int64(split.train.n_items),
    }
    for name, task in (("valid", valid), ("test", test)):
        if any(len(t) != 1 for t in task.targets):
            raise ValueError(f"{name}: one target per user expected")
        arrays[f"{name}_indptr"] = np.concatenate([[0], np.cumsum([len(h) for h in task.histories])]).astype(np.int64)
        arrays[f"{name}_items"] = np.concatenate(task.histories).astype(np.int64)
        arrays[f"{name}_targets"] = np.concatenate(task.targets).astype(np.int64)
    np.savez(out / "split.npz", **arrays)


def rank_metrics(ranks: np.ndarray, ks: tuple[int, ...] = (10, 20)) -> dict[str, np.ndarray]:
    """Per-user metrics of one target per user from 0-based ranks (coachrec's formulas)."""
    from coachrec.metrics.ranking import metrics_from_ranks

    n = len(ranks)
    return metrics_from_ranks(np.asarray(ranks, dtype=np.int64), np.arange(n), n, np.ones(n, dtype=np.int64), ks)


def timing(log: list[dict[str, Any]]) -> dict[str, Any]:
    """Median training seconds (wall and CPU) per epoch, epochs run, best epoch and training
    time to it."""
    cum = [float(e["seconds"]) for e in log]
    per = np.diff([0.0, *cum])
    cpu = np.diff([0.0, *[float(e["cpu_seconds"]) for e in log]])
    checked = [e for e in log if "valid_ndcg@10" in e]
    best = max(checked, key=lambda e: e["valid_ndcg@10"])
    return {
        "seconds_per_epoch": round(float(np.median(per)), 2),
        "cpu_seconds_per_epoch": round(float(np.median(cpu)), 2),
        "epochs_run": len(log),
        "best_epoch": best["epoch"],
        "time_to_best_s": round(float(best["seconds"]), 1),
        "valid_ndcg@10": best["valid_ndcg@10"],
    }


def bench_rectools(
    patience: Annotated[int, typer.Option(help="Epochs without validation gain before stopping (both)")] = 5,
    max_epochs: Annotated[int, typer.Option(help="Upper bound on epochs (both)")] = 200,
    venv: Annotated[Path, typer.Option(help="RecTools virtualenv (built on first use)")] = Path(".venv-rectools"),
    threads: Annotated[int, typer.Option(help="torch threads of each side")] = 1,
    seed: Annotated[int, typer.Option(help="Seed of both sides")] = 0,
    dataset: Annotated[str, typer.Option(help="Data set (the settings are the paper's for beauty)")] = "beauty",
    rectools_minutes: Annotated[
        float, typer.Option(help="Wall-clock cap on RecTools' training (0 = none); a cut run is labelled so")
    ] = 0.0,
    negatives: Annotated[
        str, typer.Option(help="coachrec's negatives, comma-separated: batch (shared by the mini-batch), sequence")
    ] = "batch",
    rectools_from: Annotated[
        Path | None,
        typer.Option(help="Reuse a finished RecTools run: its driver output folder (same split, settings, seed)"),
    ] = None,
) -> None:
    """coachrec SASRec vs RecTools SASRec on Beauty at the eSASRec paper's settings; writes
    benchmarks/results/rectools.json (accuracy, paired differences, seconds per epoch, time to best)."""
    from coachrec import datasets
    from coachrec.data import leave_one_out
    from coachrec.metrics import evaluate, named
    from coachrec.metrics.stats import paired_bootstrap
    from coachrec.models import create
    from coachrec.models.training import subsample_task

    py = ensure_venv(venv.resolve())
    ds = datasets.load(dataset)
    split = leave_one_out(ds)
    valid_users = 5000
    valid = subsample_task(split.task("valid"), valid_users, seed)
    test = split.task("test")
    s = SETTINGS
    work = Path(tempfile.mkdtemp(prefix="coachrec-rectools-"))
    export(split, valid, test, work)
    cfg = {
        "n_factors": s["dim"],
        "n_blocks": s["blocks"],
        "n_heads": s["heads"],
        "dropout_rate": s["dropout"],
        "session_max_len": s["max_len"],
        "loss": "sampled_softmax",
        "n_negatives": s["negatives"],
        "lr": s["lr"],
        "batch_size": s["batch_size"],
        "epochs": max_epochs,
        "patience": patience,
        "threads": threads,
        "seed": seed,
        "deadline": time.time() + 60 * rectools_minutes if rectools_minutes > 0 else 0,
    }
    (work / "config.json").write_text(json.dumps(cfg))
    log_path = work / "driver.log"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env |= {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    out_dir = rectools_from if rectools_from is not None else work / "out"
    proc = None
    if rectools_from is None:
        console.print(f"RecTools driver log: {log_path}")
        proc = subprocess.Popen(
            [str(py), str(DRIVER), str(work), str(work / "config.json"), str(out_dir)],
            stdout=log_path.open("w"),
            stderr=subprocess.STDOUT,
            env=env,
        )
    coach: dict[str, tuple[Any, Any, float]] = {}
    for variant in [v.strip() for v in negatives.split(",") if v.strip()]:
        coach_cfg = {
            "dim": s["dim"],
            "layers": s["blocks"],
            "heads": s["heads"],
            "dropout": s["dropout"],
            "max_len": s["max_len"],
            "loss": "sampled-ce",
            "n_negatives": s["negatives"],
            "neg_alpha": 0.0,
            "negatives": variant,
            "lr": s["lr"],
            "batch_size": s["batch_size"],
            "epochs": max_epochs,
            "eval_every": 1,
            "patience": patience,
            "valid_users": valid_users,
            "seed": seed,
            "threads": threads,
        }
        model = create("sasrec", **coach_cfg)
        model.on_epoch = lambda e, loss, sec, n: console.print(f"  coachrec epoch {e}: loss {loss:.4f}, {sec:.1f}s")
        t0 = time.perf_counter()
        model.fit(split.train, valid=split.task("valid"))
        fit_s = time.perf_counter() - t0
        name = "coachrec sasrec" if variant == "batch" else f"coachrec sasrec ({variant} negatives)"
        res = evaluate(model, split, named("loo-full"), ks=(10, 20), model_name=name, dataset=ds.name)
        coach[name] = (model, res, fit_s)
    if proc is not None:
        console.print("coachrec done; waiting for RecTools …")
        code = proc.wait()
        if code != 0:
            tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-20:])
            raise RecToolsEnvError(f"the RecTools driver exited with {code}:\n{tail}")
    rt = json.loads((out_dir / "result.json").read_text())
    rt_user = rank_metrics(np.load(out_dir / "test_ranks.npy"))
    shown = ("recall@10", "ndcg@10", "recall@20", "ndcg@20", "mrr@10")
    sides = {
        f"rectools {rt['versions']['rectools']} SASRec": (
            {k: float(rt_user[k].mean()) for k in shown},
            rt["epochs"],
            rt["fit_seconds"],
        ),
    } | {name: ({k: res.metrics[k] for k in shown}, m.train_log, fit_s) for name, (m, res, fit_s) in coach.items()}
    protocol = (
        "loo-full, fitted on train, early stopping on validation NDCG@10 (5,000 users) every epoch, "
        f"patience {patience}; eSASRec-paper Beauty settings (dim 64, 1 block, 1 head, dropout 0.2, max_len 50, "
        "256 uniform negatives, lr 0.001, batch 128); 1 torch thread each; RecTools draws its negatives per "
        "position, coachrec per mini-batch (`batch`) or per sequence (`sequence`)"
        + (
            "; RecTools' run reused from an earlier run of this bench (same split, settings and seed)"
            if rectools_from is not None
            else "; both fitted at the same time"
        )
    )
    rows = []
    for name, (metrics, log, fit_s) in sides.items():
        m = {k: round(v, 5) for k, v in metrics.items()} | timing(log) | {"fit_seconds": round(fit_s, 1)}
        rows.append(row(name, ds.name, protocol, m | {"users": len(test.users)}))
    for r in rows:
        r["fit_on"] = "train"
    rows[0]["versions"] = rt["versions"]
    rows[0]["known_items"] = rt["known_items"]
    rows[0]["stopped_by"] = rt["stopped_by"]
    rows[0]["epochs_log"] = rt["epochs"]
    if rectools_from is not None:
        rows[0]["reused_run"] = str(rectools_from)
    for r, (m, _, _) in zip(rows[1:], coach.values(), strict=True):
        r["epochs_log"] = m.train_log
    if rt["stopped_by"] == "deadline":
        rows[0]["name"] += f" (cut at {rectools_minutes:g} min, before early stopping)"
    for name, (m, res, _) in coach.items():
        pairs: dict[str, Any] = {}
        for k in ("ndcg@10", "recall@10"):
            a, b = rt_user[k], res.per_user[k]
            lo, hi = paired_bootstrap(a, b, n_boot=2000, seed=0)
            pairs |= {
                f"{k}_delta": round(float((b - a).mean()), 5),
                f"{k}_ci_low": round(lo, 5),
                f"{k}_ci_high": round(hi, 5),
            }
        mine = next(r for r in rows if r["name"] == name)["metrics"]
        speed = {
            f"speedup_{k}": round(rows[0]["metrics"][k] / max(mine[k], 1e-9), 2)
            for k in ("seconds_per_epoch", "cpu_seconds_per_epoch")
        }
        # accuracy at equal epochs (validation users), for a RecTools run cut before early stopping
        n = min(len(rt["epochs"]), len(m.train_log))
        equal = {
            "equal_epochs": n,
            "valid_ndcg@10_coachrec_eq": m.train_log[n - 1].get("valid_ndcg@10"),
            "valid_ndcg@10_rectools_eq": rt["epochs"][n - 1]["valid_ndcg@10"],
        }
        label = f"{name} - rectools (paired by user)"
        if rt["stopped_by"] == "deadline":
            label += f" — RecTools cut after {len(rt['epochs'])} epoch(s): test deltas are no accuracy verdict"
        rows.append(row(label, ds.name, protocol, pairs | speed | equal) | {"fit_on": "train"})
    path = write("rectools", rows)
    for r in rows:
        console.print(r["name"], json.dumps(r["metrics"]))
    console.print(f"wrote {path}")
