"""A deterministic stand-in backend for tests and for running the LLM stages without a model.

Log-probabilities come from a hash of (prompt, candidate) unless a `scorer` is given; completions
return `reply` (a string, or a function of the prompt). Tokens are counted as words and
punctuation marks, which is close enough to exercise context-window truncation.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence

import numpy as np

from coachrec.llm.backend import ChatMessage, Completion, LLMBackend, Timer

_TOKEN = re.compile(r"\w+|[^\w\s]")


class FakeBackend(LLMBackend):
    def __init__(
        self,
        model_id: str = "fake",
        context: int = 4096,
        scorer: Callable[[str, str], float] | None = None,
        reply: str | Callable[[str], str] = "A, B, C",
    ) -> None:
        self.model_id = model_id
        self._context = context
        self.scorer = scorer
        self.reply = reply
        self.calls = 0

    @property
    def context_length(self) -> int:
        return self._context

    def count_tokens(self, text: str) -> int:
        return len(_TOKEN.findall(text))

    def next_token_logprobs(self, prompt: str, candidates: Sequence[str]) -> dict[str, float]:
        timer = Timer()
        self.calls += 1
        raw = np.array([self.scorer(prompt, c) if self.scorer else _hash_score(prompt, c) for c in candidates])
        logp = raw - np.log(np.exp(raw - raw.max()).sum()) - raw.max() if len(raw) else raw
        self._record("next_token_logprobs", self.count_tokens(prompt) + 1, 0, timer)
        return {c: float(v) for c, v in zip(candidates, logp, strict=False)}

    def complete(
        self,
        prompt: str,
        max_tokens: int = 128,
        temperature: float = 0.0,
        stop: Sequence[str] | None = None,
        seed: int | None = None,
    ) -> Completion:
        timer = Timer()
        self.calls += 1
        text = self.reply(prompt) if callable(self.reply) else self.reply
        usage = self._record("complete", self.count_tokens(prompt) + 1, self.count_tokens(text), timer)
        return Completion(text, "stop", usage)

    def chat(
        self,
        messages: Sequence[ChatMessage],
        max_tokens: int = 128,
        temperature: float = 0.0,
        stop: Sequence[str] | None = None,
        seed: int | None = None,
    ) -> Completion:
        return self.complete("\n".join(m["content"] for m in messages), max_tokens, temperature, stop, seed)

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return [[_hash_score(t, str(i)) for i in range(8)] for t in texts]


def _hash_score(prompt: str, candidate: str) -> float:
    digest = hashlib.sha256(f"{prompt}\x00{candidate}".encode()).digest()
    return int.from_bytes(digest[:4], "little") / 2**32 * 8.0
