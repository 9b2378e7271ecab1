"""The llama.cpp backend with the real smallest model (SmolLM2-135M, `coachrec models pull small`)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest

from coachrec.llm import LlamaCppBackend, LlamaCppConfig, LLMError, ModelRegistry, ResponseCache, load_backend

pytestmark = pytest.mark.slow

LETTERS = [chr(ord("A") + i) for i in range(20)]
PROMPT = (
    "Pick the best movie for a fan of space adventures.\n"
    + "\n".join(f"{letter}. Movie number {i}" for i, letter in enumerate(LETTERS))
    + "\nAnswer with one letter: "
)


def small_model_path() -> Path:
    pytest.importorskip("llama_cpp", reason="llama-cpp-python not built: run scripts/install_llama_cpp.py")
    entry = ModelRegistry().resolve("small")
    if entry is None or not entry.exists:
        pytest.skip("SmolLM2-135M is not pulled: run `coachrec models pull small`")
    return Path(entry.path)


@pytest.fixture(scope="module")
def small() -> Iterator[LlamaCppBackend]:
    backend = LlamaCppBackend(small_model_path(), LlamaCppConfig(n_ctx=2048, n_threads=1))
    yield backend
    backend.close()


def test_next_token_logprobs_over_twenty_letters_is_finite_and_deterministic(small: LlamaCppBackend) -> None:
    first = small.next_token_logprobs(PROMPT, LETTERS)
    assert list(first) == LETTERS
    assert all(math.isfinite(v) and v <= 0 for v in first.values())
    assert sum(math.exp(v) for v in first.values()) <= 1 + 1e-6
    assert len(set(first.values())) > 1  # distinct letters get distinct scores
    again = small.next_token_logprobs(PROMPT, LETTERS)
    assert again == pytest.approx(first, abs=1e-6)
    usage = small.last_usage
    assert usage is not None and usage.operation == "next_token_logprobs"
    assert usage.input_tokens == len(small.tokenize(PROMPT)) and usage.reused_input_tokens == usage.input_tokens - 1


def test_prefix_reuse_gives_the_same_scores_as_a_fresh_context(small: LlamaCppBackend) -> None:
    other = PROMPT.replace("space adventures", "romantic comedies")
    small.next_token_logprobs(PROMPT, LETTERS)
    reused = small.next_token_logprobs(other, LETTERS)
    assert small.last_usage is not None and small.last_usage.reused_input_tokens > 5
    fresh_backend = LlamaCppBackend(small.path, LlamaCppConfig(n_ctx=2048, n_threads=1))
    try:
        fresh = fresh_backend.next_token_logprobs(other, LETTERS)
        assert fresh_backend.last_usage is not None and fresh_backend.last_usage.reused_input_tokens == 0
    finally:
        fresh_backend.close()
    assert reused == pytest.approx(fresh, abs=2e-3)


def test_complete_and_chat_are_seedable_and_report_usage(small: LlamaCppBackend) -> None:
    a = small.complete("The capital of France is", max_tokens=8, temperature=0.8, seed=7)
    small.next_token_logprobs(PROMPT, LETTERS)  # interleaved scoring must not disturb generation
    b = small.complete("The capital of France is", max_tokens=8, temperature=0.8, seed=7)
    assert a.text == b.text and a.usage.output_tokens > 0
    assert a.usage.input_tokens == len(small.tokenize("The capital of France is"))
    reply = small.chat([{"role": "user", "content": "Say hello."}], max_tokens=12)
    assert reply.text.strip() and reply.usage.input_tokens > 5 and reply.usage.latency_s > 0


def test_embed_returns_unit_vectors(small: LlamaCppBackend) -> None:
    vectors = small.embed(["a space opera", "a romantic comedy"])
    assert len(vectors) == 2 and len(vectors[0]) == len(vectors[1]) > 100
    assert math.isclose(sum(x * x for x in vectors[0]), 1.0, rel_tol=1e-3)


def test_too_long_prompt_and_empty_candidate_are_clear_errors(small: LlamaCppBackend) -> None:
    with pytest.raises(LLMError, match="context holds 2048"):
        small.next_token_logprobs("word " * 5000, ["A"])
    with pytest.raises(LLMError, match="candidate '' has no tokens"):
        small.next_token_logprobs(PROMPT, [""])


def test_load_backend_by_role_with_cache_hits() -> None:
    small_model_path()
    llm = load_backend("small", llama=LlamaCppConfig(n_ctx=1024, n_threads=1), cache=ResponseCache())
    try:
        first = llm.next_token_logprobs(PROMPT, LETTERS[:4])
        assert llm.last_usage is not None and not llm.last_usage.cached
        assert llm.next_token_logprobs(PROMPT, LETTERS[:4]) == first
        assert llm.last_usage is not None and llm.last_usage.cached
        assert llm.model_id == "smollm2-135m-instruct-q4_1"
    finally:
        llm.close()
