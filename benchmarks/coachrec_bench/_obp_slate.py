"""Open Bandit Pipeline's slate estimators on chunks saved by `coachrec_bench.feedback` (npz files).

Runs in a venv with `obp` installed (its pins clash with coachrec's): `python _obp_slate.py a.npz ...`
prints one JSON list, an entry per chunk with each estimator's value and seconds.
"""

import json
import sys
import time

import numpy as np
import obp
from obp.ope import (
    SelfNormalizedSlateIndependentIPS,
    SelfNormalizedSlateRewardInteractionIPS,
    SelfNormalizedSlateStandardIPS,
    SlateCascadeDoublyRobust,
    SlateIndependentIPS,
    SlateRewardInteractionIPS,
    SlateStandardIPS,
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
    return out


if __name__ == "__main__":
    print(json.dumps([estimate(dict(np.load(path, allow_pickle=False))) for path in sys.argv[1:]]))
