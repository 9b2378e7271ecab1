"""`coachrec bench feedback`: learning from logged feedback, on simulated traffic with planted truth.

Every figure comes from traffic served through the real `Service` (trace store + feedback log on
disk) by `coachrec.sim`: each user's latest 30% of interactions are held out as the planted true
preference (MovieLens: graded by the real rating; Beauty: any held-out item is grade 4), the
served stack (item-kNN + popularity blend, 20 candidates a retriever, no MMR) is fitted on the
rest, and simulated users click by a position-based model with ULTRA's examination curve
`[0.68, 0.61, ...] ** eta`. Logs are read back with `coachrec.serve.impressions.read_slates`.

Parts:

- `pal`: per dataset, the users with planted truth split in two halves, each served
  `--pal-requests` requests with epsilon-greedy exploration (0.3); per eta the clicks are
  replayed `--replays` times on the served slates, and two folds fit every model on one half's
  log and measure it on the other half's users (every user is a test user once). Models: PAL
  (logistic pCTR, and an MLP-32 pCTR), naive CTR, position as a feature (logistic: the same
  order at any serving slot; MLP-32 served at slots 1/5/9), IPW with the true examination
  relative to slot 1 (an upper reference), and an oracle fitted on the true preference of the
  same impressions (the ceiling of these features). Features: `coachrec.ranking.candidate_features`
  of each pool row, from the rank span's retriever scores. Measured: NDCG@10 of the true
  preference when each model re-ranks the request's pool (gain 2^grade - 1, ideal = the pool's
  best order; requests whose pool holds no graded item are left out), averaged over replays and
  paired with PAL per user (bootstrap CI); PAUC (AUC of the served score within each slot,
  impression-weighted) and click log-likelihood per test impression; the served pCTR of each
  top-slot model's top 10 against the truth (examination at slot 1 x true preference of the
  same items); ProbSeen against the true curve; fit seconds per 1M impressions.
- `ope`: one long log on ml-latest-small (epsilon-greedy 0.3 logging). A reward model (PAL) is
  fitted on its first requests; the rest is cut into disjoint chunks of 1k, 10k and 100k slates
  (10k, 100k, 1M impressions). Target policies: epsilon-greedy 0.1 and greedy over the logged
  ranking, and greedy over PAL's pCTR (a new ranker). The true value of each is the expected
  clicks per slate under the click model, computed from the planted truth on every logged pool.
  Relative error |V^ - V| / V per estimator (mean and spread over chunks), coachrec's beside
  Open Bandit Pipeline's estimators on the same arrays (run in its own venv, `--obp-python`;
  each OBP row also gives its largest absolute difference from coachrec's value on the same
  chunk), and seconds per 1M impressions for reading the trace store and for estimating.
- `explore`: rounds of traffic per explorer (epsilon-greedy, Plackett-Luce, Beta Thompson and
  its posterior-mean learner, LinUCB and its greedy learner), learners updated from each
  round's logged clicks: catalogue coverage, Gini of impressions, intra-slate diversity, true
  reward per round.

OBP 0.5.7 declares Python < 3.11 and pins old packages; the figures used a side venv:
`python3.11 -m venv V; V/bin/pip install "numpy<2" "pandas<2" "scipy<1.12" "scikit-learn<1.4"
matplotlib seaborn tqdm pyyaml mypy-extensions; V/bin/pip install --no-deps --ignore-requires-python
obp==0.5.7`, and torch (imported by `obp.policy`, unused by the estimators) taken from coachrec's
venv by a `.pth` file listing its site-packages last; then `--obp-python V/bin/python`.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from coachrec_bench.results import row, write

ETAS = (0.0, 0.5, 1.0, 1.5, 2.0)
K = 10
LOGGING_EPSILON = 0.3
CANDIDATES = 20
SWITCH_TAU = 50.0
DROS_LAMBDA = 50.0
OBP_MAX_IMPRESSIONS = 100_000
"""OBP's Switch-DR/DRos take (rounds, actions, positions) arrays: compared up to this chunk size."""


def _row(name: str, dataset: str, protocol: str, metrics: dict[str, Any]) -> dict[str, Any]:
    """A results row with the 1-minute load average when it was made (timings on 2 shared cores)."""
    return {**row(name, dataset, protocol, metrics), "load_avg_1m": round(os.getloadavg()[0], 1)}


def _say(text: str) -> None:
    typer.echo(text, err=True)


# -- shared setup -------------------------------------------------------------------------------


def setup(name: str, seed: int = 0) -> dict[str, Any]:
    from coachrec import datasets
    from coachrec.ranking import ItemStats
    from coachrec.serve import PipelineConfig, Stack
    from coachrec.serve.stack import catalog_for
    from coachrec.sim import PlantedTruth

    data = datasets.load(name)
    truth, train = PlantedTruth.holdout(data)
    config = PipelineConfig(candidates=CANDIDATES, diversity=1.0, epsilon=LOGGING_EPSILON, seed=seed)
    stack = Stack.fit(train, models=("itemknn", "pop"), config=config, learn_blend=False)
    stats = ItemStats.from_data(train, catalog_for(train) if train.catalog is not None else None)
    return {"name": name, "truth": truth, "train": train, "stack": stack, "stats": stats}


