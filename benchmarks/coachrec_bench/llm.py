"""`coachrec bench llm`: the one-pass LLM reranker's latency, accuracy and parse robustness.

Protocol (ml-latest-small, leave-one-out, full ranking): the retriever is fitted on the training
events and ranks every item for each test user's train + validation history (seen items
excluded, ties pessimistic). The LLM reranks the retriever's top 20 with the user's 20 most
recent titles; below the top 20 the retriever order stands. A user whose held-out item is not in
the top 20 gets the same rank either way, so only users with the item in the top 20 need a
model call (their count is reported); NDCG@10 and Recall@10 are averaged over all sampled users
and compared per user with a paired bootstrap CI (2,000 resamples) and a sign-flip p-value.

Latency rows time those same rerank calls (one request = 20 history titles + 20 candidates, one
forward pass; the shared system prompt's KV cache is reused across requests, as in serving).
The parse rows run generate-and-parse on the first N of the same prompts right after their
scoring pass (so the prompt is evaluated once and generation time = scoring + decoding): greedy
decoding of up to 64 tokens, candidate letters parsed in order; "failed" = no letter found, "partial" =
fewer than 20 candidates named.

The machine is shared (2 cores): every row records the 1-minute load average before and after.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from coachrec_bench.results import row, write

console = Console()
K = 10
TOP = 20


@dataclass
class UserCase:
    user: int
    history: list[str]
    candidates: list[str]
    retriever_scores: np.ndarray
    target_pos: int
    """Position of the held-out item in the retriever's top 20."""


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def _per_user(ranks: np.ndarray) -> dict[str, np.ndarray]:
    hit = ranks < K
    return {"ndcg@10": np.where(hit, 1.0 / np.log2(ranks + 2.0), 0.0), "recall@10": hit.astype(np.float64)}


def _blend_order(llm: np.ndarray, retr: np.ndarray, w: float) -> np.ndarray:
    from coachrec.llm.rerank import minmax

    score = llm if w == 1.0 else w * minmax(llm) + (1 - w) * minmax(retr)
    return np.lexsort((np.arange(len(score)), -score))


def _cases(retriever: str, users: int, seed: int) -> tuple[np.ndarray, list[UserCase], str]:
    """Retriever ranks of the held-out item for the sampled users, and the users to rerank."""
    from coachrec import datasets
    from coachrec.data import leave_one_out
    from coachrec.metrics import target_ranks
    from coachrec.models import create, top_k

    data = datasets.load("ml-latest-small")
    assert data.catalog is not None
    split = leave_one_out(data)
    task = split.task("test")
    rows = np.arange(len(task.users))
    if 0 < users < len(rows):
        rows = np.sort(np.random.default_rng(seed).choice(rows, users, replace=False))
    model = create(retriever).fit(split.train)
    histories = [task.histories[r] for r in rows]
    targets = np.array([task.targets[r][0] for r in rows])
    scores = model.score(histories)
    for i, h in enumerate(histories):
        scores[i, h] = -np.inf
    ranks = target_ranks(scores, targets)
    top = top_k(scores, TOP)
    titles = data.catalog.titles()
    genres = data.catalog.frame["genres"].to_list()
    from coachrec.llm.rerank import candidate_text

    cases = []
    for i in np.flatnonzero(ranks < TOP).tolist():
        pos = int(np.flatnonzero(top[i] == targets[i])[0])
        cases.append(
            UserCase(
                int(task.users[rows[i]]),
                [titles[j] for j in histories[i][-TOP:].tolist()],
                [candidate_text(titles[j], [g for g in genres[j] if not g.startswith("(")]) for j in top[i].tolist()],
                scores[i, top[i]].astype(np.float64),
                pos,
            )
        )
    return ranks, cases, f"{retriever} fitted on the leave-one-out training events"


