"""Serving caches of the sequential models: GRU4Rec continues from the hidden state of a cached
history prefix, SASRec reuses the last-position state of a cached window; both give exactly the
scores of the uncached path, and both are emptied when the model is refitted or loaded."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from coachrec.data import Dataset, Event
from coachrec.models import create, load
from coachrec.models.gru4rec import PREFIX_LOOKBACK
from coachrec.models.state_cache import StateCache, history_key, prefix_keys


@pytest.fixture(scope="module")
def walks() -> Dataset:
    rng = np.random.default_rng(0)
    evs = [
        Event(f"u{u}", f"i{(s + 3 * t) % 50}", t)
        for u in range(120)
        for s in [int(rng.integers(50))]
        for t in range(12)
    ]
    return Dataset.from_events(evs, name="walks")


def test_prefix_keys_are_the_keys_of_each_prefix() -> None:
    h = np.arange(10, dtype=np.int64) * 7
    keys = prefix_keys(h, 6)
    assert keys == [history_key(h[:n]) for n in range(6, 11)]
    assert prefix_keys(h, -5)[0] == history_key(h[:0]) and len(prefix_keys(h, -5)) == 11
    cache: StateCache[int] = StateCache(max_entries=2)
    for n in (1, 2, 3):
        cache.put(history_key(h[:n]), n)
    assert cache.get(history_key(h[:1])) is None and len(cache) == 2  # least recently used went first
    assert cache.longest(prefix_keys(h, 0)) == (3, 3)
    assert pickle.loads(pickle.dumps(cache)).stats().entries == 0  # a spawned worker starts empty


def test_gru4rec_prefix_cache_gives_the_uncached_scores(walks) -> None:
    model = create("gru4rec", layers=[32], batch_size=16, n_sample=16, epochs=1, threads=1).fit(walks)
    rng = np.random.default_rng(1)
    long = rng.integers(0, walks.n_items, size=300)
    cache = model.state_cache
    assert cache is not None and len(cache) == 0

    def uncached(h: np.ndarray) -> np.ndarray:
        model.state_cache = None
        try:
            return model.score([h])
        finally:
            model.state_cache = cache

    for n in (300, 300, 305, 290, 320, 320 + PREFIX_LOOKBACK + 5, 0, 1):  # cold, same, grown, shorter, far ahead
        h = np.concatenate([long, rng.integers(0, walks.n_items, size=max(0, n - 300))])[:n]
        np.testing.assert_array_equal(model.score([h]), uncached(h))
    stats = cache.stats()
    assert stats.hits >= 2 and stats.misses >= 2  # 300 again and 305 continued; cold and far-ahead missed
    # a batch of histories (evaluation) takes the batched path and agrees too
    batch = [long[:50], long[:300]]
    np.testing.assert_allclose(model.score(batch), np.vstack([uncached(h) for h in batch]), rtol=1e-5, atol=1e-5)
    model.fit(walks)  # refitting drops every cached state
    assert len(cache) == 0 and model.state_cache is cache


def test_sasrec_window_cache_gives_the_uncached_scores_and_restarts_on_load(walks, tmp_path) -> None:
    model = create("sasrec", epochs=1, dim=16, max_len=20, seed=0).fit(walks)
    h = np.random.default_rng(2).integers(0, walks.n_items, size=60)
    first = model.score([h])
    assert model.state_cache.stats().misses == 1
    np.testing.assert_array_equal(model.score([h]), first)
    np.testing.assert_array_equal(model.score([h[-20:]]), first)  # same window, same state
    assert model.state_cache.stats().hits == 2
    np.testing.assert_allclose(model.score([h, h[:5]])[0], first[0], rtol=1e-5, atol=1e-6)  # batched path
    loaded = load(model.save(tmp_path / "s"))
    assert len(loaded.state_cache) == 0
    np.testing.assert_array_equal(loaded.score([h]), first)
