"""Runs inside the RecTools virtualenv (see `rectools_ref.py`): fits RecTools' SASRecModel on
the exported training events, checks validation NDCG@10 after every epoch on the exported
validation users (the same users and protocol as coachrec's early stopping: full ranking,
history items excluded, ties pessimistic), stops after `patience` epochs without improvement
and restores the best weights, then writes the 0-based pessimistic rank of every test target.

Standalone on purpose: it imports neither coachrec nor this package (they are not installed in
that venv). Usage: python _rectools_driver.py EXPORT_DIR CONFIG_JSON OUT_DIR
"""

from __future__ import annotations

import copy
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def pessimistic_ranks(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """0-based rank of targets[r] in row r: #strictly higher + #other equal scores."""
    t = scores[np.arange(len(targets)), targets][:, None]
    ranks: np.ndarray = (scores > t).sum(axis=1) + (scores == t).sum(axis=1) - 1
    return ranks


def task_ranks(
    score_fn: Any, indptr: np.ndarray, items: np.ndarray, targets: np.ndarray, batch: int = 512
) -> np.ndarray:
    """Ranks of one target per row; `score_fn(histories) -> (rows, n_items)`; each row's
    history items are set to -inf, except the target."""
    out = []
    for lo in range(0, len(targets), batch):
        hi = min(lo + batch, len(targets))
        hist = [items[indptr[r] : indptr[r + 1]] for r in range(lo, hi)]
        scores = np.array(score_fn(hist), dtype=np.float32)
        tgt = targets[lo:hi]
        keep = scores[np.arange(hi - lo), tgt].copy()
        rows = np.repeat(np.arange(hi - lo), [len(h) for h in hist])
        scores[rows, np.concatenate(hist)] = -np.inf
        scores[np.arange(hi - lo), tgt] = keep
        if np.isnan(scores).any():
            raise ValueError("RecTools produced NaN scores")
        out.append(pessimistic_ranks(scores, tgt))
    return np.concatenate(out)


def ndcg10(ranks: np.ndarray) -> float:
    return float(np.where(ranks < 10, 1.0 / np.log2(ranks + 2.0), 0.0).mean())


def main(argv: list[str]) -> int:
    export, cfg_path, out_dir = Path(argv[0]), Path(argv[1]), Path(argv[2])
    cfg: dict[str, Any] = json.loads(cfg_path.read_text())
    import pandas as pd
    import pytorch_lightning as pl
    import rectools
    import torch
    from rectools import Columns
    from rectools.dataset import Dataset
    from rectools.models import SASRecModel
    from rectools.models.nn.item_net import IdEmbeddingsItemNet

    torch.set_num_threads(int(cfg.get("threads", 1)))
    torch.manual_seed(int(cfg.get("seed", 0)))
    data = np.load(export / "split.npz")
    n_items = int(data["n_items"])
    frame = pd.DataFrame(
        {
            Columns.User: data["train_users"],
            Columns.Item: data["train_items"],
            Columns.Weight: 1.0,
            # events are already in time order per user: their position is their time
            Columns.Datetime: pd.to_datetime(np.arange(len(data["train_users"])), unit="s"),
        }
    )
    dataset = Dataset.construct(frame)
    epochs_log: list[dict[str, Any]] = []
    state: dict[str, Any] = {"best": -1.0, "bad": 0, "weights": None, "train_s": 0.0, "cpu_s": 0.0, "t0": 0.0}
    state["stopped_by"] = "max_epochs"
    deadline = float(cfg.get("deadline", 0))  # unix time; 0 = none
    patience, max_len = int(cfg["patience"]), int(cfg["session_max_len"])

    def scorer(module: Any, prep: Any) -> Any:
        """Scores over coachrec's item indices from the current network (unknown items: -inf)."""
        known = prep.get_known_item_ids().astype(np.int64)  # external ids = coachrec indices
        internal = prep.item_id_map.convert_to_internal(known)
        net = module.torch_model

        def score(hist: list[np.ndarray]) -> np.ndarray:
            x = np.zeros((len(hist), max_len), dtype=np.int64)
            for r, h in enumerate(hist):
                ids = prep.item_id_map.convert_to_internal(h[-max_len:], strict=False)
                ids = ids[ids >= 0]  # history items RecTools never saw in training are dropped
                if len(ids):
                    x[r, -len(ids) :] = ids
            with torch.no_grad():
                embs = net.item_model.get_all_embeddings()
                sess = net.encode_sessions({"x": torch.from_numpy(x)}, embs)[:, -1, :]
                sess = net.similarity_module.session_tower_forward(sess)
                item = net.similarity_module.item_tower_forward(embs)
                s = (sess @ item.T).numpy()
            out = np.full((len(hist), n_items), -np.inf, dtype=np.float32)
            out[:, known] = s[:, internal]
            return out

        return score

    class EarlyStop(pl.Callback):
        def on_train_epoch_start(self, trainer: Any, module: Any) -> None:
            state["t0"], state["c0"] = time.perf_counter(), time.process_time()

        def on_train_epoch_end(self, trainer: Any, module: Any) -> None:
            epoch_s = time.perf_counter() - state["t0"]
            state["train_s"] += epoch_s
            state["cpu_s"] += time.process_time() - state["c0"]
            was = module.torch_model.training
            module.torch_model.eval()
            t1 = time.perf_counter()
            prep = trainer.lightning_module.data_preparator
            ranks = task_ranks(scorer(module, prep), data["valid_indptr"], data["valid_items"], data["valid_targets"])
            score = ndcg10(ranks)
            module.torch_model.train(was)
            loss = trainer.callback_metrics.get("train_loss")
            entry = {
                "epoch": trainer.current_epoch + 1,
                "loss": round(float(loss), 5) if loss is not None else None,
                "epoch_seconds": round(epoch_s, 2),
                "seconds": round(state["train_s"], 1),
                "cpu_seconds": round(state["cpu_s"], 1),
                "valid_seconds": round(time.perf_counter() - t1, 1),
                "valid_ndcg@10": round(score, 5),
            }
            epochs_log.append(entry)
            print(json.dumps(entry), flush=True)
            if score > state["best"]:
                state.update(best=score, bad=0, weights=copy.deepcopy(module.torch_model.state_dict()))
            else:
                state["bad"] += 1
                if state["bad"] >= patience:
                    trainer.should_stop, state["stopped_by"] = True, "early_stopping"
            if deadline and not trainer.should_stop and time.time() + epoch_s + entry["valid_seconds"] > deadline:
                trainer.should_stop, state["stopped_by"] = True, "deadline"

    def trainer() -> pl.Trainer:
        return pl.Trainer(
            max_epochs=int(cfg["epochs"]),
            accelerator="cpu",
            devices=1,
            callbacks=[EarlyStop()],
            enable_checkpointing=False,
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            deterministic=True,
        )

    model = SASRecModel(
        n_blocks=int(cfg["n_blocks"]),
        n_heads=int(cfg["n_heads"]),
        n_factors=int(cfg["n_factors"]),
        dropout_rate=float(cfg["dropout_rate"]),
        session_max_len=max_len,
        loss=str(cfg["loss"]),
        n_negatives=int(cfg["n_negatives"]),
        lr=float(cfg["lr"]),
        batch_size=int(cfg["batch_size"]),
        epochs=int(cfg["epochs"]),
        item_net_block_types=(IdEmbeddingsItemNet,),
        get_trainer_func=trainer,
        deterministic=True,
    )
    t0 = time.perf_counter()
    model.fit(dataset)
    fit_s = time.perf_counter() - t0
    module = model.lightning_model
    if state["weights"] is not None:
        module.torch_model.load_state_dict(state["weights"])
    module.torch_model.eval()
    t1 = time.perf_counter()
    ranks = task_ranks(
        scorer(module, model.data_preparator), data["test_indptr"], data["test_items"], data["test_targets"]
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    np.save(out_dir / "test_ranks.npy", ranks)
    best = max(epochs_log, key=lambda e: e["valid_ndcg@10"]) if epochs_log else None
    result = {
        "epochs": epochs_log,
        "best_epoch": best["epoch"] if best else None,
        "stopped_by": state["stopped_by"],
        "fit_seconds": round(fit_s, 1),
        "eval_seconds": round(time.perf_counter() - t1, 1),
        "known_items": len(model.data_preparator.get_known_item_ids()),
        "versions": {"rectools": rectools.__version__, "torch": torch.__version__, "lightning": pl.__version__},
    }
    (out_dir / "result.json").write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "epochs"}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
