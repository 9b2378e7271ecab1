"""Any OpenAI-compatible HTTP endpoint: vLLM, Ollama, llama.cpp's server, hosted APIs.

Next-token scoring uses the legacy `/v1/completions` endpoint with `max_tokens=1` and
`logprobs=k`, which returns the k most likely next tokens with their log-probabilities (in the
legacy OpenAI shape, or in the chat shape llama.cpp's `llama-server` answers with). A
candidate is matched to the longest returned token that is a prefix of it. A candidate outside
the top k gets the smallest returned log-probability, an upper bound on its true value (the
server does not reveal more), and is listed in `last_outside_top_k`; raise `top_logprobs`
where the server allows it (vLLM and OpenAI cap it at 20 or 5 unless configured otherwise).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from coachrec.llm.backend import ChatMessage, Completion, LLMBackend, LLMError, LLMUnsupportedError, Timer


@dataclass(frozen=True)
class HTTPConfig:
    """Connection settings for an OpenAI-compatible server."""

    timeout_s: float = 60.0
    connect_timeout_s: float = 5.0
    top_logprobs: int = 20
    api_key: str | None = None
    """Bearer token; default from OPENAI_API_KEY if set."""
    context_length: int = 4096
    """Used when the server does not report its context size."""


def first_token_top_logprobs(logprobs: Any) -> dict[str, float]:
    """{token: log-probability} of the first generated token's alternatives, from either shape
    a `/v1/completions` answer takes: the legacy OpenAI one (`top_logprobs: [{token: lp}]`, vLLM,
    llama-cpp-python) or llama.cpp's `llama-server` (`content: [{top_logprobs: [{token,
    logprob}]}]`, the chat shape). Empty when there is none."""
    if not isinstance(logprobs, dict):
        return {}
    legacy = logprobs.get("top_logprobs")
    if isinstance(legacy, list) and legacy and isinstance(legacy[0], dict):
        return {str(k): float(v) for k, v in legacy[0].items()}
    content = logprobs.get("content")
    if isinstance(content, list) and content and isinstance(content[0], dict):
        alternatives = content[0].get("top_logprobs") or []
        return {str(a["token"]): float(a["logprob"]) for a in alternatives if isinstance(a, dict) and "token" in a}
    return {}


class OpenAICompatBackend(LLMBackend):
    """A model behind an OpenAI-compatible HTTP API."""

    def __init__(self, base_url: str, model: str | None = None, config: HTTPConfig | None = None) -> None:
        self.config = config or HTTPConfig()
        root = base_url.rstrip("/")
        self.base_url = root if root.endswith("/v1") else root + "/v1"
        api_key = self.config.api_key or os.environ.get("OPENAI_API_KEY")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(self.config.timeout_s, connect=self.config.connect_timeout_s),
        )
        self._context_length = self.config.context_length
        self.last_outside_top_k: frozenset[str] = frozenset()
        """Candidates of the last `next_token_logprobs` call whose value is only an upper bound."""
        self.model_id = model or self._first_served_model()

    @property
    def context_length(self) -> int:
        return self._context_length

    def complete(
        self,
        prompt: str,
        max_tokens: int = 128,
        temperature: float = 0.0,
        stop: Sequence[str] | None = None,
        seed: int | None = None,
    ) -> Completion:
        timer = Timer()
        body = self._params(max_tokens, temperature, stop, seed) | {"prompt": prompt}
        out = self._post("/completions", body)
        choice = self._choice(out)
        return self._completion(out, "complete", choice.get("text", ""), choice, timer)

    def chat(
        self,
        messages: Sequence[ChatMessage],
        max_tokens: int = 128,
        temperature: float = 0.0,
        stop: Sequence[str] | None = None,
        seed: int | None = None,
    ) -> Completion:
        timer = Timer()
        body = self._params(max_tokens, temperature, stop, seed) | {"messages": [dict(m) for m in messages]}
        out = self._post("/chat/completions", body)
        choice = self._choice(out)
        text = (choice.get("message") or {}).get("content") or ""
        return self._completion(out, "chat", text, choice, timer)

    def next_token_logprobs(self, prompt: str, candidates: Sequence[str]) -> dict[str, float]:
        timer = Timer()
        body = {
            "model": self.model_id,
            "prompt": prompt,
            "max_tokens": 1,
            "temperature": 0.0,
            "logprobs": self.config.top_logprobs,
        }
        out = self._post("/completions", body)
        top = first_token_top_logprobs(self._choice(out).get("logprobs"))
        if not top:
            raise LLMError(f"{self.base_url}/completions returned no top_logprobs; the server must support `logprobs`")
        floor = min(top.values())
        usage = out.get("usage") or {}
        self._record("next_token_logprobs", int(usage.get("prompt_tokens", 0)), 0, timer)
        scores = {c: _match(c, top) for c in candidates}
        self.last_outside_top_k = frozenset(c for c, v in scores.items() if v is None)
        return {c: floor if v is None else v for c, v in scores.items()}

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        timer = Timer()
        out = self._post("/embeddings", {"model": self.model_id, "input": list(texts)}, operation="embeddings")
        data = sorted(out.get("data") or [], key=lambda d: d.get("index", 0))
        if len(data) != len(texts):
            raise LLMError(f"{self.base_url}/embeddings returned {len(data)} vectors for {len(texts)} texts")
        self._record("embed", int((out.get("usage") or {}).get("prompt_tokens", 0)), 0, timer)
        return [list(map(float, d["embedding"])) for d in data]

    def count_tokens(self, text: str) -> int:
        """Token count from the server's tokenizer (vLLM `/tokenize`, llama-cpp-python `/extras/tokenize`)."""
        root = self.base_url.removesuffix("/v1")
        attempts = (
            (f"{root}/extras/tokenize", {"input": text}),
            (f"{root}/tokenize", {"model": self.model_id, "prompt": text, "add_special_tokens": False}),
        )
        for url, body in attempts:
            try:
                response = self._client.post(url, json=body)
            except httpx.HTTPError as exc:
                raise LLMError(f"cannot reach {url}: {exc}") from exc
            if response.status_code == 200:
                tokens = response.json().get("tokens")
                if isinstance(tokens, list):
                    return len(tokens)
        raise LLMUnsupportedError(f"{root} exposes no tokenize endpoint (tried /extras/tokenize and /tokenize)")

    def close(self) -> None:
        self._client.close()

    def _first_served_model(self) -> str:
        out = self._get("/models")
        models = out.get("data") or []
        if not models:
            raise LLMError(f"{self.base_url}/models lists no model; pass model= explicitly")
        meta = models[0].get("meta") or {}
        if isinstance(meta.get("n_ctx_train"), int):
            self._context_length = min(self._context_length, meta["n_ctx_train"])
        return str(models[0]["id"])

    def _params(
        self, max_tokens: int, temperature: float, stop: Sequence[str] | None, seed: int | None
    ) -> dict[str, Any]:
        params: dict[str, Any] = {"model": self.model_id, "max_tokens": max_tokens, "temperature": temperature}
        if stop:
            params["stop"] = list(stop)
        if seed is not None:
            params["seed"] = seed
        return params

    def _get(self, path: str) -> dict[str, Any]:
        try:
            response = self._client.get(path)
        except httpx.HTTPError as exc:
            raise LLMError(f"cannot reach {self.base_url}{path}: {type(exc).__name__}: {exc}") from exc
        return self._json(response, path, "models")

    def _post(self, path: str, body: dict[str, Any], operation: str = "") -> dict[str, Any]:
        try:
            response = self._client.post(path, json=body)
        except httpx.TimeoutException as exc:
            raise LLMError(f"{self.base_url}{path} timed out after {self.config.timeout_s} s") from exc
        except httpx.HTTPError as exc:
            raise LLMError(f"cannot reach {self.base_url}{path}: {type(exc).__name__}: {exc}") from exc
        return self._json(response, path, operation)

    def _json(self, response: httpx.Response, path: str, operation: str) -> dict[str, Any]:
        if response.status_code in (404, 405, 501) and operation:
            raise LLMUnsupportedError(
                f"{self.base_url}{path} does not support {operation} (HTTP {response.status_code})"
            )
        if response.status_code >= 400:
            raise LLMError(f"{self.base_url}{path} answered HTTP {response.status_code}: {response.text[:500]}")
        try:
            out = response.json()
        except ValueError as exc:
            raise LLMError(f"{self.base_url}{path} returned non-JSON: {response.text[:200]!r}") from exc
        if not isinstance(out, dict):
            raise LLMError(f"{self.base_url}{path} returned {type(out).__name__}, expected a JSON object")
        return out

    def _choice(self, out: dict[str, Any]) -> dict[str, Any]:
        choices = out.get("choices") or []
        if not choices:
            raise LLMError(f"{self.base_url} returned no choices: {str(out)[:200]}")
        return dict(choices[0])

    def _completion(
        self, out: dict[str, Any], operation: str, text: str, choice: dict[str, Any], timer: Timer
    ) -> Completion:
        usage = out.get("usage") or {}
        recorded = self._record(
            operation, int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0)), timer
        )
        return Completion(text=text, finish_reason=choice.get("finish_reason"), usage=recorded)


def _match(candidate: str, top: dict[str, float]) -> float | None:
    """Log-probability of the longest returned token that starts `candidate`, if any."""
    best = max((t for t in top if t and candidate.startswith(t)), key=len, default=None)
    return top[best] if best is not None else None