def _bench_model(
    role: str,
    ranks: np.ndarray,
    cases: list[UserCase],
    blends: list[float],
    parse_prompts: int,
    retriever: str,
    threads: int | None,
) -> list[dict[str, Any]]:
    from coachrec.llm import LlamaCppConfig, load_backend
    from coachrec.llm.rerank import LLMReranker, RerankConfig
    from coachrec.metrics import compare

    load_before = _load()
    backend = load_backend(role, llama=LlamaCppConfig(n_ctx=2048, n_threads=threads))
    model = backend.model_id
    reranker = LLMReranker(backend, RerankConfig(max_history=TOP, max_candidates=TOP))
    try:
        reranker.rerank(["warm-up"], ["a", "b"])
        latency, tokens, computed, llm_scores = [], [], [], []
        parse_rows = []
        for n, case in enumerate(cases):
            res = reranker.rerank(case.history, case.candidates, case.retriever_scores)
            assert res.usage is not None
            latency.append(res.usage.latency_s)
            tokens.append(res.usage.input_tokens)
            computed.append(res.usage.input_tokens - res.usage.reused_input_tokens)
            llm_scores.append(res.llm_logprobs)
            if n < parse_prompts:  # right after the scoring pass: the prompt's KV cache is reused
                gen = reranker.rerank_generate(case.history, case.candidates, case.retriever_scores)
                assert gen.usage is not None
                parse_rows.append((gen, case, res.llm_logprobs))
        load_mid = _load()
    finally:
        backend.close()
    load_after = _load()
    lat = np.asarray(latency) * 1e3
    base = _per_user(ranks)
    rows_out: list[dict[str, Any]] = []
    protocol = (
        "rerank 20 history titles + 20 candidates, next-token letter log-probs, one forward pass; "
        "llama.cpp CPU n_ctx=2048"
    )
    rows_out.append(
        row(
            f"llm/latency/{model}",
            "ml-latest-small (test users, leave-one-out)",
            protocol,
            {
                "requests": len(cases),
                "latency_ms_p50": round(float(np.percentile(lat, 50)), 1),
                "latency_ms_p95": round(float(np.percentile(lat, 95)), 1),
                "prompt_tokens_mean": round(float(np.mean(tokens)), 1),
                "prompt_tokens_computed_mean": round(float(np.mean(computed)), 1),
                "prompt_tok_per_s": round(float(np.sum(computed) / np.sum(latency)), 1),
                "threads": threads or os.cpu_count(),
                "load_avg_1m_before": load_before,
                "load_avg_1m_after": load_mid,
            },
        )
    )
    pos_in_ranks = np.flatnonzero(ranks < TOP)
    for w in blends:
        new = ranks.copy()
        for row_i, case, llm in zip(pos_in_ranks.tolist(), cases, llm_scores, strict=False):
            order = _blend_order(llm, case.retriever_scores, w)
            new[row_i] = int(np.flatnonzero(order == case.target_pos)[0])
        after = _per_user(new)
        metrics: dict[str, Any] = {"users": len(ranks), "users_reranked": len(cases), "blend_llm_weight": w}
        for name in ("ndcg@10", "recall@10"):
            cmp = compare(base[name], after[name])
            metrics.update(
                {
                    name: round(cmp.mean_b, 5),
                    f"{name}_retriever": round(cmp.mean_a, 5),
                    f"{name}_delta": round(cmp.delta, 5),
                    f"{name}_delta_ci95": [round(cmp.ci_low, 5), round(cmp.ci_high, 5)],
                    f"{name}_p_value": round(cmp.p_value, 4),
                }
            )
        metrics.update({"load_avg_1m_before": load_before, "load_avg_1m_after": load_mid})
        rows_out.append(
            row(
                f"llm/accuracy/{retriever}+{model}/blend={w}",
                "ml-latest-small",
                "loo-full; " + protocol + "; rerank of the retriever's top 20",
                metrics,
            )
        )
    if parse_rows:
        decode_ms = np.array([g.usage.latency_s for g, _, _ in parse_rows if g.usage]) * 1e3
        logit_ms = lat[: len(parse_rows)]
        gen_ms = logit_ms + decode_ms  # the same prompt evaluation, plus decoding
        status = [g.parse for g, _, _ in parse_rows]
        gen_ranks = np.array([int(np.flatnonzero(g.order == c.target_pos)[0]) for g, c, _ in parse_rows])
        logit_ranks = np.array(
            [int(np.flatnonzero(_blend_order(s, c.retriever_scores, 1.0) == c.target_pos)[0]) for _, c, s in parse_rows]
        )
        rows_out.append(
            row(
                f"llm/parse/{model}",
                "ml-latest-small",
                "same rerank prompts: next-token letter log-probs vs greedy generation (<= 64 tokens) parsed for "
                "letters; generation "
                "reuses the prompt KV cache of the scoring pass, so generate_ms = scoring time + decode time",
                {
                    "prompts": len(parse_rows),
                    "logit_ms_p50": round(float(np.percentile(logit_ms, 50)), 1),
                    "generate_ms_p50": round(float(np.percentile(gen_ms, 50)), 1),
                    "generate_decode_ms_p50": round(float(np.percentile(decode_ms, 50)), 1),
                    "generate_output_tokens_mean": round(
                        float(np.mean([g.usage.output_tokens for g, _, _ in parse_rows if g.usage])), 1
                    ),
                    "parse_failed_rate": round(status.count("failed") / len(status), 3),
                    "parse_partial_rate": round(status.count("partial") / len(status), 3),
                    "ndcg@10_logits_on_these": round(float(_per_user(logit_ranks)["ndcg@10"].mean()), 4),
                    "ndcg@10_generate_on_these": round(float(_per_user(gen_ranks)["ndcg@10"].mean()), 4),
                    "load_avg_1m_before": load_mid,
                    "load_avg_1m_after": load_after,
                },
            )
        )
    return rows_out