def serve_log(env: dict[str, Any], users: np.ndarray, n_requests: int, eta: float, db: Path, seed: int) -> Any:
    """Serve `n_requests` simulated requests of `users` through a Service on `db`; the log read back."""
    from coachrec.serve import Service
    from coachrec.serve.impressions import read_slates
    from coachrec.sim import PositionBased, Simulator, examination

    truth = replace(env["truth"], users=users)
    service = Service.open(env["stack"], db=db)
    try:
        Simulator(service, truth, PositionBased(examination("ultra", eta, K)), seed=seed).run(n_requests, k=K)
        start = time.perf_counter()
        log = read_slates(service.store, service.feedback)
        read_s = time.perf_counter() - start
    finally:
        service.close()
    return log, read_s


def pool_features(env: dict[str, Any], log: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features (n, P, F) of every pool row as a distilled ranker computes them at serving
    (`coachrec.coach.position_remedy.pool_features`), item indices (n, P; -1 padding), user indices (n,)."""
    from coachrec.coach.position_remedy import pool_features as served_features

    feats, idx, _ = served_features(env["stack"], env["stats"], log)
    uidx = env["stack"].models[0].users.encode([str(u) for u in log.user_id])
    return feats, idx, np.asarray(uidx, dtype=np.int64)


def impressions(log: Any, feats: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows, slots = np.nonzero(log.slots)
    return feats[rows, log.shown[rows, slots]], slots, log.reward[rows, slots]


# -- PAL ----------------------------------------------------------------------------------------


def ndcg_per_request(scores: np.ndarray, grades: np.ndarray, pool: np.ndarray, k: int = K) -> np.ndarray:
    s = np.where(pool, scores, -np.inf)
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    gains = (2.0 ** np.take_along_axis(grades, order, axis=1) - 1.0) * np.take_along_axis(pool, order, axis=1)
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = (gains * disc).sum(axis=1)
    ideal = np.sort(np.where(pool, 2.0**grades - 1.0, 0.0), axis=1)[:, ::-1][:, :k]
    idcg = (ideal * disc).sum(axis=1)
    return np.where(idcg > 0, dcg / np.where(idcg > 0, idcg, 1.0), np.nan)


def pauc(score: np.ndarray, slot: np.ndarray, click: np.ndarray) -> float:
    from scipy.stats import rankdata

    total, weight = 0.0, 0
    for j in np.unique(slot):
        at = slot == j
        c = click[at] > 0
        if c.all() or not c.any():
            continue
        ranks = rankdata(score[at])
        auc = (ranks[c].sum() - c.sum() * (c.sum() + 1) / 2) / (c.sum() * (~c).sum())
        total += auc * at.sum()
        weight += int(at.sum())
    return total / max(weight, 1)


PAL_MODELS: dict[str, tuple[str, int, int | None]] = {
    "pal (pCTR)": ("pal", 0, None),
    "pal, MLP 32 (pCTR)": ("pal-mlp", 32, None),
    "naive CTR": ("naive", 0, None),
    "position feature, logistic (any slot)": ("position-feature", 0, 0),
    "position feature, MLP 32 @1": ("position-feature-mlp", 32, 0),
    "position feature, MLP 32 @5": ("position-feature-mlp", 32, 4),
    "position feature, MLP 32 @9": ("position-feature-mlp", 32, 8),
    "ipw (true propensities)": ("ipw", 0, None),
    "oracle (true preference as label)": ("oracle", 0, None),
}
"""label -> (fitted model, pCTR hidden units, serving slot of a position-feature model). A logistic
position-feature model adds a constant per slot to the logit: the same order at any serving slot."""
TOP_SLOT_CTR = ("pal (pCTR)", "pal, MLP 32 (pCTR)", "ipw (true propensities)")
"""Models whose score is the click probability at the top slot (checked against the truth)."""


def run_pal(name: str, etas: tuple[float, ...], requests: int, replays: int, seed: int,
            tmp: Path) -> list[dict[str, Any]]:  # fmt: skip
    """Two user halves, each served `requests` requests; each fold fits on one half's log and
    is measured on the other half's users, so every user is a test user once."""
    from coachrec.serve import FeedbackLog, Service
    from coachrec.serve.impressions import read_slates
    from coachrec.sim import PositionBased, Simulator, examination, replay_clicks

    env = setup(name, seed)
    truth = env["truth"]
    users = np.random.default_rng(seed).permutation(truth.users)
    model = env["stack"].models[0]
    rows = []
    services: list[Any] = []
    served: list[dict[str, Any]] = []
    try:
        for h, half in enumerate((users[: len(users) // 2], users[len(users) // 2 :])):
            _say(f"[pal] {name}: serving {requests} requests of user half {h}")
            svc = Service.open(env["stack"], db=tmp / f"pal-{name}-{h}.duckdb")
            services.append(svc)
            Simulator(svc, replace(truth, users=half), PositionBased(examination("ultra", 1.0, K)), seed=seed + h).run(
                requests, k=K
            )
            base = read_slates(svc.store)
            feats, idx, uidx = pool_features(env, base)
            u2 = np.repeat(uidx[:, None], idx.shape[1], axis=1)
            served.append({"log": base, "feats": feats, "idx": idx, "users": uidx,
                           "grades": truth.grade(u2, idx).astype(np.float64),
                           "pref": np.where(base.pool, truth.preference(u2, np.maximum(idx, 0)), 0.0)})  # fmt: skip
        for eta in etas:
            runs = []
            for r in range(replays):
                logs = []
                for h, svc in enumerate(services):
                    fb = FeedbackLog(tmp / f"pal-{name}-{h}-{eta}-{r}.feedback.duckdb")
                    replay_clicks(fb, served[h]["log"], truth, PositionBased(examination("ultra", eta, K)),
                                  model.users, model.items, seed=seed + 1000 * r + int(eta * 100) + 17 * h)  # fmt: skip
                    logs.append(read_slates(svc.store, fb))
                    fb.close()
                runs += [_pal_fold(eta, logs[h], served[h], logs[1 - h], served[1 - h], seed + r) for h in (0, 1)]
            rows += _pal_rows(name, eta, runs, served, requests, replays)
    finally:
        for svc in services:
            svc.close()
    return rows


def _pal_fold(eta: float, log_tr: Any, tr: dict[str, Any], log_te: Any, te: dict[str, Any],
              seed: int) -> dict[str, Any]:  # fmt: skip
    """Fit every model on one half's log; measure each on the other half."""
    from coachrec.ranking.pal import PAL, PALConfig
    from coachrec.sim import examination

    x, slot, click = impressions(log_tr, tr["feats"])
    rows, slots = np.nonzero(log_tr.slots)
    exam = examination("ultra", eta, K)
    fitted: dict[str, Any] = {}
    for kind in {m for m, _, _ in PAL_MODELS.values()}:
        hidden = next(h for m, h, _ in PAL_MODELS.values() if m == kind)
        mode = {"pal-mlp": "pal", "oracle": "naive", "position-feature-mlp": "position-feature"}.get(kind, kind)
        label = tr["pref"][rows, log_tr.shown[rows, slots]] if kind == "oracle" else click
        cfg = PALConfig(mode=mode, hidden=hidden, seed=seed)  # type: ignore[arg-type]
        fitted[kind] = PAL(x.shape[1], K, cfg).fit(x, slot, label, examination=exam if mode == "ipw" else None)
    xt, slot_t, click_t = impressions(log_te, te["feats"])
    pool = te["log"].pool
    flat = te["feats"].reshape(-1, te["feats"].shape[2])
    out: dict[str, Any] = {"ndcg": {}, "pauc": {}, "loglik": {}, "served": {}, "true_pref": {}, "fit": {}}
    for label, (kind, _, at) in PAL_MODELS.items():
        m = fitted[kind]
        kw = {} if at is None else {"position": at}
        s = m.score(flat, **kw).reshape(pool.shape)
        out["ndcg"][label] = ndcg_per_request(s, te["grades"], pool)
        top = np.argsort(-np.where(pool, s, -np.inf), axis=1, kind="stable")[:, :K]
        out["served"][label] = float(np.take_along_axis(s, top, axis=1).mean())
        out["true_pref"][label] = float(np.take_along_axis(te["pref"], top, axis=1).mean())
        out["pauc"][label] = pauc(m.score(xt, **kw), slot_t, click_t)
        if kind != "oracle":
            p = np.clip(m.click_probability(xt, slot_t, examination=exam), 1e-6, 1 - 1e-6)
            out["loglik"][label] = float((click_t * np.log(p) + (1 - click_t) * np.log(1 - p)).mean())
        out["fit"][label] = (m.fit_info["seconds_per_1m_impressions"], m.fit_info["impressions"])
    out["ndcg"]["logging ranker (blend order)"] = ndcg_per_request(
        -np.arange(pool.shape[1])[None, :] * np.ones(pool.shape), te["grades"], pool
    )
    out["probseen"] = {"pal (pCTR)": fitted["pal"].prob_seen(), "pal, MLP 32 (pCTR)": fitted["pal-mlp"].prob_seen()}
    out["exam0"] = float(exam[0])
    out["test"] = te
    return out


def _pal_rows(name: str, eta: float, runs: list[dict[str, Any]], served: list[dict[str, Any]], requests: int,
              replays: int) -> list[dict[str, Any]]:  # fmt: skip
    from coachrec.metrics.stats import compare
    from coachrec.sim import examination

    labels = list(runs[0]["ndcg"])
    by_user: dict[str, np.ndarray] = {}
    users_all = None
    for label in labels:
        per_request = []
        for h in (0, 1):  # this half as the test half: the mean over replays of each request's NDCG
            per_request.append(np.mean([r["ndcg"][label] for r in runs if r["test"] is served[h]], axis=0))
        values = np.concatenate(per_request)
        users = np.concatenate([served[h]["users"] for h in (0, 1)])
        has = ~np.isnan(values)
        by_user[label] = _user_means(values[has], users[has])
        users_all = users[has]
    assert users_all is not None
    pal_user = by_user["pal (pCTR)"]
    exam = examination("ultra", eta, K)
    protocol = (
        f"planted truth: each user's latest 30% of events held out (grade by rating); stack item-kNN + pop fitted "
        f"on the rest; two user halves, each served {requests} requests through Service (epsilon-greedy "
        f"{LOGGING_EPSILON}, {CANDIDATES} candidates a retriever, k={K}); clicks = PBM, ULTRA examination ** "
        f"eta={eta}, noise 0.05, replayed {replays}x on the served slates; two folds (fit on one half's log, "
        "measure on the other half's users; every user tested once); pCTR towers logistic unless named, full-batch "
        "L-BFGS, ProbSeen pinned to 1 at slot 1; NDCG@10 of the true grades over each request's pool (requests "
        "with a graded item in the pool), averaged over replays, paired with PAL per user (bootstrap 95% CI); "
        "pauc/loglik on the test half's impressions, means over folds and replays"
    )
    rows = []
    for label in labels:
        metrics: dict[str, Any] = {"eta": eta, "ndcg@10_true": round(float(by_user[label].mean()), 5),
                                   "users": len(pal_user), "requests": len(users_all)}  # fmt: skip
        if label != "pal (pCTR)":
            c = compare(by_user[label], pal_user)
            metrics.update(pal_minus_this=round(c.delta, 5), ci_low=round(c.ci_low, 5), ci_high=round(c.ci_high, 5))
        if label in PAL_MODELS:
            metrics["pauc"] = round(float(np.mean([r["pauc"][label] for r in runs])), 5)
            if label in runs[0]["loglik"]:
                metrics["click_loglik"] = round(float(np.mean([r["loglik"][label] for r in runs])), 5)
            metrics["true_preference_top10"] = round(float(np.mean([r["true_pref"][label] for r in runs])), 5)
            served_pctr = float(np.mean([r["served"][label] for r in runs]))
            metrics["served_pctr_top10"] = round(served_pctr, 5)
            if label in TOP_SLOT_CTR:  # the truth: examination at the top slot x true preference of what it serves
                true_ctr = float(np.mean([r["exam0"] * r["true_pref"][label] for r in runs]))
                metrics["true_top_slot_ctr_top10"] = round(true_ctr, 5)
                metrics["served_pctr_vs_truth"] = round(served_pctr / true_ctr - 1, 4)
            metrics["fit_seconds_per_1m_impressions"] = round(float(np.mean([r["fit"][label][0] for r in runs])), 2)
            metrics["train_impressions"] = int(np.mean([r["fit"][label][1] for r in runs]))
        if label in runs[0]["probseen"]:
            ipw = float(np.mean([r["served"]["ipw (true propensities)"] for r in runs]))
            metrics["served_pctr_vs_ipw"] = round(float(metrics["served_pctr_top10"]) / ipw - 1, 4)
            seen = np.mean([r["probseen"][label] for r in runs], axis=0)
            metrics["probseen_relative"] = np.round(seen, 3).tolist()
            metrics["true_examination_relative"] = np.round(exam / exam[0], 3).tolist()
        rows.append(_row(f"pal: {label}", name, protocol, _ordered(metrics)))
    rows = rows[1:] + rows[:1]  # PAL last: the report takes its columns from the first rows (the paired CI)
    _show(rows)
    return rows


PAL_COLUMNS = ("eta", "ndcg@10_true", "pal_minus_this", "ci_low", "ci_high", "pauc", "click_loglik",
               "true_preference_top10", "served_pctr_vs_truth")  # fmt: skip
"""The columns the report shows first (it shows nine); the rest follow in the JSON."""


def _ordered(metrics: dict[str, Any]) -> dict[str, Any]:
    first = {k: metrics[k] for k in PAL_COLUMNS if k in metrics}
    return {**first, **{k: v for k, v in metrics.items() if k not in first}}


def _user_means(values: np.ndarray, users: np.ndarray) -> np.ndarray:
    _, inv = np.unique(users, return_inverse=True)
    return np.bincount(inv, weights=values) / np.bincount(inv)


def _show(rows: list[dict[str, Any]]) -> None:
    for r in rows:
        m = r["metrics"]
        keys = [k for k in ("eta", "ndcg@10_true", "pal_minus_this", "ci_low", "ci_high", "pauc", "click_loglik",
                            "served_pctr_vs_truth", "true_preference_top10", "size", "relative_error_mean",
                            "relative_error_sd", "seconds_per_1m_impressions") if k in m]  # fmt: skip
        _say(f"  {r['name']:<44} " + "  ".join(f"{k}={m[k]}" for k in keys))


# -- OPE ----------------------------------------------------------------------------------------


def run_ope(requests: int, reserve: int, sizes: tuple[int, ...], max_chunks: int, seed: int, tmp: Path,
            obp_python: str | None) -> list[dict[str, Any]]:  # fmt: skip
    from coachrec.policy import EpsilonGreedy, Greedy
    from coachrec.policy.ope import OPEError, RewardModel, evaluate, rollout
    from coachrec.ranking.pal import PAL, PALConfig
    from coachrec.sim import examination

    name = "ml-latest-small"
    env = setup(name, seed)
    truth = env["truth"]
    eta = 1.0
    _say(f"[ope] serving {requests} requests")
    start = time.perf_counter()
    log, read_s = serve_log(env, truth.users, requests, eta, tmp / "ope.duckdb", seed)
    serve_s = time.perf_counter() - start
    impressions_total = log.impressions
    _say(
        f"[ope] served in {serve_s:.0f} s; read {impressions_total} impressions from the trace store in {read_s:.1f} s"
    )
    feats, idx, uidx = pool_features(env, log)
    fit_part = log.select(np.arange(reserve))
    x, slot, click = impressions(fit_part, feats[:reserve])
    model = PAL(x.shape[1], K, PALConfig(seed=seed)).fit(x, slot, click)
    rest = np.arange(reserve, len(log))
    pool = log.pool
    flat = feats.reshape(-1, feats.shape[2])
    pctr = np.where(pool, model.score(flat).reshape(pool.shape), 0.0)
    reward_model = RewardModel(pctr, model.prob_seen())
    exam = examination("ultra", eta, K)
    true_pref = np.where(
        pool, truth.preference(np.repeat(uidx[:, None], pool.shape[1], axis=1), np.maximum(idx, 0)), 0.0
    )
    rank_scores = np.where(pool, -np.arange(pool.shape[1], dtype=np.float64)[None, :], np.nan)
    targets = {
        "epsilon-greedy 0.1": (EpsilonGreedy(0.1), rank_scores),
        "greedy (logged ranking)": (Greedy(), rank_scores),
        "greedy over PAL pCTR": (Greedy(), np.where(pool, pctr, np.nan)),
    }
    true_value = {}
    rng = np.random.default_rng(seed)
    for label, (policy, scores) in targets.items():
        samples = 1 if isinstance(policy, Greedy) else 64
        total = 0.0
        for _ in range(samples):
            slate = rollout(policy, scores[rest], pool[rest], K, rng)
            pref = np.where(slate >= 0, np.take_along_axis(true_pref[rest], np.maximum(slate, 0), axis=1), 0.0)
            total += float((pref * exam[None, :]).sum(axis=1).mean())
        true_value[label] = total / samples
    logged_value = float(log.reward[rest].sum(axis=1).mean())
    _say(f"[ope] true values {true_value}; logging policy observed {logged_value:.4f} clicks a slate")
    rows = []
    estimators = ("ips", "snips", "rips", "snrips", "iips", "dm", "dr", "sndr", "switch-dr", "dros")
    protocol = (
        f"ml-latest-small planted truth (latest 30% held out, graded by rating); logging = epsilon-greedy "
        f"{LOGGING_EPSILON} over the item-kNN + pop blend through Service ({requests} requests, k={K}, "
        f"{CANDIDATES} candidates a retriever); clicks PBM, ULTRA examination ** {eta}; reward = clicks per slate; "
        f"reward model for dm/dr/sndr: PAL (pCTR x ProbSeen) fitted on the first {reserve} requests, estimates on "
        "disjoint chunks of the rest; truth = expected clicks of the target on every evaluated pool; "
        f"relative error |V^ - V| / V, mean and sd over chunks; iips/switch-dr/dros on exact marginals; "
        f"switch-dr tau = {SWITCH_TAU}, dros lambda = {DROS_LAMBDA}"
    )
    obp_rows: list[dict[str, Any]] = []
    values: dict[tuple[str, int, int, str], float] = {}
    for size in sizes:
        n_slates = size // K
        chunks = [rest[i : i + n_slates] for i in range(0, len(rest) - n_slates + 1, n_slates)][:max_chunks]
        if not chunks:
            _say(f"[ope] not enough requests for chunks of {size} impressions: skipped")
            continue
        for label, (policy, scores) in targets.items():
            errors: dict[str, list[float]] = {e: [] for e in estimators}
            seconds = dict.fromkeys(estimators, 0.0)
            refused: dict[str, str] = {}
            ess: dict[str, list[float]] = {e: [] for e in estimators}
            for c, chunk in enumerate(chunks):
                part = log.select(chunk)
                rm = RewardModel(reward_model.item[chunk], reward_model.position)
                for e in estimators:
                    t0 = time.perf_counter()
                    try:
                        got = evaluate(part, policy, scores[chunk], model=rm, logging=EpsilonGreedy(LOGGING_EPSILON),
                                       logging_scores=rank_scores[chunk], estimators=(e,), n_boot=0,
                                       switch_tau=SWITCH_TAU, dros_lambda=DROS_LAMBDA, seed=seed + c)  # fmt: skip
                    except OPEError as exc:
                        refused[e] = str(exc)
                        continue
                    seconds[e] += time.perf_counter() - t0
                    errors[e].append(abs(got[e].value - true_value[label]) / true_value[label])
                    values[(label, size, c, e)] = got[e].value
                    ess[e].append(got[e].ess)
                if obp_python is not None and size <= OBP_MAX_IMPRESSIONS:
                    obp_rows.append(_obp_inputs(part, policy, scores[chunk], rm, rank_scores[chunk], size, label, c))
            for e in estimators:
                done = len(errors[e])
                metrics: dict[str, Any] = {
                    "target": label,
                    "size": size,
                    "chunks": len(chunks),
                    "true_value": round(true_value[label], 5),
                    "ess_mean": round(float(np.mean(ess[e])), 1) if ess[e] else None,
                }
                if done:
                    metrics.update(
                        relative_error_mean=round(float(np.mean(errors[e])), 5),
                        relative_error_sd=round(float(np.std(errors[e])), 5),
                        seconds_per_1m_impressions=round(seconds[e] / (done * size) * 1e6, 3),
                    )
                if e in refused:
                    metrics.update(refused_chunks=len(chunks) - done, refusal=refused[e])
                rows.append(_row(f"ope: coachrec {e}", name, protocol, metrics))
            _show(rows[-len(estimators) :])
    largest = max(sizes)
    if len(rest) * K < largest:  # time the estimators at the largest size on the log tiled (accuracy not measured)
        times = -(-largest // (len(rest) * K))
        tiled_rows = np.tile(rest, times)[: largest // K]
        part = log.select(tiled_rows)
        rm = RewardModel(reward_model.item[tiled_rows], reward_model.position)
        policy, scores = targets["epsilon-greedy 0.1"]
        timing: dict[str, Any] = {"impressions": part.impressions, "tiled_from_slates": len(rest)}
        for e in estimators:
            t0 = time.perf_counter()
            try:
                evaluate(part, policy, scores[tiled_rows], model=rm, logging=EpsilonGreedy(LOGGING_EPSILON),
                         logging_scores=rank_scores[tiled_rows], estimators=(e,), n_boot=0, seed=seed)  # fmt: skip
                timing[f"{e}_seconds"] = round(time.perf_counter() - t0, 3)
            except OPEError as exc:
                timing[f"{e}_refused"] = str(exc)
        note = (
            f"; timing only: the {len(rest)} evaluated slates tiled to {largest} impressions, target "
            "epsilon-greedy 0.1, each estimator alone incl. target propensities"
        )
        rows.append(_row("ope: coachrec estimator time at the largest size", name, protocol + note, timing))
        _say(f"[ope] timing on {part.impressions} impressions: {timing}")
    if obp_python is not None and obp_rows:
        rows += _run_obp(obp_python, obp_rows, true_value, values, protocol, tmp)
    rows.append(_row("ope: trace store read", name, protocol, {
        "impressions": impressions_total, "read_seconds": round(read_s, 2),
        "read_seconds_per_1m_impressions": round(read_s / impressions_total * 1e6, 2),
        "serve_seconds": round(serve_s, 1), "logged_clicks_per_slate": round(logged_value, 5)}))  # fmt: skip
    return rows


def _obp_inputs(part: Any, policy: Any, scores: np.ndarray, rm: Any, logging_scores: np.ndarray, size: int,
                label: str, chunk: int) -> dict[str, Any]:  # fmt: skip
    """The chunk in OBP's flat slate layout (n * K rows; actions = pool rows), with exact marginals."""
    from coachrec.policy import EpsilonGreedy
    from coachrec.policy.ope import exact_marginal_matrix, target_probabilities

    pe, _ = target_probabilities(part, policy, scores, None)
    available = part.pool.copy()
    n, width = part.pool.shape
    rows = np.arange(n)
    dist = np.zeros((n, K, width))
    for j in range(K):
        dist[:, j] = policy.slot_distribution(scores, available)
        available[rows, part.shown[:, j]] = False
    q = rm.item[:, None, :] * rm.position[None, :K, None]
    m0 = exact_marginal_matrix(EpsilonGreedy(LOGGING_EPSILON), logging_scores, part.pool, K)
    me = exact_marginal_matrix(policy, scores, part.pool, K)
    assert m0 is not None and me is not None
    at = part.shown
    return {"label": label, "size": size, "chunk": chunk, "n": n, "width": width,
            "action": at.ravel(), "reward": part.reward.ravel(), "p0": part.propensity.ravel(), "pe": pe.ravel(),
            "m0": m0[rows[:, None], at, np.arange(K)[None, :]].ravel(),
            "me": me[rows[:, None], at, np.arange(K)[None, :]].ravel(),
            "q_hat": q.ravel(), "dist": dist.ravel(), "marginal_dist": me.transpose(0, 2, 1).ravel(),
            "switch_tau": SWITCH_TAU, "dros_lambda": DROS_LAMBDA}  # fmt: skip


OBP_ESTIMATORS = ("ips", "snips", "rips", "snrips", "iips", "sniips", "dr", "switch-dr", "dros")


def _run_obp(python: str, inputs: list[dict[str, Any]], true_value: dict[str, float],
             ours: dict[tuple[str, int, int, str], float], protocol: str,
             tmp: Path) -> list[dict[str, Any]]:  # fmt: skip
    paths = []
    for i, d in enumerate(inputs):
        path = tmp / f"obp-{i}.npz"
        np.savez(path, k=K, **{key: np.asarray(v) for key, v in d.items()})
        paths.append(str(path))
    script = Path(__file__).with_name("_obp_slate.py")
    _say(f"[ope] running Open Bandit Pipeline on {len(paths)} chunks ({python})")
    done = subprocess.run([python, str(script), *paths], capture_output=True, text=True, check=False,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"OBP run failed: {done.stderr[-2000:]}")
    results = json.loads(done.stdout.strip().splitlines()[-1])
    rows = []
    version = results[0]["obp"] if results else "?"
    for (label, size), group in _group(results):
        for e in OBP_ESTIMATORS:
            values = [r[e] for r in group if r.get(e) is not None and np.isfinite(r[e])]
            nan = sum(1 for r in group if r.get(e) is not None and not np.isfinite(r[e]))
            same = [abs(r[e] - ours[(label, size, r["chunk"], e)]) for r in group
                    if r.get(e) is not None and np.isfinite(r[e]) and (label, size, r["chunk"], e) in ours]  # fmt: skip
            errs = [abs(v - true_value[label]) / true_value[label] for v in values]
            secs = sum(r[e + "_seconds"] for r in group)
            metrics: dict[str, Any] = {
                "target": label,
                "size": size,
                "chunks": len(group),
                "obp_version": version,
                "seconds_per_1m_impressions": round(secs / (len(group) * size) * 1e6, 3),
            }
            if errs:
                metrics.update(relative_error_mean=round(float(np.mean(errs)), 5),
                               relative_error_sd=round(float(np.std(errs)), 5))  # fmt: skip
            if same:
                metrics["max_abs_diff_vs_coachrec"] = float(f"{max(same):.3g}")
            if nan:
                metrics["nan_chunks"] = nan  # OBP returns NaN where coachrec refuses (0/0)
            failed = [r.get(e + "_error") for r in group if r.get(e) is None]
            if failed:
                metrics["failed_chunks"] = len(failed)
                metrics["error"] = failed[0]
            rows.append(_row(f"ope: obp {e}", "ml-latest-small", protocol + " (same arrays, OBP estimators)", metrics))
        _show(rows[-len(OBP_ESTIMATORS) :])
    return rows


def _group(results: list[dict[str, Any]]) -> list[tuple[tuple[str, int], list[dict[str, Any]]]]:
    out: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in results:
        out.setdefault((r["label"], r["size"]), []).append(r)
    return list(out.items())


# -- exploration and echo chambers ---------------------------------------------------------------


def gini(counts: np.ndarray) -> float:
    """Gini coefficient of impressions over the catalog (0: even, 1: one item gets everything)."""
    x = np.sort(np.asarray(counts, dtype=np.float64))
    if x.sum() == 0:
        return 0.0
    n = len(x)
    return float((2 * np.arange(1, n + 1) - n - 1) @ x / (n * x.sum()))


def run_explore(rounds: int, per_round: int, seed: int, tmp: Path) -> list[dict[str, Any]]:
    from coachrec.policy import EpsilonGreedy, PlackettLuce
    from coachrec.policy.bandits import BetaThompson, LinUCB
    from coachrec.serve import Service
    from coachrec.serve.impressions import read_slates
    from coachrec.sim import PositionBased, Simulator, examination, set_explorer

    name = "ml-latest-small"
    env = setup(name, seed)
    truth, stack = env["truth"], env["stack"]
    eta = 1.0
    exam = examination("ultra", eta, K)
    n_items = stack.models[0].n_items
    n_features = len(stack.models) + stack.pipeline().catalog.features.shape[1]
    policies: dict[str, Any] = {
        "greedy (no exploration)": EpsilonGreedy(0.0),
        "epsilon-greedy 0.1": EpsilonGreedy(0.1, seed=seed),
        "epsilon-greedy 0.3": EpsilonGreedy(0.3, seed=seed),
        "plackett-luce T=0.1": PlackettLuce(0.1, seed=seed),
        "beta posterior mean (learns, no exploration)": BetaThompson(n_items, greedy=True),
        "thompson (beta)": BetaThompson(n_items, seed=seed),
        "linear greedy (learns, no exploration)": LinUCB(n_features, alpha=0.0),
        "linucb alpha=1": LinUCB(n_features, alpha=1.0),
    }
    protocol = (
        f"{name} planted truth (latest 30% held out); item-kNN + pop blend, {CANDIDATES} candidates a retriever, "
        f"k={K}; {rounds} rounds of {per_round} requests through Service (the same users per round for every "
        f"policy); PBM clicks, ULTRA examination ** {eta}; learners update from each round's logged clicks; "
        "coverage = share of the catalog shown so far; diversity = 1 - mean pairwise genre cosine within a slate; "
        "Gini of impressions over the catalog so far; true reward = expected clicks per slate under the truth"
    )
    rows = []
    for label, policy in policies.items():
        service = Service.open(stack, db=tmp / f"explore-{len(rows)}.duckdb")
        set_explorer(service.pipeline, policy)
        features = service.pipeline.catalog.features
        counts = np.zeros(n_items)
        per_round_reward, diversity = [], []
        try:
            for r in range(rounds):
                start_ns = time.time_ns()
                sim = Simulator(service, truth, PositionBased(exam), seed=seed * 1000 + r)
                stats = sim.run(per_round, k=K)
                log = read_slates(service.store, service.feedback, since_ns=start_ns)
                items = stack.models[0].items
                shown = items.encode(log.shown_items.ravel().tolist(), unknown="mask").reshape(log.shown.shape)
                np.add.at(counts, shown[shown >= 0], 1.0)
                f = features[np.maximum(shown, 0)] * (shown >= 0)[..., None]
                sim_pairs = np.einsum("nid,njd->nij", f, f)
                off = ~np.eye(K, dtype=bool)
                diversity.append(float((1.0 - sim_pairs[:, off]).mean()))
                per_round_reward.append(stats.expected_clicks_per_request)
                learn = getattr(policy, "learn", None)
                if learn is not None:
                    learn(list(log.request_id), log.reward)
        finally:
            service.close()
        metrics = {
            "rounds": rounds,
            "requests_per_round": per_round,
            "coverage": round(float((counts > 0).mean()), 5),
            "gini": round(gini(counts), 5),
            "diversity_first_round": round(diversity[0], 5),
            "diversity_last_round": round(diversity[-1], 5),
            "true_reward_first_round": round(per_round_reward[0], 5),
            "true_reward_last_round": round(per_round_reward[-1], 5),
            "cumulative_true_reward": round(float(np.sum(per_round_reward) * per_round), 2),
            "true_reward_by_round": [round(v, 4) for v in per_round_reward],
        }
        rows.append(_row(f"explore: {label}", name, protocol, metrics))
        m = metrics
        _say(f"  {label:<46} coverage={m['coverage']} gini={m['gini']} diversity={m['diversity_first_round']}->"
             f"{m['diversity_last_round']} reward={m['true_reward_first_round']}->{m['true_reward_last_round']} "
             f"cumulative={m['cumulative_true_reward']}")  # fmt: skip
    return rows


# -- the command --------------------------------------------------------------------------------


def bench_feedback(
    part: Annotated[str, typer.Option(help="pal, ope, explore or all")] = "all",
    datasets: Annotated[
        str, typer.Option(help="datasets for the PAL part, comma-separated")
    ] = "ml-latest-small,beauty",
    etas: Annotated[str, typer.Option(help="examination exponents for the PAL part")] = ",".join(map(str, ETAS)),
    pal_requests: Annotated[int, typer.Option(help="PAL: requests served per user half")] = 4000,
    replays: Annotated[int, typer.Option(help="PAL: click replays per eta (NDCG averaged over them)")] = 2,
    requests: Annotated[int, typer.Option(help="OPE: requests served in the long log")] = 30000,
    reserve: Annotated[int, typer.Option(help="OPE: first requests kept to fit the reward model")] = 3000,
    sizes: Annotated[str, typer.Option(help="OPE: chunk sizes in impressions")] = "10000,100000,1000000",
    max_chunks: Annotated[int, typer.Option(help="OPE: chunks per size at most")] = 10,
    rounds: Annotated[int, typer.Option(help="explore: rounds of simulated traffic per policy")] = 8,
    per_round: Annotated[int, typer.Option(help="explore: requests per round")] = 250,
    obp_python: Annotated[str | None, typer.Option(help="python of a venv with obp installed (none: skip OBP)")] = None,
    seed: int = 0,
) -> None:
    """PAL vs baselines across eta, and OPE estimators vs the truth and vs Open Bandit Pipeline."""
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="coachrec-feedback-") as folder:
        tmp = Path(folder)
        if part in ("pal", "all"):
            for name in datasets.split(","):
                rows += run_pal(name, tuple(float(e) for e in etas.split(",")), pal_requests, replays, seed, tmp)
        if part in ("ope", "all"):
            rows += run_ope(requests, reserve, tuple(int(s) for s in sizes.split(",")), max_chunks, seed, tmp,
                            obp_python)  # fmt: skip
        if part in ("explore", "all"):
            rows += run_explore(rounds, per_round, seed, tmp)
        if part not in ("pal", "ope", "explore", "all"):
            raise typer.BadParameter(f"part must be pal, ope, explore or all, got {part!r}")
    path = write("feedback", _merge(rows, part))
    _say(f"wrote {path}")


def _merge(rows: list[dict[str, Any]], part: str) -> list[dict[str, Any]]:
    """A run of one part replaces that part's rows (per dataset) and keeps the other part's."""
    from coachrec_bench.results import results_dir

    path = results_dir() / "feedback.json"
    if part == "all" or not path.exists():
        return rows
    replaced = {(r["name"].split(":")[0], r["dataset"]) for r in rows}
    kept = [r for r in json.loads(path.read_text()) if (r["name"].split(":")[0], r["dataset"]) not in replaced]
    return kept + rows
