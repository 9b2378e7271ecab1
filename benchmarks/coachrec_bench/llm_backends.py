"""Speed of the local LLM backends: prompt tok/s, generation tok/s, next-token scoring latency.

For every pulled GGUF model (small, medium, teacher) this loads a `LlamaCppBackend` and
measures, as medians over a few repetitions:
- prompt processing: a ~600-token reranking prompt (20 history titles, 20 lettered candidates
  from MovieLens), each made unique by its first line so no KV prefix is reused;
- generation: greedy decoding of up to 64 tokens after an already-evaluated prompt;
- next-token scoring latency over the 20 candidate letters, cold (whole prompt evaluated) and
  with the shared prefix reused (same instructions and history, different candidates), which
  is the serving situation when a user's history is scored against several candidate sets.
"""

from __future__ import annotations

import csv
import os
import statistics
from importlib import resources
from typing import Any

from coachrec.llm import LlamaCppBackend, LlamaCppConfig, ModelRegistry
from coachrec_bench.results import row, write

LETTERS = [chr(ord("A") + i) for i in range(20)]


def _titles(n: int) -> list[str]:
    path = resources.files("coachrec") / "datasets" / "ml-latest-small" / "movies.csv"
    with path.open(encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        return [r["title"] for _, r in zip(range(n), reader, strict=False)]


def _rerank_prompt(nonce: str, history: list[str], candidates: list[str]) -> str:
    lines = [
        f"Session {nonce}.",
        "You rank movies for a user. The user recently watched:",
        *(f"- {t}" for t in history),
        "Candidates:",
        *(f"{letter}. {t}" for letter, t in zip(LETTERS, candidates, strict=False)),
        "The single best candidate for this user is letter:",
    ]
    return "\n".join(lines)


def bench_model(name: str, path: str, reps: int = 3, n_threads: int | None = None) -> dict[str, Any]:
    """Measure one GGUF model; returns a results row."""
    threads = n_threads or os.cpu_count() or 1
    titles = _titles(80)
    history = titles[:20]
    backend = LlamaCppBackend(path, LlamaCppConfig(n_ctx=2048, n_threads=threads), model_id=name)
    try:
        backend.next_token_logprobs("warm up", LETTERS)
        prompt_tps, cold_ms, warm_ms, gen_tps = [], [], [], []
        prompt_tokens = 0
        for rep in range(reps):
            prompt = _rerank_prompt(f"cold-{rep}-{name}", history, titles[20:40])
            backend.next_token_logprobs(prompt, LETTERS)
            usage = backend.last_usage
            assert usage is not None
            prompt_tokens = usage.input_tokens
            cold_ms.append(usage.latency_s * 1e3)
            prompt_tps.append((usage.input_tokens - usage.reused_input_tokens) / usage.latency_s)

            shifted = titles[40 + rep * 10 : 60 + rep * 10]
            backend.next_token_logprobs(_rerank_prompt(f"cold-{rep}-{name}", history, shifted), LETTERS)
            assert backend.last_usage is not None
            warm_ms.append(backend.last_usage.latency_s * 1e3)

            story = f"Story {rep}: Write a long, detailed story about a dragon who learns to cook."
            backend.next_token_logprobs(story, LETTERS)  # evaluate the prompt so generation dominates
            out = backend.complete(story, max_tokens=64, temperature=0.0)
            gen_tps.append(out.usage.output_tokens / out.usage.latency_s)
    finally:
        backend.close()
    metrics = {
        # Other processes slow llama.cpp far more than their share: its threads spin-wait.
        "load_avg_1m_after": round(os.getloadavg()[0], 1),
        "prompt_tokens": prompt_tokens,
        "prompt_tok_per_s": round(statistics.median(prompt_tps), 1),
        "gen_tok_per_s": round(statistics.median(gen_tps), 1),
        "score_latency_ms_p50": round(statistics.median(cold_ms), 1),
        "score_latency_ms_p50_prefix_reuse": round(statistics.median(warm_ms), 1),
    }
    protocol = (
        f"llama.cpp via llama-cpp-python, CPU, n_threads={threads}, n_ctx=2048; rerank prompt with 20 history "
        f"titles and 20 lettered candidates; next-token scoring over 20 letters; greedy generation of up to 64 "
        f"tokens; medians of {reps} repetitions"
    )
    return row(f"llm_backends/{name}", "ml-latest-small titles (synthetic prompts)", protocol, metrics)


def run(reps: int = 3, n_threads: int | None = None) -> list[dict[str, Any]]:
    """Benchmark every pulled GGUF model and write benchmarks/results/llm_backends.json."""
    entries = [e for e in ModelRegistry().entries() if e.kind == "gguf" and e.exists]
    order = {"small": 0, "medium": 1, "teacher": 2}
    entries.sort(key=lambda e: (order.get(e.role, 3), e.name))
    rows = [bench_model(e.name, e.path, reps, n_threads) for e in entries]
    write("llm_backends", rows)
    return rows


if __name__ == "__main__":
    import sys

    for r in run(
        reps=int(sys.argv[1]) if len(sys.argv) > 1 else 3, n_threads=int(sys.argv[2]) if len(sys.argv) > 2 else None
    ):
        print(r["name"], r["metrics"])
