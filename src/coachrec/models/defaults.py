"""Tuned config overrides per model and dataset.

`create(model, dataset=...)` applies `defaults(model, dataset)` before the caller's own
settings, so every caller (CLI, serving, coach, benchmarks) gets the same ones; `defaults`
stays public to show what applies. Add a model's entries to `DEFAULTS`: `"*"` applies to
every dataset, a dataset name (`Dataset.name`, e.g. "beauty", "ml-latest-small") refines it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# The official GRU4Rec parameter file for Diginetica (paramfiles/diginetica_bprmax_shared_best.py
# in hidasib/GRU4Rec_PyTorch_Official): the settings the reference run used on Beauty.
_GRU4REC_DIGINETICA: dict[str, Any] = {
    "loss": "bpr-max",
    "constrained_embedding": True,
    "embedding": 0,
    "final_act": "elu-1",  # official elu_param=1
    "layers": [512],
    "epochs": 10,
    "batch_size": 128,
    "dropout_p_embed": 0.5,
    "dropout_p_hidden": 0.3,
    "learning_rate": 0.05,
    "momentum": 0.15,
    "n_sample": 2048,
    "sample_alpha": 0.3,
    "bpreg": 0.9,
    "logq": 0.0,
}

#: model -> dataset (or "*") -> config overrides
DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {
    "gru4rec": {
        "*": _GRU4REC_DIGINETICA,
    },
    # SASRec paper: max_len 50 / dropout 0.5 on sparse Amazon data. Beauty, full-softmax CE:
    # dim 128 and 24 epochs were chosen on validation NDCG@10 (early stopping peaked at epoch
    # 24; dim 64 peaked at epoch 30 with 0.0666 vs 0.0670), so `coachrec train` without
    # early stopping gives the selected weights. ml-latest-small has only 610 users: small
    # batches give enough steps; max_len 50 (not the paper's 200 for ML-1M) keeps epochs short.
    "sasrec": {
        "beauty": {"max_len": 50, "dropout": 0.5, "dim": 128, "epochs": 24},
        "ml-latest-small": {"max_len": 50, "dropout": 0.5, "batch_size": 32},
    },
    "rum-item": {"ml-latest-small": {"batch_size": 32}},
    "rum-feature": {"ml-latest-small": {"batch_size": 32}},
    "hybrid": {"ml-latest-small": {"sequential_config": {"max_len": 50, "dropout": 0.5, "batch_size": 32}}},
}


def defaults(model: str, dataset: str | Path | None = None) -> dict[str, Any]:
    """Config overrides for `model` on `dataset` (a name or a path; its last part is matched)."""
    table = DEFAULTS.get(model, {})
    out = dict(table.get("*", {}))
    if dataset is not None:
        key = str(dataset)
        for cand in (key, Path(key).name, Path(key).stem):
            if cand in table:
                out.update(table[cand])
                break
    return {k: (list(v) if isinstance(v, list) else v) for k, v in out.items()}
