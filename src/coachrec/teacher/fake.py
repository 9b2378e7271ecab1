"""A deterministic stand-in LLM for tests and dry runs: no model file, same interface.

`FakeJudgeBackend(rule)` answers `next_token_logprobs` with P(first side) = `rule(prompt)`: the
judges ask for (positive words..., negative words...) — yes/no or A/B — in two equal halves, and
the first half shares that mass; it answers `complete` with JSON carrying the same verdict — except every
`broken_every`-th call, which returns prose, so the JSON parse-failure path gets exercised.
The default rule hashes the prompt, so verdicts are arbitrary but repeatable.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence

from coachrec.llm import ChatMessage, LLMBackend, Usage
from coachrec.llm.backend import Completion

Rule = Callable[[str], float]


def hashed_rule(prompt: str) -> float:
    return int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:4], "big") / 2**32


class FakeJudgeBackend(LLMBackend):
    def __init__(self, rule: Rule = hashed_rule, model_id: str = "fake-judge", broken_every: int = 0) -> None:
        self.rule = rule
        self.model_id = model_id
        self.broken_every = broken_every
        self.calls = 0

    @property
    def context_length(self) -> int:
        return 32768

    def count_tokens(self, text: str) -> int:
        return max(1, len(text) // 4)

    def next_token_logprobs(self, prompt: str, candidates: Sequence[str]) -> dict[str, float]:
        self.calls += 1
        p = min(max(self.rule(prompt), 1e-6), 1 - 1e-6)
        half = len(candidates) // 2
        if half == 0 or len(candidates) != 2 * half:
            raise ValueError(
                f"the fake judge expects positive and negative words in two equal halves, got {list(candidates)}"
            )
        first, second = math.log(p / half), math.log((1 - p) / half)
        self.last_usage = Usage(self.model_id, "next_token_logprobs", self.count_tokens(prompt), 0, 0.0)
        return {c: first if i < half else second for i, c in enumerate(candidates)}

    def complete(
        self,
        prompt: str,
        max_tokens: int = 128,
        temperature: float = 0.0,
        stop: Sequence[str] | None = None,
        seed: int | None = None,
    ) -> Completion:
        self.calls += 1
        if self.broken_every and self.calls % self.broken_every == 0:
            text = "I think the user would probably enjoy it"
        else:
            text = '{"verdict": "%s", "reason": "fake"}' % ("yes" if self.rule(prompt) >= 0.5 else "no")
        usage = Usage(self.model_id, "complete", self.count_tokens(prompt), 8, 0.0)
        self.last_usage = usage
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
        return [[hashed_rule(t)] for t in texts]
