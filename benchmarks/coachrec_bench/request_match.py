"""`coachrec bench request-match`: how far the teacher's `request_match` criterion can be
trusted, measured against human recommenders on real conversations (ReDial test).

Labels (`coachrec.teacher.request_labels`): one request per recommender turn (its context);
positives = the movies the human recommender suggested next that link to ml-latest-small and
were not mentioned earlier; one negative per positive from the linked candidate set, never a
target of the dialog nor an earlier mention, drawn uniformly or popularity-matched (by
MovieLens rating count; reported separately). Dialogs are split (seed) into calibration (blend
weights, threshold) and evaluation (every figure) halves.

Rows, one per member x negative sampler, each fitted on calibration dialogs and measured on
evaluation dialogs, per (request, item) pair — the unit the gate judges `request_match` on (the
rate of shown items that do not match the request, clustered by user): AUC, Cohen's kappa at the
calibrated threshold with a 95% bootstrap CI resampling dialogs, TPR/TNR, whether the member may
gate (CI lower bound >= the rubric's floor 0.4, >= 20 pairs) and seconds per pair.

- `embedding`, `mentions`, `embedding+mentions` on every labelled pair;
- each local LLM (`--llm small:300,...`: prompts per model) by yes/no logits on a per-item
  prompt, on a subset of turns (at most one per dialog, drawn once; the smaller budgets are
  prefixes of the larger), beside the embedding committee on the very same pairs and a
  committee blending both.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from coachrec_bench.results import row, write

DATASET = "redial-test x ml-latest-small"


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def default_data() -> Path:
    from coachrec.datasets import shared_dir

    return shared_dir() / "datasets" / "redial"


def _llm_budgets(spec: str) -> list[tuple[str, int]]:
    if spec.strip().lower() in ("", "none"):
        return []
    out = []
    for part in spec.split(","):
        name, _, n = part.strip().partition(":")
        out.append((name, int(n or 200)))
    return out


def _subset_turns(labels: Any, budget: int, seed: int, calibration_share: float = 0.4) -> np.ndarray:
    """Turns for the LLM members: at most one per dialog, in a seeded order, taken until the
    calibration part holds `calibration_share` of `budget` pairs and evaluation the rest."""
    pairs = labels.pairs
    rng = np.random.default_rng(seed)
    cal = set(labels.calibration_dialogs)
    turns = rng.permutation(np.unique(pairs.turns))
    size = {int(t): int(n) for t, n in zip(*np.unique(pairs.turns, return_counts=True), strict=True)}
    dialog_of = {int(t): d for t, d in zip(pairs.turns.tolist(), pairs.dialogs.tolist(), strict=True)}
    want = {True: calibration_share * budget, False: (1 - calibration_share) * budget}
    have = {True: 0, False: 0}
    seen: set[str] = set()
    chosen = []
    for t in turns.tolist():
        d = dialog_of[int(t)]
        part = d in cal
        if d in seen or have[part] + size[int(t)] > want[part]:
            continue
        seen.add(d)
        chosen.append(int(t))
        have[part] += size[int(t)]
    return np.array(chosen, dtype=np.int64)


def _measure(
    name: str,
    x: np.ndarray,
    pairs: Any,
    labels: Any,
    members: list[Any],
    sampler: str,
    cal: np.ndarray,
    *,
    floor: float,
    seed: int,
    seconds_per_pair: float,
    extra: dict[str, Any],
) -> dict[str, Any]:
    from coachrec.teacher.request_match import RequestMatchCommittee, request_match_quality

    keep = (pairs.kinds == "target") | (pairs.kinds == sampler)
    committee = RequestMatchCommittee(members)
    q = request_match_quality(
        committee,
        (x[keep & cal], pairs.labels[keep & cal]),
        (x[keep & ~cal], pairs.labels[keep & ~cal], pairs.dialogs[keep & ~cal]),
        kappa_floor=floor,
        protocol=f"{labels.protocol}; negatives: {sampler}",
        seed=seed,
    )
    ci = q.kappa_ci or (float("nan"), float("nan"))
    metrics = {
        "member": name,
        "negatives": sampler,
        "pairs": q.n,
        "dialogs": len(np.unique(pairs.dialogs[keep & ~cal])),
        "calibration_pairs": int((keep & cal).sum()),
        "auc": round(float(q.auc or float("nan")), 4),
        "kappa": round(q.kappa, 4),
        "kappa_ci": [round(ci[0], 4), round(ci[1], 4)],
        "tpr": round(q.tpr, 4),
        "tnr": round(q.tnr, 4),
        "threshold": round(committee.threshold, 4),
        "may_gate": q.may_gate,
        "why": q.reason(),
        "seconds_per_pair": round(seconds_per_pair, 6),
        "judge": committee.model_id,
        "blend_weights": dict(
            zip(("bias", *committee.feature_names), (round(float(w), 4) for w in committee.blend.weights), strict=True)
        )
        if committee.blend is not None
        else {},
        "unit": "pair",
        "load_1m": _load(),
        **extra,
    }
    if name == "embedding+mentions" and "subset" not in extra:
        metrics["state"] = committee.state()
    return row(f"{name} / {sampler} negatives", DATASET, labels.protocol + f"; negatives: {sampler}", metrics)


def _slate_latency(
    committee_members: list[Any], labels: Any, x: np.ndarray, pairs: Any, catalog: Any, n: int = 50, seed: int = 0
) -> dict[str, float]:
    """Milliseconds to judge a served slate of 10 with the embedding+mentions committee: a new
    request (its utterances not yet encoded) and the same request again (cached)."""
    from coachrec.teacher.request_match import EmbeddingMember, MentionMember, RequestMatchCommittee

    emb0 = committee_members[0]
    emb = EmbeddingMember(catalog, item_embeddings=emb0.item_embeddings)  # a fresh utterance cache
    committee = RequestMatchCommittee([emb, MentionMember(emb, committee_members[1].finder)])
    committee.fit(x, pairs.labels)
    rng = np.random.default_rng(seed)
    turns = rng.choice(sorted(labels.requests), min(n, len(labels.requests)), replace=False)
    ids = catalog.items.ids
    cold, warm = [], []
    for t in turns.tolist():
        items = ids[rng.choice(len(ids), 10, replace=False)].tolist()
        context = labels.requests[int(t)]
        t0 = time.perf_counter()
        committee.judge_slate(context, items)
        cold.append((time.perf_counter() - t0) * 1000)
        items = ids[rng.choice(len(ids), 10, replace=False)].tolist()
        t0 = time.perf_counter()
        committee.judge_slate(context, items)
        warm.append((time.perf_counter() - t0) * 1000)
    return {
        "slate10_new_request_ms_p50": round(float(np.percentile(cold, 50)), 2),
        "slate10_new_request_ms_p99": round(float(np.percentile(cold, 99)), 2),
        "slate10_cached_request_ms_p50": round(float(np.percentile(warm, 50)), 2),
        "slate10_cached_request_ms_p99": round(float(np.percentile(warm, 99)), 2),
    }


def run(data: Path, *, llm: str, threads: int, seed: int, negatives: int, progress: Any) -> list[dict[str, Any]]:
    from coachrec import datasets
    from coachrec.data.conversations import load_conversations
    from coachrec.data.linking import link_conversations
    from coachrec.llm import LlamaCppConfig, load_backend
    from coachrec.teacher import load_rubric
    from coachrec.teacher.request_labels import SAMPLERS, request_labels
    from coachrec.teacher.request_match import EmbeddingMember, LLMMember, MentionMember, pair_features

    floor = load_rubric().kappa_floor
    progress.step(f"load {data} and link to ml-latest-small")
    conv = load_conversations(data)
    ml = datasets.load("ml-latest-small")
    assert ml.catalog is not None
    links = link_conversations(conv, ml.catalog, catalog_name="ml-latest-small")
    for line in links.report.lines():
        progress.note(line)
    popularity = np.bincount(ml.events["item"].to_numpy(), minlength=ml.n_items).astype(np.float64)
    labels = request_labels(conv, links, popularity, negatives=negatives, seed=seed)
    progress.note(labels.protocol)
    progress.note("counts: " + ", ".join(f"{k} {v:,}" for k, v in labels.counts.items()))
    pairs = labels.pairs
    cal = labels.part_mask("calibration")

    progress.step(f"embedding and mention features of {len(pairs):,} pairs")
    emb = EmbeddingMember(ml.catalog, threads=threads)
    men = MentionMember(emb, popularity=popularity)
    with progress.bar("embedding", 1) as advance:
        x_emb, s_emb = pair_features(emb, labels, pairs)
        advance(1, 1)
    x_men, s_men = pair_features(men, labels, pairs)
    x_both = np.hstack([x_emb, x_men])
    rows = []
    base = {"labels": labels.counts}
    for sampler in SAMPLERS:
        for name, x, members, spp in (
            ("embedding", x_emb, [emb], s_emb),
            ("mentions", x_men, [men], s_men),
            ("embedding+mentions", x_both, [emb, men], s_emb + s_men),
        ):
            rows.append(
                _measure(
                    name,
                    x,
                    pairs,
                    labels,
                    members,
                    sampler,
                    cal,
                    floor=floor,
                    seed=seed,
                    seconds_per_pair=spp,
                    extra=base,
                )
            )
    latency = _slate_latency([emb, men], labels, x_both[cal], pairs.take(cal), ml.catalog, seed=seed)
    for r in rows:
        if r["metrics"]["member"] == "embedding+mentions":
            r["metrics"].update(latency)
    progress.note(f"slate of 10, embedding+mentions: {latency}")

    for role, budget in _llm_budgets(llm):
        turns = _subset_turns(labels, budget, seed)
        mask = np.isin(pairs.turns, turns)
        sub = pairs.take(mask)
        progress.step(f"LLM {role}: {len(sub)} prompts ({len(turns)} turns, one per dialog), load {_load()}")
        try:
            backend = load_backend(role, llama=LlamaCppConfig(n_threads=threads, n_ctx=2048))
        except Exception as exc:  # a model that is not pulled is reported, not fatal
            progress.note(f"{role}: not measured ({exc})")
            continue
        member = LLMMember(backend, ml.catalog)
        with progress.bar(role, len(np.unique(sub.turns))) as advance:
            x_llm, s_llm = pair_features(member, labels, sub, progress=advance)
        close = getattr(backend, "close", None)
        if close is not None:
            close()
        sub_cal = cal[mask]
        extra = base | {"subset": f"{len(turns)} turns, one per dialog ({role} budget {budget})", "model": role}
        for sampler in SAMPLERS:
            rows.append(
                _measure(
                    f"llm {role} ({member.name.split(':', 1)[1]})",
                    x_llm,
                    sub,
                    labels,
                    [member],
                    sampler,
                    sub_cal,
                    floor=floor,
                    seed=seed,
                    seconds_per_pair=s_llm,
                    extra=extra,
                )
            )
            rows.append(
                _measure(
                    f"embedding+mentions (subset of {role})",
                    x_both[mask],
                    sub,
                    labels,
                    [emb, men],
                    sampler,
                    sub_cal,
                    floor=floor,
                    seed=seed,
                    seconds_per_pair=s_emb + s_men,
                    extra=extra,
                )
            )
            rows.append(
                _measure(
                    f"embedding+mentions+llm {role}",
                    np.hstack([x_both[mask], x_llm]),
                    sub,
                    labels,
                    [emb, men, member],
                    sampler,
                    sub_cal,
                    floor=floor,
                    seed=seed,
                    seconds_per_pair=s_emb + s_men + s_llm,
                    extra=extra,
                )
            )
    return rows


def show(rows: list[dict[str, Any]]) -> None:
    from coachrec.cli.console import print_rows

    table = []
    for r in rows:
        m = r["metrics"]
        table.append(
            [
                m["member"],
                m["negatives"],
                f"{m['pairs']:,}",
                str(m["dialogs"]),
                f"{m['auc']:.3f}",
                f"{m['kappa']:.3f} [{m['kappa_ci'][0]:.3f}, {m['kappa_ci'][1]:.3f}]",
                f"{m['tpr']:.3f}",
                f"{m['tnr']:.3f}",
                "yes" if m["may_gate"] else "no",
                f"{m['seconds_per_pair'] * 1000:.2f}",
            ]
        )
    headers = [
        "member",
        "negatives",
        "pairs",
        "dialogs",
        "AUC",
        "kappa [95% CI by dialog]",
        "TPR",
        "TNR",
        "may gate",
        "ms / pair",
    ]
    print_rows(
        headers, table, title="request_match trust on ReDial (evaluation dialogs, unit: pair)", right=headers[2:]
    )


def bench_request_match(
    data: Annotated[Path | None, typer.Option(help="CRS-layout folder (default: the shared ReDial test data)")] = None,
    llm: Annotated[
        str, typer.Option(help="LLM roles and their prompt budgets, e.g. small:300,medium:240 (none: no LLM member)")
    ] = "small:300,medium:240,teacher:180",
    threads: Annotated[int, typer.Option(help="threads for llama.cpp and the encoder")] = 1,
    seed: Annotated[int, typer.Option(help="seed of the dialog split, the negatives and the LLM subset")] = 0,
    negatives: Annotated[int, typer.Option(help="negatives per positive, per sampler")] = 1,
) -> None:
    """Trust of the teacher's request_match members against human recommenders (ReDial)."""
    from coachrec.cli.console import RichProgress

    progress = RichProgress()
    rows = run(data or default_data(), llm=llm, threads=threads, seed=seed, negatives=negatives, progress=progress)
    path = write("request_match", rows)
    show(rows)
    progress.note(f"wrote {path}")
