"""Train RecBole's sequential models on a coachrec export and rank the test targets.

Runs INSIDE the RecBole virtualenv (`coachrec bench recbole` starts it as a file with that
venv's python). It must not import coachrec: only the standard library, numpy, torch and
recbole. Our code, not RecBole's.

Input (`--data DIR`, written by `coachrec_bench.recbole_ref.export_recbole`):
- `DIR/coachrec/coachrec.{train,valid,test}.inter`: RecBole benchmark files, one row per
  (user, item_id_list, item_id) training/validation/test example;
- `DIR/coachrec/coachrec.item`: every item of the catalogue (so RecBole knows them all);
- `DIR/eval.npz`: per test user (coachrec's order) the full train+valid history (CSR), the
  target, and the sampled negatives of coachrec's sampled protocol (may be empty).

Per model: RecBole's own Trainer trains epoch after epoch (`Trainer._train_epoch`, timed) until
`--max-epochs` or until the next epoch would overrun `--budget` seconds (at least one epoch);
no validation, no checkpoint (so `torch.load`, whose `weights_only=True` default since torch 2.6
breaks RecBole's reload, is never called); torch's anomaly detection, which importing RecBole
1.2.1 switches on (its SINE module does), is switched off unless `--detect-anomaly`. Then, for every row of
RecBole's own test set, the
model's `full_sort_predict` scores every item; items of the user's train+valid history are
excluded (the target always competes) and the pessimistic 0-based rank is written (number of
items scoring strictly higher + number of other items scoring equal), over all items and over
the target + its sampled negatives.

Output (`--out FILE.json`): per model the ranks (in the order of eval.npz), the epoch log, the
exact config and versions, and RecBole's own evaluator figures on its test loader (no seen-item
exclusion, its tie handling) as a cross-check.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from typing import Any

import numpy as np


def pessimistic_ranks(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """0-based rank of targets[r] in row r: #strictly higher + #other equal scores."""
    t = scores[np.arange(len(targets)), targets][:, None]
    return (scores > t).sum(axis=1) + (scores == t).sum(axis=1) - 1


def exclude_history(
    scores: np.ndarray, indptr: np.ndarray, items: np.ndarray, rows: np.ndarray, targets: np.ndarray
) -> None:
    """Set the scores of each row's history items to -inf, in place; the target keeps its score.
    `rows` are the indices into the CSR history (indptr, items) of the rows of `scores`."""
    tgt_scores = scores[np.arange(len(rows)), targets].copy()
    lens = indptr[rows + 1] - indptr[rows]
    r = np.repeat(np.arange(len(rows)), lens)
    cols = np.concatenate([items[indptr[u] : indptr[u + 1]] for u in rows]) if len(rows) else np.zeros(0, np.int64)
    scores[r, cols] = -np.inf
    scores[np.arange(len(rows)), targets] = tgt_scores


