"""The LLM reranker rows on ReDial: the served one-pass reranker (`coachrec.llm.rerank`) over
the top 20 of the cross-fitted LLM-free ranker, on a seeded sample of turns, paired with GPT-4
on the same targets, with latency and cost per 1,000 requests at the LLM layer's local price.

    coachrec bench conversational-llm --turns 80     # writes benchmarks/results/conversational_llm.json
                                                     # and conversational_cost.png (R@10 against cost)

Reads `coachrec bench conversational-goal`'s cached features (built when missing), so the LLM-free ranking under the
LLM is exactly the goal bench's cross-fitted blend (every signal, weights learned on the other
fold). Per sampled turn the prompt holds: the seeker's last words (what the served
`understand` stage hands the reranker: its last three utterances, 300 characters), the movies
annotated as mentioned so far as history (titles; ml-latest-small's where linked, the DBpedia
name otherwise), and the top 20 candidates not mentioned before (title and genres). The LLM
score is mixed with the blend's (`RerankConfig.blend`): `LLM only` is blend 1; the `blend chosen`
row picks the weight per half of the sampled dialogs on the other half (cross-fitted within
the sample). Every sampled request is sent to the LLM (no router): the cost is an upper bound
of what the router would spend. Cost: `TierPrice` (the LLM layer's local price: 2 cores at
$0.05 per core-hour, no token charge) times the call's wall time. GPT-4 and GPT-3.5 are priced
at their API list prices of the paper's time on the tokens a turn's prompt takes (estimated
with this tokenizer: the conversation plus a 60-token instruction in, 20 titles out);
Vicuna and BAIZE are self-hosted 13B models with no list price and get no cost.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from coachrec_bench.conversational import Measured, plot_cost
from coachrec_bench.conversational_stages import MIN_SCORE

BLENDS = (0.1, 0.25, 0.5, 0.75, 1.0)
"""LLM weights tried (the rest: the LLM-free ranker's score, both min-max scaled over the 20)."""
API_PRICES = {"gpt-4": (30.0, 60.0), "gpt-3.5-turbo": (1.5, 2.0)}
"""USD per 1M input / output tokens: OpenAI list prices in mid-2023 (GPT-4 8k; GPT-3.5-turbo 4k)."""
HEAD = 20


def _texts(conv: Any, links: Any, catalog: Any) -> list[str]:
    from coachrec.data.conversations import display_name
    from coachrec.llm.rerank import candidate_text

    titles = catalog.frame["title"].to_list()
    genres = catalog.frame["genres"].to_list()
    uris = dict(zip(conv.entities["id"].to_list(), conv.entities["uri"].to_list(), strict=True))
    out = []
    for e, item in zip(conv.candidates.tolist(), links.item.tolist(), strict=True):
        if item >= 0:
            out.append(candidate_text(titles[item], [g for g in genres[item] if not g.startswith("(")]))
        else:
            out.append(display_name(uris[int(e)]).replace(" film)", ")").replace("(film)", "").strip())
    return out


def request_text(conv: Any, turn: int) -> str:
    """What the served `understand` stage hands the reranker: the seeker's last words."""
    last = [u for s, u in conv.context(turn) if s == "seeker" and u.strip()]
    return " ".join(last[-3:])[-300:]


def _history(conv: Any, turn: int, texts: list[str]) -> list[str]:
    prev, _ = conv.mentions(np.asarray([turn]))
    c = conv.column(np.asarray(prev[0], dtype=np.int64))
    return [texts[i].split(" [")[0] for i in c[c >= 0].tolist()]


def _minmax(v: np.ndarray) -> np.ndarray:
    lo, hi = float(v.min()), float(v.max())
    return (v - lo) / (hi - lo) if hi > lo else np.ones_like(v)


def run_llm(
    conv: Any, links: Any, base: dict[int, tuple[np.ndarray, np.ndarray]], turns: np.ndarray, model: str,
    progress: Any = None, budget_s: float = 1200.0,
) -> dict[int, dict[str, Any]]:  # fmt: skip
    """Per sampled turn: the head's columns, their base scores, the LLM's label log-probs, usage."""
    from coachrec import datasets
    from coachrec.llm.factory import load_backend
    from coachrec.llm.llama_cpp_backend import LlamaCppConfig
    from coachrec.llm.rerank import LLMReranker, RerankConfig
    from coachrec.progress import SILENT

    progress = progress or SILENT
    catalog = datasets.load("ml-latest-small").catalog
    texts = _texts(conv, links, catalog)
    backend = load_backend(model, llama=LlamaCppConfig(n_ctx=2048, n_threads=1))
    reranker = LLMReranker(backend, RerankConfig(max_candidates=HEAD))
    out: dict[int, dict[str, Any]] = {}
    t_start = time.perf_counter()
    with progress.bar(f"LLM rerank ({model})", len(turns)) as advance:
        for i, t in enumerate(turns.tolist()):
            idx, score = base[int(t)]
            prev, _ = conv.mentions(np.asarray([t]))
            seen = conv.column(np.asarray(prev[0], dtype=np.int64))
            ok = ~np.isin(idx, seen[seen >= 0])
            idx, score = idx[ok], score[ok]
            order = np.argsort(-score, kind="stable")[:HEAD]
            head_idx, head_score = idx[order], score[order]
            t0 = time.perf_counter()
            res = reranker.rerank(
                _history(conv, int(t), texts), [texts[j] for j in head_idx.tolist()], head_score.tolist(),
                request_text(conv, int(t)),
            )  # fmt: skip
            ms = (time.perf_counter() - t0) * 1000
            u = res.usage
            out[int(t)] = {
                "idx": idx, "score": score, "head": head_idx, "head_score": head_score, "llm": res.llm_logprobs,
                "ms": ms, "input_tokens": 0 if u is None else u.input_tokens, "latency_s": ms / 1000,
            }  # fmt: skip
            advance(i + 1, len(turns))
            if time.perf_counter() - t_start > budget_s:
                progress.note(f"{model}: time budget reached after {i + 1} turns", "warning")
                break
    close = getattr(backend, "close", None)
    if close is not None:
        close()
    return out


def _scores(r: dict[str, Any], w: float) -> tuple[np.ndarray, np.ndarray]:
    head = (1 - w) * _minmax(np.asarray(r["head_score"], np.float64)) + w * _minmax(np.asarray(r["llm"]))
    s = np.asarray(r["score"], np.float64).copy()
    pos = {int(c): k for k, c in enumerate(np.asarray(r["idx"]).tolist())}
    for c, v in zip(r["head"].tolist(), head.tolist(), strict=True):
        s[pos[int(c)]] = 1e3 + v
    return np.asarray(r["idx"]), s


def per_target(conv: Any, scored: dict[int, tuple[np.ndarray, np.ndarray]]) -> Any:
    from coachrec.metrics.conversational import conv_full

    turns = np.asarray(sorted(scored), dtype=np.int64)

    def score(ts: np.ndarray) -> np.ndarray:
        out = np.full((len(ts), conv.n_candidates), MIN_SCORE, np.float32)
        for i, t in enumerate(ts.tolist()):
            idx, s = scored[int(t)]
            out[i, idx] = s
        return out

    return conv_full(score, conv.subset(turns))


def cross_fitted_blend(conv: Any, results: dict[int, dict[str, Any]], seed: int) -> tuple[dict[int, Any], list[float]]:
    """Each half (by dialog) of the sampled turns scored with the LLM weight that did best on the other half."""
    from coachrec.metrics.conversational import aggregate

    turns = np.asarray(sorted(results), dtype=np.int64)
    half = conv.subset(turns).folds(2, seed + 7)
    chosen: dict[int, Any] = {}
    picked = []
    for k in range(2):
        other = turns[half != k]
        best = max(
            BLENDS,
            key=lambda w: aggregate(per_target(conv, {int(t): _scores(results[int(t)], w) for t in other}))[
                "recall@10"
            ],
        )
        picked.append(best)
        for t in turns[half == k].tolist():
            chosen[int(t)] = _scores(results[int(t)], best)
    return chosen, picked


def api_cost_per_1k(conv: Any, model: str) -> float:
    """USD per 1,000 turns at `API_PRICES` on the tokens of each turn's conversation."""
    from coachrec.llm.factory import load_backend
    from coachrec.llm.llama_cpp_backend import LlamaCppConfig

    tok = load_backend("small", llama=LlamaCppConfig(n_ctx=512, n_threads=1))
    n_in = np.array([tok.count_tokens(" ".join(u for _, u in conv.context(int(t)))) + 60
                     for t in conv.turns["turn"].to_list()])  # fmt: skip
    n_out = 20 * 8
    p_in, p_out = API_PRICES[model]
    return float((n_in.mean() * p_in + n_out * p_out) / 1e6 * 1000)


def from_raw(conv: Any, base: dict[int, tuple[np.ndarray, np.ndarray]], raw: dict[str, Any]) -> dict[int, Any]:
    """`run_llm`'s results rebuilt from saved LLM outputs and the (deterministic) base ranking."""
    out: dict[int, Any] = {}
    for key, r in raw.items():
        t = int(key)
        idx, score = base[t]
        prev, _ = conv.mentions(np.asarray([t]))
        seen = conv.column(np.asarray(prev[0], dtype=np.int64))
        ok = ~np.isin(idx, seen[seen >= 0])
        idx, score = idx[ok], score[ok]
        head = np.asarray(r["head"], dtype=np.int64)
        pos = {int(c): k for k, c in enumerate(idx.tolist())}
        out[t] = {"idx": idx, "score": score, "head": head, "head_score": score[[pos[int(c)] for c in head]],
                  "llm": np.asarray(r["llm"]), "ms": r["ms"], "input_tokens": r.get("input_tokens", -1),
                  "latency_s": r["ms"] / 1000}  # fmt: skip
    return out


def _vs(a: Any, b: Any) -> dict[str, float]:
    from coachrec.metrics.conversational import compare_paired

    c = compare_paired(a, b, "recall@10", n_boot=2000, n_perm=5000)
    return {"delta": round(c.delta, 4), "ci_low": round(c.ci_low, 4), "ci_high": round(c.ci_high, 4),
            "p": round(c.p_value, 4), "n": c.n}  # fmt: skip


def model_rows(
    conv: Any, base: dict[int, tuple[np.ndarray, np.ndarray]], res: dict[int, Any], model: str, seed: int
) -> list[Measured]:
    """The LLM-free ranker on the turns `model` reranked, the LLM alone, and the chosen mix, each
    mix also paired with the LLM-free ranker on the same targets (`vs_llm_free`)."""
    from coachrec.llm.backend import Usage
    from coachrec.llm.cost import TierPrice

    price = TierPrice()
    done = np.asarray(sorted(res), dtype=np.int64)
    ms = np.asarray([res[int(t)]["ms"] for t in done])
    cost = float(np.mean([price.cost(Usage(model, "rerank", 0, 0, res[int(t)]["latency_s"])) for t in done]))
    tokens = [res[int(t)]["input_tokens"] for t in done]
    common: dict[str, Any] = {"cost_per_1k_requests": round(cost * 1000, 5), "sample_turns": len(done), "model": model}
    if min(tokens) >= 0:
        common["input_tokens_mean"] = round(float(np.mean(tokens)), 1)
    free = per_target(conv, {int(t): base[int(t)] for t in done})
    only = per_target(conv, {int(t): _scores(res[int(t)], 1.0) for t in done})
    chosen, picked = cross_fitted_blend(conv, res, seed)
    mixed = per_target(conv, chosen)
    return [
        Measured(f"LLM-free ranker ({model}'s turns)", free, False, "the cross-fitted blend on the turns the "
                 f"{model} reranker scored", extra={"cost_per_1k_requests": 0.0, "sample_turns": len(done)}),
        Measured(f"+ LLM rerank ({model}), LLM only", only, False, f"the {model} one-pass reranker alone over the "
                 f"LLM-free ranker's top {HEAD}", ms, extra=common | {"vs_llm_free": _vs(free, only)}),
        Measured(f"+ LLM rerank ({model}), blend chosen", mixed, False, f"the {model} reranker's score mixed with "
                 "the ranker's, LLM weight chosen on the other sampled half", ms,
                 extra=common | {"llm_weight_per_half": picked, "vs_llm_free": _vs(free, mixed)}),
    ]  # fmt: skip


COMMAND = "coachrec bench conversational-llm"


def main(
    data: Path | None,
    cache: Path,
    n_turns: int = 80,
    seed: int = 0,
    models: tuple[str, ...] = ("small", "medium"),
    budget_s: float = 1200.0,
    raw_path: Path | None = None,
) -> Path:
    """The rows; with `raw_path` (the LLM outputs a previous run saved beside the cache) the
    models are not called again and the rows are rebuilt from those outputs."""
    from coachrec import datasets
    from coachrec.cli.console import RichProgress
    from coachrec.data.conversations import load_conversations
    from coachrec.data.linking import link_conversations
    from coachrec.metrics.conversational import DESCRIPTION, REFERENCE_FILES, load_reference, reference_path
    from coachrec_bench import conversational_goal as goal
    from coachrec_bench.conversational import REFERENCE_LABELS, default_data, measure_rows, show
    from coachrec_bench.results import write

    folder = data or default_data()
    progress = RichProgress()
    conv = load_conversations(folder)
    ml = datasets.load("ml-latest-small")
    links = link_conversations(conv, ml.catalog, catalog_name="ml-latest-small")
    built = goal.features(conv, links, cache=cache, seed=seed, progress=progress)
    base: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for f in built.folds:
        scores, _ = goal.blend_scores(f, goal.SIGNALS, seed=seed)
        base.update(zip(f.held_turns.tolist(), scores, strict=True))
    all_turns = conv.turns["turn"].to_numpy()
    turns = np.sort(np.random.default_rng(seed).choice(all_turns, min(n_turns, len(all_turns)), replace=False))
    raw_in = json.loads(raw_path.read_text()) if raw_path is not None else None
    measured: list[Measured] = []
    measured.append(Measured("LLM-free ranker (same turns)", per_target(conv, {int(t): base[int(t)] for t in turns}),
                             False, "goal bench's cross-fitted blend over every signal, on the sampled turns",
                             extra={"cost_per_1k_requests": 0.0, "sample_turns": len(turns)}))  # fmt: skip
    raw: dict[str, Any] = {}
    for model in models:
        if raw_in is not None and model in raw_in:
            res = from_raw(conv, base, raw_in[model])
        else:
            progress.step(f"LLM reranker {model} on {len(turns)} sampled turns")
            res = run_llm(conv, links, base, turns, model, progress, budget_s=budget_s)
        measured += model_rows(conv, base, res, model, seed)
        raw[model] = {str(t): {"head": r["head"].tolist(), "llm": np.round(r["llm"], 4).tolist(), "ms": r["ms"],
                               "input_tokens": r["input_tokens"]} for t, r in res.items()}  # fmt: skip
    refs = {}
    for model in REFERENCE_FILES:
        path = reference_path(folder / "reference", model)
        if path.exists():
            refs[model] = load_reference(path, conv, name=REFERENCE_LABELS[model])
    gpt4 = refs["gpt-4"].per_target if "gpt-4" in refs else None
    sample = measured[0].per_target.select("turn", "position")
    for model, ref in refs.items():
        extra = {"cost_per_1k_requests": round(api_cost_per_1k(conv, model), 4)} if model in API_PRICES else {}
        measured.append(Measured(ref.name + " (same turns)", ref.per_target.join(sample, on=["turn", "position"]),
                                 True, "published zero-shot results on the sampled turns", extra=extra))  # fmt: skip
        measured.append(Measured(ref.name, ref.per_target, True, "published zero-shot results, all targets",
                                 extra=extra))  # fmt: skip
    rows = measure_rows(measured, gpt4, protocol=DESCRIPTION["name"], n_boot=2000, n_perm=5000)
    for r in rows:
        r["command"] = f"{COMMAND} --turns {n_turns}"
    rows[0]["metrics"]["run"] = {"load_1m": round(os.getloadavg()[0], 2), "seed": seed}
    out = write("conversational_llm", rows)
    plot_cost(rows, out.parent / "conversational_cost.png")
    if raw_path is None:
        Path(str(cache) + ".llm.json").write_text(json.dumps(raw))
    show(rows, f"ReDial test, {len(turns)} sampled turns — LLM reranker rows")
    return out


def bench_conversational_llm(
    data: Annotated[Path | None, typer.Option(help="CRS-layout folder (default: the shared ReDial test data)")] = None,
    turns: Annotated[int, typer.Option(help="turns sampled (seeded) for the LLM reranker")] = 80,
    seed: Annotated[int, typer.Option(help="seed of the folds and of the turn sample")] = 0,
    budget: Annotated[float, typer.Option(help="seconds each model may take (it stops early, and says so)")] = 1200.0,
) -> None:
    """The LLM reranker (small, medium) over the cross-fitted ranker on sampled ReDial turns,
    paired with GPT-4 on the same targets, with latency and cost per 1,000 requests; writes
    benchmarks/results/conversational_llm.json and conversational_cost.png."""
    from coachrec_bench import conversational_goal as goal

    print(main(data, goal.default_cache(), turns, seed, budget_s=budget))


if __name__ == "__main__":  # python -m coachrec_bench.conversational_llm [DATA|-] CACHE.pkl [N_TURNS [RAW.json]]
    import sys

    a = sys.argv[1:]
    print(main(Path(a[0]) if a and a[0] != "-" else None, Path(a[1]), int(a[2]) if len(a) > 2 else 80,
               raw_path=Path(a[3]) if len(a) > 3 else None))  # fmt: skip
