"""A bounded LRU of sequence-model states for serving one history at a time.

A sequential model served per request sees the same user's history again and again, usually
unchanged or with a few new events at the end. GRU4Rec keeps its hidden state after a history,
so the next request continues from the longest cached prefix instead of re-running the whole
sequence; SASRec keeps the last position's state for one input window. Keys are 128-bit BLAKE2b
digests of the item indices (`prefix_keys`), so a key costs 16 bytes whatever the history's
length. The cache is thread-safe (the server scores in a thread pool) and pickles empty (a
spawned worker process starts with its own).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np

V = TypeVar("V")

DEFAULT_ENTRIES = 4096
"""States kept per model: a few KB each for the default GRU4Rec/SASRec sizes."""


def history_key(history: np.ndarray) -> bytes:
    """The cache key of a whole history (int64 item indices)."""
    return hashlib.blake2b(np.ascontiguousarray(history, dtype=np.int64).tobytes(), digest_size=16).digest()


def prefix_keys(history: np.ndarray, shortest: int) -> list[bytes]:
    """Keys of `history[:n]` for n = shortest .. len(history), each equal to `history_key` of that
    prefix, in one pass over the history (the digest is streamed, not recomputed per prefix)."""
    h = np.ascontiguousarray(history, dtype=np.int64)
    shortest = max(0, min(shortest, len(h)))
    running = hashlib.blake2b(h[:shortest].tobytes(), digest_size=16)
    keys = [running.digest()]
    for n in range(shortest, len(h)):
        running.update(h[n : n + 1].tobytes())
        keys.append(running.digest())
    return keys


@dataclass(frozen=True)
class CacheStats:
    entries: int
    max_entries: int
    hits: int
    misses: int


class StateCache(Generic[V]):
    """Least-recently-used `key -> state`, at most `max_entries`."""

    def __init__(self, max_entries: int = DEFAULT_ENTRIES) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries}")
        self.max_entries = max_entries
        self._entries: OrderedDict[bytes, V] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: bytes) -> V | None:
        with self._lock:
            value = self._entries.get(key)
            if value is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return value

    def longest(self, keys: list[bytes]) -> tuple[int, V] | None:
        """The entry of the last key in `keys` that is cached, with its position, or None
        (counts one hit or one miss)."""
        with self._lock:
            for at in range(len(keys) - 1, -1, -1):
                value = self._entries.get(keys[at])
                if value is not None:
                    self._entries.move_to_end(keys[at])
                    self.hits += 1
                    return at, value
            self.misses += 1
            return None

    def put(self, key: bytes, value: V) -> None:
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(len(self._entries), self.max_entries, self.hits, self.misses)

    def __len__(self) -> int:
        return len(self._entries)

    def __getstate__(self) -> dict[str, Any]:
        return {"max_entries": self.max_entries}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["max_entries"])  # type: ignore[misc]
