"""Response cache for LLM calls, keyed by (model, operation, prompt, parameters).

In memory (bounded LRU), plus an optional sqlite file so a cache survives restarts and is
shared between processes. Only deterministic calls are cached: greedy decoding
(temperature 0) or a fixed seed; a sampled call without a seed always reaches the model.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from coachrec.llm.backend import ChatMessage, Completion, LLMBackend, Usage


class ResponseCache:
    """A JSON-value cache: an LRU dict in memory, backed by sqlite when `path` is given."""

    def __init__(self, path: str | Path | None = None, max_items: int = 10_000) -> None:
        self.max_items = max_items
        self.hits = 0
        self.misses = 0
        self._memory: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path), check_same_thread=False, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS llm_cache (key TEXT PRIMARY KEY, value TEXT NOT NULL, created REAL)"
            )
            self._db.commit()

    @staticmethod
    def key(model: str, operation: str, payload: Any, params: dict[str, Any]) -> str:
        blob = json.dumps([model, operation, payload, params], sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def get(self, key: str) -> Any | None:
        with self._lock:
            if key in self._memory:
                self._memory.move_to_end(key)
                self.hits += 1
                return self._memory[key]
            if self._db is not None:
                row = self._db.execute("SELECT value FROM llm_cache WHERE key = ?", (key,)).fetchone()
                if row is not None:
                    value = json.loads(row[0])
                    self._remember(key, value)
                    self.hits += 1
                    return value
            self.misses += 1
            return None

    def put(self, key: str, value: Any) -> None:
        with self._lock:
            self._remember(key, value)
            if self._db is not None:
                self._db.execute(
                    "INSERT OR REPLACE INTO llm_cache (key, value, created) VALUES (?, ?, ?)",
                    (key, json.dumps(value), time.time()),
                )
                self._db.commit()

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _remember(self, key: str, value: Any) -> None:
        self._memory[key] = value
        self._memory.move_to_end(key)
        while len(self._memory) > self.max_items:
            self._memory.popitem(last=False)


class CachedBackend(LLMBackend):
    """Wraps a backend; cache hits return the stored answer with `usage.cached=True`.

    A hit's usage keeps the original token counts (what the call would have cost) with latency
    0, so cost reports can count hits as saved tokens.
    """

    def __init__(self, inner: LLMBackend, cache: ResponseCache) -> None:
        self.inner = inner
        self.cache = cache
        self.model_id = inner.model_id

    @property
    def context_length(self) -> int:
        return self.inner.context_length

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    def complete(
        self,
        prompt: str,
        max_tokens: int = 128,
        temperature: float = 0.0,
        stop: Sequence[str] | None = None,
        seed: int | None = None,
    ) -> Completion:
        params = {"max_tokens": max_tokens, "temperature": temperature, "stop": list(stop or []), "seed": seed}
        return self._cached_completion(
            "complete",
            prompt,
            params,
            temperature,
            seed,
            lambda: self.inner.complete(prompt, max_tokens, temperature, stop, seed),
        )

    def chat(
        self,
        messages: Sequence[ChatMessage],
        max_tokens: int = 128,
        temperature: float = 0.0,
        stop: Sequence[str] | None = None,
        seed: int | None = None,
    ) -> Completion:
        params = {"max_tokens": max_tokens, "temperature": temperature, "stop": list(stop or []), "seed": seed}
        return self._cached_completion(
            "chat",
            [dict(m) for m in messages],
            params,
            temperature,
            seed,
            lambda: self.inner.chat(messages, max_tokens, temperature, stop, seed),
        )

    def next_token_logprobs(self, prompt: str, candidates: Sequence[str]) -> dict[str, float]:
        key = ResponseCache.key(self.model_id, "next_token_logprobs", prompt, {"candidates": list(candidates)})
        hit = self.cache.get(key)
        if hit is not None:
            self.last_usage = self._hit_usage(hit["usage"])
            return {str(k): float(v) for k, v in hit["scores"].items()}
        scores = self.inner.next_token_logprobs(prompt, candidates)
        self.last_usage = self.inner.last_usage
        self.cache.put(key, {"scores": scores, "usage": _usage_dict(self.last_usage)})
        return scores

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        key = ResponseCache.key(self.model_id, "embed", list(texts), {})
        hit = self.cache.get(key)
        if hit is not None:
            self.last_usage = self._hit_usage(hit["usage"])
            return [list(map(float, v)) for v in hit["vectors"]]
        vectors = self.inner.embed(texts)
        self.last_usage = self.inner.last_usage
        self.cache.put(key, {"vectors": vectors, "usage": _usage_dict(self.last_usage)})
        return vectors

    def close(self) -> None:
        self.inner.close()

    def _cached_completion(
        self, operation: str, payload: Any, params: dict[str, Any], temperature: float, seed: int | None, call: Any
    ) -> Completion:
        if temperature > 0 and seed is None:
            result: Completion = call()
            self.last_usage = result.usage
            return result
        key = ResponseCache.key(self.model_id, operation, payload, params)
        hit = self.cache.get(key)
        if hit is not None:
            usage = self._hit_usage(hit["usage"])
            self.last_usage = usage
            return Completion(text=hit["text"], finish_reason=hit["finish_reason"], usage=usage)
        result = call()
        self.last_usage = result.usage
        self.cache.put(key, {"text": result.text, "finish_reason": result.finish_reason, "usage": asdict(result.usage)})
        return result

    def _hit_usage(self, stored: dict[str, Any] | None) -> Usage:
        base = Usage(**stored) if stored else Usage(self.model_id, "", 0, 0, 0.0)
        return replace(base, cached=True, latency_s=0.0)


def _usage_dict(usage: Usage | None) -> dict[str, Any] | None:
    return asdict(usage) if usage is not None else None
