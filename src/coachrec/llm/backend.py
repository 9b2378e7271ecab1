"""The one small interface every LLM backend implements, and the values it returns.

Backends: `LlamaCppBackend` (local GGUF through llama-cpp-python, the embedded default) and
`OpenAICompatBackend` (any OpenAI-compatible HTTP endpoint). `CachedBackend` wraps either with
a response cache. Every call records a `Usage` in `backend.last_usage` (also returned on
completions) so the tracing layer can put tokens and latency on the span.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, TypedDict


class LLMError(RuntimeError):
    """A backend call failed (model not loadable, server error, bad response)."""


class LLMUnsupportedError(LLMError):
    """The backend cannot do this operation (e.g. embeddings on a chat-only endpoint)."""


class ChatMessage(TypedDict):
    role: Literal["system", "user", "assistant"]
    content: str


@dataclass(frozen=True)
class Usage:
    """Tokens and wall time of one backend call; `cached` calls did not reach the model."""

    model: str
    operation: str
    input_tokens: int
    output_tokens: int
    latency_s: float
    cached: bool = False
    reused_input_tokens: int = 0
    """Prompt tokens served from a reused prefix (KV cache) rather than computed again."""


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: str | None
    usage: Usage


@dataclass
class Timer:
    start: float = field(default_factory=time.perf_counter)

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start


class LLMBackend(ABC):
    """Text generation, next-token scoring, embeddings and token counting for one model.

    `next_token_logprobs` is what the one-pass (LlamaRec-style) reranker and the logit judge
    use: one forward pass over `prompt`, then the log-probability (normalised over the whole
    vocabulary) of each candidate's first token being the next token. Candidates that share a
    first token get the same value, so labels should start with distinct tokens ("A".."T").
    """

    model_id: str
    last_usage: Usage | None = None

    @abstractmethod
    def complete(
        self,
        prompt: str,
        max_tokens: int = 128,
        temperature: float = 0.0,
        stop: Sequence[str] | None = None,
        seed: int | None = None,
    ) -> Completion: ...

    @abstractmethod
    def chat(
        self,
        messages: Sequence[ChatMessage],
        max_tokens: int = 128,
        temperature: float = 0.0,
        stop: Sequence[str] | None = None,
        seed: int | None = None,
    ) -> Completion: ...

    @abstractmethod
    def next_token_logprobs(self, prompt: str, candidates: Sequence[str]) -> dict[str, float]: ...

    @abstractmethod
    def embed(self, texts: Sequence[str]) -> list[list[float]]: ...

    @abstractmethod
    def count_tokens(self, text: str) -> int: ...

    @property
    @abstractmethod
    def context_length(self) -> int:
        """Maximum prompt plus output tokens the model accepts."""

    def close(self) -> None:  # noqa: B027 (an optional hook: a backend without resources keeps it)
        """Release the model or connection; the backend is unusable afterwards."""

    def __enter__(self) -> LLMBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _record(self, operation: str, input_tokens: int, output_tokens: int, timer: Timer, reused: int = 0) -> Usage:
        usage = Usage(self.model_id, operation, input_tokens, output_tokens, timer.elapsed, False, reused)
        self.last_usage = usage
        return usage
