"""A deterministic stand-in LLM for tests and dry runs: no model file, same interface.

`FakeJudgeBackend(rule)` answers `next_token_logprobs` with P(yes) = `rule(prompt)` spread over
the yes/no words, and `complete` with JSON carrying the same verdict — except every
`broken_every`-th call, which returns prose, so the JSON parse-failure path gets exercised.
The default rule hashes the prompt, so verdicts are arbitrary but repeatable.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence

from coachrec.llm import ChatMessage, Completion, LLMBackend, Usage
from coachrec.teacher.llm_scoring import NO_WORDS, YES_WORDS

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
        per_yes, per_no = math.log(p / len(YES_WORDS)), math.log((1 - p) / len(NO_WORDS))
        self.last_usage = Usage(self.model_id, "next_token_logprobs", self.count_tokens(prompt), 0, 0.0)
        return {c: per_yes if c in YES_WORDS else per_no if c in NO_WORDS else -30.0 for c in candidates}

    def complete(self, prompt: str, max_tokens: int = 128, temperature: float = 0.0,
                 stop: Sequence[str] | None = None, seed: int | None = None) -> Completion:
        self.calls += 1
        if self.broken_every and self.calls % self.broken_every == 0:
            text = "I think the user would probably enjoy it"
        else:
            text = '{"verdict": "%s", "reason": "fake"}' % ("yes" if self.rule(prompt) >= 0.5 else "no")
        usage = Usage(self.model_id, "complete", self.count_tokens(prompt), 8, 0.0)
        self.last_usage = usage
        return Completion(text, "stop", usage)

    def chat(self, messages: Sequence[ChatMessage], max_tokens: int = 128, temperature: float = 0.0,
             stop: Sequence[str] | None = None, seed: int | None = None) -> Completion:
        return self.complete("\n".join(m["content"] for m in messages), max_tokens, temperature, stop, seed)

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return [[hashed_rule(t)] for t in texts]
