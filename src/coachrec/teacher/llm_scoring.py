"""Yes/no verdicts from an LLM that can never be unparsable.

`LogitScorer.p_yes(prompt)` reads one forward pass: the next-token log-probabilities of the
yes-words and no-words, summed per side and renormalised, give P(yes) — a number for any
model, however weak. `JsonScorer` asks the same question for free-text JSON generation
instead; it exists to measure what that costs (speed, parse failures) in `bench teacher`.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

from coachrec.llm import LLMBackend
from coachrec.teacher.prompts import JSON_SUFFIX, LOGIT_SUFFIX

YES_WORDS = ("Yes", "yes", " Yes", " yes", "YES")
NO_WORDS = ("No", "no", " No", " no", "NO")


def logsumexp(values: list[float]) -> float:
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


class LogitScorer:
    """P(yes) from next-token logits over yes/no words."""

    def __init__(self, backend: LLMBackend) -> None:
        self.backend = backend
        self.model_id = backend.model_id

    def p_yes(self, prompt: str) -> float:
        scores = self.backend.next_token_logprobs(prompt, YES_WORDS + NO_WORDS)
        yes = logsumexp([scores[w] for w in YES_WORDS])
        no = logsumexp([scores[w] for w in NO_WORDS])
        return 1.0 / (1.0 + math.exp(no - yes))


@dataclass(frozen=True)
class JsonVerdict:
    verdict: bool | None
    """None when the output could not be parsed into a yes/no verdict."""
    text: str


_OBJECT = re.compile(r"\{.*?\}", re.DOTALL)


def parse_json_verdict(text: str) -> bool | None:
    """The verdict of a generated `{"verdict": "yes"|"no", ...}`, or None if there is none."""
    for match in _OBJECT.finditer(text):
        try:
            obj = json.loads(match.group(0))
        except json.JSONDecodeError:
            continue
        verdict = str(obj.get("verdict", "")).strip().lower() if isinstance(obj, dict) else ""
        if verdict in ("yes", "no"):
            return verdict == "yes"
    return None


class JsonScorer:
    """The free-text alternative: generate JSON, parse it (and sometimes fail to)."""

    def __init__(self, backend: LLMBackend, max_tokens: int = 40) -> None:
        self.backend = backend
        self.max_tokens = max_tokens

    def verdict(self, logit_prompt: str) -> JsonVerdict:
        """Same prompt as the logit scorer with only the answer-format line swapped."""
        if LOGIT_SUFFIX not in logit_prompt:
            raise ValueError("JsonScorer.verdict expects a prompt built with the logit answer format")
        prompt = logit_prompt.replace(LOGIT_SUFFIX, JSON_SUFFIX)
        out = self.backend.complete(prompt, max_tokens=self.max_tokens, temperature=0.0, stop=["<|im_end|>"])
        return JsonVerdict(parse_json_verdict(out.text), out.text)
