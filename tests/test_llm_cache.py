"""Response cache: hits skip the model, persist in sqlite, and sampled calls without a seed bypass it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from coachrec.llm import ChatMessage, LLMBackend, ResponseCache
from coachrec.llm.backend import Completion, Timer
from coachrec.llm.cache import CachedBackend


class CountingBackend(LLMBackend):
    """A deterministic in-process backend that counts the calls reaching it."""

    model_id = "counting"

    def __init__(self) -> None:
        self.calls = 0

    @property
    def context_length(self) -> int:
        return 1000

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def complete(
        self,
        prompt: str,
        max_tokens: int = 128,
        temperature: float = 0.0,
        stop: Sequence[str] | None = None,
        seed: int | None = None,
    ) -> Completion:
        self.calls += 1
        usage = self._record("complete", self.count_tokens(prompt), 2, Timer())
        return Completion(f"echo {prompt} {self.calls}", "stop", usage)

    def chat(
        self,
        messages: Sequence[ChatMessage],
        max_tokens: int = 128,
        temperature: float = 0.0,
        stop: Sequence[str] | None = None,
        seed: int | None = None,
    ) -> Completion:
        return self.complete(messages[-1]["content"], max_tokens, temperature, stop, seed)

    def next_token_logprobs(self, prompt: str, candidates: Sequence[str]) -> dict[str, float]:
        self.calls += 1
        self._record("next_token_logprobs", self.count_tokens(prompt), 0, Timer())
        return {c: -float(i + 1) for i, c in enumerate(candidates)}

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self.calls += 1
        self._record("embed", len(texts), 0, Timer())
        return [[float(len(t)), 1.0] for t in texts]


def test_hits_skip_the_model_and_are_marked_cached() -> None:
    inner = CountingBackend()
    llm = CachedBackend(inner, ResponseCache())
    first = llm.complete("hello world", max_tokens=5)
    second = llm.complete("hello world", max_tokens=5)
    assert inner.calls == 1 and second.text == first.text
    assert second.usage.cached and not first.usage.cached
    assert second.usage.input_tokens == 2 and llm.last_usage == second.usage
    llm.complete("hello world", max_tokens=6)  # other params, other key
    assert inner.calls == 2

    scores = llm.next_token_logprobs("p", ["A", "B"])
    assert llm.next_token_logprobs("p", ["A", "B"]) == scores and inner.calls == 3
    assert llm.last_usage is not None and llm.last_usage.cached
    assert llm.embed(["ab", "c"]) == llm.embed(["ab", "c"]) and inner.calls == 4
    assert llm.cache.hits == 3


def test_sampled_calls_without_seed_are_not_cached() -> None:
    inner = CountingBackend()
    llm = CachedBackend(inner, ResponseCache())
    llm.complete("x", temperature=0.7)
    llm.complete("x", temperature=0.7)
    assert inner.calls == 2
    llm.complete("x", temperature=0.7, seed=1)
    llm.complete("x", temperature=0.7, seed=1)
    assert inner.calls == 3


def test_sqlite_cache_survives_a_new_process(tmp_path: Path) -> None:
    path = tmp_path / "cache" / "llm.sqlite"
    first = CachedBackend(CountingBackend(), ResponseCache(path))
    text = first.chat([{"role": "user", "content": "hi"}]).text
    first.cache.close()

    inner = CountingBackend()
    again = CachedBackend(inner, ResponseCache(path))
    assert again.chat([{"role": "user", "content": "hi"}]).text == text
    assert inner.calls == 0


def test_memory_cache_is_bounded() -> None:
    cache = ResponseCache(max_items=2)
    for i in range(3):
        cache.put(str(i), i)
    assert cache.get("0") is None and cache.get("2") == 2