def rank_rows(
    scores: np.ndarray, targets: np.ndarray, negatives: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Full-ranking ranks and, when `negatives` (rows, n) is given, ranks among target + negatives.
    `scores` must already have the history excluded."""
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN; the model produced invalid output")
    full = pessimistic_ranks(scores, targets)
    sampled = None
    if negatives is not None and negatives.size:
        cand = np.concatenate([targets[:, None], negatives], axis=1)
        sub = np.take_along_axis(scores, cand, axis=1)
        sampled = pessimistic_ranks(sub, np.zeros(len(targets), dtype=np.int64))
    return full, sampled


def _versions() -> dict[str, str]:
    import pandas
    import recbole
    import scipy
    import torch

    return {
        "recbole": getattr(recbole, "__version__", "?"),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "pandas": pandas.__version__,
        "scipy": scipy.__version__,
        "python": platform.python_version(),
    }


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    return str(v)


def run_model(
    model_name: str, args: argparse.Namespace, overrides: dict[str, Any], ev: dict[str, np.ndarray], workdir: str
) -> dict[str, Any]:
    import torch
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.data.interaction import Interaction
    from recbole.utils import get_model, get_trainer, init_seed

    config_dict: dict[str, Any] = {
        "data_path": args.data,
        "benchmark_filename": ["train", "valid", "test"],
        "alias_of_item_id": ["item_id_list"],
        "load_col": {"inter": ["user_id", "item_id_list", "item_id"], "item": ["item_id"]},
        "MAX_ITEM_LIST_LENGTH": args.max_len,
        "use_gpu": False,
        "gpu_id": "",
        "worker": 0,
        "seed": args.seed,
        "reproducibility": True,
        "show_progress": False,
        "checkpoint_dir": os.path.join(workdir, "saved"),
        "epochs": args.max_epochs,
        "eval_step": 0,
        "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user", "mode": "full"},
        "metrics": ["Recall", "NDCG"],
        "topk": [10],
        "valid_metric": "NDCG@10",
        "eval_batch_size": args.eval_batch,
    }
    config_dict.update(overrides)
    config = Config(model=model_name, dataset="coachrec", config_dict=config_dict)
    init_seed(config["seed"], config["reproducibility"])
    torch.set_num_threads(args.threads)
    t_data = time.perf_counter()
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    data_seconds = time.perf_counter() - t_data
    n_items = int(ev["n_items"])
    if dataset.item_num != n_items + 1:
        raise RuntimeError(f"RecBole knows {dataset.item_num - 1} items, the export has {n_items}")
    sizes = [len(d._dataset) for d in (train_data, valid_data, test_data)]
    init_seed(config["seed"], config["reproducibility"])
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    torch.set_num_threads(args.threads)
    # RecBole 1.2.1's sequential_recommender/sine.py calls torch.autograd.set_detect_anomaly(True)
    # at import, which get_model triggers for every sequential model: a debugging mode that
    # records a traceback per op and slows SASRec's epochs ~1.5x. Off unless --detect-anomaly.
    anomaly_as_shipped = torch.is_anomaly_enabled()
    torch.autograd.set_detect_anomaly(args.detect_anomaly)

    # ---- training: RecBole's own epoch, timed; stop at the cap or before overrunning the budget
    log: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    stopped = "max_epochs"
    for epoch in range(args.max_epochs):
        te = time.perf_counter()
        loss = trainer._train_epoch(train_data, epoch, show_progress=False)
        dt = time.perf_counter() - te
        loss = sum(loss) if isinstance(loss, tuple) else loss
        log.append({"epoch": epoch + 1, "seconds": round(dt, 3), "loss_sum": round(float(loss), 4)})
        elapsed = time.perf_counter() - t0
        print(
            f"[{model_name}] epoch {epoch + 1}: {dt:.1f}s loss {float(loss):.2f} (elapsed {elapsed:.0f}s)", flush=True
        )
        if args.budget > 0 and elapsed + dt > args.budget and epoch + 1 < args.max_epochs:
            stopped = "budget"
            break
    train_seconds = time.perf_counter() - t0

    # ---- ranking, on RecBole's own test rows
    model.eval()
    tds = test_data._dataset
    feat = tds.inter_feat
    iid, uid = dataset.iid_field, dataset.uid_field
    seq_field, len_field = model.ITEM_SEQ, model.ITEM_SEQ_LEN
    item_tokens = dataset.field2id_token[iid]
    user_tokens = dataset.field2id_token[uid]
    # RecBole id -> our item index; -1 for padding
    ours_of_rb = np.array([-1] + [int(t) for t in item_tokens[1:]], dtype=np.int64)
    rb_of_ours = np.empty(n_items, dtype=np.int64)
    rb_of_ours[ours_of_rb[1:]] = np.arange(1, len(item_tokens))
    test_users = ev["users"]
    row_of_user = {int(u): i for i, u in enumerate(test_users)}
    feat_users = np.array([int(user_tokens[u]) for u in feat[uid].numpy()], dtype=np.int64)
    feat_targets = ours_of_rb[feat[iid].numpy()]
    if len(feat_users) != len(test_users) or set(feat_users.tolist()) != set(row_of_user):
        raise RuntimeError(f"RecBole's test set has {len(feat_users)} rows, the export {len(test_users)} test users")
    rows = np.array([row_of_user[int(u)] for u in feat_users], dtype=np.int64)
    if not np.array_equal(feat_targets, ev["targets"][rows]):
        raise RuntimeError("RecBole's test targets differ from the export's")
    seq_np, len_np = feat[seq_field].numpy(), feat[len_field].numpy()
    want_len = np.minimum(ev["indptr"][rows + 1] - ev["indptr"][rows], args.max_len)
    if not np.array_equal(len_np, want_len) or not np.array_equal((seq_np > 0).sum(axis=1), want_len):
        raise RuntimeError("RecBole's test sequences do not have the exported lengths")
    last = ours_of_rb[seq_np[np.arange(len(rows)), len_np - 1]]
    if not np.array_equal(last, ev["items"][ev["indptr"][rows + 1] - 1]):
        raise RuntimeError("RecBole's test sequences do not end with the user's last history item")
    full_ranks = np.full(len(test_users), -1, dtype=np.int64)
    sampled_ranks = np.full(len(test_users), -1, dtype=np.int64)
    negatives = ev.get("negatives")
    has_neg = negatives is not None and negatives.size > 0
    t_rank = time.perf_counter()
    with torch.no_grad():
        for lo in range(0, len(rows), args.eval_batch):
            sl = slice(lo, lo + args.eval_batch)
            inter = Interaction({seq_field: feat[seq_field][sl], len_field: feat[len_field][sl]})
            s_rb = model.full_sort_predict(inter).reshape(len(rows[sl]), -1).float().numpy()
            scores = np.ascontiguousarray(s_rb[:, rb_of_ours], dtype=np.float32)
            r = rows[sl]
            tg = ev["targets"][r]
            exclude_history(scores, ev["indptr"], ev["items"], r, tg)
            f, s = rank_rows(scores, tg, negatives[r] if has_neg else None)
            full_ranks[r] = f
            if s is not None:
                sampled_ranks[r] = s
    rank_seconds = time.perf_counter() - t_rank

    # ---- cross-check: RecBole's own evaluator on its test loader (its protocol, not ours)
    own: dict[str, Any] = {}
    if args.recbole_eval:
        try:
            t_own = time.perf_counter()
            own = dict(trainer.evaluate(test_data, load_best_model=False, show_progress=False))
            own["seconds"] = round(time.perf_counter() - t_own, 2)
        except Exception as exc:  # a cross-check only
            own = {"error": f"{type(exc).__name__}: {exc}"}

    volatile = {
        "data_path",
        "checkpoint_dir",
        "eval_batch_size",
        "metrics",
        "topk",
        "valid_metric",
        "show_progress",
        "gpu_id",
    }
    keys = (set(config_dict) | set(overrides) | _MODEL_KEYS.get(model_name, set())) - volatile
    keep = {k: config[k] for k in sorted(keys) if k in config}
    keep.update(
        {
            k: config[k]
            for k in ("model", "train_batch_size", "learning_rate", "learner", "train_neg_sample_args", "weight_decay")
            if k in config
        }
    )
    return {
        "model": model_name,
        "config": _jsonable(keep),
        "epochs": log,
        "epochs_run": len(log),
        "stopped_by": stopped,
        "train_seconds": round(train_seconds, 2),
        "seconds_per_epoch": round(float(np.mean([e["seconds"] for e in log])), 3),
        "data_seconds": round(data_seconds, 2),
        "rank_seconds": round(rank_seconds, 2),
        "rows": {"train": sizes[0], "valid": sizes[1], "test": sizes[2]},
        "items": n_items,
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "detect_anomaly": {"as_shipped": anomaly_as_shipped, "used": bool(args.detect_anomaly)},
        "full_ranks": full_ranks.tolist(),
        "sampled_ranks": sampled_ranks.tolist() if has_neg else None,
        "recbole_own_eval": _jsonable(own),
    }


_MODEL_KEYS = {
    "SASRec": {
        "n_layers",
        "n_heads",
        "hidden_size",
        "inner_size",
        "hidden_dropout_prob",
        "attn_dropout_prob",
        "hidden_act",
        "layer_norm_eps",
        "initializer_range",
        "loss_type",
    },
    "GRU4Rec": {"embedding_size", "hidden_size", "num_layers", "dropout_prob", "loss_type"},
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="directory holding coachrec/ (the atomic files) and eval.npz")
    p.add_argument("--out", required=True, help="result JSON")
    p.add_argument("--models", default="SASRec,GRU4Rec")
    p.add_argument("--config", default="{}", help='JSON: {"SASRec": {...}, "GRU4Rec": {...}} RecBole config overrides')
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--max-epochs", type=int, default=200)
    p.add_argument("--budget", type=float, default=900.0, help="seconds of training per model (0 = no limit)")
    p.add_argument("--max-len", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-batch", type=int, default=1024)
    p.add_argument("--recbole-eval", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument(
        "--detect-anomaly",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="keep torch's anomaly detection on while training, as importing RecBole 1.2.1 leaves it",
    )
    args = p.parse_args(argv)
    args.data = os.path.abspath(args.data)
    import torch

    torch.set_num_threads(args.threads)
    with np.load(os.path.join(args.data, "eval.npz")) as z:
        ev = {k: z[k] for k in z.files}
    overrides = json.loads(args.config)
    out: dict[str, Any] = {
        "versions": _versions(),
        "threads": args.threads,
        "budget": args.budget,
        "max_epochs": args.max_epochs,
        "models": {},
    }
    with tempfile.TemporaryDirectory(prefix="coachrec-recbole-") as workdir:
        os.chdir(workdir)  # RecBole writes log_tensorboard/ and saved/ into the working directory
        for name in [m.strip() for m in args.models.split(",") if m.strip()]:
            out["models"][name] = run_model(name, args, overrides.get(name, {}), ev, workdir)
            with open(args.out, "w") as f:
                json.dump(out, f)
    print(f"wrote {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
