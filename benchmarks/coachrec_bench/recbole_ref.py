"""`coachrec bench recbole`: coachrec's SASRec and GRU4Rec beside RecBole's, same data, same split,
same protocol, same machine; accuracy and seconds per epoch as ratios.

RecBole (from PyPI, never vendored) lives in a virtualenv of its own, built once and reused:
`$COACHREC_HOME/venv-recbole` (COACHREC_HOME defaults to ~/.cache/coachrec), or `--venv`, or
an existing interpreter given with `--python`. Its pins (`REQUIREMENTS`) were found by trying.

The data: coachrec's leave-one-out split (`coachrec.data.leave_one_out`: per user the last
event is the test target, the second-to-last the validation target, the rest training; users
with fewer than 3 events train only) is written as RecBole *benchmark* files
(`benchmark_filename: [train, valid, test]`), one row per (user, item_id_list, item_id)
example, exactly the rows RecBole's own sequential data augmentation produces (every prefix of
a training sequence, at most `MAX_ITEM_LIST_LENGTH` items, predicts the next item; the valid
row's prefix is the training sequence, the test row's the training + validation sequence).
With benchmark files RecBole applies no filter (`_data_filtering` is skipped), so no user or
item is dropped; an `.item` file lists every item so RecBole's catalogue is ours. The driver
checks RecBole's row counts, catalogue size and test (user, target) pairs against the export.
(RecBole's own `LS: valid_and_test` split would give the same rows for every user except those
with exactly 3 events, whose validation event it would move into training.)

The protocol: coachrec's (`loo-full`, and `loo-sampled100` with the very negatives coachrec's
`evaluate` draws, seed 0): for every test user, the history the model sees is train + valid,
items of that history are excluded from the ranking (the target always competes), ties are
broken pessimistically. The driver (`_recbole_driver.py`, run with the venv's python) writes
the 0-based ranks; coachrec turns them into metrics here.

Training: RecBole's own `Trainer._train_epoch`, epoch after epoch, until `--max-epochs` or
until the next epoch would overrun `--budget` seconds; no validation or early stopping, no
checkpoint reload (so torch>=2.6's `torch.load(weights_only=True)` never bites). Importing
RecBole 1.2.1 switches torch's autograd anomaly detection on for every model (its SINE module
does it at import); the driver switches it off again unless `--recbole-anomaly`. `--with-coachrec` trains
coachrec's model with its Beauty defaults for as
many epochs as RecBole ran (or `--coachrec-epochs`), also without early stopping.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from coachrec_bench.results import row, write

console = Console(width=170)

RECBOLE_VERSION = "1.2.1"
TORCH_VERSION = "2.13.0"
#: Installed in this order. torch first and pinned: `pip install torch==2.13.0` takes the CPU
#: build from the machine's disk, while an unpinned torch (asked for by recbole) would pull a
#: CUDA build of several GB. Found by trying: RecBole 1.2.1's Config sets `np.float = np.float_`,
#: gone in NumPy 2, so numpy 1.26; pandas 3 needs NumPy 2, so pandas 2.3 (RecBole then prints
#: FutureWarnings about chained in-place fillna and `Series.agg(len)`, harmless with pandas 2).
#: ray, thop, tensorboard, plotly come with recbole (hard requirements); nothing else is needed
#: for SASRec and GRU4Rec.
REQUIREMENTS: list[list[str]] = [
    [f"torch=={TORCH_VERSION}"],
    [f"recbole=={RECBOLE_VERSION}", f"torch=={TORCH_VERSION}", "numpy==1.26.4", "pandas==2.3.3"],
]
DRIVER = Path(__file__).with_name("_recbole_driver.py")
READY = "coachrec-recbole.json"

#: coachrec model name -> RecBole model name
RECBOLE_NAME = {"sasrec": "SASRec", "gru4rec": "GRU4Rec"}

#: RecBole's defaults for these models (properties/model/*.yaml) with the SASRec paper's
#: settings where the issue fixes them (1 head, batch 128, dropout 0.5, max length 50, lr 1e-3);
#: CE loss over all items, so no training negatives (RecBole requires None for CE).
RECBOLE_CONFIG: dict[str, dict[str, Any]] = {
    "SASRec": {
        "n_layers": 2,
        "n_heads": 1,
        "hidden_size": 64,
        "inner_size": 256,
        "hidden_dropout_prob": 0.5,
        "attn_dropout_prob": 0.5,
        "hidden_act": "gelu",
        "layer_norm_eps": 1e-12,
        "initializer_range": 0.02,
        "loss_type": "CE",
        "train_batch_size": 128,
        "learning_rate": 0.001,
        "learner": "adam",
        "weight_decay": 0.0,
        "train_neg_sample_args": None,
    },
    "GRU4Rec": {
        "embedding_size": 64,
        "hidden_size": 128,
        "num_layers": 1,
        "dropout_prob": 0.3,
        "loss_type": "CE",
        "train_batch_size": 128,
        "learning_rate": 0.001,
        "learner": "adam",
        "weight_decay": 0.0,
        "train_neg_sample_args": None,
    },
}

SHOWN = ("recall@10", "ndcg@10", "recall@20", "ndcg@20", "mrr@10")


class RecBoleEnvError(RuntimeError):
    """The RecBole virtualenv could not be built or used."""


# ------------------------------------------------------------------------------ the venv
def default_venv() -> Path:
    from coachrec.llm.registry import coachrec_home

    return coachrec_home() / "venv-recbole"


def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _run_step(what: str, cmd: list[str], log: Path, env: dict[str, str] | None = None) -> None:
    with log.open("a") as f:
        f.write(f"\n$ {' '.join(cmd)}\n")
        f.flush()
        try:
            proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, check=False)
        except OSError as exc:
            raise RecBoleEnvError(
                f"could not build the RecBole virtualenv: {what} failed: cannot run {cmd[0]!r} ({exc})"
            ) from exc
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise RecBoleEnvError(
            f"could not build the RecBole virtualenv: {what} failed (exit {proc.returncode}):\n  {' '.join(cmd)}\n"
            f"last lines of {log}:\n{tail}\n"
            "Only PyPI is reachable; fix the cause (disk space, a pin no longer on PyPI) and run again, "
            "or pass --python with an interpreter that already has recbole installed."
        )


def ensure_venv(venv: Path | None = None, *, python: str | None = None, quiet: bool = False) -> Path:
    """The python of a virtualenv with RecBole, built on first use (a few minutes) and reused
    while its recorded requirements match `REQUIREMENTS`. Raises RecBoleEnvError."""
    venv = Path(venv or default_venv()).expanduser()
    py = venv_python(venv)
    marker = venv / READY
    if marker.exists() and py.exists():
        try:
            if json.loads(marker.read_text()).get("requirements") == REQUIREMENTS:
                return py
        except (OSError, ValueError):
            pass
    base = python or sys.executable
    venv.parent.mkdir(parents=True, exist_ok=True)
    log = venv.parent / f"{venv.name}-install.log"
    log.write_text(f"building {venv} with {base}\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    t0 = time.perf_counter()
    steps: list[tuple[str, list[str]]] = [("creating the virtualenv", [base, "-m", "venv", "--clear", str(venv)])]
    for reqs in REQUIREMENTS:
        steps.append(
            (f"installing {', '.join(reqs)}", [str(py), "-m", "pip", "install", "--disable-pip-version-check", *reqs])
        )
    check = (
        "import recbole, torch; from recbole.model.sequential_recommender import SASRec, GRU4Rec; "
        "print(recbole.__version__, torch.__version__)"
    )
    steps.append(("checking that RecBole imports", [str(py), "-c", check]))
    for i, (what, cmd) in enumerate(steps, 1):
        if not quiet:
            console.print(f"[cyan]RecBole venv ({i}/{len(steps)}):[/] {what} … (log: {log})")
        _run_step(what, cmd, log, env)
    seconds = round(time.perf_counter() - t0, 1)
    marker.write_text(json.dumps({"requirements": REQUIREMENTS, "python": base, "seconds": seconds}, indent=1) + "\n")
    if not quiet:
        console.print(f"[green]RecBole venv ready at {venv} ({seconds:.0f} s)")
    return py


# ------------------------------------------------------------------------------ the data
def sampled_negatives(
    histories: list[np.ndarray], targets: np.ndarray, n_items: int, protocol: Any, batch_size: int = 512
) -> np.ndarray:
    """The negatives coachrec's `evaluate(..., protocol)` draws for these rows: same generator,
    same batches (so the same draws), uniform or popularity-free only."""
    from coachrec.metrics.evaluation import _sample_negatives

    if protocol.sampler != "uniform":
        raise ValueError("only the uniform sampler is reproduced here")
    rng = np.random.default_rng(protocol.seed)
    parts = [
        _sample_negatives(
            rng, histories[lo : lo + batch_size], targets[lo : lo + batch_size], n_items, protocol.n_negatives, None
        )
        for lo in range(0, len(targets), batch_size)
    ]
    return np.concatenate(parts) if parts else np.zeros((0, protocol.n_negatives), dtype=np.int64)


def _seq(items: np.ndarray) -> str:
    return " ".join(map(str, items.tolist()))


def export_recbole(
    split: Any, out: Path, *, max_len: int = 50, sampled: str | None = "loo-sampled100"
) -> dict[str, Any]:
    """Write `split` as RecBole benchmark files under `out/coachrec/` plus `out/eval.npz`.

    Tokens are coachrec's user and item indices. Returns the row counts and catalogue size
    the driver must find."""
    from coachrec.metrics import named

    d = Path(out) / "coachrec"
    d.mkdir(parents=True, exist_ok=True)
    header = "user_id:token\titem_id_list:token_seq\titem_id:token\n"
    n_items = split.train.n_items
    counts: dict[str, int] = {}

    indptr, items = split.train.sequences()
    with (d / "coachrec.train.inter").open("w") as f:
        f.write(header)
        n = 0
        for u in range(len(indptr) - 1):
            s = items[indptr[u] : indptr[u + 1]]
            for j in range(1, len(s)):
                f.write(f"{u}\t{_seq(s[max(0, j - max_len) : j])}\t{s[j]}\n")
                n += 1
        counts["train"] = n

    vtask = split.task("valid")
    with (d / "coachrec.valid.inter").open("w") as f:
        f.write(header)
        for u, h, t in zip(vtask.users, vtask.histories, vtask.targets, strict=True):
            for item in t:
                f.write(f"{u}\t{_seq(h[-max_len:])}\t{item}\n")
        counts["valid"] = sum(len(t) for t in vtask.targets)

    task = split.task("test")
    if any(len(t) != 1 for t in task.targets):
        raise ValueError("the RecBole comparison needs one test target per user (a leave-one-out split)")
    targets = np.array([int(t[0]) for t in task.targets], dtype=np.int64)
    with (d / "coachrec.test.inter").open("w") as f:
        f.write(header)
        for u, h, t in zip(task.users, task.histories, targets, strict=True):
            f.write(f"{u}\t{_seq(h[-max_len:])}\t{t}\n")
    counts["test"] = len(targets)

    with (d / "coachrec.item").open("w") as f:
        f.write("item_id:token\n")
        f.write("".join(f"{i}\n" for i in range(n_items)))

    lengths = np.array([len(h) for h in task.histories], dtype=np.int64)
    hptr = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=hptr[1:])
    flat = np.concatenate(task.histories).astype(np.int64) if len(lengths) else np.zeros(0, np.int64)
    negs = (
        sampled_negatives(task.histories, targets, n_items, named(sampled))
        if sampled
        else np.zeros((0, 0), dtype=np.int64)
    )
    np.savez(
        Path(out) / "eval.npz",
        users=np.asarray(task.users, dtype=np.int64),
        indptr=hptr,
        items=flat,
        targets=targets,
        negatives=negs,
        n_items=np.int64(n_items),
    )
    return {"rows": counts, "items": n_items, "test_users": len(targets), "max_len": max_len, "sampled": sampled}


def rank_metrics(ranks: np.ndarray, ks: tuple[int, ...] = (10, 20)) -> dict[str, float]:
    """Mean metrics of one target per user from 0-based pessimistic ranks (the same formulas
    as `coachrec.metrics.evaluate`)."""
    from coachrec.metrics.ranking import metrics_from_ranks

    ranks = np.asarray(ranks, dtype=np.int64)
    n = len(ranks)
    if (ranks < 0).any():
        raise ValueError("a rank is missing (negative)")
    per = metrics_from_ranks(ranks, np.arange(n), n, np.ones(n, dtype=np.int64), ks)
    return {k: float(v.mean()) for k, v in per.items()}


# ------------------------------------------------------------------------------ running
def parse_sets(sets: list[str]) -> dict[str, dict[str, Any]]:
    """`MODEL.KEY=VALUE` (VALUE as JSON when it parses, else a string) -> {MODEL: {KEY: VALUE}}."""
    out: dict[str, dict[str, Any]] = {}
    names = {m.lower(): m for m in RECBOLE_CONFIG}
    for s in sets:
        key, eq, val = s.partition("=")
        model, dot, field = key.partition(".")
        if not eq or not dot or model.lower() not in names or not field:
            raise typer.BadParameter(
                f"{s!r}: expected MODEL.KEY=VALUE with MODEL in {list(RECBOLE_CONFIG)}", param_hint="--set"
            )
        try:
            value = json.loads(val)
        except ValueError:
            value = val
        out.setdefault(names[model.lower()], {})[field] = value
    return out


def run_driver(
    python: Path,
    data: Path,
    out: Path,
    *,
    models: list[str],
    config: dict[str, dict[str, Any]],
    threads: int,
    max_epochs: int,
    budget: float,
    max_len: int,
    seed: int,
    log: Path,
    detect_anomaly: bool = False,
) -> dict[str, Any]:
    """Run the driver in the RecBole venv; its progress lines are echoed, everything is logged."""
    cmd = [
        str(python),
        str(DRIVER),
        "--data",
        str(data),
        "--out",
        str(out),
        "--models",
        ",".join(models),
        "--config",
        json.dumps(config),
        "--threads",
        str(threads),
        "--max-epochs",
        str(max_epochs),
        "--budget",
        str(budget),
        "--max-len",
        str(max_len),
        "--seed",
        str(seed),
        "--detect-anomaly" if detect_anomaly else "--no-detect-anomaly",
    ]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    lines: list[str] = []
    with log.open("w") as f:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        assert proc.stdout is not None
        for line in proc.stdout:
            f.write(line)
            lines.append(line.rstrip())
            if line.startswith(("[", "wrote")):
                console.print(f"  [dim]recbole[/] {line.rstrip()}", highlight=False)
        rc = proc.wait()
    if rc != 0:
        tail = "\n".join(lines[-25:])
        raise RecBoleEnvError(f"the RecBole driver failed (exit {rc}); last lines (full log {log}):\n{tail}")
    return json.loads(out.read_text())


def run_coachrec(
    name: str, split: Any, *, epochs: int, threads: int, ks: tuple[int, ...], protocols: list[str]
) -> dict[str, Any]:
    """coachrec's model with its per-dataset defaults, `epochs` epochs, no early stopping."""
    import dataclasses

    from coachrec.metrics import evaluate, named
    from coachrec_bench.speed import timed_fit

    model, fit_s, spe = timed_fit(name, split.train, epochs=epochs, threads=threads)
    results = {}
    for p in protocols:
        res = evaluate(model, split, named(p), ks=ks, model_name=name)
        results[p] = {k: res.metrics[k] for k in res.metrics if k.split("@")[0] in ("recall", "ndcg", "mrr", "hr")}
        results[p]["users"] = res.n_users
    return {
        "config": dict(dataclasses.asdict(model.config).items()),
        "epochs_run": epochs,
        "seconds_per_epoch": round(spe, 3),
        "train_seconds": round(fit_s, 2),
        "metrics": results,
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not b:
        return None
    return round(a / b, 4)


def bench_recbole(
    dataset: Annotated[str, typer.Option(help="beauty, ml-latest-small, or a path")] = "beauty",
    model: Annotated[list[str], typer.Option(help="sasrec and/or gru4rec (repeatable; default both)")] = [],  # noqa: B006
    threads: Annotated[int, typer.Option(help="torch CPU threads, RecBole and coachrec alike")] = 2,
    budget: Annotated[
        float,
        typer.Option(help="Training seconds per RecBole model: stop before the epoch that would overrun it (0 = none)"),
    ] = 900.0,
    max_epochs: Annotated[int, typer.Option(help="Epoch cap per RecBole model")] = 200,
    with_coachrec: Annotated[
        bool, typer.Option("--with-coachrec/--no-coachrec", help="Also train coachrec's model on the same split")
    ] = True,
    coachrec_epochs: Annotated[
        int, typer.Option(help="coachrec's epochs (0 = as many as RecBole ran for that model)")
    ] = 0,
    sampled: Annotated[
        bool,
        typer.Option(
            "--sampled/--no-sampled", help="Also rank against coachrec's 100 uniform sampled negatives (seed 0)"
        ),
    ] = True,
    users: Annotated[int, typer.Option(help="Only the first N users (a quick check; 0 = all)")] = 0,
    max_len: Annotated[int, typer.Option(help="MAX_ITEM_LIST_LENGTH of the exported examples (SASRec: 50)")] = 50,
    seed: Annotated[int, typer.Option(help="RecBole's seed")] = 0,
    recbole_anomaly: Annotated[
        bool,
        typer.Option(
            "--recbole-anomaly/--no-recbole-anomaly",
            help="Train RecBole as shipped: importing it switches torch's anomaly detection on (~1.5x slower)",
        ),
    ] = False,
    set_: Annotated[
        list[str],
        typer.Option(
            "--set", help="RecBole config override MODEL.KEY=VALUE, e.g. GRU4Rec.train_batch_size=2048 (repeatable)"
        ),
    ] = [],  # noqa: B006
    venv: Annotated[
        Path | None, typer.Option(help="RecBole virtualenv (default $COACHREC_HOME/venv-recbole; built on first use)")
    ] = None,
    python: Annotated[
        Path | None, typer.Option(help="Use this interpreter (recbole installed) instead of building a venv")
    ] = None,
    keep: Annotated[
        Path | None, typer.Option(help="Keep the exported files and the driver's output in this folder")
    ] = None,
    reuse_recbole: Annotated[
        Path | None,
        typer.Option(
            "--reuse-recbole",
            help="A --keep folder of an earlier run: take RecBole's results from it instead of training RecBole again",
        ),
    ] = None,
    coachrec_defaults: Annotated[
        bool,
        typer.Option(
            "--coachrec-defaults/--no-coachrec-defaults",
            help="Also train coachrec's model for its own default epochs (time to accuracy)",
        ),
    ] = True,
) -> None:
    """RecBole's SASRec and GRU4Rec (PyPI, own venv) beside coachrec's on the same leave-one-out
    split and protocol; writes benchmarks/results/recbole.json."""
    from coachrec import datasets
    from coachrec.data import leave_one_out

    names = [m.lower() for m in model] or list(RECBOLE_NAME)
    bad = [m for m in names if m not in RECBOLE_NAME]
    if bad:
        raise typer.BadParameter(f"unknown model(s) {bad}; choose from {list(RECBOLE_NAME)}", param_hint="--model")
    overrides = parse_sets(set_)
    if threads < 1:
        raise typer.BadParameter("need at least 1 thread", param_hint="--threads")
    if reuse_recbole is not None and not (Path(reuse_recbole) / "recbole_out.json").is_file():
        raise typer.BadParameter(
            f"{reuse_recbole} holds no recbole_out.json (run once with --keep {reuse_recbole})",
            param_hint="--reuse-recbole",
        )
    if python is not None:
        if not python.exists():
            raise typer.BadParameter(f"{python} does not exist", param_hint="--python")
        py = python
    else:
        try:
            py = ensure_venv(venv)
        except RecBoleEnvError as exc:
            console.print(f"[red]{exc}")
            raise typer.Exit(1) from exc

    with console.status(f"loading {dataset}"):
        ds = datasets.load(dataset)
    dname = ds.name
    if users > 0:
        import polars as pl

        ds = ds.with_events(ds.events.filter(pl.col("user") < users))
        dname = f"{ds.name} (first {users} users)"
    split = leave_one_out(ds)
    protocols = ["loo-full"] + (["loo-sampled100"] if sampled else [])
    rb_models = [RECBOLE_NAME[m] for m in names]
    rb_config = {m: RECBOLE_CONFIG[m] | overrides.get(m, {}) for m in rb_models}

    work = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="coachrec-recbole-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        with console.status("exporting the split as RecBole atomic files"):
            exported = export_recbole(
                split, work / "data", max_len=max_len, sampled="loo-sampled100" if sampled else None
            )
        console.print(f"exported {dname}: {exported['rows']} rows, {exported['items']:,} items → {work / 'data'}")
        load_before = os.getloadavg()[0]
        t0 = time.perf_counter()
        if reuse_recbole is not None:
            rb = reused_results(reuse_recbole, rb_config)
        else:
            rb = run_driver(
                py,
                work / "data",
                work / "recbole_out.json",
                models=rb_models,
                config=rb_config,
                threads=threads,
                max_epochs=max_epochs,
                budget=budget,
                max_len=max_len,
                seed=seed,
                log=work / "driver.log",
                detect_anomaly=recbole_anomaly,
            )
        rb_wall = time.perf_counter() - t0
        load_mid = os.getloadavg()[0]
    except RecBoleEnvError as exc:
        console.print(f"[red]{exc}")
        raise typer.Exit(1) from exc
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)

    protocol_text = "leave-one-out; history = train + valid; seen items excluded; ties pessimistic"
    common = {
        "threads": threads,
        "budget_seconds": budget,
        "max_epochs": max_epochs,
        "versions": rb["versions"],
        "split_check": exported,
    }
    rows: list[dict[str, Any]] = []
    summary: list[tuple[str, str, dict[str, Any], dict[str, dict[str, float]]]] = []
    for name in names:
        res = rb["models"][RECBOLE_NAME[name]]
        if res["rows"] != exported["rows"]:
            raise RuntimeError(f"RecBole's rows {res['rows']} differ from the export's {exported['rows']}")
        rb_metrics = {"loo-full": rank_metrics(np.array(res["full_ranks"]))}
        if sampled:
            rb_metrics["loo-sampled100"] = rank_metrics(np.array(res["sampled_ranks"]))
        info = {k: res[k] for k in ("epochs_run", "seconds_per_epoch", "train_seconds", "stopped_by")}
        summary.append((f"recbole {res['model']}", name, info, rb_metrics))
        for p in protocols:
            m = {k: round(rb_metrics[p][k], 5) for k in SHOWN} | info | {"users": len(res["full_ranks"])}
            if reuse_recbole is None:
                m |= {"loadavg_1m_before": round(load_before, 2), "loadavg_1m_after": round(load_mid, 2)}
            r = row(f"recbole {res['model']}", dname, p, m) | common
            if reuse_recbole is not None:  # that run's load was not recorded
                r["recbole_results"] = (
                    f"reused from an earlier run's --keep folder ({rb.get('threads')} threads, budget "
                    f"{rb.get('budget')} s)"
                )
            r |= {
                "implementation": f"RecBole {rb['versions']['recbole']} (PyPI)",
                "config": res["config"],
                "epoch_log": res["epochs"],
                "recbole_own_eval": res["recbole_own_eval"],
                "detect_anomaly": res.get("detect_anomaly"),
                "rows_checked": res["rows"],
                "parameters": res.get("parameters"),
                "data_seconds": res.get("data_seconds"),
                "rank_seconds": res.get("rank_seconds"),
                "note": protocol_text,
            }
            rows.append(r)
        console.print(f"recbole {res['model']}: {info}, NDCG@10 full {rb_metrics['loo-full']['ndcg@10']:.4f}")

        if with_coachrec:
            runs = [
                (
                    f"coachrec {name}",
                    coachrec_epochs or res["epochs_run"],
                    "epochs set by --coachrec-epochs" if coachrec_epochs else "epochs matched to RecBole's",
                )
            ]
            own = default_epochs(name, ds.name)
            if coachrec_defaults and own not in (None, runs[0][1]):
                runs.append(
                    (
                        f"coachrec {name} (default epochs)",
                        own,
                        "coachrec's default epochs for this data set (time to accuracy)",
                    )
                )
            for label, epochs, how in runs:
                before = os.getloadavg()[0]
                with console.status(f"training {label} for {epochs} epoch(s)"):
                    cr = run_coachrec(name, split, epochs=epochs, threads=threads, ks=(10, 20), protocols=protocols)
                cinfo = {
                    "epochs_run": cr["epochs_run"],
                    "seconds_per_epoch": cr["seconds_per_epoch"],
                    "train_seconds": cr["train_seconds"],
                }
                summary.append((label, name, cinfo, cr["metrics"]))
                for p in protocols:
                    m = {k: round(cr["metrics"][p][k], 5) for k in SHOWN} | cinfo | {"users": cr["metrics"][p]["users"]}
                    m |= {
                        "ndcg@10_ratio_vs_recbole": _ratio(cr["metrics"][p]["ndcg@10"], rb_metrics[p]["ndcg@10"]),
                        "recall@10_ratio_vs_recbole": _ratio(cr["metrics"][p]["recall@10"], rb_metrics[p]["recall@10"]),
                        "seconds_per_epoch_ratio_vs_recbole": _ratio(cr["seconds_per_epoch"], res["seconds_per_epoch"]),
                        "train_seconds_ratio_vs_recbole": _ratio(cr["train_seconds"], res["train_seconds"]),
                        "loadavg_1m_before": round(before, 2),
                        "loadavg_1m_after": round(os.getloadavg()[0], 2),
                    }
                    r = row(label, dname, p, m) | common
                    r |= {
                        "implementation": "coachrec",
                        "config": cr["config"],
                        "note": f"{protocol_text}; no early stopping, {how}",
                    }
                    rows.append(r)
                console.print(f"{label}: {cinfo}, NDCG@10 full {cr['metrics']['loo-full']['ndcg@10']:.4f}")

    console.print(table(summary, protocols, dname, threads, budget))
    if reuse_recbole is not None:
        console.print(f"RecBole results reused from {reuse_recbole} (their own run's timings)")
    else:
        console.print(
            f"RecBole driver wall time {rb_wall:.0f} s; load average {load_before:.1f} → {os.getloadavg()[0]:.1f}"
        )
    console.print(f"wrote {write('recbole', rows)}")