def bench_llm(
    models: str = typer.Option("small,medium", help="comma-separated model roles or registry names"),
    retriever: str = typer.Option("itemknn", help="retriever whose top 20 is reranked"),
    users: int = typer.Option(0, min=0, help="test users sampled (0 = all 610)"),
    blends: str = typer.Option("1.0,0.5,0.25", help="LLM weights to evaluate (1 = LLM only)"),
    parse_prompts: int = typer.Option(20, min=0, help="prompts also run through generate-and-parse"),
    threads: int | None = typer.Option(None, help="llama.cpp threads (default: all cores)"),
    seed: int = typer.Option(0, help="user sampling seed"),
) -> None:
    """Latency, accuracy (loo-full, paired CIs) and generate-vs-logits of the LLM reranker."""
    t0 = time.perf_counter()
    ranks, cases, fitted = _cases(retriever, users, seed)
    console.print(f"{fitted}: {len(ranks)} users, {len(cases)} with the held-out item in the top {TOP}")
    weights = [float(w) for w in blends.split(",") if w.strip()]
    base = _per_user(ranks)
    rows = [
        row(
            f"llm/accuracy/{retriever}",
            "ml-latest-small",
            "loo-full; retriever alone",
            {
                "users": len(ranks),
                "ndcg@10": round(float(base["ndcg@10"].mean()), 5),
                "recall@10": round(float(base["recall@10"].mean()), 5),
                "hr@20": round(float((ranks < TOP).mean()), 5),
                "load_avg_1m": _load(),
            },
        )
    ]
    for role in [m.strip() for m in models.split(",") if m.strip()]:
        console.print(f"{role}: reranking {len(cases)} requests ...")
        rows += _bench_model(role, ranks, cases, weights, parse_prompts, retriever, threads)
    path = write("llm", rows)
    table = Table(title=f"bench llm ({time.perf_counter() - t0:.0f} s) -> {path}")
    table.add_column("row")
    table.add_column("metrics")
    for r in rows:
        table.add_row(r["name"], ", ".join(f"{k}={v}" for k, v in r["metrics"].items()))
    console.print(table)
