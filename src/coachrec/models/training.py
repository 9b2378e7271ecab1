"""The epoch loop shared by every model that trains in epochs (GRU4Rec, SASRec, RUM, and the
hybrid through its sequential part).

`fit_epochs` drives the epochs: it times each one, runs the optional validation check and
early stopping (best weights restored at the end), reports the epoch (`on_epoch`, `logging`)
and writes the checkpoint the model was asked for (`BaseRecommender.checkpoint`, with
`fit_on` in its fit info). What happens inside an epoch stays the model's own: GRU4Rec's
session-parallel steps, or `adam_epoch` for the window models (SASRec, RUM).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from coachrec.data import EvalTask

if TYPE_CHECKING:
    from coachrec.models.base import BaseRecommender

log = logging.getLogger("coachrec.models.training")

#: one epoch of training: returns (mean loss per predicted event, events predicted)
EpochFn = Callable[[], tuple[float, int]]


def torch_setup(seed: int, threads: int) -> torch.Generator:
    """Seed torch and set its CPU thread count; returns a seeded generator for sampling."""
    if threads > 0:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def valid_ndcg(model: BaseRecommender, task: EvalTask) -> float:
    """Validation NDCG@10, leave-one-out, full ranking, seen items excluded."""
    from coachrec.metrics import evaluate, named

    return evaluate(model, task, named("loo-full"), ks=(10,)).metrics["ndcg@10"]


def subsample_task(task: EvalTask, n: int, seed: int) -> EvalTask:
    """At most `n` users of `task` (all when n <= 0), drawn with `seed`."""
    if n <= 0 or len(task.users) <= n:
        return task
    keep = np.sort(np.random.default_rng(seed).choice(len(task.users), n, replace=False))
    return EvalTask(task.users[keep], [task.histories[i] for i in keep], [task.targets[i] for i in keep])


def fit_epochs(
    model: BaseRecommender,
    net: nn.Module,
    epochs: int,
    run_epoch: EpochFn,
    *,
    valid: EvalTask | None = None,
    eval_every: int = 1,
    patience: int = 1,
    valid_users: int = 0,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Run up to `epochs` epochs of `run_epoch`; returns the per-epoch log (`epoch`, `loss`,
    cumulative training `seconds` and `cpu_seconds` of this process (robust to machine load),
    and `valid_ndcg@10` where checked).

    With a validation task, NDCG@10 is checked every `eval_every` epochs and after the last
    one (on at most `valid_users` users); training stops after `patience` checks without
    improvement, and the best weights of `net` are restored. After every epoch the model's
    `_end_epoch` saves its checkpoint (if it has one) and calls `on_epoch(epoch, loss, seconds
    of the epoch without validation, events predicted)`."""
    valid = subsample_task(valid, valid_users, seed) if valid is not None else None
    best, best_state, bad = -1.0, None, 0
    entries: list[dict[str, Any]] = []
    train_s = cpu_s = 0.0
    for epoch in range(1, epochs + 1):
        net.train()
        t0, c0 = time.perf_counter(), time.process_time()
        loss, events = run_epoch()
        epoch_s = time.perf_counter() - t0  # training only, validation excluded
        train_s += epoch_s
        cpu_s += time.process_time() - c0
        entry: dict[str, Any] = {
            "epoch": epoch,
            "loss": round(loss, 5),
            "seconds": round(train_s, 1),
            "cpu_seconds": round(cpu_s, 1),
        }
        if valid is not None and (epoch % eval_every == 0 or epoch == epochs):
            net.eval()
            score = valid_ndcg(model, valid)
            entry["valid_ndcg@10"] = round(score, 5)
            if score > best:
                best, bad = score, 0
                best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
            else:
                bad += 1
        entries.append(entry)
        log.info("%s %s", model.name, entry)
        model._end_epoch(epoch, loss, epoch_s, events)
        if valid is not None and bad >= patience:
            break
    if best_state is not None:
        net.load_state_dict(best_state)
    net.eval()
    return entries


def bucket_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator, pool: int = 50) -> list[np.ndarray]:
    """Shuffled mini-batches of row indices whose lengths are similar: rows are shuffled,
    cut into pools of `pool` batches, sorted by length within a pool, then the batches are
    shuffled. Batches can then be trimmed to their longest row (far less padding)."""
    order = rng.permutation(len(lengths))
    batches: list[np.ndarray] = []
    span = batch_size * pool
    for lo in range(0, len(order), span):
        chunk = order[lo : lo + span]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def adam_epochs(
    model: BaseRecommender,
    net: nn.Module,
    lengths: np.ndarray,
    batch_loss: Callable[[np.ndarray], torch.Tensor],
    valid: EvalTask | None,
    rng: np.random.Generator,
) -> list[dict[str, Any]]:
    """The window models' training (SASRec, RUM): Adam over length-bucketed mini-batches of
    training rows (`lengths` = real positions per row), driven by `fit_epochs` with the
    model config's `epochs`, `eval_every`, `patience`, `valid_users`, `batch_size`, `lr`,
    `weight_decay` and `seed`."""
    c = model.config
    opt = torch.optim.Adam(net.parameters(), lr=c.lr, betas=(0.9, 0.98), weight_decay=c.weight_decay)
    events = int(lengths.sum())  # positions predicted per epoch, as GRU4Rec counts events

    def run_epoch() -> tuple[float, int]:
        total = 0.0
        for b in bucket_batches(lengths, c.batch_size, rng):
            loss = batch_loss(b)
            opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]  # torch leaves Tensor.backward unannotated
            opt.step()
            total += float(loss.detach()) * len(b)
        return total / len(lengths), events

    return fit_epochs(
        model, net, c.epochs, run_epoch,
        valid=valid, eval_every=c.eval_every, patience=c.patience, valid_users=c.valid_users, seed=c.seed,
    )  # fmt: skip
