"""Open Bandit Pipeline's estimators on chunks saved by `coachrec_bench.feedback` (npz files).

Runs in a venv with `obp` installed (its pins clash with coachrec's): `python _obp_slate.py a.npz ...`
prints one JSON list, an entry per chunk with each estimator's value and seconds. The slate
estimators get OBP's slate layout; Switch-DR and DRos (OBP's standard-bandit estimators) get
each (slate, slot) as a round with one position, the target's marginal over the pool's rows at
that slot as its action distribution and the logging marginal of the shown row as its pscore,
so their mean round value times K is the per-slate value.
"""

import json
import sys
import time

import numpy as np
import obp
from obp.ope import (
    DoublyRobustWithShrinkage,
    SelfNormalizedSlateIndependentIPS,
    SelfNormalizedSlateRewardInteractionIPS,
    SelfNormalizedSlateStandardIPS,
    SlateCascadeDoublyRobust,
    SlateIndependentIPS,
    SlateRewardInteractionIPS,
    SlateStandardIPS,
    SwitchDoublyRobust,
)


def estimate(d: dict) -> dict:
    n, k, width = int(d["n"]), int(d["k"]), int(d["width"])
    slate, pos = np.repeat(np.arange(n), k), np.tile(np.arange(k), n)
    p0, pe = d["p0"].reshape(n, k), d["pe"].reshape(n, k)
    joint0, jointe = np.repeat(p0.prod(axis=1), k), np.repeat(pe.prod(axis=1), k)
    casc0, casce = np.cumprod(p0, axis=1).ravel(), np.cumprod(pe, axis=1).ravel()
    common = {"slate_id": slate, "reward": d["reward"], "position": pos}
    standard = {"pscore": joint0, "evaluation_policy_pscore": jointe}
    cascade = {"pscore_cascade": casc0, "evaluation_policy_pscore_cascade": casce}
    independent = {"pscore_item_position": d["m0"], "evaluation_policy_pscore_item_position": d["me"]}
    model = {"action": d["action"], "q_hat": d["q_hat"], "evaluation_policy_action_dist": d["dist"]}
    calls = {
        "ips": (SlateStandardIPS(len_list=k), standard),
        "snips": (SelfNormalizedSlateStandardIPS(len_list=k), standard),
        "rips": (SlateRewardInteractionIPS(len_list=k), cascade),
        "snrips": (SelfNormalizedSlateRewardInteractionIPS(len_list=k), cascade),
        "iips": (SlateIndependentIPS(len_list=k), independent),
        "sniips": (SelfNormalizedSlateIndependentIPS(len_list=k), independent),
        "dr": (SlateCascadeDoublyRobust(len_list=k, n_unique_action=width), {**cascade, **model}),
    }
    out = {"label": str(d["label"]), "size": int(d["size"]), "chunk": int(d["chunk"]), "obp": obp.__version__}
    for name, (estimator, args) in calls.items():
        start = time.perf_counter()
        try:
            out[name] = float(estimator.estimate_policy_value(**common, **args))
        except Exception as exc:  # OBP's own refusals are reported as such
            out[name] = None
            out[name + "_error"] = f"{type(exc).__name__}: {exc}"[:300]
        out[name + "_seconds"] = time.perf_counter() - start
    rounds = n * k
    bandit = {
        "reward": d["reward"],
        "action": d["action"],
        "position": np.zeros(rounds, dtype=int),
        "pscore": d["m0"],
        "action_dist": d["marginal_dist"].reshape(rounds, width, 1),
        "estimated_rewards_by_reg_model": d["q_hat"].reshape(rounds, width, 1),
    }
    for name, estimator in (
        ("switch-dr", SwitchDoublyRobust(lambda_=float(d["switch_tau"]))),
        ("dros", DoublyRobustWithShrinkage(lambda_=float(d["dros_lambda"]))),
    ):
        start = time.perf_counter()
        try:
            out[name] = float(estimator.estimate_policy_value(**bandit)) * k
        except Exception as exc:
            out[name] = None
            out[name + "_error"] = f"{type(exc).__name__}: {exc}"[:300]
        out[name + "_seconds"] = time.perf_counter() - start
    return out


if __name__ == "__main__":
    print(json.dumps([estimate(dict(np.load(path, allow_pickle=False))) for path in sys.argv[1:]]))
