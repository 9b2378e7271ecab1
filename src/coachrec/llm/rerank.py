"""One-pass LLM reranker (the LlamaRec verbalizer): every candidate scored from one forward pass.

The prompt lists up to 20 candidates, each behind a single-token letter. One forward pass gives
the next-token distribution; the log-probability of each letter is that candidate's score. No
text is generated or parsed, so the output is always a permutation of the input candidates —
whatever the model or the catalog text says.

    reranker = LLMReranker(load_backend("small"))
    result = reranker.rerank(history_titles, candidate_texts, retriever_scores, request="something funny")
    best_first = [candidates[i] for i in result.order]

`RerankConfig.blend` mixes the LLM score with the retriever's (both min-max scaled over the
scored candidates): 1 = LLM only, 0 = retriever only. `rerank_generate` is the baseline the
benchmark compares against: the same prompt, a generated answer, letters parsed from it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from coachrec.llm.backend import LLMBackend, LLMError, Usage
from coachrec.llm.prompts import LABELS, clean_data, rerank_prompt


@dataclass(frozen=True)
class RerankConfig:
    """`max_candidates`: candidates scored by the LLM (the rest keep their order after them);
    `blend`: weight of the LLM score against the retriever score; `max_history`: most recent
    history titles offered to the prompt before token-based truncation; `answer_tokens`: context
    kept free after the prompt."""

    max_candidates: int = 20
    blend: float = 1.0
    max_history: int = 50
    title_chars: int = 80
    request_chars: int = 300
    answer_tokens: int = 64

    def __post_init__(self) -> None:
        if not 1 <= self.max_candidates <= len(LABELS):
            raise ValueError(f"max_candidates must be in [1, {len(LABELS)}], got {self.max_candidates}")
        if not 0.0 <= self.blend <= 1.0:
            raise ValueError(f"blend must be in [0, 1], got {self.blend}")
        if self.max_history < 0 or self.answer_tokens < 1:
            raise ValueError("max_history must be >= 0 and answer_tokens >= 1")


@dataclass
class RerankResult:
    """`order`: a permutation of range(len(candidates)), best first. `llm_logprobs` and `scores`
    cover the first `n_scored` input candidates (the ones in the prompt)."""

    order: np.ndarray
    n_scored: int
    llm_logprobs: np.ndarray
    scores: np.ndarray
    history_used: int
    prompt: str
    usage: Usage | None
    parse: Literal["logits", "ok", "partial", "failed"] = "logits"
    """How the order was obtained: next-token logits, or (generate-and-parse) whether all,
    some or none of the candidates were found in the generated text."""


def minmax(values: np.ndarray) -> np.ndarray:
    """Scaled to [0, 1]; a constant vector maps to all ones (no evidence either way)."""
    values = np.asarray(values, dtype=np.float64)
    if not len(values):
        return values
    lo, hi = values.min(), values.max()
    return (values - lo) / (hi - lo) if hi > lo else np.ones_like(values)


def candidate_text(title: str, genres: Sequence[str] = ()) -> str:
    """How a candidate reads in the prompt: its title and genres."""
    return f"{title} [{', '.join(genres)}]" if genres else title


class LLMReranker:
    """Scores candidates with one forward pass of `backend`; see the module docstring."""

    def __init__(self, backend: LLMBackend, config: RerankConfig | None = None) -> None:
        self.backend = backend
        self.config = config or RerankConfig()

    def build_prompt(
        self, history: Sequence[str], candidates: Sequence[str], request: str | None = None
    ) -> tuple[str, int]:
        """The prompt over the most recent history that fits the context, and how many history
        titles it holds. Candidates are never truncated; too long a request is, by characters."""
        c = self.config
        cands = [clean_data(t, c.title_chars) for t in candidates[: c.max_candidates]]
        req = clean_data(request, c.request_chars) if request and request.strip() else None
        hist = [clean_data(t, c.title_chars) for t in list(history)[-c.max_history :]] if c.max_history else []
        budget = self.backend.context_length - c.answer_tokens

        def fits(n: int) -> tuple[bool, str]:
            prompt = rerank_prompt(hist[len(hist) - n :], cands, req)
            return self.backend.count_tokens(prompt) + 1 <= budget, prompt  # +1: BOS

        ok, prompt = fits(len(hist))
        if ok:
            return prompt, len(hist)
        lo, hi = 0, len(hist)  # invariant: lo fits (checked below), hi does not
        ok, best = fits(0)
        if not ok:
            raise LLMError(
                f"{len(cands)} candidates (and the request) do not fit the {self.backend.context_length}-token "
                f"context of {self.backend.model_id} even without history; lower max_candidates or title_chars"
            )
        while hi - lo > 1:
            mid = (lo + hi) // 2
            ok, prompt = fits(mid)
            if ok:
                lo, best = mid, prompt
            else:
                hi = mid
        return best, lo

    def rerank(
        self,
        history: Sequence[str],
        candidates: Sequence[str],
        retriever_scores: Sequence[float] | None = None,
        request: str | None = None,
    ) -> RerankResult:
        """Order `candidates` (texts, best retriever candidates first) for a user with `history`
        (titles, oldest first). The first `max_candidates` are scored and reordered; the rest
        follow in their input order."""
        n = len(candidates)
        head = min(n, self.config.max_candidates)
        if head == 0:
            return RerankResult(np.zeros(0, np.int64), 0, np.zeros(0), np.zeros(0), 0, "", None)
        prompt, used = self.build_prompt(history, candidates, request)
        labels = list(LABELS[:head])
        logprobs = self.backend.next_token_logprobs(prompt, labels)
        llm = np.array([logprobs[label] for label in labels], dtype=np.float64)
        if not np.isfinite(llm).all():
            raise LLMError(f"{self.backend.model_id} returned non-finite label log-probabilities: {logprobs}")
        scores = self._blend(llm, retriever_scores, head)
        order = np.concatenate([np.lexsort((np.arange(head), -scores)), np.arange(head, n)]).astype(np.int64)
        return RerankResult(order, head, llm, scores, used, prompt, self.backend.last_usage)

    def rerank_generate(
        self,
        history: Sequence[str],
        candidates: Sequence[str],
        retriever_scores: Sequence[float] | None = None,
        request: str | None = None,
    ) -> RerankResult:
        """The generate-and-parse baseline: the same prompt, a greedy answer, letters parsed
        from it in order. Candidates the answer does not name follow in input order."""
        n = len(candidates)
        head = min(n, self.config.max_candidates)
        prompt, used = self.build_prompt(history, candidates, request)
        out = self.backend.complete(prompt, max_tokens=3 * head + 4, temperature=0.0)
        named = parse_labels(out.text, head)
        status: Literal["ok", "partial", "failed"] = "ok" if len(named) == head else ("partial" if named else "failed")
        named_set = set(named)
        rest = [i for i in range(n) if i not in named_set]
        order = np.asarray(named + rest, dtype=np.int64)
        nan = np.full(head, np.nan)
        return RerankResult(order, head, nan, nan, used, prompt, out.usage, status)

    def _blend(self, llm: np.ndarray, retriever_scores: Sequence[float] | None, head: int) -> np.ndarray:
        w = self.config.blend
        if retriever_scores is None or w == 1.0:
            return llm
        retr = np.asarray(retriever_scores, dtype=np.float64)[:head]
        if len(retr) != head:
            raise ValueError(f"retriever_scores has {len(retr)} values for {head} scored candidates")
        return w * minmax(llm) + (1.0 - w) * minmax(retr)


_LABEL_RE = re.compile(r"(?<![A-Za-z])([A-T])(?![A-Za-z])")


def parse_labels(text: str, n: int) -> list[int]:
    """Candidate positions named in generated text, in order, first mention only; letters
    beyond the `n` shown candidates are ignored."""
    seen: list[int] = []
    for match in _LABEL_RE.finditer(text):
        i = LABELS.index(match.group(1))
        if i < n and i not in seen:
            seen.append(i)
    return seen