def reused_results(folder: Path, config: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """RecBole's results from the `--keep` folder of an earlier run, checked to hold every
    requested model with the same settings (the rows are checked against the export later)."""
    path = Path(folder) / "recbole_out.json"
    if not path.is_file():
        raise RecBoleEnvError(f"--reuse-recbole: {path} does not exist (run once with --keep {folder})")
    rb = json.loads(path.read_text())
    for model, want in config.items():
        got = rb.get("models", {}).get(model)
        if got is None:
            raise RecBoleEnvError(
                f"--reuse-recbole: {path} holds no {model} run (it has {sorted(rb.get('models', {}))})"
            )
        # RecBole normalises None (no training negatives) into a dict of 'none's: compare set values only
        differ = {k: (got["config"].get(k), v) for k, v in want.items() if v is not None and got["config"].get(k) != v}
        if differ:
            raise RecBoleEnvError(f"--reuse-recbole: {model} in {path} ran with other settings (kept, asked): {differ}")
    return rb


def default_epochs(name: str, dataset: str) -> int | None:
    """The epochs coachrec's model trains for by default on `dataset`."""
    from coachrec.models import config_fields, model_class
    from coachrec.models.defaults import defaults

    if "epochs" not in config_fields(name):
        return None
    return int(defaults(name, dataset).get("epochs", model_class(name).Config().epochs))


def table(
    summary: list[tuple[str, str, dict[str, Any], dict[str, dict[str, float]]]],
    protocols: list[str],
    dname: str,
    threads: int,
    budget: float,
) -> Table:
    t = Table(
        title=f"RecBole vs coachrec — {dname}, leave-one-out, seen items excluded, ties pessimistic; "
        f"{threads} threads, RecBole budget {budget:.0f} s/model",
        title_justify="left",
        caption=(
            "ratio = coachrec / RecBole (same model family). s100 = 100 uniform sampled negatives (seed 0). An "
            "epoch is not the same "
            "work in both: RecBole's SASRec steps once per (prefix, next item) row, coachrec's once per user window "
            "(every position a target), "
            "so compare accuracy at equal training seconds too ('default epochs' rows)."
        ),
        caption_justify="left",
    )
    cols = ["run", "epochs", "s/epoch", "train s"]
    for p in protocols:
        tag = "full" if p == "loo-full" else "s100"
        cols += [f"R@10 {tag}", f"NDCG@10 {tag}"]
    cols += ["NDCG@10 ratio", "s/epoch ratio"]
    for c in cols:
        t.add_column(c, justify="left" if c == "run" else "right")
    ref: dict[str, tuple[dict[str, Any], dict[str, dict[str, float]]]] = {}
    for label, family, info, metrics in summary:
        vals = [label, str(info["epochs_run"]), f"{info['seconds_per_epoch']:.1f}", f"{info['train_seconds']:.0f}"]
        for p in protocols:
            vals += [f"{metrics[p]['recall@10']:.4f}", f"{metrics[p]['ndcg@10']:.4f}"]
        if label.startswith("recbole"):
            ref[family] = (info, metrics)
            vals += ["", ""]
        else:
            rinfo, rmet = ref[family]
            nr = _ratio(metrics["loo-full"]["ndcg@10"], rmet["loo-full"]["ndcg@10"])
            sr = _ratio(info["seconds_per_epoch"], rinfo["seconds_per_epoch"])
            vals += [f"{nr:.2f}" if nr is not None else "", f"{sr:.2f}" if sr is not None else ""]
        t.add_row(*vals)
    return t
